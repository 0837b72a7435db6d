"""How a problem's loop is run: on one row with a float clock, on rows (per-sample steps), or
compiled (:mod:`neuralode.core.compiled`); optionally in checkpointed segments. A choice of how
to run the one loop, not another loop. The statistics are written here, once, from the final
carry."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import TransformError
from .adams_method import AdamsMethod
from .arith import ROWS, SCALAR, VMAP_SCALAR
from .config import Problem
from .controllers import AdaptiveController, FixedGrid
from .implicit_methods import ImplicitMethod
from .loop import RUNNING, Carry, Loop
from .stats import PerSampleStats, SolverStats
from .transforms import is_wrapped, under_transform, under_vmap, unwrap


def integrate(problem: Problem, y0: torch.Tensor, every: int | None = None) -> torch.Tensor:
    """States at ``problem.times`` from the flat ``y0``, shape (len(times), N), differentiable
    by backpropagation through the steps. With ``every``, autograd keeps only the carry at the
    start of each segment of that many iterations and reruns the segment in the backward pass
    (gradient checkpointing; reruns are counted as backward work)."""
    execution = problem.execution
    if problem.batched_times is not None and not _on_instance_clocks(problem):
        raise TransformError(
            "torch.func.vmap over the output times t gives each instance its own clock on the "
            "row loop of explicit Runge-Kutta methods (adaptive, or on a grid from step_size or "
            "t) and of rosenbrock23; implicit Runge-Kutta and Adams methods, perturb and "
            "scipy_solver step all instances on one clock (method "
            f"{problem.method.name!r}): use an explicit method such as 'dopri5' or 'rk4', or "
            "solve at the union of the times and vmap over y0 or func's parameters"
        )
    if execution.scipy is not None:
        from .scipy_execution import integrate_scipy  # (imports scipy only for such solves)

        return integrate_scipy(problem, y0)
    if execution.per_sample or execution.compiled:
        return _integrate_rows(problem, y0, every)
    arith = SCALAR
    adaptive = isinstance(problem.controller, AdaptiveController)
    if under_transform():
        vmapped = under_vmap()
        if vmapped and (adaptive or problem.batched_times is not None):
            # (see neuralode.core.transforms) each instance its own adaptive steps, or its own
            # grid, on rows
            return _integrate_rows(problem, y0, every)
        if vmapped:  # a fixed grid's steps do not depend on the values: one row, as usual, with
            arith = VMAP_SCALAR  # the finiteness check asked of all instances at once
    f0 = problem.first_derivative(y0)
    if len(problem.times) == 1:
        return y0[None]
    loop = Loop(problem.stepper(), problem.controller, problem.times, problem.field, arith,
                problem.max_num_steps, problem.callbacks)  # fmt: skip
    carry = loop.start(y0.view(1, -1), f0, problem.first_step)
    carry = _drive(problem, loop, carry, every, None)
    return _finish(problem, loop, carry)


def row_loop(problem: Problem) -> Loop:
    """The problem's loop on rows: one row (the whole state) or one per sample."""
    per_sample = problem.execution.per_sample
    rows = problem.layout.shapes[0][0] if per_sample else 1
    controller = problem.controller
    if per_sample:
        controller = replace(controller, tolerance=controller.tolerance.rows(rows))

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return problem.field.rows(t, y, per_sample)

    loop = Loop(problem.stepper(), controller, problem.times, field, ROWS, problem.max_num_steps)
    return loop.on(problem.y0.device, problem.batched_times)


def _on_instance_clocks(problem: Problem) -> bool:
    """The problem runs on the row loop, whose (R,) clock may hold each vmap instance's times:
    an explicit Runge-Kutta method of neuralode's own, with adaptive steps or on each
    instance's own grid (from its times or step_size, without perturb), or a Rosenbrock
    method."""
    controller, method = problem.controller, problem.method
    if isinstance(controller, FixedGrid):
        own = torch.is_tensor(controller.grid) and controller.nudge is None
    else:
        own = problem.execution.scipy is None
    return own and not isinstance(method, (ImplicitMethod, AdamsMethod))


