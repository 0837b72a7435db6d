"""Gradients with respect to the output times, attached whatever the gradient mode.

y(t_i) moves with t_i at the rate f(t_i, y_i), and the whole solution moves with its start time:
∂y(t)/∂t0 = −Φ(t, t0) f(t0, y0), so the gradient reaching y0 through the solve, contracted with
−f(t0, y0), is dL/dt0.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.config import Problem


class _StartTimeGradient(torch.autograd.Function):
    """Identity on y0 whose backward also returns dL/dt0 = −⟨dL/dy0, f(t0, y0)⟩."""

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


def with_time_gradients(
    problem: Problem, t: torch.Tensor, solve: Any, y0: torch.Tensor
) -> torch.Tensor:
    """``solve(problem, y0)`` (states (len(t), N)) with, when ``t`` requires grad, the
    exact-solution gradients with respect to the times attached."""
    if not t.requires_grad:
        return solve(problem, y0)
    moved = _StartTimeGradient.apply(y0, t[0], problem)
    solution = solve(problem, moved)
    solution = torch.cat([y0[None], solution[1:]])  # y(t0) = y0 does not move with t0
    with torch.no_grad():
        derivatives = torch.cat(
            [problem.field(time, y) for time, y in zip(problem.times, solution, strict=True)]
        )
    return _OutputTimeGradient.apply(solution, t, derivatives)
