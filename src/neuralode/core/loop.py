"""The one step loop.

From (t0, y0) to the last output time: size the first step (Hairer's starting step), then attempt
steps; each attempt is the stepper's step, the controller's verdict and next step size, the
dense output at every output time the accepted step passed, and a status per row when the solve
cannot go on (step-size underflow, NaN/Inf, too many steps). The loop never raises: failures are
statuses, which :meth:`Loop.failure` turns into the errors of :mod:`neuralode.errors`.

One iteration (:meth:`Loop.attempt`) is written once, over rows of the state and a clock whose
arithmetic (:mod:`neuralode.core.arith`) is either

* :data:`~neuralode.core.arith.SCALAR`: one row, Python floats; outputs are collected as the
  steps pass them; f(t1, y1) of a method that does not provide it is evaluated only when needed.
  The shared-step eager solve, implicit steppers, events and checkpointed segments run so.
* :data:`~neuralode.core.arith.ROWS`: R rows, (R,) tensors, masked updates and no branch on a
  value: per-sample steps (R = B), and the compiled solve (:mod:`neuralode.core.compiled`),
  which runs the same iteration inside ``torch.compile`` as one ``while_loop``.

Time is kept in float64 whatever the state's dtype. Step-size control runs under no_grad.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..errors import (
    ConvergenceError,
    MaxStepsExceededError,
    NonFiniteStateError,
    SolverError,
    StepSizeUnderflowError,
)
from .arith import Arith
from .callbacks import Callbacks
from .controllers import AdaptiveController, FixedGrid
from .steppers import Field, Stepper, dense_weights, hermite, interpolate, untracked
from .transforms import is_wrapped, truth, unwrap

RUNNING, UNDERFLOW, NONFINITE, MAX_STEPS, STOPPED, NOT_CONVERGED = 0, 1, 2, 3, 4, 5
"""Row statuses: 0 while running or done, else why the row stopped short of the end (STOPPED:
a watcher of the accepted steps ended the solve; NOT_CONVERGED: an implicit stepper's stage
equations were not solved, one row only)."""


class Carry(NamedTuple):
    """Where the loop stands between iterations; clock values are floats (one row) or (R,)
    tensors, states (R, N).

    Attributes:
        t: time reached; dt: magnitude of the next step; memory: the controller's (r1, r2);
        last_dt: magnitude of the last accepted step (NaN before one).
        y, f: the state and dy/dt at t (f None: evaluate it when needed).
        size: |y| as the error scale measures it (:meth:`Tolerance.size`), kept from step to
            step on one row with adaptive steps; else None (rows: masking it would cost what
            keeping it saves).
        outputs: scalar clock: tuple of (m, N) blocks of states at the output times passed;
            rows: (T, R, N) with the passed times filled in.
        next_output: scalar clock: index of the next output time (rows: None).
        accepted, rejected, status: counts and status of each row; iterations: attempts.
    """

    t: Any
    dt: Any
    memory: tuple[Any, Any]
    last_dt: Any
    y: torch.Tensor
    f: torch.Tensor | None
    size: torch.Tensor | None
    outputs: Any
    next_output: int | None
    accepted: Any
    rejected: Any
    status: Any
    iterations: Any


@dataclass
class AcceptedStep:
    """One accepted step from (t, y) to (t1, y1), (1, N) rows, as a watcher of
    :meth:`Loop.run` sees it (scalar clock)."""

    loop: Loop
    t: float
    y: torch.Tensor
    t1: float
    y1: torch.Tensor
    ks: list[torch.Tensor]
    end_derivative: torch.Tensor | None  # f(t1, y1) if the method evaluated it
    field: Field  # the step's field (f just before t1 where f jumps there)

    @property
    def f1(self) -> torch.Tensor:
        """dy/dt at the step's end, (1, N) (evaluated once, if the method has not)."""
        if self.end_derivative is None:
            self.end_derivative = self.field(self.t1, self.y1)
        return self.end_derivative

    def at(self, times: list[float]) -> torch.Tensor:
        """The dense output at ``times`` inside the step: (len(times), N)."""
        loop = self.loop
        f1 = self.f1 if loop.needs_end_derivative else None
        return loop.dense(self.t, self.y, self.t1 - self.t, self.ks, self.y1, f1, times)


