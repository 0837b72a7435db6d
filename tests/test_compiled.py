"""The compiled path (options={"compile": True}): the same steps and results as the eager loop.

Each new kind of problem compiles for a few seconds, so these tests share a handful of them.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from neuralode import (
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
    odeint,
    odeint_adjoint,
)

pytestmark = [
    pytest.mark.skipif(
        shutil.which("g++") is None and shutil.which("c++") is None,
        reason="torch.compile (inductor) needs a C++ compiler on the CPU",
    ),
    # The fallback to eager warns: a test of the compiled path that fell back fails.
    pytest.mark.filterwarnings("error:neuralode. the solve could not be compiled"),
]
COMPILE = {"compile": True}


class MLPField(torch.nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2 + sin(t), states (batch, 2)."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)
        ).to(dtype)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y) + torch.sin(t)


def solve_both(func, y0, t, **kwargs):
    """(eager ys, eager stats), (compiled ys, compiled stats)."""
    options = kwargs.pop("options", {})
    eager = odeint(func, y0, t, options=options, return_stats=True, **kwargs)
    compiled = odeint(func, y0, t, options={**options, **COMPILE}, return_stats=True, **kwargs)
    return eager, compiled


@pytest.mark.parametrize(
    "method",  # (each compiles for 15-25 s: dopri5 in the default suite, the others slow)
    [
        "dopri5",
        pytest.param("tsit5", marks=pytest.mark.slow),
        pytest.param("bosh3", marks=pytest.mark.slow),
    ],
)
def test_same_steps_and_states_as_eager(method: str) -> None:
    field = MLPField()
    y0 = torch.randn(16, 2, dtype=torch.float64)
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    with torch.no_grad():
        (ys, stats), (ys_c, stats_c) = solve_both(field, y0, t, rtol=1e-7, atol=1e-9, method=method)
    assert (stats_c.n_accepted, stats_c.n_rejected) == (stats.n_accepted, stats.n_rejected)
    assert stats_c.nfe == stats.nfe
    torch.testing.assert_close(ys_c, ys, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # (15 s of compiling)
def test_accurate_against_the_analytic_solution_backwards_in_time() -> None:
    """y' = A y (rotation with decay) from t = 2 back to 0: y(t) = exp(A (t - 2)) y(2)."""
    a = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)
    a_t = a.T.contiguous()  # (a view made inside the field would alias a: not compilable)
    y2 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.linspace(2, 0, 5, dtype=torch.float64)
    ys = odeint(lambda t, y: y @ a_t, y2, t, rtol=1e-10, atol=1e-12, options=COMPILE)
    exact = torch.stack([y2 @ torch.linalg.matrix_exp(a * (s - 2)).T for s in t])
    torch.testing.assert_close(ys, exact, rtol=1e-8, atol=1e-9)


