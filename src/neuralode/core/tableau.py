"""Butcher tableaus as data, and their dense-output polynomials.

A method is a :class:`Tableau`: one explicit Runge–Kutta stepper
(:class:`neuralode.core.steppers.ExplicitRK`) runs any of them. Dense output is expressed
uniformly as polynomials in θ ∈ [0, 1]:

    y(t0 + θ·dt) = y0 + dt · Σ_j W_j(θ) v_j,    v = (k_0, …, k_{S-1}, f1)

where k_i are the stages of the step and f1 = f(t1, y1). ``dense[j, p]`` is the coefficient of
θ^(p+1) in W_j. For FSAL methods f1 is the last stage, so its column is folded into that stage.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch


def _hermite_named() -> dict[str, np.ndarray]:
    """Cubic Hermite interpolant in terms of f0, f1 and B = Σ b_i k_i = (y1 - y0)/dt."""
    # Coefficients of θ, θ², θ³.
    return {
        "f0": np.array([1.0, -2.0, 1.0]),
        "f1": np.array([0.0, -1.0, 1.0]),
        "B": np.array([0.0, 3.0, -2.0]),
    }


def _quartic_with_midpoint_named() -> dict[str, np.ndarray]:
    """Quartic through y0, y1, y(1/2) = M with slopes f0 and f1 (Shampine's scheme).

    Unknowns a1..a4 in y(θ) = y0 + dt(a1 θ + a2 θ² + a3 θ³ + a4 θ⁴), conditions:
    a1 = f0; Σa = B; a1 + 2a2 + 3a3 + 4a4 = f1; a1/2 + a2/4 + a3/8 + a4/16 = M.
    """
    conditions = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0],
            [1.0, 2.0, 3.0, 4.0],
            [1 / 2, 1 / 4, 1 / 8, 1 / 16],
        ]
    )
    inverse = np.linalg.inv(conditions)  # a = inverse @ (f0, B, f1, M)
    return {name: inverse[:, j] for j, name in enumerate(("f0", "B", "f1", "M"))}


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta method.

    Attributes:
        name: the ``method=`` string.
        order: order of the propagated solution.
        c: nodes, length S (c[0] = 0).
        a: strictly lower-triangular rows, ``a[i]`` has length i.
        b: weights of the solution, length S.
        b_err: weights of the error estimate (b - b_embedded), or None for fixed-step methods.
        error_order: order of the embedded solution (sets the controller's exponent).
        c_mid: weights giving y(t0 + dt/2) = y0 + dt Σ c_mid_i v_i, if the method has them
            (S entries, or S + 1 when f1 enters too).
        dense_basis: polynomials (coefficients of θ..θ^n) per stage, and optionally one more for
            f1, if the method provides its own dense output (tsit5, dopri8).
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    c_mid: tuple[float, ...] | None = None
    dense_basis: tuple[tuple[float, ...], ...] | None = None
    dense: np.ndarray = field(init=False, repr=False, compare=False)
    _tensors: dict[tuple[torch.dtype, torch.device], TableauTensors] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    implicit: ClassVar[bool] = False  # an explicit Runge–Kutta method

    def __post_init__(self) -> None:
        stages = len(self.c)
        if len(self.a) != stages or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"tableau {self.name!r}: a must be strictly lower triangular")
        if len(self.b) != stages or (self.b_err is not None and len(self.b_err) != stages):
            raise ValueError(f"tableau {self.name!r}: b and b_err must have {stages} entries")
        object.__setattr__(self, "dense", self._dense_matrix())

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @property
    def evaluations(self) -> int:
        """Evaluations of f in one step on rows (f(t, y) given): the stages after the first,
        and f(t1, y1) unless FSAL."""
        return self.stages - 1 if self.fsal else self.stages

    @functools.cached_property
    def fsal(self) -> bool:
        """First same as last: the last stage is evaluated at (t1, y1)."""
        return self.stages > 1 and self.c[-1] == 1.0 and tuple(self.a[-1]) == tuple(self.b[:-1])

    @property
    def interpolation(self) -> str:
        if self.dense_basis is not None:
            return "own"
        return "quartic" if self.c_mid is not None else "hermite"

    def _dense_matrix(self) -> np.ndarray:
        stages = self.stages
        if self.dense_basis is not None:
            dense = np.zeros((stages + 1, max(len(p) for p in self.dense_basis)))
            for i, poly in enumerate(self.dense_basis):
                dense[i, : len(poly)] = poly
        else:
            named = _quartic_with_midpoint_named() if self.c_mid is not None else _hermite_named()
            vectors = {
                "f0": np.eye(stages + 1)[0],
                "f1": np.eye(stages + 1)[stages],
                "B": np.append(np.asarray(self.b, dtype=np.float64), 0.0),
            }
            if self.c_mid is not None:
                mid = np.asarray(self.c_mid, dtype=np.float64)  # may include f1's weight
                vectors["M"] = np.pad(mid, (0, stages + 1 - len(mid)))
            dense = sum(np.outer(vectors[name], poly) for name, poly in named.items())
        if self.fsal:
            dense[stages - 1] += dense[stages]
            dense = dense[:stages]
        return dense

    def tensors(self, dtype: torch.dtype, device: torch.device) -> TableauTensors:
        """The coefficients as tensors of the state's dtype on the state's device (cached on
        the tableau per dtype and device: looked up each step, so not through the dataclass's
        hash of every coefficient)."""
        cached = self._tensors.get((dtype, device))
        if cached is None:
            cached = self._tensors[(dtype, device)] = self._make_tensors(dtype, device)
        return cached

    def _make_tensors(self, dtype: torch.dtype, device: torch.device) -> TableauTensors:
        def as_tensor(values: object) -> torch.Tensor:
            """A (1, n) row: the loop's combinations are row × (n, N) matrix products."""
            row = np.asarray(values, dtype=np.float64).reshape(1, -1)
            return torch.as_tensor(row, dtype=dtype, device=device)

        b_err = None if self.b_err is None else as_tensor(self.b_err)
        return TableauTensors(
            a=[as_tensor(row) for row in self.a],
            b=as_tensor(self.b),
            b_err=b_err,
            b_err_head=None if b_err is None else b_err[:, :-1].contiguous(),
            b_err_last=0.0 if self.b_err is None else float(self.b_err[-1]),
            c=list(self.c),
        )


@dataclass(frozen=True)
class TableauTensors:
    """Tableau coefficients on one dtype/device, ready for the step loop: a[i] of shape (1, i),
    b and b_err of shape (1, S); b_err_head (1, S − 1) and b_err_last (a float) are b_err
    without its last weight, and that weight."""

    a: list[torch.Tensor]
    b: torch.Tensor
    b_err: torch.Tensor | None
    b_err_head: torch.Tensor | None
    b_err_last: float
    c: list[float]
