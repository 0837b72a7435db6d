"""Implicit Runge–Kutta methods on a fixed grid (torchdiffeq's ``fixed_grid_implicit``).

An s-stage implicit method has a full s × s matrix A: its stages K solve

    K_i = f(t + c_i h, y + h Σ_j A_ij K_j),    y1 = y + h Σ_i b_i K_i,

a nonlinear system that :class:`~neuralode.core.implicit.ImplicitRK` solves by Newton's
method. Coefficients from Hairer & Wanner, Solving ODEs II, IV.5 (Gauss–Legendre, Radau IIA),
Alexander (1977) / Kennedy & Carpenter (2016) for the L-stable two-stage SDIRK, and Bank et
al. (1985) / Hosea & Shampine (1996) for TR-BDF2 (γ = 2 − √2, written with torchdiffeq's
half-γ d = 1 − √2/2 on the diagonal).

=================  =====  ======  ============================================
method             order  stages  kind
=================  =====  ======  ============================================
implicit_euler     1      1       Radau IIA (s = 1), L-stable
implicit_midpoint  2      1       Gauss–Legendre (s = 1), A-stable, symplectic
trapezoid          2      2       Lobatto IIIA (DIRK, explicit first stage)
radauIIA3          3      2       Radau IIA, L-stable
gl4                4      2       Gauss–Legendre, A-stable, symplectic
radauIIA5          5      3       Radau IIA, L-stable
gl6                6      3       Gauss–Legendre, A-stable, symplectic
sdirk2             2      2       SDIRK, γ = 1 − √2/2, L-stable
trbdf2             2      3       TR-BDF2 (ESDIRK), L-stable
=================  =====  ======  ============================================

As a :class:`Tableau` a method describes what its stepper returns: the vectors
(f0, K_1, …, K_s), f0 = f(t, y), with nodes (0, c), weights (0, b) and no explicit stage
matrix (the stepper reads ``stage_a``); the dense output is the Hermite cubic from f0, f1
and y1. A stiffly accurate method (last row of A equal to b, c_s = 1) has K_s = f(t1, y1) up
to the Newton tolerance and is FSAL.

torchdiffeq's ``gl4`` puts both of its nodes at 1/2 − √3/6; here the second is 1/2 + √3/6
(the Gauss node), which only changes non-autonomous problems, where torchdiffeq's ``gl4``
drops to order 2 and this one has order 4.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

from .tableau import Tableau

Matrix = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class ImplicitMethod(Tableau):
    """An implicit Runge–Kutta method: the stages' own nodes, matrix and weights besides the
    :class:`Tableau` describing the stepper's output (f0, K_1, …, K_s)."""

    stage_c: tuple[float, ...] = ()
    stage_a: Matrix = ()
    stage_b: tuple[float, ...] = ()
    implicit: ClassVar[bool] = True

    @property
    def fsal(self) -> bool:  # type: ignore[override]
        """Stiffly accurate with c_s = 1: the last stage is f(t1, y1)."""
        return self.stage_c[-1] == 1.0 and tuple(self.stage_a[-1]) == tuple(self.stage_b)

    @functools.cached_property
    def diagonal(self) -> bool:
        """A is lower triangular (DIRK): the stages can be solved one after another."""
        s = len(self.stage_c)
        return all(self.stage_a[i][j] == 0.0 for i in range(s) for j in range(i + 1, s))

    @functools.cached_property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """The groups of stages solved together, in order: each stage alone for a DIRK method,
        all stages at once otherwise."""
        s = len(self.stage_c)
        return tuple((i,) for i in range(s)) if self.diagonal else (tuple(range(s)),)


def implicit_method(
    name: str, order: int, c: tuple[float, ...], a: Matrix, b: tuple[float, ...]
) -> ImplicitMethod:
    """The :class:`ImplicitMethod` with stage nodes c, matrix a (s × s) and weights b."""
    s = len(c)
    if len(a) != s or any(len(row) != s for row in a) or len(b) != s:
        raise ValueError(f"implicit method {name!r}: a must be {s} × {s} and b have {s} entries")
    return ImplicitMethod(
        name=name,
        order=order,
        c=(0.0, *c),
        a=tuple((0.0,) * i for i in range(s + 1)),
        b=(0.0, *b),
        stage_c=tuple(c),
        stage_a=tuple(tuple(row) for row in a),
        stage_b=tuple(b),
    )


