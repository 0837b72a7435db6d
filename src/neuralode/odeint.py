"""The public door: ``odeint`` with torchdiffeq's arguments and meaning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .gradients import Adjoint, GradientMode, gradient_mode
from .problem import Problem, make_problem
from .state import State, VectorFieldFn
from .stats import SolverStats

DEFAULT_RTOL, DEFAULT_ATOL = 1e-7, 1e-9  # torchdiffeq's


class _StartTimeGradient(torch.autograd.Function):
    """Identity on y0 whose backward also returns dL/dt0 = −⟨dL/dy0, f(t0, y0)⟩.

    The solution's dependence on its start time: ∂y(t)/∂t0 = −Φ(t, t0) f(t0, y0), so the
    gradient reaching y0 through the solve, contracted with −f(t0, y0), is dL/dt0.
    """

    @staticmethod
    def forward(ctx: Any, y0: torch.Tensor, t0: torch.Tensor, problem: Problem) -> torch.Tensor:
        ctx.problem = problem
        ctx.save_for_backward(y0)
        return y0.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (y0,) = ctx.saved_tensors
        with torch.no_grad():
            f0 = ctx.problem.field(ctx.problem.times[0], y0).view(-1)
        return grad, -(grad * f0).sum(), None


class _OutputTimeGradient(torch.autograd.Function):
    """Identity on the solution whose backward also returns dL/dt_i = ⟨dL/dy(t_i), f(t_i, y_i)⟩
    for the output times after the first (the first is handled by :class:`_StartTimeGradient`)."""

    @staticmethod
    def forward(
        ctx: Any, solution: torch.Tensor, t: torch.Tensor, derivatives: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(derivatives)
        return solution.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (derivatives,) = ctx.saved_tensors
        grad_t = (grad * derivatives).sum(dim=1)
        grad_t[0] = 0.0
        return grad, grad_t, None


def solve_with_time_gradients(
    problem: Problem, t: torch.Tensor, mode: GradientMode
) -> torch.Tensor:
    """Solve with the gradient mode and, when ``t`` requires grad, attach the exact-solution
    gradients with respect to the times. Returns shape (len(t), N)."""
    if not t.requires_grad:
        return mode.solve(problem, problem.y0)
    y0 = _StartTimeGradient.apply(problem.y0, t[0], problem)
    solution = mode.solve(problem, y0)
    solution = torch.cat([problem.y0[None], solution[1:]])  # y(t0) = y0 does not move with t0
    with torch.no_grad():
        derivatives = torch.cat(
            [problem.field(time, y) for time, y in zip(problem.times, solution, strict=True)]
        )
    return _OutputTimeGradient.apply(solution, t, derivatives)


def odeint(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    rtol: float | torch.Tensor = DEFAULT_RTOL,
    atol: float | torch.Tensor = DEFAULT_ATOL,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    gradient: str | GradientMode = "backprop",
    return_stats: bool = False,
) -> State | tuple[State, SolverStats]:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, and return y at every time in ``t``.

    Drop-in for ``torchdiffeq.odeint``; gradients flow to y0, to func's parameters, and to
    ``t``, by backpropagation through the solver unless ``gradient`` says otherwise.

    Args:
        func: the vector field, ``func(t, y) -> dy/dt``; t is a 0-d tensor of y0's dtype, y and
            dy/dt have y0's structure (a tensor or a tuple of tensors).
        y0: initial state, a tensor of any shape (batch dimensions included) or a tuple of
            tensors sharing dtype and device; float32 or float64.
        t: 1-D tensor of strictly increasing or strictly decreasing output times.
        rtol: relative tolerance, a float or a tensor broadcastable to the state.
        atol: absolute tolerance, a float or a tensor broadcastable to the state.
        method: one of ``neuralode.METHODS`` (default ``"dopri5"``).
        options: solver options. Any method: ``step_size`` (fixed steps of this size) or ``grid``
            (fixed steps on these times). Adaptive methods also: ``first_step``, ``safety``
            (0.9), ``ifactor`` (10, largest growth), ``dfactor`` (0.2, largest shrink),
            ``max_num_steps`` (100000), ``norm`` (callable on the scaled error, default RMS),
            ``controller`` (``"I"`` or ``"PI"``), ``per_sample`` (True: every sample of a
            (B, ...) state takes its own steps, and func gets t as a (B, 1, ..., 1) tensor),
            ``compile`` (True: the whole solve as one ``torch.compile``'d call; see
            :mod:`neuralode.row_solve`). ``rosenbrock23`` also: ``jacobian`` (``"full"`` or
            ``"per_sample"``: B independent systems) and ``jacobian_every`` (1).
        gradient: how to differentiate the solve: ``"backprop"`` (default), ``"adjoint"``,
            ``"checkpoint"``, or a configured :class:`~neuralode.gradients.Backprop`,
            :class:`~neuralode.gradients.Adjoint` or :class:`~neuralode.gradients.Checkpointed`.
        return_stats: also return the :class:`SolverStats` of this solve (its backward fields
            fill in when the gradient is computed).

    Returns:
        y at the times ``t``: shape ``(len(t), *y0.shape)`` (a tuple of such for tuple states),
        and the statistics if ``return_stats``.

    Raises:
        ODEInputError: bad arguments (shape, dtype, device, NaN/Inf, non-monotonic t, unknown
            method or option, negative tolerance, func returning a wrong shape or dtype).
        StepSizeUnderflowError, MaxStepsExceededError, NonFiniteStateError: the solve failed;
            the message says at which t.
    """
    mode = gradient_mode(gradient)
    problem = make_problem(func, y0, t, rtol, atol, method, options)
    solution = problem.layout.unflatten(solve_with_time_gradients(problem, t, mode))
    return (solution, problem.stats) if return_stats else solution


def odeint_adjoint(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    rtol: float | torch.Tensor = DEFAULT_RTOL,
    atol: float | torch.Tensor = DEFAULT_ATOL,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    *,
    return_stats: bool = False,
) -> State | tuple[State, SolverStats]:
    """``odeint`` differentiated by the adjoint method: drop-in for
    ``torchdiffeq.odeint_adjoint``. Memory is O(1) in the number of steps.

    The adjoint_* arguments configure the backward solve and default to the forward ones;
    ``adjoint_options={"norm": "seminorm"}`` leaves the parameter-gradient channels out of its
    error control (fewer backward steps). ``func`` must be an ``nn.Module`` unless
    ``adjoint_params`` lists the tensors it depends on. See :func:`odeint` for the rest.
    """
    mode = Adjoint(adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options, adjoint_params)
    return odeint(
        func, y0, t, rtol, atol, method, options, gradient=mode, return_stats=return_stats
    )