Watch = Callable[[AcceptedStep], bool]


class Loop:
    """Solves from ``times[0]`` through ``times[-1]``.

    Args:
        stepper: what a step is (:class:`~neuralode.core.steppers.Stepper`).
        controller: an adaptive controller or a fixed grid.
        times: strictly monotonic output times, floats (the last may be ±inf: an event search).
        field: the vector field on rows (see :data:`~neuralode.core.steppers.Field`).
        arith: the clock's arithmetic (scalar or rows).
        max_num_steps: bound on attempted steps (iterations).
        callbacks: torchdiffeq's step callbacks of the field (one row), or None.
    """

    def __init__(
        self,
        stepper: Stepper,
        controller: AdaptiveController | FixedGrid,
        times: Sequence[float],
        field: Field,
        arith: Arith,
        max_num_steps: int,
        callbacks: Callbacks | None = None,
    ) -> None:
        self.stepper, self.tableau = stepper, stepper.tableau
        self.callbacks = callbacks
        self.controller, self.field, self.arith = controller, field, arith
        self.times, self.max_num_steps = list(times), max_num_steps
        first, last = self.times[0], self.times[-1]
        self.direction = 1.0 if last >= first else -1.0
        span = abs(last - first)
        self.span = span if math.isfinite(span) else 0.0  # (an open-ended solve: t itself)
        self.t_end: Any = last
        self.fsal = self.tableau.fsal
        # f(t1, y1) is evaluated lazily on one row; rows evaluate it every iteration.
        self.lazy_end = not arith.rows and not self.fsal
        self.fixed = fixed = isinstance(controller, FixedGrid)
        self.interp = controller.interp if fixed else "method"
        self.needs_end_derivative = self.interp != "linear"  # for the dense output
        # Where f may jump (one row): every grid point with perturb, or jump_t's times.
        self.landings = None if fixed or arith.rows else controller.landings
        self.nudge = controller.nudge if fixed else getattr(self.landings, "nudge", None)

    def on(self, device: torch.device, times: torch.Tensor | None = None) -> Loop:
        """Rows: the output times and end as float64 tensors on ``device`` (separate tensors:
        views of one would alias inside the compiled loop). ``times``: the output times as a
        float64 (T,) tensor where the floats are not every instance's (torch.func.vmap over t:
        each instance its own times, end and resolution; the direction is shared)."""
        self.dense_rows = dense_weights(self.tableau, device)
        if times is None:  # (the same numbers from the floats: two tensors made, not ten)
            first, last = self.times[0], self.times[-1]
            self.times_tensor = torch.tensor(self.times, dtype=torch.float64, device=device)
            self.t_end = torch.tensor(last, dtype=torch.float64, device=device)
            resolution = _ten_ulp(max(abs(first), abs(last), abs(last - first)))
            self.resolution = torch.tensor(resolution, dtype=torch.float64, device=device)
            return self
        self.times_tensor, self.t_end = times, times[-1].clone()
        first, last = times[0], times[-1]
        self.resolution = _ten_ulp(torch.maximum(torch.maximum(first.abs(), last.abs()),
                                                 (last - first).abs()))  # fmt: skip
        return self

    def _resolution(self, t: Any) -> Any:
        """Step sizes below this underflow: 10 ulp of the larger of |t| and the span (rows: of
        the interval's ends, once, so the compiled iteration does not recompute it)."""
        if self.arith.rows:
            return self.resolution
        return _ten_ulp(max(abs(t), self.span))

    # -- before the first step ---------------------------------------------------------------

    def start(self, y0: torch.Tensor, f0: torch.Tensor, first_dt: Any) -> Carry:
        """The carry before the first step from rows y0, f0 (R, N); ``first_dt`` a float or (R,)
        tensor, or None for the starting step of :meth:`initial_step` (one more evaluation)."""
        arith, rows = self.arith, y0.shape[0]
        status: Any = RUNNING
        size = None
        if not self.fixed:
            with untracked():
                size = self.controller.tolerance.size(y0)
        if arith.rows:
            t = self.times_tensor[0].expand(rows)
            outputs = torch.cat([y0[None], y0.new_zeros((len(self.times) - 1, *y0.shape))])
            zero = torch.zeros(rows, dtype=torch.long, device=y0.device)
            status = torch.where(torch.isfinite(f0).all(dim=1), zero, NONFINITE)
            counts: tuple[Any, Any, Any] = (zero, zero, zero.new_zeros(()))
            one = torch.ones_like(t)
            memory, last_dt = (one, one), torch.full_like(t, math.nan)
        else:
            t, outputs = self.times[0], (y0,)
            counts = (0, 0, 0)
            memory, last_dt = (1.0, 1.0), math.nan
        if self.fixed:
            dt = self.controller.next_step(t)
        elif first_dt is not None:
            dt = first_dt
        else:
            dt, finite = self.initial_step(t, y0, f0, size)
            status = arith.where(finite, status, NONFINITE)
        next_output = None if arith.rows else 1
        accepted, rejected, iterations = counts
        size = None if arith.rows else size
        return Carry(t, dt, memory, last_dt, y0, f0, size, outputs, next_output, accepted,
                     rejected, status, iterations)  # fmt: skip

    def initial_step(
        self, t: Any, y: torch.Tensor, f: torch.Tensor, size: torch.Tensor
    ) -> tuple[Any, Any]:
        """Hairer, Nørsett & Wanner's starting step of each row (Solving ODEs I, II.4), and
        whether f is finite; ``size``: |y| (:meth:`Tolerance.size`). One extra evaluation."""
        arith, tolerance, direction = self.arith, self.controller.tolerance, self.direction
        with untracked():
            scale = tolerance.scale(size)
            d0, d1 = tolerance.ratio(arith, y, scale), tolerance.ratio(arith, f, scale)
            finite = arith.isfinite(d1)
            if not arith.rows and not finite:  # an infinite relative slope, or a NaN in f?
                finite = bool(torch.isfinite(f).all())
            small = (d0 < 1e-5) | (d1 < 1e-5)
            h0 = arith.where(small, 1e-6, 0.01 * d0 / arith.where(small, 1.0, d1))
            h0 = arith.where(arith.isfinite(h0) & (h0 > 0), h0, 1e-6)
            step = direction * h0
            f1 = self.field(t + step, arith.advance(y, step, f))
            d2 = tolerance.ratio(arith, f1 - f, scale) / h0
            largest = arith.clamp_min(d1, d2)
            order = self.controller.error_order
            h1 = arith.where(
                largest <= 1e-15,
                arith.clamp_min(h0 * 1e-3, 1e-6),
                (0.01 / arith.clamp_min(largest, 1e-300)) ** (1.0 / (order + 1)),
            )
            h = arith.minimum(100 * h0, h1)
            h = arith.where(arith.isfinite(h) & (h > 0), h, 1e-6)
            if arith.rows:  # (no tangent either: forward mode treats steps as constants)
                h = h.detach()
            return arith.clip(h, self.controller.min_step, self.controller.max_step), finite

    # -- the iteration -----------------------------------------------------------------------

    def running(self, c: Carry) -> Any:
        """Some row is short of the end, has no failure status, and the step bound is not
        reached (a bool, or a 0-d bool tensor for rows)."""
        active = (self.direction * (self.t_end - c.t) > 0) & (c.status == RUNNING)
        if self.arith.rows:
            return active.any() & (c.iterations < self.max_num_steps)
        return active and c.iterations < self.max_num_steps

    def goes_on(self, c: Carry) -> bool:
        """:meth:`running` asked on the host (under vmap: of all instances at once)."""
        holds = self.running(c)
        return truth(holds) if self.arith.rows else holds

    def attempt(self, c: Carry, watch: Watch | None = None) -> Carry:
        """One attempted step of every row that is running (rows that are not step by 0)."""
        arith, direction = self.arith, self.direction
        remaining = direction * (self.t_end - c.t)
        active = (remaining > 0) & (c.status == RUNNING)
        target, bound = self.t_end, remaining
        if self.landings is not None:
            target = self.landings.next(c.t, self.t_end, direction)
            bound = direction * (target - c.t)
        last = active & (c.dt >= bound)
        step = direction * arith.where(active, arith.minimum(c.dt, bound), 0.0)
        t1 = arith.where(last, target, c.t + step)
        if self.callbacks is not None:
            self.callbacks.before(c.t, c.y, step)
        f = self.field(c.t, c.y) if c.f is None else c.f
        jump = self.nudge is not None and self._jump(t1, last)
        field = self.field if not jump else self._before(c.t + step, t1)
        ks, y1 = self.stepper.step(field, arith, c.t, c.y, f, step)
        f1 = ks[-1] if self.fsal else (None if self.lazy_end else field(t1, y1))
        magnitude = arith.absolute(step)
        size = None
        with untracked():
            if self.fixed:
                finite = arith.isfinite(arith.clock(torch.linalg.vector_norm(y1, math.inf)))
                accept, dt, memory = active & finite, self.controller.next_step(t1), c.memory
                failed, why = arith.and_not(active, finite), NONFINITE
                dt = arith.where(failed, magnitude, dt)
            else:
                tolerance = self.controller.tolerance
                error, size = self.stepper.error(arith, ks), tolerance.size(y1)
                size0 = tolerance.size(c.y) if c.size is None else c.size
                ratio = magnitude * tolerance.ratio(arith, error, tolerance.scale(size0, size))
                if arith.rows:  # (no tangent either: forward mode treats steps as constants)
                    ratio = ratio.detach()
                accept, dt, memory = self.controller.propose(
                    arith, ratio, magnitude, c.memory, active
                )
                failed, why = arith.and_not(active, accept), UNDERFLOW
                if arith.rows or failed:  # (one row: a rejected step may have underflowed)
                    failed = failed & (dt < self._resolution(c.t))
                    why = arith.where(arith.isfinite(ratio), UNDERFLOW, NONFINITE)
            if not arith.rows and self.stepper.failure is not None and active:
                accept, failed, why = False, True, NOT_CONVERGED
        status = arith.where(failed, why, c.status)
        rejected = arith.and_not(active, accept)
        if self.callbacks is not None and self.controller.needs_error:
            self.callbacks.after(accept, c.t, c.y, step)
        if arith.rows or accept:
            self.stepper.accepted(accept)
        if watch is not None and accept:
            seen = AcceptedStep(self, c.t, c.y, t1, y1, ks, f1, field)
            stop = watch(seen)
            f1 = seen.end_derivative
            if stop:  # the watcher has what it needs: end here, at t1
                return c._replace(t=t1, y=y1, f=f1, size=size, status=STOPPED,
                                  accepted=c.accepted + 1, iterations=c.iterations + 1)  # fmt: skip
        outputs, next_output, f1 = self._record(c, t1, y1, step, ks, f1, accept, field)
        if arith.rows:
            keep = accept[:, None]
            y_next = torch.where(keep, y1, c.y)
            f_next = torch.where(keep, f1, c.f)
            size = None
        else:
            y_next, f_next, size = (y1, f1, size) if accept else (c.y, f, c.size)
            if jump and accept and t1 != self.t_end:  # the next step starts just after t1
                f_next = self.field(self.nudge.toward(t1, direction), y1)
        return Carry(
            arith.where(accept, t1, c.t),
            dt,
            memory,
            arith.where(accept, magnitude, c.last_dt),
            y_next,
            f_next,
            size,
            outputs,
            next_output,
            c.accepted + arith.count(accept),
            c.rejected + arith.count(rejected),
            status,
            c.iterations + 1,
        )

    def _record(
        self,
        c: Carry,
        t1: Any,
        y1: torch.Tensor,
        step: Any,
        ks: list[torch.Tensor],
        f1: torch.Tensor | None,
        accept: Any,
        field: Field,
    ) -> tuple[Any, int | None, torch.Tensor | None]:
        """The outputs with every output time in (t, t1] of an accepted step filled in from the
        step's dense output; f1 (evaluated by ``field`` if the dense output needed it)."""
        direction = self.direction
        if self.arith.rows:
            times, t = self.times_tensor[:, None], c.t[None]
            passed = accept & (direction * (times - t) > 0) & (direction * (t1 - times) >= 0)

            def fill(outputs: torch.Tensor) -> torch.Tensor:
                theta = (times - t) / torch.where(step != 0, step, 1.0)  # (T, R)
                h = self.arith.step_factor(step, c.y)
                values = self._interpolant(c.y, h, ks, y1, f1, theta)
                return torch.where(passed[..., None], values, outputs)

            if torch.compiler.is_compiling():  # (torch.cond here fails inductor's alias check)
                return fill(c.outputs), None, f1
            return (fill(c.outputs) if truth(passed.any()) else c.outputs), None, f1
        times, first = self.times, c.next_output
        if not accept or direction * (times[first] - t1) > 0:  # (no output time passed)
            return c.outputs, first, f1
        index = first
        while index < len(times) and direction * (times[index] - t1) <= 0:
            index += 1
        interior = [times[j] for j in range(first, index) if times[j] != t1]
        blocks = []
        if interior:
            if f1 is None and self.needs_end_derivative:
                f1 = field(t1, y1)
            blocks.append(self.dense(c.t, c.y, step, ks, y1, f1, interior))
        if index > first and times[index - 1] == t1:
            blocks.append(y1)
        return c.outputs + tuple(blocks), index, f1

    def dense(
        self,
        t: float,
        y: torch.Tensor,
        step: float,
        ks: list[torch.Tensor],
        y1: torch.Tensor,
        f1: torch.Tensor | None,
        times: list[float],
    ) -> torch.Tensor:
        """Dense output of one row's step from (t, y) to y1 at ``times`` inside it: (m, N),
        by the method's interpolant, or on a fixed grid as its ``interp`` says (f1 = f(t1, y1)
        is not needed for "linear")."""
        theta = torch.tensor([[(time - t) / step] for time in times], dtype=torch.float64,
                             device=y.device)  # fmt: skip
        return self._interpolant(y, step, ks, y1, f1, theta)[:, 0]

    def _interpolant(
        self,
        y: torch.Tensor,
        h: Any,
        ks: list[torch.Tensor],
        y1: torch.Tensor,
        f1: torch.Tensor | None,
        theta: torch.Tensor,
    ) -> torch.Tensor:
        """The ``interp`` of steps of size h (a float, or (R, 1)) from rows y (R, N) to y1 at
        fractions ``theta`` (T, R) of the steps: (T, R, N)."""
        if self.interp == "linear":
            return torch.lerp(y, y1, theta[..., None].to(y.dtype))
        assert f1 is not None
        if self.interp == "cubic":
            return hermite(y, y1, ks[0], f1, h, theta)
        # (rows: the weights made by on(), outside the compiled loop)
        weights = self.dense_rows if self.arith.rows else dense_weights(self.tableau, y.device)
        return interpolate(weights, y, h, [*ks, f1], theta)

    def _jump(self, t1: Any, last: Any) -> bool:
        """Whether f may jump at the end t1 of this step (one row with a nudge): with perturb
        every fixed step ends on one; adaptive steps that land on a jump_t time."""
        if self.landings is None:
            return True
        return bool(last) and t1 in self.landings.jumps

    def _before(self, end: float, t1: float) -> Field:
        """The field of a step that ends where f may jump: at its end (``end`` = t + step as the
        stepper computes it, or t1) f is evaluated just before t1."""
        assert self.nudge is not None
        before = self.nudge.toward(t1, -self.direction)
        field = self.field

        def nudged(t: float, y: torch.Tensor) -> torch.Tensor:
            return field(before if t in (end, t1) else t, y)

        return nudged

    # -- running and ending ------------------------------------------------------------------

    def run(
        self,
        c: Carry,
        most: int | None = None,
        watch: Watch | None = None,
        started: Callable[[], None] | None = None,
    ) -> Carry:
        """Iterate eagerly while the loop runs (at most ``most`` iterations; until ``watch``,
        shown each accepted step, returns True); ``started`` is called as each begins."""
        done = 0
        while (most is None or done < most) and self.goes_on(c):
            if started is not None:
                started()
            c = self.attempt(c, watch)
            done += 1
        return c

    def summary(self, c: Carry) -> torch.Tensor:
        """Rows: what the host needs after the loop, as one (6,) float64 tensor (one
        synchronisation, computed inside the compiled call when compiled): iterations, accepted
        and rejected steps and the last step of the row that attempted the most, whether some
        row failed, whether some row is short of the end."""
        slowest = (c.accepted + c.rejected).argmax().reshape(1)
        counts = torch.stack([c.accepted, c.rejected]).index_select(1, slowest)[:, 0].double()
        behind = (self.direction * (self.t_end - c.t) > 0).any()
        return torch.stack(
            [
                c.iterations.double(),
                *counts,
                c.last_dt.index_select(0, slowest)[0],
                (c.status != RUNNING).any().double(),
                behind.double(),
            ]
        )

    def finished(self, c: Carry) -> Carry:
        """The final carry with rows still short of the end marked MAX_STEPS."""
        behind = self.direction * (self.t_end - c.t) > 0
        short = behind & (c.status == RUNNING)
        return c._replace(status=self.arith.where(short, MAX_STEPS, c.status))

    def values(self, c: Carry) -> torch.Tensor:
        """The states at the output times, (T, R·N); NaN at the times a row did not reach."""
        if self.arith.rows:
            unreached = self.direction * (self.times_tensor[:, None] - c.t[None]) > 0
            values = torch.where(unreached[..., None], math.nan, c.outputs)
            return values.reshape(len(self.times), -1)
        reached = torch.cat(c.outputs)
        missing = len(self.times) - reached.shape[0]
        if not missing:
            return reached
        return torch.cat([reached, reached.new_full((missing, *reached.shape[1:]), math.nan)])

    def failure(self, c: Carry, nfe: int) -> SolverError | None:
        """The error of the first row that stopped short of the end (None if none did)."""
        status = c.status
        if self.arith.rows:
            if any(is_wrapped(x) for x in (c.status, c.t, c.dt, c.accepted)):  # under vmap
                fields = (c.status, c.t, c.dt, c.accepted, c.rejected)
                status, t, dt, accepted, rejected = torch.broadcast_tensors(
                    *(unwrap(x).reshape(-1) for x in fields)
                )
                c = c._replace(t=t, dt=dt, accepted=accepted, rejected=rejected)
            failed = (status != RUNNING).nonzero()
            if failed.numel() == 0:
                return None
            row = int(failed[0])
            where = f" in sample {row}" if status.shape[0] > 1 else ""
            kind, at, dt = int(status[row]), float(c.t[row]), float(c.dt[row])
            steps = int(c.accepted[row] + c.rejected[row])
        else:
            if status == RUNNING:
                return None
            where, kind, at, dt = "", status, c.t, c.dt
            steps = c.accepted + c.rejected
        return failure_error(kind, at, dt, steps, self, where, nfe)


