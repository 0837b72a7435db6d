"""Solving a :class:`~neuralode.problem.Problem` with the row loop, eagerly or compiled.

Per-sample steps (``options={"per_sample": True}``) make one row per batch sample: each sample
its own dt, accept/reject and stop, so one stiff sample no longer shrinks the steps of the
others (torchode's idea). The field is evaluated on the whole batch each iteration, rows that
are done riding along with a zero step, and gets t as a (B, 1, ..., 1) tensor that broadcasts
against the state.

The compiled path (``options={"compile": True}``) runs the row loop inside ``torch.compile`` as a
``while_loop``: inductor fuses each iteration (stages, error norm, control, dense output) into
a few kernels and loops over them in generated C++ (CPU) or device code, with no Python per
step. Autograd goes through the compiled loop, so backpropagation works; the adjoint's forward
solve (no graph) is compiled too. It serves shared steps (one row: the whole state) and
per-sample steps alike.

On the CPU two inductor settings make small vector fields cheap: matrix products with at most
16 rows are expanded into fused multiply-adds instead of calls to a BLAS library (for
batch-1 fields the call costs more than the product), and tanh is computed from exp
(inductor's ``cpp.use_decompose_tanh``; equal to torch.tanh to float32 rounding).

The first solve of a new kind of problem (vector field class, method, shapes, dtype, options)
compiles for several seconds; later solves reuse it. A vector field that cannot be compiled
(or a machine without a C++ compiler) falls back to the eager loop with a warning.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import torch

from .errors import ODEInputError
from .integrate_rows import Carry, Control, RowLoop, Segments, rms_rows
from .stats import PerSampleStats

if TYPE_CHECKING:
    from .problem import Problem
    from .solvers.tableau import Tableau

aten = torch.ops.aten
SMALL_ROWS = 16  # matrix products with at most this many rows are fused (CPU)
SMALL_MATRIX = 1 << 16  # ... and a second factor of at most this many entries


def row_loop(problem: Problem, per_sample: bool) -> RowLoop:
    """The problem as rows: one row (the whole flat state) or one row per sample."""
    layout, func = problem.layout, problem.field.func
    like = problem.y0
    shape = layout.shapes[0]
    rows = shape[0] if per_sample else 1
    tolerance = problem.tolerance
    rtol, atol = (
        x / tolerance.root if x.dim() == 0 else (x / tolerance.root).reshape(rows, -1)
        for x in (tolerance.rtol, tolerance.atol)
    )
    norm = problem.options.get("norm")
    if per_sample:
        t_shape = (rows,) + (1,) * (len(shape) - 1)

        def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return func(t.to(like.dtype).reshape(t_shape), y.reshape(shape)).reshape(rows, -1)

    else:

        def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            state = layout.unflatten(y.view(-1))
            return layout.flatten(func(t[0].to(like.dtype), state)).view(1, -1)

    controller = problem.adaptive_controller()
    return RowLoop(
        field,
        problem.tableau,
        torch.tensor(problem.times, dtype=torch.float64, device=like.device),
        (problem.times[0], problem.times[-1]),
        rtol,
        atol,
        rms_rows if norm is None else lambda x: norm(x.view(-1)).reshape(1),
        Control(
            order=problem.tableau.error_order,
            safety=controller.safety,
            ifactor=controller.ifactor,
            dfactor=controller.dfactor,
            beta1=getattr(controller, "beta1", 1.0),
            beta2=getattr(controller, "beta2", 0.0),
        ),
        problem.max_num_steps,
    )


def solve_rows(
    problem: Problem,
    y0: torch.Tensor,
    per_sample: bool,
    compiled: bool,
    checkpoint_every: int | None = None,
) -> torch.Tensor:
    """``problem`` solved from the flat ``y0`` by the row loop: flat states (len(times), N).
    Compiled, it falls back to the eager loop (with a warning) when compiling fails. Eager,
    ``checkpoint_every`` makes autograd keep one carry per that many iterations and rerun
    them in the backward pass."""
    if per_sample:
        check_per_sample(problem)
    loop = row_loop(problem, per_sample)
    rows = problem.layout.shapes[0][0] if per_sample else 1
    y_rows = y0.reshape(rows, -1)
    first = problem.options.get("first_step")
    first_dt = None
    if first is not None:
        first_dt = torch.full((rows,), abs(float(first)), dtype=torch.float64, device=y0.device)
    if compiled:
        carry = _solve_compiled(problem, per_sample, loop, y_rows, first_dt)
        if carry is None:
            return problem.solve_eagerly(y0)
    else:
        f0 = problem.first_derivative(y0).view(rows, -1)
        problem.stats.nfe -= 1  # counted with the others below
        segments = None
        if checkpoint_every is not None:
            segments = Segments(checkpoint_every, functools.partial(_recomputed, problem))
        carry = loop.solve(y_rows, f0, first_dt, segments)
    finished, iterations, most_accepted, most_rejected = loop.summary(carry)
    if not finished:
        loop.raise_stop(carry)
    tableau, stats = problem.tableau, problem.stats
    # Before the loop: f0 and (without first_step) the starting-step heuristic's evaluation.
    per_iteration = _evaluations_per_iteration(tableau)
    before = 2 if first_dt is None else 1
    stats.nfe += before + iterations * per_iteration
    stats.n_accepted += most_accepted
    stats.n_rejected += most_rejected
    if per_sample:
        accepted, rejected = carry.accepted, carry.rejected
        nfe = before + (accepted + rejected) * per_iteration
        stats.per_sample = PerSampleStats(nfe, accepted, rejected)
    return carry.outputs.reshape(len(problem.times), -1)


def _solve_compiled(
    problem: Problem,
    per_sample: bool,
    loop: RowLoop,
    y_rows: torch.Tensor,
    first_dt: torch.Tensor | None,
) -> Carry | None:
    """The final carry of the compiled loop, or None (with a warning, once per kind of
    problem) when it cannot be compiled."""
    kind = _kind(problem, per_sample)
    if kind in _UNCOMPILABLE:  # failed before: do not pay for another attempt
        return None
    try:
        return Carry(*_compiled_run(kind)(loop, y_rows, first_dt))
    except Exception as error:
        if not _is_compile_failure(error):
            raise
        _UNCOMPILABLE.add(kind)
        reason = str(error).splitlines()[0] if str(error) else ""
        warnings.warn(
            f"neuralode: the solve could not be compiled ({type(error).__name__}: {reason}); "
            "solving eagerly",
            RuntimeWarning,
            stacklevel=7,  # the caller of odeint
        )
        return None


def _recomputed(problem: Problem) -> None:
    """Count an iteration rerun by a checkpointed segment as backward work."""
    problem.stats.backward_nfe += _evaluations_per_iteration(problem.tableau)
    problem.stats.backward_steps += 1


def _evaluations_per_iteration(tableau: Tableau) -> int:
    """Evaluations of the field in one iteration: stages - 1 (FSAL) or stages."""
    return tableau.stages - 1 if tableau.fsal else tableau.stages


def check_per_sample(problem: Problem) -> None:
    """Raise ODEInputError when the problem cannot take per-sample steps."""
    if problem.layout.is_tuple or len(problem.layout.shapes[0]) < 1:
        raise ODEInputError(
            "options['per_sample'] needs y0 to be one tensor whose first dimension is the batch"
        )
    unsupported = sorted({"norm", "grid", "step_size"} & set(problem.options))
    if unsupported:
        raise ODEInputError(
            f"options['per_sample'] uses the RMS norm of each sample: it cannot be combined "
            f"with option(s) {unsupported}"
        )


def _run(
    loop: RowLoop, y0: torch.Tensor, first_dt: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """The whole solve from rows y0 (traced by torch.compile): the final carry."""
    f0 = loop.field(loop.times[:1].expand(y0.shape[0]), y0)
    carry = loop.start(y0, f0, first_dt)
    return torch._higher_order_ops.while_loop(
        lambda *c: loop.running(Carry(*c)),
        lambda *c: tuple(loop.body(Carry(*c))),
        tuple(carry),
    )


@functools.lru_cache(maxsize=64)
def _compiled_run(key: Hashable) -> Any:
    """A compiled entry point per kind of problem (``key``: shapes, dtype, device, method, ...).

    Each gets a code object of its own, hence its own dynamo cache and recompile budget: a
    process that solves many kinds of problems does not exhaust one shared budget."""
    records_graph = key[-1]
    run = types.FunctionType(_run.__code__.replace(), _run.__globals__, "_run")
    backend = functools.partial(_backend, cpp_wrapper=not records_graph)
    return torch.compile(run, fullgraph=True, dynamic=False, backend=backend)


def _backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor], cpp_wrapper: bool) -> Any:
    """Inductor, with small matrix products fused and tanh from exp on the CPU, and the loop
    driven from C++ when no autograd graph is recorded (inductor's C++ wrapper cannot yet save
    the loop's intermediates for backward)."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    on_cpu = all(x.device.type == "cpu" for x in inputs if isinstance(x, torch.Tensor))
    inductor_table = select_decomp_table()
    decompositions = dict(inductor_table)
    patches: dict[str, Any] = {}
    if on_cpu:
        decompositions.update(_small_matmul_decompositions(inductor_table))
        patches = {"cpp_wrapper": cpp_wrapper, "cpp.use_decompose_tanh": True}
    if not cpp_wrapper:  # the backward loop carries weight gradients in their own layout
        patches["layout_optimization"] = False
    return compile_fx(graph, inputs, decompositions=decompositions, config_patches=patches)


def _small_matmul_decompositions(table: dict[Any, Any]) -> dict[Any, Any]:
    """mm / addmm / bmm with few rows as broadcast multiply + sum (fused by inductor)."""

    def _otherwise(op: Any, *args: Any, **kwargs: Any) -> Any:
        """Inductor's own decomposition of op, if it has one."""
        return table[op](*args, **kwargs) if op in table else NotImplemented

    def small(rows: int, inner: int, cols: int) -> bool:
        return rows <= SMALL_ROWS and inner * cols <= SMALL_MATRIX

    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if small(a.shape[0], a.shape[1], b.shape[1]):
            return (a[:, :, None] * b[None]).sum(1)
        return _otherwise(aten.mm.default, a, b)

    def addmm(
        bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1
    ) -> torch.Tensor:
        if small(a.shape[0], a.shape[1], b.shape[1]):
            return beta * bias + alpha * (a[:, :, None] * b[None]).sum(1)
        return _otherwise(aten.addmm.default, bias, a, b, beta=beta, alpha=alpha)

    def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if small(a.shape[1], a.shape[2], b.shape[2]):
            return (a[:, :, :, None] * b[:, None]).sum(2)
        return _otherwise(aten.bmm.default, a, b)

    return {aten.mm.default: mm, aten.addmm.default: addmm, aten.bmm.default: bmm}


_UNCOMPILABLE: set[Hashable] = set()
"""Kinds of problem whose solve failed to compile (each is tried once per process)."""


def _kind(problem: Problem, per_sample: bool) -> Hashable:
    """What selects a compiled entry point: shapes, dtype, device, method, per-sample steps,
    whether autograd records, and the vector field's class (or code)."""
    like = problem.y0
    shapes = tuple(tuple(shape) for shape in problem.layout.shapes)
    func = problem.field.func
    origin = getattr(func, "__code__", type(func))
    records_graph = torch.is_grad_enabled()
    return (
        shapes, like.dtype, like.device, problem.tableau.name, per_sample, origin, records_graph
    )  # fmt: skip


def _is_compile_failure(error: Exception) -> bool:
    module = type(error).__module__
    return module.startswith(("torch._dynamo", "torch._inductor", "torch.fx"))
