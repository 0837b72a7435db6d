"""Derivatives with respect to the output times, attached whatever the gradient mode.

y(t_i) moves with t_i at the rate f(t_i, y_i), and the whole solution moves with its start time:
∂y(t)/∂t0 = −Φ(t, t0) f(t0, y0), so the gradient reaching y0 through the solve, contracted with
−f(t0, y0), is dL/dt0. Forward mode is the same in the other direction: a tangent δt0 of the
start is the tangent −f(t0, y0) δt0 of y0, carried by the solve; a tangent δt_i of an output
time adds f(t_i, y_i) δt_i to y(t_i)'s.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.config import Problem
from ..core.transforms import carries_tangent, differentiated_further
from ..errors import TransformError

_SECOND_ORDER = (
    "second derivatives through the gradient with respect to the output times t are not "
    "supported (the steps' times are constants of the solve): differentiate dL/dt by finite "
    "differences, or detach t when only derivatives with respect to y0 or the parameters are "
    "differentiated again"
)


class _StartTimeGradient(torch.autograd.Function):
    """Identity on y0 whose backward also returns dL/dt0 = −⟨dL/dy0, f(t0, y0)⟩, and whose
    forward mode adds −f(t0, y0) δt0 to y0's tangent."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y0: torch.Tensor, t0: torch.Tensor, problem: Problem) -> torch.Tensor:
        return y0.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        y0, t0, ctx.problem = inputs
        ctx.save_for_backward(y0, t0)
        ctx.save_for_forward(y0, t0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        y0, t0 = ctx.saved_tensors
        if differentiated_further(grad, y0):
            raise TransformError(_SECOND_ORDER)
        with torch.no_grad():
            f0 = _start_derivative(ctx.problem, y0, t0)
        return grad, -(grad * f0).sum(), None

    @staticmethod
    def jvp(ctx: Any, y0_t: Any, t0_t: Any, _: None) -> torch.Tensor:
        y0, t0 = ctx.saved_tensors
        tangent = torch.zeros_like(y0) if y0_t is None else y0_t
        if t0_t is None:
            return tangent
        f0 = _start_derivative(ctx.problem, y0, t0)
        return tangent - f0 * t0_t.to(f0.dtype)


def _start_derivative(problem: Problem, y0: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
    """f(t0, y0) flattened to (N,)."""
    return problem.field(t0.double(), y0[None]).view(-1)


class _OutputTimeGradient(torch.autograd.Function):
    """Identity on the solution whose backward also returns dL/dt_i = ⟨dL/dy(t_i), f(t_i, y_i)⟩
    for the output times after the first (the first is handled by :class:`_StartTimeGradient`),
    and whose forward mode adds f(t_i, y_i) δt_i to the tangent of y(t_i)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(solution: torch.Tensor, t: torch.Tensor, derivatives: torch.Tensor) -> Any:
        return solution.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        solution, _, derivatives = inputs
        ctx.save_for_backward(solution, derivatives)
        ctx.save_for_forward(derivatives)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        solution, derivatives = ctx.saved_tensors
        if differentiated_further(grad, solution):
            raise TransformError(_SECOND_ORDER)
        grad_t = (grad[1:] * derivatives[1:]).sum(dim=1)
        return grad, torch.cat([grad_t.new_zeros(1), grad_t]), None

    @staticmethod
    def jvp(ctx: Any, solution_t: Any, t_t: Any, _: None) -> torch.Tensor:
        (derivatives,) = ctx.saved_tensors
        tangent = torch.zeros_like(derivatives) if solution_t is None else solution_t
        if t_t is None:
            return tangent
        moved = derivatives[1:] * t_t[1:, None].to(derivatives.dtype)
        return tangent + torch.cat([torch.zeros_like(derivatives[:1]), moved])


def with_time_gradients(
    problem: Problem, t: torch.Tensor, solve: Any, y0: torch.Tensor
) -> torch.Tensor:
    """``solve(problem, y0)`` (states (len(t), N)) with, when ``t`` requires grad or carries a
    forward-mode tangent, the exact solution's derivatives with respect to the times attached."""
    if not (t.requires_grad or carries_tangent(t)):
        return solve(problem, y0)
    moved = _StartTimeGradient.apply(y0, t[0], problem)
    solution = solve(problem, moved)
    solution = torch.cat([y0[None], solution[1:]])  # y(t0) = y0 does not move with t0
    with torch.no_grad():
        pairs = zip(problem.output_times, solution, strict=True)
        derivatives = torch.cat([problem.field(time, y[None]) for time, y in pairs])
    return _OutputTimeGradient.apply(solution, t, derivatives)