_R3, _R6, _R15 = math.sqrt(3.0), math.sqrt(6.0), math.sqrt(15.0)
_SDIRK_GAMMA = 1.0 - math.sqrt(2.0) / 2.0  # the L-stable root of γ² − 2γ + 1/2 = 0
_TRBDF2_D = 1.0 - math.sqrt(2.0) / 2.0  # half of TR-BDF2's γ = 2 − √2
_TRBDF2_W = math.sqrt(2.0) / 4.0

IMPLICIT_EULER = implicit_method("implicit_euler", 1, (1.0,), ((1.0,),), (1.0,))
IMPLICIT_MIDPOINT = implicit_method("implicit_midpoint", 2, (0.5,), ((0.5,),), (1.0,))
TRAPEZOID = implicit_method("trapezoid", 2, (0.0, 1.0), ((0.0, 0.0), (0.5, 0.5)), (0.5, 0.5))
RADAU_IIA3 = implicit_method(
    "radauIIA3", 3, (1 / 3, 1.0), ((5 / 12, -1 / 12), (3 / 4, 1 / 4)), (3 / 4, 1 / 4)
)
GL4 = implicit_method(
    "gl4",
    4,
    (0.5 - _R3 / 6, 0.5 + _R3 / 6),
    ((0.25, 0.25 - _R3 / 6), (0.25 + _R3 / 6, 0.25)),
    (0.5, 0.5),
)
RADAU_IIA5 = implicit_method(
    "radauIIA5",
    5,
    ((4 - _R6) / 10, (4 + _R6) / 10, 1.0),
    (
        ((88 - 7 * _R6) / 360, (296 - 169 * _R6) / 1800, (-2 + 3 * _R6) / 225),
        ((296 + 169 * _R6) / 1800, (88 + 7 * _R6) / 360, (-2 - 3 * _R6) / 225),
        ((16 - _R6) / 36, (16 + _R6) / 36, 1 / 9),
    ),
    ((16 - _R6) / 36, (16 + _R6) / 36, 1 / 9),
)
GL6 = implicit_method(
    "gl6",
    6,
    (0.5 - _R15 / 10, 0.5, 0.5 + _R15 / 10),
    (
        (5 / 36, 2 / 9 - _R15 / 15, 5 / 36 - _R15 / 30),
        (5 / 36 + _R15 / 24, 2 / 9, 5 / 36 - _R15 / 24),
        (5 / 36 + _R15 / 30, 2 / 9 + _R15 / 15, 5 / 36),
    ),
    (5 / 18, 4 / 9, 5 / 18),
)
SDIRK2 = implicit_method(
    "sdirk2",
    2,
    (_SDIRK_GAMMA, 1.0),
    ((_SDIRK_GAMMA, 0.0), (1 - _SDIRK_GAMMA, _SDIRK_GAMMA)),
    (1 - _SDIRK_GAMMA, _SDIRK_GAMMA),
)
TRBDF2 = implicit_method(
    "trbdf2",
    2,
    (0.0, 2 * _TRBDF2_D, 1.0),
    ((0.0, 0.0, 0.0), (_TRBDF2_D, _TRBDF2_D, 0.0), (_TRBDF2_W, _TRBDF2_W, _TRBDF2_D)),
    (_TRBDF2_W, _TRBDF2_W, _TRBDF2_D),
)

IMPLICIT_METHODS: tuple[ImplicitMethod, ...] = (
    IMPLICIT_EULER,
    IMPLICIT_MIDPOINT,
    TRAPEZOID,
    RADAU_IIA3,
    GL4,
    RADAU_IIA5,
    GL6,
    SDIRK2,
    TRBDF2,
)
