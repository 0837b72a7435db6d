"""The step loop: one loop for every tableau, fixed-step or adaptive.

The loop works on flat 1-D states and keeps time as Python floats (float64), so the only host
synchronisation per step is the error norm that decides acceptance. Output values come from the
dense output of the accepted steps (steps are not clipped to output times, only to the end).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
from .solvers.controller import FixedGrid, IController
from .solvers.tableau import Tableau
from .state import FlatVectorField, StateLayout

Norm = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Tolerance:
    """Error scale atol + rtol · max(|y0|, |y1|) and the norm of the scaled error.

    rtol/atol are 0-d or flat (size,) tensors. The default norm, RMS, is computed as the 2-norm
    against tolerances multiplied by root = √size: the same number, one operation fewer a step.
    """

    rtol: torch.Tensor
    atol: torch.Tensor
    norm: Norm
    root: float = 1.0

    @classmethod
    def make(
        cls,
        layout: StateLayout,
        rtol: float | torch.Tensor,
        atol: float | torch.Tensor,
        norm: Norm | None,
        like: torch.Tensor,
    ) -> Tolerance:
        """Tolerances broadcast to the state, with ``norm`` applied to error / scale (default
        RMS). Raises ValueError when a tolerance does not broadcast."""
        root = 1.0 if norm is not None else math.sqrt(max(layout.size, 1))
        return cls(
            layout.broadcast(rtol, "rtol", like, root),
            layout.broadcast(atol, "atol", like, root),
            norm or torch.linalg.vector_norm,
            root,
        )

    def scale(self, abs_y0: torch.Tensor, abs_y1: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.atol, self.rtol, torch.maximum(abs_y0, abs_y1))

    def as_given(self) -> tuple[float, float]:
        """The tightest (rtol, atol) as the user gave them."""
        return float(self.rtol.min()) / self.root, float(self.atol.min()) / self.root


def initial_step_size(
    field: FlatVectorField,
    t0: float,
    y0: torch.Tensor,
    f0: torch.Tensor,
    error_order: int,
    tolerance: Tolerance,
    direction: float,
) -> float:
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, II.4): one extra evaluation."""
    with torch.no_grad():
        scale = torch.addcmul(tolerance.atol, tolerance.rtol, y0.abs())
        d0, d1 = (float(tolerance.norm(x / scale)) for x in (y0, f0))
        if not math.isfinite(d1):
            raise NonFiniteStateError(f"dy/dt is NaN or Inf at the initial time t={t0:.6g}", t0)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = field(t0 + direction * h0, torch.add(y0, f0, alpha=direction * h0))
        d2 = float(tolerance.norm((f1 - f0) / scale)) / h0
        if max(d1, d2) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / (error_order + 1))
        return min(100 * h0, h1)


def _minimum_step(t: float, span: float) -> float:
    return 10.0 * math.ulp(max(abs(t), span))


@dataclass
class Checkpoint:
    """Where a :class:`StepLoop` stands between steps: enough to rerun it from there."""

    t: float
    dt: float
    next_output: int
    controller: IController | FixedGrid


