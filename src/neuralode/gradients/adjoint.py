"""The adjoint sensitivity method (Chen et al. 2018; torchdiffeq's ``odeint_adjoint``).

The forward solve keeps no graph. The backward pass solves the augmented state s = [y, a, g]
(the state, the adjoint a = ∂L/∂y, the parameter gradient g) from each output time to the one
before: ds/dt = [f, −aᵀ ∂f/∂y, −aᵀ ∂f/∂θ]. Its problem is built from the forward problem's
config objects (method, controller, tolerances, execution), or from the ``adjoint_*`` arguments
where they are given; forward options are never copied.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..core.callbacks import Callbacks
from ..core.config import (
    SCIPY_METHOD,
    Execution,
    Problem,
    make_controller,
    make_problem,
    resolve_method,
)
from ..core.controllers import AdaptiveController, FixedGrid, Tolerance
from ..core.execution import integrate
from ..core.implicit_methods import ImplicitMethod
from ..core.state import FlatField, StateLayout
from ..core.stats import SolverStats
from ..core.transforms import (
    alive,
    carries_tangent,
    differentiated_further,
    has_dual_tangent,
    under_transform,
    under_vmap,
    unwrap,
)
from ..errors import ODEInputError, TransformError


@dataclass(frozen=True)
class Adjoint:
    """The adjoint sensitivity method (torchdiffeq's ``odeint_adjoint``).

    Args:
        rtol: relative tolerance of the backward solve (default: the forward one).
        atol: absolute tolerance of the backward solve (default: the forward one).
        method: method of the backward solve (default: the forward one).
        options: options of the backward solve, parsed as ``odeint``'s (default: the forward
            problem's controller and execution); ``"norm": "seminorm"`` leaves the
            parameter-gradient channels out of the error control.
        params: the tensors to differentiate with respect to (default: ``func.parameters()``).
    """

    rtol: float | None = None
    atol: float | None = None
    method: str | None = None
    options: Mapping[str, Any] | None = None
    params: Sequence[torch.Tensor] | None = field(default=None, compare=False)

    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        method = problem.method
        if self.method is not None and not self._scipy(problem):
            method = resolve_method(self.method)
        if method.implicit and not isinstance(method, ImplicitMethod):
            raise ODEInputError(
                f"the adjoint's backward solve cannot use the implicit method {method.name!r} "
                "(its Jacobian would miss the vector-Jacobian products' dependence on y): pass "
                "adjoint_method='dopri5', or use gradient='backprop'"
            )
        params = self._params(problem)
        if under_vmap() and any(has_dual_tangent(x) for x in (y0, *params)):
            raise TransformError(
                "forward mode through the adjoint under torch.func.vmap takes torch.func.jvp or "
                "torch.func.jacfwd inside the vmap, not torch.autograd.forward_ad's dual tensors "
                "(torch's generated vmap rule of the adjoint's autograd.Function fails on them); "
                "or use gradient='backprop'"
            )
        names = parameter_names(problem.field.func, params)
        grid = getattr(problem.controller, "grid", None)
        grid = grid if torch.is_tensor(grid) else None
        return _AdjointSolve.apply(problem, self, names, problem.batched_times, grid, y0, *params)

    def _scipy(self, problem: Problem) -> bool:
        """The backward solve is scipy's too: ``adjoint_method="scipy_solver"``, or the forward
        solve's method, with no ``adjoint_method`` (torchdiffeq's default)."""
        if self.method is None:
            return problem.execution.scipy is not None
        return self.method == SCIPY_METHOD

    def _params(self, problem: Problem) -> tuple[torch.Tensor, ...]:
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
        # (a parameter torch.func.jvp moves carries a tangent and does not require grad)
        return tuple(p for p in params if p.requires_grad or carries_tangent(p))

    def backward_problem(
        self,
        problem: Problem,
        params: Sequence[torch.Tensor],
        times: list[float],
        check_leaves: bool = False,
        differentiable: bool = False,
        names: list[str] | None = None,
        batched_times: torch.Tensor | None = None,
    ) -> Problem:
        """The augmented problem s = [y, a, g] on one interval between output times, from the
        last time to the first (``batched_times``: every instance's, under torch.func.vmap over
        t; see :class:`~neuralode.core.config.Problem`). With ``check_leaves``, its first
        vector-Jacobian product warns of tensors func depends on that require grad and are
        not in ``params``. With
        ``differentiable`` (a recorded backward pass: double backward), the products keep
        their graph in y, a and the parameters. ``names``: the parameters' names in func (an
        nn.Module), when ``params`` are not its tensors themselves (inside torch.func)."""
        size = problem.y0.numel()
        n_params = sum(p.numel() for p in params)
        compiled = problem.execution.compiled and self.options is None and not differentiable
        names = parameter_names(problem.field.func, params) if names is None else names
        vector_jacobian = None
        # (torch.func.vjp composes with torch.func's levels; autograd.grad inside a grad
        # transform does not. An implicit method's Newton Jacobian of the augmented field is
        # then a torch.func.vjp of these products, one level deeper.)
        if compiled or differentiable or under_transform():
            vector_jacobian = _functional_vjp(problem, params, names)
        if (differentiable or under_transform()) and vector_jacobian is None:
            raise TransformError(
                "a differentiable backward pass through the adjoint (create_graph=True, or a "
                "torch.func transform) needs func to be an nn.Module whose trainable parameters "
                "are the adjoint's, or no adjoint_params at all: use gradient='backprop' or "
                "gradient='checkpoint' for this function, or call the module with "
                "torch.func.functional_call"
            )
        backward_method = self.method or problem.method
        scipy = self._scipy(problem)
        if differentiable and scipy:
            raise TransformError(
                "the adjoint's backward solve by scipy_solver cannot be differentiated "
                "(create_graph=True or a torch.func transform): pass adjoint_method='dopri5'"
            )
        if vector_jacobian is None:
            compiled = False  # autograd.grad cannot be traced into the loop
            # An implicit Runge-Kutta method's Newton iterations take the augmented field's
            # Jacobian by autograd: the products are then differentiable in y and a.
            implicit = not scipy and isinstance(resolve_method(backward_method), ImplicitMethod)
            vector_jacobian = _autograd_vjp(problem, params, check_leaves, differentiable=implicit)

        def augmented(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            f, vjps = vector_jacobian(t, s[:size], -s[size : 2 * size])
            return torch.cat(
                [f]
                + [
                    torch.zeros_like(p).reshape(-1) if v is None else v.reshape(-1)
                    for v, p in zip(vjps, (f, *params), strict=True)
                ]
            )

        state = problem.y0.new_zeros(2 * size + n_params)
        if self.options is not None or self.method == SCIPY_METHOD:
            # the backward solve configured as a solve of its own
            options = dict(self.options or {})
            norm = options.pop("norm", None)
            rtol, atol = problem.tolerance.rtol.min(), problem.tolerance.atol.min()
            if batched_times is None:
                batched_times = torch.tensor(times, dtype=torch.float64, device=state.device)
            built = make_problem(
                augmented,
                state,
                batched_times,
                float(rtol) if self.rtol is None else self.rtol,
                float(atol) if self.atol is None else self.atol,
                SCIPY_METHOD if scipy else backward_method,
                options,
            )
            callbacks = Callbacks.find(problem.field.func, built.layout, adjoint=True)
            return _with_augmented_norm(replace(built, callbacks=callbacks), norm, problem, params)
        layout = StateLayout(state)
        stats = SolverStats()
        method = problem.method if self.method is None else resolve_method(self.method)
        tolerance = self._tolerance(problem.tolerance, size, n_params)
        controller: AdaptiveController | FixedGrid
        ends = times if batched_times is None else batched_times  # (each instance's)
        if isinstance(problem.controller, FixedGrid) and not method.adaptive:
            controller = problem.controller.within(ends[0], ends[-1])
        elif not method.adaptive:
            controller = FixedGrid(tuple(ends) if batched_times is None else ends)
        elif isinstance(problem.controller, AdaptiveController):
            controller = replace(problem.controller, error_order=method.error_order,
                                 tolerance=tolerance)  # fmt: skip
        else:
            controller = make_controller(method, tolerance, {})
        execution = Execution(compiled=compiled, scipy=problem.execution.scipy if scipy else None)
        callbacks = Callbacks.find(problem.field.func, layout, adjoint=True)
        built = Problem(
            layout,
            state,
            times,
            FlatField(augmented, layout, stats),
            method,
            tolerance,
            controller,
            execution if callbacks is None else Execution(),
            problem.max_num_steps,
            callbacks=callbacks,
            stats=stats,
            batched_times=batched_times,
        )
        return _with_augmented_norm(built, None, problem, params)

    def _tolerance(self, forward: Tolerance, size: int, n_params: int) -> Tolerance:
        """The backward tolerances: the adjoint's own numbers, or the forward's per component
        for y and a and their tightest for the parameter gradient."""

        def augmented(given: float | None, forward_value: torch.Tensor) -> torch.Tensor:
            if given is not None:
                return torch.scalar_tensor(given, dtype=forward_value.dtype,
                                           device=forward_value.device)  # fmt: skip
            if forward_value.dim() == 0:
                return forward_value
            tightest = forward_value.min().expand(n_params)
            return torch.cat([forward_value, forward_value, tightest])

        # (constants: a torch.func transform around the forward solve may have wrapped them)
        forward_rtol, forward_atol = unwrap(forward.rtol), unwrap(forward.atol)
        rtol, atol = augmented(self.rtol, forward_rtol), augmented(self.atol, forward_atol)
        return Tolerance(rtol, atol, exact_zero=bool((atol == 0).any()))


def _with_augmented_norm(
    problem: Problem, norm: Any, forward: Problem, params: Sequence[torch.Tensor]
) -> Problem:
    """The backward problem with the augmented state's norm in its controller and tolerance."""
    if not isinstance(problem.controller, AdaptiveController):
        return problem
    augmented = _augmented_norm(norm, forward, params)
    tolerance = replace(problem.controller.tolerance, norm=augmented)
    controller = replace(problem.controller, tolerance=tolerance)
    return replace(problem, tolerance=tolerance, controller=controller)