def _integrate_rows(problem: Problem, y0: torch.Tensor, every: int | None) -> torch.Tensor:
    from .compiled import solve_compiled  # (imports inductor's pieces only when compiling)

    loop = row_loop(problem)
    rows = problem.layout.shapes[0][0] if problem.execution.per_sample else 1
    y_rows = y0.reshape(rows, -1)
    first_dt = None
    if problem.first_step is not None:
        first_dt = torch.full((rows,), problem.first_step, dtype=torch.float64, device=y0.device)
    if problem.execution.compiled and every is None and not under_vmap():
        result = solve_compiled(problem, loop, y_rows, first_dt)
        if result is None:  # could not be compiled (warned): the same solve, eagerly
            fallback = replace(problem, execution=replace(problem.execution, compiled=False))
            return integrate(fallback, y0)
        carry, summary = result
        problem.field.count(1)  # f(t0, y0), evaluated inside the compiled call
    else:
        f0 = problem.first_derivative(y0, rows)
        carry = _drive(problem, loop, loop.start(y_rows, f0, first_dt), every,
                       loop.tableau.evaluations)  # fmt: skip
        summary = loop.summary(carry)
    if first_dt is None and isinstance(problem.controller, AdaptiveController):
        problem.field.count(1)  # the starting-step heuristic's evaluation
    return _finish_rows(problem, loop, carry, summary)


def _drive(
    problem: Problem, loop: Loop, carry: Carry, every: int | None, per_iteration: int | None
) -> Carry:
    """Run the loop eagerly to its end, in checkpointed segments of ``every`` iterations if
    given. A segment's rerun in the backward pass counts its work as backward: by the field's
    calls (``per_iteration`` None) or by iterations as they start."""
    if every is None:
        return loop.run(carry, watch=problem.watch)
    segments = _Segments(problem, loop, every, per_iteration)
    while loop.goes_on(carry):
        carry = checkpoint(segments, carry, loop.stepper.snapshot(), use_reentrant=False)
    segments.forward_done = True
    return carry


@dataclass
class _Segments:
    problem: Problem
    loop: Loop
    every: int
    per_iteration: int | None
    forward_done: bool = False

    def __call__(self, carry: Carry, memory: Any) -> Carry:
        # The stepper's memory across steps (a multistep history, a Jacobian) as the segment
        # first started: its rerun in the backward pass repeats the same steps.
        self.loop.stepper.restore(memory)
        if not self.forward_done:
            return self.loop.run(carry, self.every)
        # A rerun in the backward pass: autograd may stop it as soon as it has recomputed what
        # the gradient needs, hence the counting as iterations start, and the finally.
        stats, field = self.problem.stats, self.problem.field
        field.stats = scratch = SolverStats()
        try:
            return self.loop.run(carry, self.every, started=self._started)
        finally:
            field.stats = stats
            stats.backward_nfe += scratch.nfe

    def _started(self) -> None:
        stats = self.problem.stats
        stats.backward_steps += 1
        if self.per_iteration is not None:
            stats.backward_nfe += self.per_iteration


def _finish(problem: Problem, loop: Loop, carry: Carry) -> torch.Tensor:
    """One row: record the statistics of the final carry, raise its failure, return the states
    (len(times), N)."""
    carry = loop.finished(carry)
    stats = problem.stats
    stats.n_accepted, stats.n_rejected = carry.accepted, carry.rejected
    stats.last_dt = carry.last_dt
    problem.outcome.status = carry.status
    return _outcome(problem, loop, carry, carry.status != RUNNING)


def _finish_rows(problem: Problem, loop: Loop, carry: Carry, summary: torch.Tensor) -> torch.Tensor:
    """Rows: the statistics from the loop's summary (one host synchronisation); every row's
    counts for per-sample solves. ``n_accepted`` / ``n_rejected`` are those of the row that
    attempted the most steps and ``last_dt`` its last step."""
    if is_wrapped(summary):  # under vmap: the largest counts of all instances
        summary = unwrap(summary).reshape(-1, summary.numel()).amax(dim=0)
    iterations, accepted, rejected, last_dt, failed, behind = summary.tolist()
    per_iteration = loop.tableau.evaluations
    stats = problem.stats
    problem.field.count(int(iterations) * per_iteration)
    stats.n_accepted, stats.n_rejected, stats.last_dt = int(accepted), int(rejected), last_dt
    if problem.execution.per_sample:
        before = 1 + (problem.first_step is None)  # f(t0, y0) and the starting step's evaluation
        nfe = before + (carry.accepted + carry.rejected) * per_iteration
        stats.per_sample = PerSampleStats(nfe, carry.accepted, carry.rejected, carry.last_dt)
    if behind or failed:
        carry = loop.finished(carry)
    status = carry.status if problem.execution.per_sample else carry.status[0]
    problem.outcome.status = status
    return _outcome(problem, loop, carry, bool(behind or failed))


def _outcome(problem: Problem, loop: Loop, carry: Carry, failed: bool) -> torch.Tensor:
    """Raise (or report) a failed row's error; the states at the output times, (T, N)."""
    problem.outcome.error = loop.failure(carry, problem.stats.nfe) if failed else None
    if problem.outcome.error is not None and problem.raise_on_failure:
        raise problem.outcome.error
    if not failed and loop.arith.rows:
        return carry.outputs.reshape(len(problem.times), -1)
    return loop.values(carry)
