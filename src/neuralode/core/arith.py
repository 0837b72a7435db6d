"""The loop's clock arithmetic, written once for two kinds of number.

The loop (:mod:`neuralode.core.loop`) computes times, step sizes, acceptance and the controller's
memory with the operations below. With :data:`SCALAR` they are Python floats and bools: a
shared-step solve pays one host synchronisation per step (the error norm) and no tensor
operation on its clock. With :data:`ROWS` they are (R,) tensors, one entry per row, with no
branch on a value: per-sample steps and the compiled loop, which must not synchronise.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .transforms import unwrap


class ScalarArith:
    """Clock values as Python floats and bools (one row). Where a builtin does the operation it
    is the operation itself (a call without a Python frame: the loop calls these every step)."""

    rows = False
    minimum = staticmethod(min)
    clamp_min = staticmethod(max)  # max(x, low): NaN stays NaN, as with tensors
    isfinite = staticmethod(math.isfinite)
    absolute = staticmethod(abs)
    clock = staticmethod(float)  # a (1,) or 0-d tensor norm → float: a step's host sync
    count = staticmethod(int)

    @staticmethod
    def where(condition: Any, a: Any, b: Any) -> Any:
        return a if condition else b

    @staticmethod
    def clip(x: float, low: float, high: float) -> float:
        return min(high, max(low, x))

    @staticmethod
    def nan_to(x: float, value: float) -> float:
        return value if math.isnan(x) else x

    @staticmethod
    def and_not(a: bool, b: bool) -> bool:
        return a and not b

    @staticmethod
    def step_factor(step: float, like: torch.Tensor) -> float:
        return step

    @staticmethod
    def advance(y: torch.Tensor, step: float, f: torch.Tensor) -> torch.Tensor:
        """y + step · f (one operation)."""
        return torch.add(y, f, alpha=step)


class RowArith:
    """Clock values as (R,) tensors (float64 times, bool flags, int64 counts)."""

    rows = True
    where = staticmethod(torch.where)
    minimum = staticmethod(torch.minimum)

    @staticmethod
    def clip(x: torch.Tensor, low: Any, high: Any) -> torch.Tensor:
        return torch.clamp(x, low, high)

    @staticmethod
    def clamp_min(x: torch.Tensor, low: float) -> torch.Tensor:
        return x.clamp(min=low)

    @staticmethod
    def nan_to(x: torch.Tensor, value: float) -> torch.Tensor:
        return x.nan_to_num(value)

    isfinite = staticmethod(torch.isfinite)

    absolute = staticmethod(torch.abs)

    @staticmethod
    def clock(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64)

    @staticmethod
    def count(flag: torch.Tensor) -> torch.Tensor:
        return flag.long()

    @staticmethod
    def and_not(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a & ~b

    @staticmethod
    def step_factor(step: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per-row step sizes as a (R, 1) column in the state's dtype."""
        return step.to(like.dtype)[:, None]

    @staticmethod
    def advance(y: torch.Tensor, step: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """y + step · f per row."""
        return torch.addcmul(y, RowArith.step_factor(step, y), f)


class VmapScalarArith(ScalarArith):
    """One row under torch.func.vmap on a fixed grid: the one value asked of the state, whether
    it is finite, is asked of all instances at once (their largest)."""

    @staticmethod
    def clock(x: torch.Tensor) -> float:
        return float(unwrap(x).max())


SCALAR = ScalarArith()
VMAP_SCALAR = VmapScalarArith()
ROWS = RowArith()
Arith = ScalarArith | RowArith
