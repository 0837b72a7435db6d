"""Rosenbrock (linearly implicit) methods for stiff problems.

``rosenbrock23`` is Shampine & Reichelt's modified Rosenbrock formula of order 2 with an
order-3 error estimate (MATLAB's ode23s; "Rosenbrock23" in DifferentialEquations.jl):
L-stable, and a W-method, so it keeps its order with a Jacobian that is not exact (one
computed some steps ago). With d = 1 / (2 + √2), W = I − h d J, T = ∂f/∂t:

    k1 = W⁻¹ (f(t, y) + h d T)
    F1 = f(t + h/2, y + h k1 / 2),        k2 = W⁻¹ (F1 − k1) + k1
    y1 = y + h k2,  F2 = f(t + h, y1),    k3 = W⁻¹ (F2 − e32 (k2 − F1) − 2 (k1 − f) + h d T)
    error = h (k1 − 2 k2 + k3) / 6,       e32 = 6 + √2

with the interpolant y(t + θh) = y + h (θ(1 − θ) k1 + θ(θ − 2d) k2) / (1 − 2d).

As a :class:`Tableau` the method declares only where f is evaluated (c, a: F1 at
y + h k1 / 2, F2 at y1 = y + h k2), b, the error weights over (k1, k2, k3, F2), FSAL (F2 is
the next step's f) and the interpolant; the step itself is in
:class:`~neuralode.core.steppers.Rosenbrock`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .tableau import Tableau


@dataclass(frozen=True)
class RosenbrockMethod(Tableau):
    """A Rosenbrock W-method: d (the diagonal γ) and e32 besides the tableau's structure."""

    d: float = 0.0
    e32: float = 0.0
    implicit: ClassVar[bool] = True

    @property
    def evaluations(self) -> int:
        """F1 and F2 (k1, k2 and k3 are linear solves; the Jacobian's evaluations are counted
        apart, in ``n_jacobians``)."""
        return 2


_D = 1.0 / (2.0 + math.sqrt(2.0))

ROSENBROCK23 = RosenbrockMethod(
    name="rosenbrock23",
    order=2,
    c=(0.0, 0.5, 1.0, 1.0),
    a=((), (0.5,), (0.0, 1.0), (0.0, 1.0, 0.0)),  # rows of k = (k1, k2, k3, F2)
    b=(0.0, 1.0, 0.0, 0.0),
    b_err=(1 / 6, -2 / 6, 1 / 6, 0.0),
    error_order=2,
    dense_basis=(
        (1 / (1 - 2 * _D), -1 / (1 - 2 * _D)),  # k1: θ(1 − θ) / (1 − 2d)
        (-2 * _D / (1 - 2 * _D), 1 / (1 - 2 * _D)),  # k2: θ(θ − 2d) / (1 − 2d)
        (),
        (),
    ),
    d=_D,
    e32=6.0 + math.sqrt(2.0),
)