def test_pi_control_tuple_state_and_custom_norm_match_eager() -> None:
    def field(t, state):
        x, v = state
        return v, -x - 0.1 * v

    state = (torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    t = torch.linspace(0, 5, 4, dtype=torch.float64)
    options = {"controller": "PI", "norm": lambda e: torch.stack([x.abs().max() for x in e]).max()}
    (ys, stats), (ys_c, stats_c) = solve_both(field, state, t, rtol=1e-6, atol=1e-8,
                                              options=options)  # fmt: skip
    assert (stats_c.n_accepted, stats_c.n_rejected) == (stats.n_accepted, stats.n_rejected)
    for part, part_c in zip(ys, ys_c, strict=True):
        torch.testing.assert_close(part_c, part, rtol=1e-10, atol=1e-12)


def test_per_sample_steps_compiled_match_eager_per_sample() -> None:
    mu = torch.logspace(-1, 1, 6, dtype=torch.float64)[:, None]

    def vdp(t, y):
        x, v = y[:, :1], y[:, 1:]
        return torch.cat([v, mu * (1 - x * x) * v - x], dim=1)

    y0 = torch.cat([torch.full((6, 1), 2.0), torch.zeros(6, 1)], 1).double()
    t = torch.linspace(0, 6, 4, dtype=torch.float64)
    options = {"per_sample": True}
    (ys, stats), (ys_c, stats_c) = solve_both(vdp, y0, t, rtol=1e-6, atol=1e-6, options=options)
    assert torch.equal(stats_c.per_sample.n_accepted, stats.per_sample.n_accepted)
    assert torch.equal(stats_c.per_sample.n_rejected, stats.per_sample.n_rejected)
    assert torch.equal(stats_c.per_sample.nfe, stats.per_sample.nfe)
    torch.testing.assert_close(ys_c, ys, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "solve",  # (39 s each: the adjoint in the default suite, backprop slow)
    [pytest.param(odeint, marks=pytest.mark.slow), odeint_adjoint],
    ids=["backprop", "adjoint"],
)
def test_gradients_through_the_compiled_solves_equal_eager_ones(solve) -> None:
    """Backprop through the compiled loop; the adjoint with compiled forward and backward
    solves (vector-Jacobian products by torch.func inside the loop)."""
    field = MLPField()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    grads = []
    for options in ({}, COMPILE):
        ys = solve(field, y0, t, rtol=1e-7, atol=1e-9, options=options)
        grads.append(torch.autograd.grad(ys.square().sum(), (y0, *field.parameters())))
    for eager, compiled in zip(*grads, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-9, atol=1e-11)


def test_float32_mlp_agrees_with_eager_to_rounding() -> None:
    """float32 with inductor's fused matmuls and exp-based tanh: same steps, states to ~1e-6."""
    field = MLPField(torch.float32)
    y0 = torch.randn(256, 2)
    t = torch.linspace(0, 1, 2)
    with torch.no_grad():
        (ys, stats), (ys_c, stats_c) = solve_both(field, y0, t, rtol=1e-6, atol=1e-6)
    assert stats_c.n_accepted == stats.n_accepted
    torch.testing.assert_close(ys_c, ys, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # (34 s of compiling; the eager errors are tested in test_core, test_inputs)
def test_errors_name_the_problem_and_the_time() -> None:
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    y0 = torch.ones(1, dtype=torch.float64)
    with pytest.raises(MaxStepsExceededError, match=r"max_num_steps=5 exceeded at t="):
        odeint(lambda t, y: -50 * y, y0, t, rtol=1e-10, atol=1e-12,
               options={**COMPILE, "max_num_steps": 5})  # fmt: skip
    # y' = 1/(1 - t): blows up at t = 1, steps shrink to nothing there.
    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t=(0\.99|1)"):
        odeint(lambda t, y: 1 / (1 - t) + 0 * y, y0, t, options=COMPILE)
    with pytest.raises(NonFiniteStateError, match=r"NaN or Inf at t="):
        odeint(lambda t, y: torch.where(t > 0.5, torch.nan, 1.0) + 0 * y, y0, t, options=COMPILE)


@pytest.mark.filterwarnings("default:neuralode. the solve could not be compiled")
def test_uncompilable_field_falls_back_to_eager_with_a_warning() -> None:
    def field(t, y):
        if float(y.sum()) > 0:  # a Python branch on a tensor's value cannot be one graph
            return -y
        return y

    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="could not be compiled .*solving eagerly"):
        ys = odeint(field, y0, t, rtol=1e-8, atol=1e-10, options=COMPILE)
    torch.testing.assert_close(ys[-1], y0 * torch.exp(torch.tensor(-1.0, dtype=torch.float64)))


@pytest.mark.slow  # (one to five minutes of compiling the ODE-Net block with its backward)
def test_backward_through_a_compiled_solve_leaves_later_solves_unchanged() -> None:
    """Inductor's backward once reused a saved view of the cached tolerances as a scratch buffer
    (donated buffers): every later solve of the problem ran with a corrupted atol."""
    from neuralode.paper.mnist_models import odenet

    torch.manual_seed(0)
    model = odenet()
    field = model.features.func
    with torch.no_grad():
        y0 = model.downsampling(torch.randn(4, 1, 28, 28))
    t = torch.tensor([0.0, 1.0])
    first = odeint(field, y0, t, rtol=1e-3, atol=1e-3, options=COMPILE)
    first[-1].square().sum().backward()
    with torch.no_grad():
        (ys, stats), (ys_c, stats_c) = solve_both(field, y0, t, rtol=1e-3, atol=1e-3)
    assert stats_c.nfe == stats.nfe
    torch.testing.assert_close(ys_c, ys, rtol=1e-4, atol=1e-5)