def failure_error(
    kind: int, at: float, dt: float, steps: int, loop: Loop, where: str, nfe: int
) -> SolverError:
    """The error for a row's failure status: the problem, the time, and the fix."""
    if kind == NONFINITE:
        if steps == 0:
            return NonFiniteStateError(
                f"dy/dt is NaN or Inf at the initial time t={at:.6g}{where}", at
            )
        if isinstance(loop.controller, FixedGrid):
            end = at + loop.direction * dt
            return NonFiniteStateError(
                f"the state became NaN or Inf in the step from t={at:.6g} to t={end:.6g}{where}",
                at,
            )
        return NonFiniteStateError(
            f"the state became NaN or Inf at t={at:.6g}{where}: every step from there produced "
            f"non-finite values, down to dt={dt:.3g}",
            at,
        )
    if kind == NOT_CONVERGED:
        end = at + loop.direction * dt
        return ConvergenceError(
            f"{loop.stepper.failure} in the step from t={at:.6g} to t={end:.6g}{where}: use "
            "smaller steps (options 'step_size' or 'grid'), or raise options={'max_iters': ...}",
            at,
        )
    if kind == UNDERFLOW:
        return StepSizeUnderflowError(
            f"step size underflow at t={at:.6g}{where}: dt={dt:.3g} is below the resolution of "
            "t; the problem may be stiff or the vector field singular or discontinuous there",
            at,
        )
    return MaxStepsExceededError(
        f"max_num_steps={loop.max_num_steps} exceeded at t={at:.6g}{where} (integrating from "
        f"t={loop.times[0]:.6g} to t={loop.times[-1]:.6g}) after {nfe} function evaluations; "
        "raise options={'max_num_steps': ...}, loosen rtol/atol, or use method='rosenbrock23' "
        "if the problem is stiff",
        at,
    )


def _ten_ulp(largest: Any) -> Any:
    """Step sizes below this underflow: 10 ulp of ``largest`` (a float, or a float64 tensor: the
    spacing of float64 just above it)."""
    if isinstance(largest, torch.Tensor):
        return 10.0 * (torch.nextafter(largest, largest.new_tensor(math.inf)) - largest)
    return 10.0 * math.ulp(largest)
