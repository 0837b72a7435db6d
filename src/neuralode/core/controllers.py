"""Step-size controllers: how big the next step is.

A controller sees the stepper only through its error order and error estimate. It owns the
tolerances and the norm (:class:`Tolerance`), the safety factor, the growth and shrink bounds
and the step bounds, all validated when it is made. Its arithmetic is written once for both
kinds of clock (:mod:`neuralode.core.arith`): floats for shared steps, (R,) tensors for
per-sample and compiled solves.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import ODEInputError
from .arith import Arith
from .transforms import truth, unwrap

Norm = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tolerance:
    """Error scale atol + rtol · max(|y0|, |y1|) and the norm of the scaled error.

    The norm is torchdiffeq's: the user's ``norm`` gets the scaled error in the state's own
    structure (a tensor of y0's shape, or a tuple); by default it is the RMS of a tensor state,
    and the largest RMS of the parts of a tuple state.

    Attributes:
        rtol, atol: 0-d or flat (N,) tensors in the working dtype.
        norm: the user's norm (a 0-d result), or None for the default.
        exact_zero: some atol entry is 0: the scale is kept above 0 so that a component that is
            exactly 0 with no error divides 0 by a positive number.
        structure: flat scaled error (N,) → the state's structure (for the user's norm).
        parts: sizes of a tuple state's parts (for the default norm), or None.
        pairs: the flat state is a complex state's real view, (real, imaginary) pairs: as
            torchdiffeq on complex tensors, the scale takes each entry's modulus, and the RMS
            is over entries (|error / scale|² averaged over the complex entries).
    """

    rtol: torch.Tensor
    atol: torch.Tensor
    norm: Norm | None = None
    exact_zero: bool = False
    structure: Callable[[torch.Tensor], Any] | None = None
    parts: tuple[int, ...] | None = None
    pairs: bool = False

    def scale(self, size0: torch.Tensor, size1: torch.Tensor | None = None) -> torch.Tensor:
        """The error scale of a step between rows of sizes ``size0`` and ``size1`` (of
        :meth:`size`; ``size0`` alone without ``size1``), (R, N)."""
        size = size0 if size1 is None else torch.maximum(size0, size1)
        scale = torch.addcmul(self.atol, self.rtol, size)
        return scale.clamp_(min=torch.finfo(scale.dtype).tiny) if self.exact_zero else scale

    def ratio(self, arith: Arith, error: torch.Tensor, scale: torch.Tensor) -> Any:
        """The norm of error / scale of each row ((R, N) → a clock value per row); ≤ 1 is
        within tolerance."""
        scaled = error / scale
        if self.norm is not None:
            flat = scaled.reshape(-1)
            user = self.norm(self.structure(flat) if self.structure else flat)
            return arith.clock(user.reshape(1) if arith.rows else user)
        per_entry = 2 if self.pairs else 1  # a complex entry's two halves count as one entry
        if self.parts is None:
            norm = torch.linalg.vector_norm(scaled, dim=-1 if arith.rows else None)
            return arith.clock(norm) * (1.0 / math.sqrt(scaled.shape[-1] / per_entry))
        rms = [
            torch.linalg.vector_norm(part, dim=-1) / math.sqrt(part.shape[-1] / per_entry)
            for part in scaled.split(self.parts, dim=-1)
        ]
        largest = torch.stack(rms).amax(dim=0)
        return arith.clock(largest if arith.rows else largest[0])

    def size(self, y: torch.Tensor) -> torch.Tensor:
        """|y| of rows y (R, N) per component; for pairs, each entry's modulus, on both of its
        halves."""
        if not self.pairs:
            return y.abs()
        modulus = torch.hypot(y[..., 0::2], y[..., 1::2])
        return modulus.repeat_interleave(2, dim=-1)

    def rows(self, count: int) -> Tolerance:
        """The tolerances of a state split into ``count`` rows (per-component ones reshaped)."""

        def split(x: torch.Tensor) -> torch.Tensor:
            return x if x.dim() == 0 else x.reshape(count, -1)

        return replace(self, rtol=split(self.rtol), atol=split(self.atol))


@dataclass(frozen=True)
class Nudge:
    """One unit in the last place of the time dtype that func receives: f evaluated on the side
    of a discontinuity at t that a step is on (torchdiffeq's ``perturb``)."""

    dtype: torch.dtype

    def toward(self, t: float, side: float) -> float:
        """The time next to t in the direction of ``side`` (+1 or -1)."""
        at = torch.tensor(t, dtype=self.dtype)
        return float(torch.nextafter(at, torch.tensor(side * math.inf, dtype=self.dtype)))


@dataclass(frozen=True)
class Landings:
    """Times that adaptive steps must end on (torchdiffeq's ``step_t`` and ``jump_t``): a step
    that would pass one ends there. At a ``jump_t`` time f may jump: the step ending there
    evaluates f there just before it, and the next step starts from f just after it.

    Attributes:
        points: step_t and jump_t together, ascending.
        jumps: the jump_t times.
        nudge: the time dtype's unit in the last place.
    """

    points: tuple[float, ...]
    jumps: frozenset[float]
    nudge: Nudge

    def next(self, t: float, end: float, direction: float) -> float:
        """The first landing strictly after t in the direction of integration, or ``end``."""
        if direction > 0:
            index = bisect.bisect_right(self.points, t)
            point = self.points[index] if index < len(self.points) else math.inf
            return min(point, end)
        index = bisect.bisect_left(self.points, t) - 1
        point = self.points[index] if index >= 0 else -math.inf
        return max(point, end)


CONTROLLER_COEFFICIENTS: dict[str, tuple[float, float, float]] = {
    "I": (0.0, 1.0, 0.0),
    "PI": (0.4, 0.3, 0.0),
    "PID": (0.2, 0.4, 0.1),
}
"""(pcoeff, icoeff, dcoeff) of the named controllers (``options={"controller": ...}``)."""


@dataclass(frozen=True)
class AdaptiveController:
    """PID step-size control (Söderlind; diffrax's form) on the error ratio r of each step.

    With k = error order + 1 and r₁, r₂ the ratios of the last two accepted steps, an accepted
    step grows (never shrinks) the next one by

        safety · r^(−(p+i+d)/k) · r₁^((p+2d)/k) · r₂^(−d/k),   clipped to [1, ifactor],

    and a rejected step shrinks by safety · r^(−1/k), clipped to [dfactor, 1]. I control is
    (p, i, d) = (0, 1, 0), PI (0.4, 0.3, 0). Step sizes are then clipped to [min_step,
    max_step].

    Attributes:
        error_order: order of the stepper's embedded error estimate.
        tolerance: tolerances and norm.
        safety: in (0, 1].
        ifactor: largest growth, >= 1.
        dfactor: largest shrink, in (0, 1].
        pcoeff, icoeff, dcoeff: the PID coefficients.
        min_step, max_step: bounds on the step size's magnitude (0 and inf by default).
    """

    error_order: int
    tolerance: Tolerance
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    min_step: float = 0.0
    max_step: float = math.inf
    landings: Landings | None = None

    needs_error = True

    def __post_init__(self) -> None:
        checks = {
            "safety": (self.safety, 0.0 < self.safety <= 1.0, "a number in (0, 1]"),
            "ifactor": (self.ifactor, 1.0 <= self.ifactor < math.inf, "a finite number >= 1"),
            "dfactor": (self.dfactor, 0.0 < self.dfactor <= 1.0, "a number in (0, 1]"),
            "min_step": (self.min_step, 0.0 <= self.min_step < math.inf, "finite and >= 0"),
            "max_step": (self.max_step, self.max_step > 0.0, "a number > 0"),
        }
        for name, (value, valid, expected) in checks.items():
            if not valid:
                raise ODEInputError(f"option {name!r} must be {expected}, got {value!r}")
        if self.min_step > self.max_step:
            raise ODEInputError(
                f"option 'min_step' ({self.min_step!r}) exceeds 'max_step' ({self.max_step!r})"
            )
        if self.icoeff + self.pcoeff + self.dcoeff <= 0:
            raise ODEInputError(
                "the controller's coefficients must sum to a positive number (pcoeff + icoeff + "
                f"dcoeff), got {self.pcoeff + self.icoeff + self.dcoeff!r}"
            )
        # The law's exponents, once: of r, r₁ and r₂ on an accepted step, of r on a rejected one.
        k = self.error_order + 1
        p, i, d = self.pcoeff, self.icoeff, self.dcoeff
        object.__setattr__(self, "_exponents", (-(p + i + d) / k, (p + 2 * d) / k, -d / k, -1 / k))
        object.__setattr__(self, "_remembers", bool(p or d))  # (I control's law has no memory)

    def propose(
        self, arith: Arith, ratio: Any, step: Any, memory: tuple[Any, Any], active: Any
    ) -> tuple[Any, Any, tuple[Any, Any]]:
        """(accept, next step magnitude, memory) from the error ratio of an attempted step of
        magnitude ``step``; rows that are not ``active`` keep their memory."""
        grows, by_r1, by_r2, shrinks = self._exponents  # type: ignore[attr-defined]
        accept = active & (ratio <= 1.0)
        safe = arith.clamp_min(ratio, 1e-30)
        r1, r2 = memory
        grow = safe**grows
        if self._remembers:  # type: ignore[attr-defined]
            grow = grow * r1**by_r1 * r2**by_r2
        factor = self.safety * arith.where(accept, grow, safe**shrinks)
        factor = arith.nan_to(arith.where(ratio == 0, self.ifactor, factor), self.dfactor)
        # (a rejected step's factor is below 1 already: a ratio above 1, a safety up to 1)
        factor = arith.clip(factor, self.dfactor, self.ifactor)
        factor = arith.where(accept, arith.clamp_min(factor, 1.0), factor)
        dt = arith.clip(step * factor, self.min_step, self.max_step)
        if self._remembers:  # type: ignore[attr-defined]
            remember = accept & (ratio > 0)
            memory = (
                arith.where(remember, arith.clamp_min(ratio, 1e-4), r1),
                arith.where(remember, r1, r2),
            )
        return accept, dt, memory


@dataclass(frozen=True)
class FixedGrid:
    """Steps that land on a given grid of times (fixed-step solving); never rejects.

    Attributes:
        grid: times sorted in the direction of integration, covering the interval: floats, or
            under torch.func.vmap over t each instance's own grid as a float64 (G,) batched
            tensor for the row clock, padded at its end with the last time (:func:`make_grid`).
        interp: how states at output times between grid points are made (torchdiffeq's
            ``interp``): ``"linear"`` between the step's ends, ``"cubic"`` Hermite from the
            ends and their slopes, or ``"method"``: the method's own interpolant (adaptive
            methods on a grid).
        nudge: with torchdiffeq's ``perturb``, every grid point may be a discontinuity of f:
            each step evaluates f just after its start and just before its end; else None.
    """

    grid: tuple[float, ...] | torch.Tensor
    interp: str = "linear"
    nudge: Nudge | None = None

    needs_error = False

    def __post_init__(self) -> None:
        grid = self.grid
        if torch.is_tensor(grid):  # (one direction for every instance: checked with t)
            direction = 1.0 if truth(grid[-1] >= grid[0]) else -1.0
            keys = direction * grid
            gaps = keys[1:] - keys[:-1]  # (0 between the padding's repeats)
            slack = 1e-9 * torch.where(gaps > 0, gaps, math.inf).amin()
        else:
            direction = 1.0 if grid[-1] >= grid[0] else -1.0
            keys = [direction * g for g in grid]
            # Times within this of a grid point count as on it (absorbs rounding of t + dt).
            slack = 1e-9 * min((b - a for a, b in itertools.pairwise(keys)), default=1.0)
        object.__setattr__(self, "_direction", direction)
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_slack", slack)

    def next_step(self, t: Any) -> Any:
        """The magnitude of the step from t to the next grid point (inf past the grid): a float,
        or (R,) for the (R,) times of the row clock on a tensor grid."""
        keys, direction = self._keys, self._direction  # type: ignore[attr-defined]
        if torch.is_tensor(keys):
            index = torch.searchsorted(keys, direction * t + self._slack, right=True)  # type: ignore[attr-defined]
            ahead = keys[index.clamp(max=keys.shape[0] - 1)] - direction * t
            return torch.where(index < keys.shape[0], ahead, math.inf)
        index = bisect.bisect_right(keys, direction * t + self._slack)  # type: ignore[attr-defined]
        return math.inf if index == len(keys) else keys[index] - direction * t

    def within(self, start: Any, end: Any) -> FixedGrid:
        """The grid restricted to the interval from ``start`` to ``end`` (either direction), with
        both ends included: the steps of a solve over part of the interval, or backwards. On a
        tensor grid, the ends are 0-d tensors (each instance's) and the grid stays padded."""
        if torch.is_tensor(self.grid):
            grid, backwards = self.grid, truth(end < start)
            inner = (grid > torch.minimum(start, end)) & (grid < torch.maximum(start, end))
            ordered = torch.where(inner, grid, end).sort(descending=backwards).values
            return replace(self, grid=torch.cat([start[None], ordered, end[None]]))
        low, high = min(start, end), max(start, end)
        inner = [g for g in self.grid if low < g < high]
        ordered = sorted(inner, reverse=end < start)
        return replace(self, grid=(start, *ordered, end))


def make_grid(
    step_size: float | None,
    grid: Sequence[float] | None,
    times: Sequence[float] | torch.Tensor,
    interp: str = "linear",
    nudge: Nudge | None = None,
) -> FixedGrid:
    """The fixed grid from ``step_size`` (steps of that size from t[0], the last one shorter),
    ``grid`` (given times), or neither (the output times). ``times`` a tensor: every vmap
    instance's output times, each its own grid (from step_size or the times)."""
    if torch.is_tensor(times):
        return FixedGrid(_instance_grid(step_size, times), interp, nudge)
    t0, t1 = times[0], times[-1]
    direction = 1.0 if t1 >= t0 else -1.0
    if step_size is not None:
        # A span over a whole number of steps by less than 10⁻⁶·|t| is rounding (float32 times
        # carry about 6·10⁻⁸·|t|), not a sliver of a step more.
        rounding = 1e-6 * max(abs(t0), abs(t1), step_size)
        n = max(1, math.ceil((abs(t1 - t0) - rounding) / step_size))
        points = (*(t0 + direction * step_size * i for i in range(n)), t1)
    else:
        points = tuple(times if grid is None else grid)
    return FixedGrid(points, interp, nudge)


def _instance_grid(step_size: float | None, times: torch.Tensor) -> torch.Tensor:
    """Every vmap instance's grid, the points :func:`make_grid` makes from its own times with
    the same float64 arithmetic, as a (G,) batched tensor padded with the instance's last
    time (G: the longest grid of all instances)."""
    if step_size is None:
        return times
    t0, t1 = times[0], times[-1]
    direction = 1.0 if truth(t1 >= t0) else -1.0
    largest = torch.maximum(torch.maximum(t0.abs(), t1.abs()), t0.new_tensor(step_size))
    n = (((t1 - t0).abs() - 1e-6 * largest) / step_size).ceil().clamp(min=1)
    index = torch.arange(int(unwrap(n).max()) + 1, dtype=torch.float64, device=times.device)
    return torch.where(index < n, t0 + direction * step_size * index, t1)