class StepLoop:
    """Solves from ``times[0]`` through ``times[-1]``, collecting the states at ``times``.

    Args:
        field: the vector field on flat states.
        y0: initial state, shape (N,).
        f0: field(times[0], y0), shape (N,).
        times: strictly monotonic output times (floats, in units of t).
        tableau: the Runge–Kutta method.
        controller: decides acceptance and the next step size (its memory lives in it).
        first_dt: magnitude of the first step.
        tolerance: error scale and norm (used when the controller needs an error estimate).
        max_num_steps: bound on attempted steps.

    Counters go to ``field.stats``.
    """

    def __init__(
        self,
        field: FlatVectorField,
        y0: torch.Tensor,
        f0: torch.Tensor | None,
        times: Sequence[float],
        tableau: Tableau,
        controller: IController | FixedGrid,
        first_dt: float,
        tolerance: Tolerance,
        max_num_steps: int,
    ) -> None:
        self.field, self.times, self.tableau = field, list(times), tableau
        self.controller, self.tolerance = controller, tolerance
        self.max_num_steps = max_num_steps
        self.coefficients = tableau.tensors(y0.dtype, y0.device)
        self.direction = 1.0 if times[-1] >= times[0] else -1.0
        span = abs(times[-1] - times[0])
        self.span = span if math.isfinite(span) else 0.0  # (an open-ended solve: t itself)
        # States are (1, N) rows inside the loop: each stage is one row-times-matrix product.
        self.t, self.y, self.dt = times[0], y0.view(1, -1), first_dt
        self.f = None if f0 is None else f0.view(1, -1)
        self.next_output = 1

    @property
    def done(self) -> bool:
        return self.next_output >= len(self.times)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.t, self.dt, self.next_output, copy.copy(self.controller))

    def restart(self, checkpoint: Checkpoint, y: torch.Tensor) -> None:
        """Continue from a checkpoint with state y, (1, N) (dy/dt is evaluated afresh)."""
        self.t, self.dt, self.next_output = checkpoint.t, checkpoint.dt, checkpoint.next_output
        self.controller = copy.copy(checkpoint.controller)
        self.y, self.f = y, None

    def run(
        self, max_accepted: int | None = None, watch: Callable[[AcceptedStep], bool] | None = None
    ) -> list[torch.Tensor]:
        """Take steps until the end (or ``max_accepted`` accepted steps, or until ``watch``,
        shown each accepted step, returns True); return the states at the output times
        passed, as (m, N) blocks in time order."""
        times, t_end, direction = self.times, self.times[-1], self.direction
        controller, stats = self.controller, self.field.stats
        needs_error = controller.needs_error
        t, y, f, dt, next_output = self.t, self.y, self.f, self.dt, self.next_output
        abs_y = y.detach().abs() if needs_error else None
        outputs: list[torch.Tensor] = []
        accepted = 0
        while next_output < len(times) and (max_accepted is None or accepted < max_accepted):
            if stats.n_steps >= self.max_num_steps:
                self._raise_max_steps(t)
            t1 = t + direction * dt
            target = times[next_output]
            near_target = math.isfinite(target) and abs(t1 - target) <= 4 * math.ulp(target)
            if direction * (t1 - t_end) >= 0 or near_target:
                # Land exactly on the end (never step past it) or on an output time rounding missed.
                t1 = t_end if direction * (t1 - t_end) >= 0 else target
            step = t1 - t
            if f is None:
                f = self.field(t, y)
            k, y1 = self._stages(t, y, f, step)
            with torch.no_grad():
                abs_y1 = y1.abs() if needs_error else None
                check = self._error_ratio(step, k, abs_y, abs_y1) if needs_error else 0.0
                if not needs_error:
                    self._check_finite(t, t1, y1)
            accept, dt_next = controller.propose(check, abs(step), t1)
            if not accept:
                stats.n_rejected += 1
                if dt_next < _minimum_step(t, self.span):
                    self._raise_underflow(t, dt_next, check)
                dt = dt_next
                continue

            stats.n_accepted += 1
            stats.last_dt = abs(step)
            accepted += 1
            f1 = k[-1:] if self.tableau.fsal else None
            if watch is not None:
                accepted_step = AcceptedStep(self, t, y, t1, y1, k, f1)
                stop = watch(accepted_step)
                f1 = accepted_step.end_derivative  # evaluated by the watcher, perhaps
                if stop:
                    self.t, self.y, self.f, self.dt = t1, y1, f1, dt_next
                    return outputs
            first = next_output
            while next_output < len(times) and direction * (times[next_output] - t1) <= 0:
                next_output += 1
            interior = [times[j] for j in range(first, next_output) if times[j] != t1]
            if interior:
                if f1 is None:
                    f1 = self.field(t1, y1)
                outputs.append(self._interpolate(t, y, k, f1, step, interior))
            if next_output > first and times[next_output - 1] == t1:
                outputs.append(y1)
            t, y, f, abs_y, dt = t1, y1, f1, abs_y1, dt_next
        self.t, self.y, self.f, self.dt, self.next_output = t, y, f, dt, next_output
        return outputs

    def _stages(
        self, t: float, y: torch.Tensor, f: torch.Tensor, step: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stages k, (S, N), of one step of size ``step`` from (t, y) with f = f(t, y), and
        the solution y1, (1, N), at its end."""
        tableau, coefficients = self.tableau, self.coefficients
        a_rows, c = coefficients.a, coefficients.c
        ks = [f]
        y_stage = y
        for i in range(1, tableau.stages):
            y_stage = torch.addmm(y, a_rows[i], torch.cat(ks), alpha=step)
            ks.append(self.field(t + c[i] * step, y_stage))
        k = torch.cat(ks)
        if tableau.fsal:  # the last stage was evaluated at the solution
            return k, y_stage
        return k, torch.addmm(y, coefficients.b, k, alpha=step)

    def _error_ratio(
        self, step: float, k: torch.Tensor, abs_y0: torch.Tensor, abs_y1: torch.Tensor
    ) -> float:
        """Norm of the error estimate scaled by the tolerance (≤ 1: accept)."""
        error = torch.mm(self.coefficients.b_err, k).div_(self.tolerance.scale(abs_y0, abs_y1))
        return abs(step) * float(self.tolerance.norm(error))

    def _interpolate(
        self,
        t: float,
        y: torch.Tensor,
        k: torch.Tensor,
        f1: torch.Tensor,
        step: float,
        times: list[float],
    ) -> torch.Tensor:
        """Dense output of the step from (t, y): the states at ``times`` inside it, (m, N)."""
        basis = k if self.tableau.fsal else torch.cat([k, f1])
        dense = self.tableau.dense
        theta = (np.asarray(times) - t) / step
        powers = theta[:, None] ** np.arange(1, dense.shape[1] + 1)
        weights = torch.as_tensor(powers @ dense.T, dtype=y.dtype, device=y.device)
        return torch.addmm(y, weights, basis, alpha=step)

    def _check_finite(self, t: float, t1: float, y1: torch.Tensor) -> None:
        """Fixed steps have no error estimate to catch NaN/Inf: check the state itself."""
        if not math.isfinite(float(torch.linalg.vector_norm(y1, math.inf))):
            raise NonFiniteStateError(
                f"the state became NaN or Inf in the step from t={t:.6g} to t={t1:.6g}", t
            )

    def _raise_max_steps(self, t: float) -> None:
        raise MaxStepsExceededError(
            f"max_num_steps={self.max_num_steps} exceeded at t={t:.6g} (integrating from "
            f"t={self.times[0]:.6g} to t={self.times[-1]:.6g}) after {self.field.stats.nfe} "
            "function evaluations; raise options={'max_num_steps': ...}, loosen rtol/atol, or "
            "use method='rosenbrock23' if the problem is stiff",
            t,
        )

    def _raise_underflow(self, t: float, dt: float, error_ratio: float) -> None:
        if not math.isfinite(error_ratio):
            raise NonFiniteStateError(
                f"the state became NaN or Inf at t={t:.6g}: every step from there produced "
                f"non-finite values, down to dt={dt:.3g}",
                t,
            )
        raise StepSizeUnderflowError(
            f"step size underflow at t={t:.6g}: dt={dt:.3g} is below the resolution of t; the "
            "problem may be stiff or the vector field singular or discontinuous there",
            t,
        )


@dataclass
class AcceptedStep:
    """One accepted step from (t, y) to (t1, y1), (1, N) states, as a watcher of
    :meth:`StepLoop.run` sees it, with its stages k (S, N) for the dense output."""

    loop: StepLoop
    t: float
    y: torch.Tensor
    t1: float
    y1: torch.Tensor
    k: torch.Tensor
    end_derivative: torch.Tensor | None  # f(t1, y1) if the method evaluated it

    @property
    def f1(self) -> torch.Tensor:
        """dy/dt at the step's end, (1, N) (evaluated once, if the method has not)."""
        if self.end_derivative is None:
            self.end_derivative = self.loop.field(self.t1, self.y1)
        return self.end_derivative

    def at(self, times: list[float]) -> torch.Tensor:
        """The dense output at ``times`` inside the step: (len(times), N)."""
        step = self.t1 - self.t
        return self.loop._interpolate(self.t, self.y, self.k, self.f1, step, times)


def integrate(loop: StepLoop) -> torch.Tensor:
    """Run a loop to the end: states at all its times, shape (len(times), N)."""
    return torch.cat([loop.y, *loop.run()])
