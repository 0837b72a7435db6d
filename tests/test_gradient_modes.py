"""The three gradient modes: adjoint against closed forms, backprop and finite differences;
checkpointed equal to backprop; seminorm; states, dtypes and errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch.autograd import gradcheck

from neuralode import Adjoint, Checkpointed, ODEInputError, odeint, odeint_adjoint

TIGHT = {"rtol": 1e-10, "atol": 1e-10}


class Linear(torch.nn.Module):
    """dy/dt = A y."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.a.T


class MLP(torch.nn.Module):
    """dy/dt = tanh(y W1 + b + t) W2, with a buffer scaling the output."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(2, width)
        self.outer = torch.nn.Linear(width, 2)
        self.register_buffer("scale", torch.tensor(0.8))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale * self.outer(torch.tanh(self.inner(y) + t))


def grads(func: torch.nn.Module, y0: torch.Tensor, t: torch.Tensor, gradient, **kwargs):
    ys = odeint(func, y0, t, gradient=gradient, **kwargs)
    loss = (ys * torch.linspace(-1, 1, ys.numel(), dtype=ys.dtype).view_as(ys)).sum()
    inputs = [y0, t] if t.requires_grad else [y0]
    return torch.autograd.grad(loss, [*inputs, *func.parameters()])


def test_adjoint_matches_closed_form_on_linear_problem() -> None:
    """L = ⟨w, y(T)⟩, y(T) = e^{AT} y0: dL/dy0 = e^{AᵀT} w, and dL/dA = T·top-right block of
    exp([[T Aᵀ, w y0ᵀ], [0, T Aᵀ]]) (the Fréchet derivative of the matrix exponential)."""
    a = torch.tensor([[-0.3, 1.2], [-1.0, -0.2]], dtype=torch.float64)
    func = Linear(a)
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.7, 1.3], dtype=torch.float64)
    horizon = 2.0
    t = torch.tensor([0.0, horizon], dtype=torch.float64)
    y_end = odeint_adjoint(func, y0, t, **TIGHT)[-1]
    grad_y0, grad_a = torch.autograd.grad((w * y_end).sum(), [y0, func.a])

    torch.testing.assert_close(grad_y0, torch.linalg.matrix_exp(a.T * horizon) @ w)
    block = torch.zeros(4, 4, dtype=torch.float64)
    block[:2, :2] = block[2:, 2:] = horizon * a.T
    block[:2, 2:] = torch.outer(w, y0.detach())
    exact_grad_a = horizon * torch.linalg.matrix_exp(block)[:2, 2:]
    torch.testing.assert_close(grad_a, exact_grad_a, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("direction", ["forwards", "backwards"])
def test_adjoint_matches_backprop_on_mlp(direction: str) -> None:
    func = MLP().double()
    y0 = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    times = [0.0, 0.3, 0.7, 1.0]
    t = torch.tensor(times if direction == "forwards" else times[::-1], dtype=torch.float64)
    t.requires_grad_()
    expected = grads(func, y0, t, "backprop", **TIGHT)
    for actual, wanted in zip(grads(func, y0, t, "adjoint", **TIGHT), expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-6, atol=1e-8)


def test_adjoint_matches_finite_differences() -> None:
    func = MLP(width=6).double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    params = tuple(func.parameters())

    def solve(y0: torch.Tensor, t: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        # gradcheck perturbs the weights in place: func sees them.
        return odeint_adjoint(func, y0, t, **TIGHT)

    assert gradcheck(solve, (y0, t, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_checkpointed_equals_backprop(method: str) -> None:
    func = MLP().double()
    y0 = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 7, dtype=torch.float64)
    kwargs = {"method": method, "rtol": 1e-6, "atol": 1e-6, "options": {}}
    if method == "rk4":
        kwargs["options"] = {"step_size": 0.05}
    expected = grads(func, y0, t, "backprop", **kwargs)
    for every in (1, 3, 1000):
        actual = grads(func, y0, t, Checkpointed(every=every), **kwargs)
        for a, b in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_checkpointed_reports_recomputation_as_backward_work() -> None:
    func = MLP().double()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    ys, stats = odeint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk4",
                       options={"step_size": 0.1}, gradient=Checkpointed(every=3),
                       return_stats=True)  # fmt: skip
    assert stats.backward_nfe == 0
    ys.sum().backward()
    assert 0 < stats.backward_nfe <= stats.nfe + 4  # one re-evaluation of f(t, y) per segment


def test_seminorm_same_gradients_with_fewer_backward_evaluations() -> None:
    """Leaving the parameter-gradient channel out of the error norm changes the gradients only
    within tolerance and, summed over a few problems, saves backward evaluations (any single
    solve may take a step more or less: the step sequences differ)."""
    evaluations = {"default": 0, "seminorm": 0}
    for seed in range(3):
        torch.manual_seed(seed)
        func = MLP(width=64).double()
        y0 = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
        t = torch.tensor([0.0, 3.0], dtype=torch.float64)
        gradients = {}
        for norm in evaluations:
            options = {"norm": "seminorm"} if norm == "seminorm" else None
            ys, stats = odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-6, adjoint_options=options,
                                       return_stats=True)  # fmt: skip
            gradients[norm] = torch.autograd.grad(ys.square().sum(), [y0, *func.parameters()])
            evaluations[norm] += stats.backward_nfe
        for a, b in zip(gradients["seminorm"], gradients["default"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert evaluations["seminorm"] < evaluations["default"]


def test_adjoint_tuple_state_float32_and_backward_call() -> None:
    class Oscillator(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.damping = torch.nn.Parameter(torch.tensor(0.2))

        def forward(self, t, state):
            x, v = state
            return v, -x - self.damping * v

    func = Oscillator()
    x0 = torch.randn(5, requires_grad=True)
    v0 = torch.randn(5, requires_grad=True)
    t = torch.linspace(0, 2, 3)
    xs, vs = odeint_adjoint(func, (x0, v0), t, rtol=1e-6, atol=1e-7)
    assert xs.dtype == torch.float32 and xs.shape == (3, 5)
    (xs.square().sum() + vs.sum()).backward()
    expected = torch.autograd.grad(
        sum(s.sum() for s in [odeint(func, (x0, v0), t, rtol=1e-6, atol=1e-7)[0].square(),
                              odeint(func, (x0, v0), t, rtol=1e-6, atol=1e-7)[1]]),
        [x0, v0, func.damping],
    )  # fmt: skip
    for actual, wanted in zip([x0.grad, v0.grad, func.damping.grad], expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-3, atol=1e-4)


def test_adjoint_needs_parameters_of_plain_functions() -> None:
    weight = torch.randn(2, 2, requires_grad=True)
    message = (
        "the adjoint method needs the parameters of func: pass func as an nn.Module or give "
        "adjoint_params=(tensors func depends on)"
    )
    with pytest.raises(ODEInputError, match=f"^{re.escape(message)}$"):
        odeint_adjoint(lambda t, y: y @ weight, torch.randn(2), torch.tensor([0.0, 1.0]))
    ys = odeint_adjoint(lambda t, y: y @ weight, torch.randn(2), torch.tensor([0.0, 1.0]),
                        adjoint_params=(weight,))  # fmt: skip
    (grad,) = torch.autograd.grad(ys.sum(), [weight])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_adjoint_warns_of_unreachable_parameter() -> None:
    """A tensor func depends on that requires grad but is not an adjoint parameter gets no
    gradient: the backward pass warns (it does not raise), naming the fix."""

    class Scaled(torch.nn.Module):
        def __init__(self, outside: torch.Tensor) -> None:
            super().__init__()
            self.rate = torch.nn.Parameter(torch.tensor(-1.0))
            self.outside = outside  # a plain attribute: not a parameter of the module

        def forward(self, t, y):
            return self.rate * y * self.outside

    message = (
        "neuralode: func depends on 1 tensor(s) that require grad but are not in adjoint_params "
        "(shapes (2,)); the adjoint computes no gradient for them: pass them in "
        "adjoint_params=(...) or register them as parameters of func"
    )
    func = Scaled(torch.ones(2, requires_grad=True))
    ys = odeint_adjoint(func, torch.randn(2), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.warns(RuntimeWarning) as record:
        ys.sum().backward()
    assert [str(w.message) for w in record] == [message]  # once, for two intervals
    assert func.rate.grad is not None and func.outside.grad is None


def test_unknown_gradient_mode() -> None:
    message = "unknown gradient 'reverse'; valid gradients are: backprop, adjoint, checkpoint"
    with pytest.raises(ODEInputError, match=f"^{re.escape(message)}$"):
        odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), gradient="reverse")


def test_adjoint_object_configures_backward_solve() -> None:
    func = MLP().double()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys, stats = odeint(func, y0, t, rtol=1e-8, atol=1e-8, return_stats=True,
                       gradient=Adjoint(method="rk4", options={"step_size": 0.1}))  # fmt: skip
    ys.sum().backward()
    assert stats.backward_nfe == 40  # 10 rk4 steps of 4 evaluations


def test_adjoint_accepts_leaves_created_inside_func() -> None:
    """A vector field may detach its input and track it afresh (to take a trace, say): such a
    leaf lives only for one call and is not a lost parameter."""

    class Traced(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rate = torch.nn.Parameter(torch.tensor(-0.5))

        def forward(self, t, y):
            y = y.detach().requires_grad_(True)
            return self.rate * y

    func = Traced()
    ys = odeint_adjoint(func, torch.ones(3), torch.tensor([0.0, 1.0]))
    (grad,) = torch.autograd.grad(ys[-1].sum(), [func.rate])
    assert torch.isfinite(grad)
