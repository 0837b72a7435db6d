"""How a solve is differentiated: three gradient modes, picked by one argument.

- :class:`Backprop`: autograd through every operation of the solver. The exact gradient of the
  discrete solve; memory grows with the number of steps.
- :class:`Adjoint`: the adjoint sensitivity method (Chen et al. 2018). The forward solve keeps no
  graph; the backward pass solves the augmented ODE [y, a, ∂L/∂θ] from the last time to the
  first. Memory is O(1) in the number of steps; the gradient is exact up to the solver's error.
- :class:`Checkpointed`: the exact gradient of the discrete solve, like Backprop, with memory
  bounded by segments of ``every`` steps: each segment is recomputed during the backward pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.checkpoint import checkpoint

from .errors import ODEInputError
from .integrate import Checkpoint, StepLoop
from .problem import Problem, make_problem
from .row_solve import solve_rows
from .solvers.methods import METHODS
from .state import rms_norm
from .stats import SolverStats


class GradientMode(Protocol):
    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        """States at ``problem.times`` from the flat ``y0``: shape (len(times), N)."""
        ...


@dataclass(frozen=True)
class Backprop:
    """Backpropagate through the solver (torchdiffeq's ``odeint``)."""

    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        return problem.solve(y0)


class _SegmentRun:
    """One checkpointed segment: its first run counts as forward work, reruns as backward."""

    def __init__(self, loop: StepLoop, start: Checkpoint, every: int, stats: SolverStats) -> None:
        self.loop, self.start, self.every, self.stats = loop, start, every, stats
        self.runs = 0

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.runs += 1
        self.loop.restart(self.start, y)
        if self.runs == 1:
            return (*self.loop.run(self.every), self.loop.y)
        # Recomputation during backward: counted apart. torch may stop it early (once the
        # tensors it needs exist), hence the finally.
        field = self.loop.field
        field.stats = SolverStats()
        try:
            return (*self.loop.run(self.every), self.loop.y)
        finally:
            self.stats.backward_nfe += field.stats.nfe
            self.stats.backward_steps += field.stats.n_steps
            field.stats = self.stats


@dataclass(frozen=True)
class Checkpointed:
    """Exact discrete gradient with memory O((steps / every) + every) states.

    Args:
        every: accepted steps per recomputed segment.
    """

    every: int = 32

    def __post_init__(self) -> None:
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ODEInputError(
                f"Checkpointed(every=...) must be a positive integer, got {self.every!r}"
            )

    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        if problem.options.get("per_sample"):  # segments of `every` iterations of the row loop
            return solve_rows(problem, y0, per_sample=True, compiled=False,
                              checkpoint_every=self.every)  # fmt: skip
        f0 = problem.first_derivative(y0)
        if len(problem.times) == 1:
            return y0[None]
        with torch.no_grad():
            loop = problem.loop(y0, f0)  # only to size the first step
        y = y0.view(1, -1)
        outputs = [y]
        while not loop.done:
            segment = _SegmentRun(loop, loop.checkpoint(), self.every, problem.stats)
            *reached, y = checkpoint(segment, y, use_reentrant=False)
            outputs.extend(reached)
        return torch.cat(outputs)


def _leaves(output: torch.Tensor, through: Sequence[torch.Tensor] = ()) -> list[torch.Tensor]:
    """The leaf tensors that require grad and that ``output``'s autograd graph reaches other
    than through the (non-leaf) tensors ``through``."""
    stops = {x.grad_fn for x in through if x.grad_fn is not None}
    leaves, seen, stack = [], set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stops:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def _unlisted_leaves(
    problem: Problem, y0: torch.Tensor, params: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Tensors that require grad, that f(t0, y0) depends on, and that are not in ``params``
    (a non-leaf tensor in ``params``, such as a computed condition, covers its own history).

    Leaves that func creates during the call (such as a detached copy of y that requires grad,
    to take a trace) die with the call's graph and are not reported; only tensors that outlive
    the call, the ones whose gradients the adjoint would lose, are.
    """
    with torch.enable_grad():
        f0 = problem.first_derivative(y0.detach())
    known = {id(p) for p in params}
    candidates = [weakref.ref(leaf) for leaf in _leaves(f0, params) if id(leaf) not in known]
    del f0
    return [leaf for leaf in (ref() for ref in candidates) if leaf is not None]


@dataclass(frozen=True)
class Adjoint:
    """The adjoint sensitivity method (torchdiffeq's ``odeint_adjoint``).

    Args:
        rtol, atol: tolerances of the backward solve (default: the forward ones).
        method: method of the backward solve (default: the forward one).
        options: options of the backward solve (default: the forward ones); ``"norm":
            "seminorm"`` leaves the parameter-gradient channels out of the error control.
        params: the tensors to differentiate with respect to (default: ``func.parameters()``).
    """

    rtol: float | None = None
    atol: float | None = None
    method: str | None = None
    options: Mapping[str, Any] | None = None
    params: Sequence[torch.Tensor] | None = field(default=None, compare=False)

    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        method = self.method or problem.tableau.name
        if METHODS.get(method, problem.tableau).implicit:
            raise ODEInputError(
                f"the adjoint's backward solve cannot use the implicit method {method!r} (its "
                "Jacobian would miss the vector-Jacobian products' dependence on y): pass "
                "adjoint_method='dopri5', or use gradient='backprop'"
            )
        params = self._params(problem, y0)
        return _AdjointSolve.apply(problem, self, y0, *params)

    def _params(self, problem: Problem, y0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        func = problem.field.func
        if self.params is not None:
            params = tuple(self.params)
        elif isinstance(func, torch.nn.Module):
            params = tuple(func.parameters())
        else:
            raise ODEInputError(
                "the adjoint method needs the parameters of func: pass func as an nn.Module or "
                "give adjoint_params=(tensors func depends on)"
            )
        params = tuple(p for p in params if p.requires_grad)
        if torch.is_grad_enabled():
            missing = _unlisted_leaves(problem, y0, params)
            if missing:
                shapes = ", ".join(str(tuple(leaf.shape)) for leaf in missing)
                raise ODEInputError(
                    f"func depends on {len(missing)} tensor(s) that require grad but are not in "
                    f"adjoint_params (shapes {shapes}); their gradients would be lost: add them to "
                    "adjoint_params or register them as parameters of func"
                )
        return params

    def backward_problem(
        self, problem: Problem, params: Sequence[torch.Tensor], times: list[float]
    ) -> Problem:
        """The augmented problem s = [y, a, g] on one interval between output times."""
        size = problem.y0.numel()
        options = dict(problem.options if self.options is None else self.options)
        options.pop("per_sample", None)  # the backward state [y, a, g] is not per sample
        vector_jacobian = _functional_vjp(problem, params) if options.get("compile") else None
        if vector_jacobian is None:
            options.pop("compile", None)  # autograd.grad cannot be traced into the loop
            vector_jacobian = _autograd_vjp(problem, params)

        def augmented(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            f, vjps = vector_jacobian(t, s[:size], -s[size : 2 * size])
            return torch.cat(
                [f]
                + [
                    torch.zeros_like(p).reshape(-1) if v is None else v.reshape(-1)
                    for v, p in zip(vjps, (f, *params), strict=True)
                ]
            )

        method = self.method or problem.tableau.name
        if METHODS.get(method, problem.tableau).adaptive:
            options["norm"] = _augmented_norm(options.get("norm"), size)
        rtol, atol = problem.tolerance.as_given()
        like = problem.y0
        return make_problem(
            augmented,
            torch.zeros(
                2 * size + sum(p.numel() for p in params), dtype=like.dtype, device=like.device
            ),
            torch.tensor(times, dtype=torch.float64, device=like.device),
            self.rtol if self.rtol is not None else rtol,
            self.atol if self.atol is not None else atol,
            self.method or problem.tableau.name,
            options,
        )


VectorJacobian = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, Sequence[torch.Tensor | None]],
]
"""(t, y, v) → (f(t, y), (vᵀ ∂f/∂y, vᵀ ∂f/∂θ for each parameter)) on flat y."""


def _autograd_vjp(problem: Problem, params: Sequence[torch.Tensor]) -> VectorJacobian:
    """Vector-Jacobian products by torch.autograd.grad (any func, eager)."""
    field = problem.field

    def vector_jacobian(t: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> Any:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = field.evaluate(t, y)
            vjps = torch.autograd.grad(f, (y, *params), v, allow_unused=True)
        return f.detach(), vjps

    return vector_jacobian


def _functional_vjp(problem: Problem, params: Sequence[torch.Tensor]) -> VectorJacobian | None:
    """Vector-Jacobian products by torch.func.vjp, which torch.compile traces into the compiled
    loop; only for an nn.Module func whose parameters are all the adjoint's (None otherwise)."""
    layout, func = problem.layout, problem.field.func
    if not isinstance(func, torch.nn.Module):
        return None
    names = {id(p): name for name, p in func.named_parameters()}
    if not all(id(p) in names for p in params):
        return None
    param_names = [names[id(p)] for p in params]

    def vector_jacobian(t: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> Any:
        def call(y: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
            bound = dict(zip(param_names, values, strict=True))
            out = torch.func.functional_call(func, bound, (t, layout.unflatten(y)))
            return layout.flatten(out)

        f, pull_back = torch.func.vjp(call, y, *params)
        return f, pull_back(v)

    return vector_jacobian


def _augmented_norm(norm: Any, size: int) -> Any:
    """Error norm of the augmented state [y (size), a (size), g]: the largest RMS of the three
    channels, or of y and a alone for ``"seminorm"`` (Kidger et al. 2021), so that leaving the
    parameter-gradient channel out can only lengthen the steps. A callable is used as given."""
    if callable(norm):
        return norm
    channels = (slice(0, size), slice(size, 2 * size))
    if norm != "seminorm":
        channels += (slice(2 * size, None),)

    def mixed_rms(error: torch.Tensor) -> torch.Tensor:
        error = error.reshape(-1)
        return torch.stack([rms_norm(error[c]) for c in channels if error[c].numel()]).max()

    return mixed_rms


class _AdjointSolve(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, problem: Problem, mode: Adjoint, y0: torch.Tensor, *params: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            ys = problem.solve(y0)
        ctx.problem, ctx.mode = problem, mode
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        problem, mode = ctx.problem, ctx.mode
        ys, *params = ctx.saved_tensors
        size = ys.shape[1]
        adjoint = grad_ys[-1]
        grad_params = ys.new_zeros(sum(p.numel() for p in params))
        for i in range(len(problem.times) - 1, 0, -1):
            backward = mode.backward_problem(
                problem, params, [problem.times[i], problem.times[i - 1]]
            )
            state = torch.cat([ys[i], adjoint, grad_params])
            end = backward.solve(state)[-1]
            adjoint = end[size : 2 * size] + grad_ys[i - 1]
            grad_params = end[2 * size :]
            problem.stats.backward_nfe += backward.stats.nfe
            problem.stats.backward_steps += backward.stats.n_steps
        grads = [
            g.view_as(p)
            for g, p in zip(grad_params.split([p.numel() for p in params]), params, strict=True)
        ]
        return (None, None, adjoint, *grads)


GRADIENT_MODES: dict[str, type] = {
    "backprop": Backprop,
    "adjoint": Adjoint,
    "checkpoint": Checkpointed,
}


def gradient_mode(gradient: str | GradientMode) -> GradientMode:
    """A gradient mode from its name ('backprop', 'adjoint', 'checkpoint') or itself."""
    if isinstance(gradient, str):
        if gradient not in GRADIENT_MODES:
            raise ODEInputError(
                f"unknown gradient {gradient!r}; valid gradients are: {', '.join(GRADIENT_MODES)}"
            )
        return GRADIENT_MODES[gradient]()
    return gradient
