"""The compiled execution: the loop's iteration (:meth:`~neuralode.core.loop.Loop.attempt`
on rows) run inside ``torch.compile`` as one ``while_loop``. Inductor fuses each iteration
(stages, error norm, control, dense output) into a few kernels and loops over them in generated
C++ (CPU) or device code, with no Python per step. Autograd goes through the compiled loop, so
backpropagation works; the adjoint's forward solve (no graph) is compiled too. It serves shared
steps (one row: the whole state) and per-sample steps alike.

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
from typing import Any

import torch

from .compile_cache import cached_compile
from .config import Problem
from .loop import Carry, Loop

aten = torch.ops.aten
SMALL_ROWS = 16  # matrix products with at most this many rows are fused (CPU)
SMALL_MATRIX = 1 << 16  # ... and a second factor of at most this many entries


def solve_compiled(
    problem: Problem, loop: Loop, y_rows: torch.Tensor, first_dt: torch.Tensor | None
) -> tuple[Carry, torch.Tensor] | None:
    """The final carry of the compiled loop from rows ``y_rows`` (R, N) and its
    :meth:`~neuralode.core.loop.Loop.summary`, or None (with a warning, once per kind of
    problem) when it cannot be compiled."""
    kind = _kind(problem)
    if kind in _UNCOMPILABLE:  # failed before: do not pay for another attempt
        return None
    try:
        *packed, summary = _compiled_run(kind)(loop, y_rows, first_dt)
        return _unpack(tuple(packed)), summary
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


def _pack(c: Carry) -> tuple[torch.Tensor, ...]:
    """The carry as few tensors (each carried tensor costs a compiled loop time per
    iteration): clock (5, R), state (2, R, N), outputs, counts (3, R), iterations."""
    return (
        torch.stack([c.t, c.dt, *c.memory, c.last_dt]),
        torch.stack([c.y, c.f]),
        c.outputs,
        torch.stack([c.accepted, c.rejected, c.status]),
        c.iterations,
    )


def _unpack(tensors: tuple[torch.Tensor, ...]) -> Carry:
    clock, state, outputs, counts, iterations = tensors
    return Carry(clock[0], clock[1], (clock[2], clock[3]), clock[4], state[0], state[1], None,
                 outputs, None, counts[0], counts[1], counts[2], iterations)  # fmt: skip


def _run(loop: Loop, y0: torch.Tensor, first_dt: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The whole solve from rows y0 (traced by torch.compile): the final carry, packed, and its
    summary."""
    f0 = loop.field(loop.times_tensor[:1].expand(y0.shape[0]), y0)
    carry = loop.start(y0, f0, first_dt)
    final = torch._higher_order_ops.while_loop(
        lambda *c: loop.running(_unpack(c)),
        lambda *c: _pack(loop.attempt(_unpack(c))),
        _pack(carry),
    )
    return (*final, loop.summary(_unpack(final)))


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
    the loop's intermediates for backward): on the CPU that solve is compiled ahead of time and
    kept on disk (:mod:`neuralode.core.compile_cache`)."""
    on_cpu = all(x.device.type == "cpu" for x in inputs if isinstance(x, torch.Tensor))
    cpu_settings = {"cpp.use_decompose_tanh": True}
    if cpp_wrapper and on_cpu:  # no autograd graph: compiled ahead of time, kept on disk
        kept = cached_compile(graph, inputs, _cpu_decompositions, cpu_settings)
        if kept is not None:
            return kept
    from torch._functorch import config as functorch_config
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    decompositions = dict(select_decomp_table())
    patches: dict[str, Any] = {}
    if on_cpu:
        decompositions.update(_cpu_decompositions())
        patches = {"cpp_wrapper": cpp_wrapper, **cpu_settings}
    if not cpp_wrapper:  # the backward loop carries weight gradients in their own layout
        patches["layout_optimization"] = False
    # No donated buffers: the backward would otherwise reuse saved tensors in place, among them
    # views of the solve's cached tolerances (a later solve then ran with a corrupted atol).
    with functorch_config.patch(donated_buffer=False):
        return compile_fx(graph, inputs, decompositions=decompositions, config_patches=patches)


def _cpu_decompositions() -> dict[Any, Any]:
    """The decompositions added on the CPU (to inductor's own)."""
    from torch._inductor.decomposition import select_decomp_table

    return _small_matmul_decompositions(select_decomp_table())


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


def _kind(problem: Problem) -> Hashable:
    """What selects a compiled entry point: shapes, dtype, device, method, per-sample steps,
    whether autograd records, and the vector field's class (or code)."""
    like = problem.y0
    shapes = tuple(tuple(shape) for shape in problem.layout.shapes)
    func = problem.field.func
    origin = getattr(func, "__code__", type(func))
    records_graph = torch.is_grad_enabled()
    per_sample = problem.execution.per_sample
    return (
        shapes, like.dtype, like.device, problem.method.name, per_sample, origin, records_graph
    )  # fmt: skip


def _is_compile_failure(error: Exception) -> bool:
    module = type(error).__module__
    return module.startswith(("torch._dynamo", "torch._inductor", "torch.fx"))
