"""Step-size controllers: given the last step's error, accept it or not and size the next one.

Every controller has one method, ``propose(error_ratio, dt, t1) -> (accept, next_dt)``, where
``error_ratio`` is the scaled error norm of the step (≤ 1 means within tolerance; NaN/Inf when the
step produced non-finite values), ``dt`` its magnitude and ``t1`` the time it reached. Controllers
keep only their own memory (the PI controller's previous error), so make one per solve.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class IController:
    """Integral (elementary) control: dt ← dt · safety · ratio^(−1/k), k = error order + 1.

    The factor is clipped to [dfactor, ifactor]; an accepted step never shrinks the next one.
    """

    error_order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2

    needs_error = True

    def propose(self, error_ratio: float, dt: float, t1: float) -> tuple[bool, float]:
        if not math.isfinite(error_ratio):
            return False, dt * self.dfactor
        accept = error_ratio <= 1.0
        factor = self._factor(error_ratio, accept)
        low, high = (1.0, self.ifactor) if accept else (self.dfactor, 1.0)
        return accept, dt * min(high, max(low, factor))

    def _factor(self, error_ratio: float, accept: bool) -> float:
        if error_ratio == 0.0:
            return self.ifactor
        return self.safety * error_ratio ** (-1.0 / (self.error_order + 1))


@dataclass
class PIController(IController):
    """Proportional–integral control (Gustafsson): on an accepted step
    factor = safety · ratio^(−β1/k) · ratio_prev^(β2/k); a rejected step falls back to I control.
    Smoother step sequences and fewer rejections than I control on most problems."""

    beta1: float = 0.7
    beta2: float = 0.4
    _previous_ratio: float = 1.0

    def _factor(self, error_ratio: float, accept: bool) -> float:
        if not accept or error_ratio == 0.0:
            return super()._factor(error_ratio, accept)
        k = self.error_order + 1
        factor = (
            self.safety
            * error_ratio ** (-self.beta1 / k)
            * self._previous_ratio ** (self.beta2 / k)
        )
        self._previous_ratio = max(error_ratio, 1e-4)
        return factor


class FixedGrid:
    """Steps that land on a given grid of times (fixed-step solving); never rejects.

    ``grid`` is sorted in the direction of integration and covers the interval of integration.
    """

    needs_error = False

    def __init__(self, grid: Sequence[float]) -> None:
        self._direction = 1.0 if grid[-1] >= grid[0] else -1.0
        self._keys = [self._direction * g for g in grid]
        # Times within this of a grid point count as on it (absorbs rounding of t + dt).
        self._slack = 1e-9 * min((b - a for a, b in itertools.pairwise(self._keys)), default=1.0)

    def first_dt(self, t0: float) -> float:
        return self.propose(0.0, 0.0, t0)[1]

    def propose(self, error_ratio: float, dt: float, t1: float) -> tuple[bool, float]:
        index = bisect.bisect_right(self._keys, self._direction * t1 + self._slack)
        if index == len(self._keys):
            return True, math.inf  # past the grid: the loop clips to the end time
        return True, self._keys[index] - self._direction * t1


CONTROLLERS: dict[str, type[IController]] = {"I": IController, "PI": PIController}