VectorJacobian = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, Sequence[torch.Tensor | None]],
]
"""(t, y, v) → (f(t, y), (vᵀ ∂f/∂y, vᵀ ∂f/∂θ for each parameter)) on flat y."""


def _autograd_vjp(
    problem: Problem,
    params: Sequence[torch.Tensor],
    check_leaves: bool = False,
    differentiable: bool = False,
) -> VectorJacobian:
    """Vector-Jacobian products by torch.autograd.grad (any func, eager). A field whose output
    depends on neither y nor the parameters has zero products. With ``check_leaves``, the
    first product also looks, on the graph it differentiates anyway, for tensors that require
    grad and that f depends on other than y, t and ``params`` (see :func:`_warn_unlisted`).
    ``differentiable``: when y or v require grad (an implicit method taking the augmented
    field's Jacobian), f and the products keep their graph in them."""
    flat_field = problem.field
    pending = [check_leaves]

    def vector_jacobian(t: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> Any:
        tracked = differentiable and (y.requires_grad or v.requires_grad)
        with torch.enable_grad():
            if not (tracked and y.requires_grad):
                y = y.detach().requires_grad_(True)
            f = flat_field.evaluate(t, y)
            if not f.requires_grad:
                return f, (None,) * (1 + len(params))
            candidates = None
            if pending[0]:
                pending[0] = False
                candidates = _unlisted_leaves(f, params, (y, t))
            vjps = torch.autograd.grad(f, (y, *params), v, allow_unused=True,
                                       create_graph=tracked)  # fmt: skip
        if candidates:
            _warn_unlisted(candidates)
        return (f if tracked else f.detach()), vjps

    return vector_jacobian


def parameter_names(func: Any, params: Sequence[torch.Tensor]) -> list[str] | None:
    """The names of ``params`` in the nn.Module ``func`` (None if func is no module or one of
    them is not its parameter; no names for no parameters, whatever func is)."""
    if not params:
        return []
    if not isinstance(func, torch.nn.Module):
        return None
    names = {id(p): name for name, p in func.named_parameters()}
    if not all(id(p) in names for p in params):
        return None
    return [names[id(p)] for p in params]


def _functional_vjp(
    problem: Problem, params: Sequence[torch.Tensor], param_names: list[str] | None
) -> VectorJacobian | None:
    """Vector-Jacobian products by torch.func.vjp, which torch.compile traces into the compiled
    loop and which keeps its graph for a differentiable backward pass (its derivatives stop at
    y and the parameters); only for an nn.Module func whose parameters are all the adjoint's,
    named ``param_names``, or for any func with no parameters (None otherwise)."""
    layout, func = problem.layout, problem.field.func
    if param_names is None:
        return None

    def vector_jacobian(t: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> Any:
        def call(y: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
            if not values:  # (func may be any callable)
                return layout.flatten(func(t, layout.unflatten(y)))
            bound = dict(zip(param_names, values, strict=True))
            out = torch.func.functional_call(func, bound, (t, layout.unflatten(y)))
            return layout.flatten(out)

        f, pull_back = torch.func.vjp(call, y, *params)
        return f, pull_back(v)

    return vector_jacobian


def _augmented_norm(
    norm: Any, forward: Problem, params: Sequence[torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Error norm of the augmented state [y, a, g] (the flat scaled error), with torchdiffeq's
    meaning.

    - A callable gets the tuple torchdiffeq's ``odeint_adjoint`` gives it: ``(t, y, adj_y,
      *adj_params)`` for a tensor state, ``(t, *y, *adj_y, *adj_params)`` for a tuple state,
      each shaped like y0's part or the parameter (complex for a complex state). ``t`` is the
      scaled error of the time-gradient channel, which this solve does not integrate (the
      times' gradients are taken apart, :mod:`neuralode.gradients.times`): a 0-d zero.
    - By default, the largest of the forward solve's norm of y and of a (the user's forward
      ``norm`` if one was given, else RMS, the largest RMS of the parts for tuple states) and
      the RMS of each parameter's gradient; ``"seminorm"`` (Kidger et al. 2021) leaves the
      parameter gradients out, so that it can only lengthen the steps.
    """
    layout = forward.layout
    size = layout.size
    param_sizes = [p.numel() for p in params]
    param_shapes = [p.shape for p in params]

    def split(error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        error = error.reshape(-1)
        return error[:size], error[size : 2 * size], list(error[2 * size :].split(param_sizes))

    if callable(norm):
        user = norm

        def structured(error: torch.Tensor) -> torch.Tensor:
            y, a, grads = split(error)
            y_parts, a_parts = layout.unflatten(y, cast=False), layout.unflatten(a, cast=False)
            if not layout.is_tuple:
                y_parts, a_parts = (y_parts,), (a_parts,)
            t = error.new_zeros(())
            shaped = [g.view(shape) for g, shape in zip(grads, param_shapes, strict=True)]
            return torch.as_tensor(user((t, *y_parts, *a_parts, *shaped)), dtype=error.dtype,
                                   device=error.device)  # fmt: skip

        return structured
    if norm not in (None, "seminorm"):
        raise ODEInputError(
            f"adjoint_options['norm'] must be 'seminorm' or a callable, got {norm!r}"
        )
    with_params = norm != "seminorm"
    forward_norm = forward.tolerance.norm
    if forward_norm is None:
        return _largest_rms(forward, param_sizes if with_params else [])
    forward_structure = forward.tolerance.structure

    def state_norm(x: torch.Tensor) -> torch.Tensor:
        given = forward_norm(forward_structure(x) if forward_structure else x)
        return torch.as_tensor(given, dtype=x.dtype, device=x.device).reshape(())

    def mixed(error: torch.Tensor) -> torch.Tensor:
        y, a, grads = split(error)
        channels = [state_norm(y), state_norm(a)]
        if with_params:
            channels += [_rms(g) for g in grads if g.numel()]
        return torch.stack(channels).max()

    return mixed


def _largest_rms(forward: Problem, param_sizes: Sequence[int]) -> Callable[[torch.Tensor], Any]:
    """The largest RMS over the segments of the flat augmented error [y, a, g]: each part of y
    and of a (a complex entry's halves counted as one entry) and each parameter's gradient of
    ``param_sizes`` (none: the seminorm, which leaves g out). One segmented sum of squares, not
    a norm per segment."""
    layout = forward.layout
    parts = layout.numels if layout.is_tuple else [layout.size]
    per_entry = 2 if layout.is_complex else 1
    sizes = [*parts, *parts, *param_sizes]
    entries = [n / per_entry for n in parts] * 2 + [float(n) for n in param_sizes]
    kept = [i for i, n in enumerate(sizes) if n]  # an empty segment has no RMS
    device = forward.y0.device
    segment = torch.repeat_interleave(
        torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device)
    )
    length = segment.numel()
    select = None if len(kept) == len(sizes) else torch.tensor(kept, device=device)
    inverse_counts = torch.tensor([1.0 / entries[i] for i in kept], dtype=torch.float64,
                                  device=device)  # fmt: skip
    in_dtype: dict[torch.dtype, torch.Tensor] = {}

    def largest_rms(error: torch.Tensor) -> torch.Tensor:
        squares = error.reshape(-1)[:length].square()
        sums = squares.new_zeros(len(sizes)).index_add(0, segment, squares)
        if select is not None:
            sums = sums[select]
        scale = in_dtype.get(sums.dtype)
        if scale is None:
            scale = in_dtype[sums.dtype] = inverse_counts.to(sums.dtype)
        return (sums * scale).max().sqrt()

    return largest_rms


def _rms(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


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
    f: torch.Tensor, params: Sequence[torch.Tensor], ours: Sequence[torch.Tensor]
) -> list[weakref.ref]:
    """Weak references to the tensors that require grad, that ``f``'s graph reaches, and that
    are neither in ``params`` (a non-leaf tensor in ``params``, such as a computed condition,
    covers its own history) nor one of ``ours`` (the y and t of this evaluation)."""
    known = {id(p) for p in params} | {id(x) for x in ours}
    return [weakref.ref(leaf) for leaf in _leaves(f, params) if id(leaf) not in known]


def _warn_unlisted(candidates: list[weakref.ref]) -> None:
    """Warn of the candidates that outlive the evaluation's graph: the tensors whose gradients
    the adjoint does not compute. Leaves that func creates during the call (such as a detached
    copy of y that requires grad, to take a trace) die with the graph and are not reported."""
    missing = [leaf for leaf in (ref() for ref in candidates) if leaf is not None]
    if not missing:
        return
    shapes = ", ".join(str(tuple(leaf.shape)) for leaf in missing)
    warnings.warn(
        f"neuralode: func depends on {len(missing)} tensor(s) that require grad but are not in "
        f"adjoint_params (shapes {shapes}); the adjoint computes no gradient for them: pass "
        "them in adjoint_params=(...) or register them as parameters of func",
        RuntimeWarning,
        stacklevel=2,
    )


class _AdjointSolve(torch.autograd.Function):
    """The solve with the adjoint's backward pass. Written with ``setup_context`` so that
    torch.func's transforms (grad, vjp, jacrev, vmap through the generated rule) apply; the
    backward pass is differentiable when autograd records it (``create_graph=True``, or any
    torch.func transform, which always records): the backward solve then runs under autograd
    (its vector-Jacobian products keep their graph) and the saved solution is the forward's
    output, so that a second derivative flows back through this Function again.

    ``times``, ``grid``: the problem's batched times and fixed grid under torch.func.vmap over
    t (else None), inputs so that the generated vmap rule hands each pass the tensors of its
    own vmap level."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        problem: Problem,
        mode: Adjoint,
        names: Any,
        times: torch.Tensor | None,
        grid: torch.Tensor | None,
        y0: torch.Tensor,
        *params: torch.Tensor,
    ) -> Any:
        problem = _timed(problem, times, grid)
        if names and under_transform():  # (func's parameters: these inputs, at
            problem = _bind(problem, names, params)  # this level of torch.func's transforms)
        with torch.no_grad():
            return integrate(problem, y0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        problem, mode, names, times, grid, y0, *params = inputs
        ctx.problem, ctx.mode, ctx.names = problem, mode, names
        ctx.save_for_backward(output, times, grid, *params)
        ctx.save_for_forward(y0, times, grid, *params)

    @staticmethod
    def jvp(
        ctx: Any, _p: None, _m: None, _n: None, _t: Any, _g: Any, y0_t: Any, *param_ts: Any
    ) -> torch.Tensor:
        """Forward mode: the tangent of the forward solve itself (forward-mode differentiation
        of its steps, as with gradient='backprop'), with respect to y0 and the parameters."""
        names = ctx.names
        y0, times, grid, *params = ctx.saved_tensors
        problem = _timed(ctx.problem, times, grid)
        moving = [i for i, tangent in enumerate(param_ts) if tangent is not None]
        if moving and names is None:
            raise TransformError(
                "forward mode through the adjoint with respect to func's parameters needs func "
                "to be an nn.Module whose trainable parameters are the adjoint's: use "
                "gradient='backprop'"
            )
        y0_t = torch.zeros_like(y0) if y0_t is None else y0_t
        if not moving:
            return _forward_mode(lambda y: integrate(problem, y), (y0,), (y0_t,))
        assert names is not None
        chosen = [names[i] for i in moving]

        def solve(y: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
            return integrate(_bind(problem, chosen, values), y)

        primals = (y0, *(params[i] for i in moving))
        tangents = (y0_t, *(param_ts[i] for i in moving))
        return _forward_mode(solve, primals, tangents)

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mode = ctx.mode
        # (saved by a torch.func level that may have exited: jacrev's pullback under vmap)
        ys, times, grid, *params = (alive(x) for x in ctx.saved_tensors)
        problem = _timed(ctx.problem, times, grid)
        differentiable = differentiated_further(grad_ys, ys, *params)
        size = ys.shape[1]
        adjoint = grad_ys[-1]
        grad_params = ys.new_zeros(sum(p.numel() for p in params))
        for i in range(len(problem.times) - 1, 0, -1):
            backward = mode.backward_problem(
                problem,
                params,
                [problem.times[i], problem.times[i - 1]],
                check_leaves=i == len(problem.times) - 1,
                differentiable=differentiable,
                names=ctx.names,
                batched_times=None if times is None else times[i - 1 : i + 1].flip(0),
            )
            state = torch.cat([ys[i], adjoint, grad_params])
            if not differentiable:
                state = state.detach()
            end = integrate(backward, state)[-1]
            adjoint = end[size : 2 * size] + grad_ys[i - 1]
            grad_params = end[2 * size :]
            problem.stats.backward_nfe += backward.stats.nfe
            problem.stats.backward_steps += backward.stats.n_steps
        grads = [
            g.view_as(p)
            for g, p in zip(grad_params.split([p.numel() for p in params]), params, strict=True)
        ]
        return (None, None, None, None, None, adjoint, *grads)


def _timed(problem: Problem, times: torch.Tensor | None, grid: torch.Tensor | None) -> Problem:
    """The problem on the batched times and grid handed to :class:`_AdjointSolve` (None: its
    own)."""
    if times is None:
        return problem
    controller = problem.controller if grid is None else replace(problem.controller, grid=grid)
    return replace(problem, batched_times=times, controller=controller)


def _forward_mode(fn: Callable[..., torch.Tensor], primals: tuple, tangents: tuple) -> Any:
    """The tangent of fn(*primals): by torch.func.jvp inside a torch.func transform; under
    torch.autograd.forward_ad (whose dual levels do not nest) by two reverse passes through a
    recorded solve, J v = d/du ⟨J^T u, v⟩ (the same steps, memory as with backprop)."""
    if under_transform():
        return torch.func.jvp(fn, primals, tangents)[1]
    with torch.enable_grad():
        inputs = [x.detach().requires_grad_() for x in primals]
        out = fn(*inputs)
        u = torch.zeros_like(out, requires_grad=True)
        pulled = torch.autograd.grad(out, inputs, u, create_graph=True, allow_unused=True)
        inner = sum((g * v).sum() for g, v in zip(pulled, tangents, strict=True) if g is not None)
        if not isinstance(inner, torch.Tensor) or not inner.requires_grad:
            return torch.zeros_like(out)
        return torch.autograd.grad(inner, u)[0]


def _bind(problem: Problem, names: list[str], values: Sequence[torch.Tensor]) -> Problem:
    """The problem whose func (an nn.Module) is called with these values of its parameters."""
    module, bound = problem.field.func, dict(zip(names, values, strict=True))

    def func(t: torch.Tensor, state: Any) -> Any:
        return torch.func.functional_call(module, bound, (t, state))

    return replace(problem, field=FlatField(func, problem.layout, problem.stats))
