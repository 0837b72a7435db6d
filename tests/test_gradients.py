"""Gradients through the solver against finite differences (float64 gradcheck)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from neuralode import odeint

SOLVERS = {
    # (cubic: outputs between grid points move with t at f's rate, like the exact solution)
    "rk4": {"method": "rk4", "options": {"step_size": 0.05, "interp": "cubic"}},
    "dopri5": {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10},
    "tsit5": {"method": "tsit5", "rtol": 1e-10, "atol": 1e-10},
}


def mlp_field(w1: torch.Tensor, w2: torch.Tensor):
    """dy/dt = tanh(y W1 + t) W2, y of shape (batch, 2)."""
    return lambda t, y: torch.tanh(y @ w1 + t) @ w2


def make_weights() -> tuple[torch.Tensor, torch.Tensor]:
    w1 = (0.5 * torch.randn(2, 8, dtype=torch.float64)).requires_grad_()
    w2 = (0.5 * torch.randn(8, 2, dtype=torch.float64)).requires_grad_()
    return w1, w2


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_gradient_wrt_y0_and_parameters(solver: str) -> None:
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w1, w2 = make_weights()
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)

    def solve(y0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return odeint(mlp_field(w1, w2), y0, t, **SOLVERS[solver])

    assert gradcheck(solve, (y0, w1, w2), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("direction", ["forwards", "backwards"])
def test_gradient_wrt_times(solver: str, direction: str) -> None:
    y0 = torch.randn(3, 2, dtype=torch.float64)
    w1, w2 = make_weights()
    times = [0.1, 0.5, 0.8, 1.2]
    t = torch.tensor(times if direction == "forwards" else times[::-1], dtype=torch.float64)
    t.requires_grad_()
    with torch.no_grad():
        field = mlp_field(w1.detach(), w2.detach())

    def solve(t: torch.Tensor) -> torch.Tensor:
        return odeint(field, y0, t, **SOLVERS[solver])

    # The time gradient is that of the exact solution: it matches finite differences of the
    # discrete solve up to the solver's error (tiny here).
    assert gradcheck(solve, (t,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_of_tuple_state() -> None:
    position = torch.randn(4, dtype=torch.float64, requires_grad=True)
    velocity = torch.randn(4, dtype=torch.float64, requires_grad=True)
    damping = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)

    def solve(x: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return odeint(lambda t, s: (s[1], -s[0] - c * s[1]), (x, v), t, rtol=1e-10, atol=1e-10)

    assert gradcheck(solve, (position, velocity, damping), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_matches_closed_form() -> None:
    """y' = a·y: y(T) = y0·exp(aT), so dy(T)/da = T·y0·exp(aT) and dy(T)/dT = a·y(T)."""
    a = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=torch.float64)
    y_end = odeint(lambda t, y: a * y, y0, t, rtol=1e-11, atol=1e-11)[-1, 0]
    grad_a, grad_t = torch.autograd.grad(y_end, (a, t))
    exact = 1.5 * torch.exp(a * 2.0)
    torch.testing.assert_close(grad_a, 2.0 * exact, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(grad_t[1], a * exact, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(grad_t[0], -a * exact, rtol=1e-8, atol=1e-9)
