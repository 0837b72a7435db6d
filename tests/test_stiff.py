"""The implicit (Rosenbrock) method on stiff problems: Robertson's kinetics and Van der Pol with
μ = 1000 against scipy's Radau, the explicit methods failing clearly on the same problems,
and gradients through it (its order is measured with the others in test_convergence)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from neuralode import MaxStepsExceededError, ODEInputError, odeint, odeint_adjoint


def robertson(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1
    )


def van_der_pol(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[..., 1], 1000.0 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


def scipy_reference(func, y0: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """Radau at rtol 1e-10: (len(t), n)."""
    solution = solve_ivp(
        lambda s, y: func(torch.tensor(s), torch.from_numpy(y)).numpy(),
        (float(t[0]), float(t[-1])),
        y0.numpy(),
        method="Radau",
        rtol=1e-10,
        atol=1e-14,
        t_eval=t.numpy(),
    )
    assert solution.success
    return solution.y.T


ROBERTSON_Y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
ROBERTSON_T = torch.tensor([0.0, 1e-3, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5], dtype=torch.float64)


def test_robertson_matches_radau_and_conserves_mass() -> None:
    ys, stats = odeint(robertson, ROBERTSON_Y0, ROBERTSON_T, rtol=1e-6, atol=1e-10,
                       method="rosenbrock23", return_stats=True)  # fmt: skip
    reference = scipy_reference(robertson, ROBERTSON_Y0, ROBERTSON_T)
    relative = np.abs(ys.numpy() - reference) / (np.abs(reference) + 1e-20)
    assert relative[1:].max() < 1e-3  # (measured 1.6e-4: global error of an order-2 method)
    # Linear invariants survive Rosenbrock steps: y1 + y2 + y3 = 1.
    torch.testing.assert_close(ys.sum(dim=1), torch.ones(8, dtype=torch.float64), atol=1e-12,
                               rtol=0)  # fmt: skip
    assert stats.n_jacobians == stats.n_accepted  # one per step; a rejected step's retry reuses it
    assert stats.n_rejected < 0.05 * stats.n_accepted


def test_jacobian_reused_over_steps_keeps_the_accuracy() -> None:
    """jacobian_every=10: fewer Jacobians than steps (a W-method keeps its order with an old
    one), and the same accuracy against Radau."""
    ys, stats = odeint(robertson, ROBERTSON_Y0, ROBERTSON_T, rtol=1e-6, atol=1e-10,
                       method="rosenbrock23", options={"jacobian_every": 10},
                       return_stats=True)  # fmt: skip
    reference = scipy_reference(robertson, ROBERTSON_Y0, ROBERTSON_T)
    relative = np.abs(ys.numpy() - reference) / (np.abs(reference) + 1e-20)
    assert relative[1:].max() < 1e-3
    assert stats.n_jacobians < stats.n_steps


@pytest.mark.slow  # (24 s; Robertson against Radau stays in the default suite)
def test_van_der_pol_mu_1000_matches_radau() -> None:
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 3000, 7, dtype=torch.float64)
    ys = odeint(van_der_pol, y0, t, rtol=1e-6, atol=1e-6, method="rosenbrock23")
    reference = scipy_reference(van_der_pol, y0, t)
    assert np.abs(ys.numpy()[:, 0] - reference[:, 0]).max() < 2e-3  # (measured 3.3e-4)


VDP_Y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
VDP_T = torch.tensor([0.0, 3000.0], dtype=torch.float64)


@pytest.mark.parametrize(
    ("func", "y0", "t", "atol"),
    [(robertson, ROBERTSON_Y0, ROBERTSON_T, 1e-10), (van_der_pol, VDP_Y0, VDP_T, 1e-6)],
    ids=["robertson", "van_der_pol"],
)
def test_explicit_methods_hit_max_steps_with_a_pointer_to_the_implicit_one(
    func, y0, t, atol
) -> None:
    with pytest.raises(MaxStepsExceededError, match="use method='rosenbrock23'"):
        odeint(func, y0, t, rtol=1e-6, atol=atol, options={"max_num_steps": 5000})
    ys, stats = odeint(func, y0, t, rtol=1e-6, atol=atol, method="rosenbrock23",
                       options={"max_num_steps": 5000}, return_stats=True)  # fmt: skip
    assert stats.n_steps < 5000 and torch.isfinite(ys).all()


def test_gradient_through_the_implicit_steps() -> None:
    """y' = -k y on [0, 0.1] with k = 200: dy(0.1)/dk = -0.1 y(0.1), through the W = I - h d J
    solves and the autograd Jacobian."""
    k = torch.tensor(200.0, dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 0.1], dtype=torch.float64)
    ys = odeint(lambda t, y: -k * y, y0, t, rtol=1e-8, atol=1e-12, method="rosenbrock23")
    (dk,) = torch.autograd.grad(ys[-1, 0], k)
    assert float(dk) == pytest.approx(-0.1 * math.exp(-20.0), rel=1e-3)


def test_per_sample_jacobian_blocks_give_the_full_jacobian_solve() -> None:
    """A batch of 4 Robertson systems with different rates: the block-diagonal Jacobian
    (3 products) gives the same steps and states as the full one (12 products)."""
    rates = torch.tensor([0.04, 0.02, 0.08, 0.01], dtype=torch.float64)[:, None]

    def batch(t, y):
        return robertson(t, y) + torch.cat([-rates + 0.04, rates - 0.04, 0 * rates], 1) * y[:, :1]

    y0 = ROBERTSON_Y0.expand(4, 3).clone()
    t = ROBERTSON_T[:6]
    solves = [
        odeint(batch, y0, t, rtol=1e-6, atol=1e-10, method="rosenbrock23",
               options={"jacobian": jacobian}, return_stats=True)
        for jacobian in ("full", "per_sample")
    ]  # fmt: skip
    (full, full_stats), (blocks, block_stats) = solves
    assert (block_stats.n_accepted, block_stats.n_rejected) == (
        full_stats.n_accepted, full_stats.n_rejected
    )  # fmt: skip
    torch.testing.assert_close(blocks, full, rtol=1e-10, atol=1e-14)
    assert not torch.allclose(full[-1, 0], full[-1, 1])  # the samples differ


def test_adjoint_backward_refuses_the_implicit_method_and_takes_an_explicit_one() -> None:
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)

    def decay(t, y):
        return -k * y

    with pytest.raises(ODEInputError, match=r"cannot use the implicit method 'rosenbrock23'"):
        odeint_adjoint(decay, y0, t, method="rosenbrock23", adjoint_params=(k,))
    ys = odeint_adjoint(decay, y0, t, rtol=1e-8, atol=1e-10, method="rosenbrock23",
                        adjoint_method="dopri5", adjoint_params=(k,))  # fmt: skip
    (dk,) = torch.autograd.grad(ys[-1, 0], k)
    assert float(dk) == pytest.approx(-0.5 * math.exp(-1.0), rel=1e-5)


def test_implicit_method_refuses_per_sample_and_compile() -> None:
    with pytest.raises(ODEInputError, match=r"'rosenbrock23' \(implicit\) does not take "
                       r"option\(s\) \['compile'\]"):  # fmt: skip
        odeint(robertson, ROBERTSON_Y0, ROBERTSON_T, method="rosenbrock23",
               options={"compile": True})  # fmt: skip
    with pytest.raises(ODEInputError, match=r"option 'jacobian' is for implicit methods"):
        odeint(robertson, ROBERTSON_Y0, ROBERTSON_T, options={"jacobian": "per_sample"})


@pytest.mark.parametrize(
    ("method", "options"), [("rosenbrock23", None), ("trapezoid", {"step_size": 0.05})]
)
def test_checkpointed_segments_take_each_jacobian_once(method: str, options: dict | None) -> None:
    """Inside a checkpointed segment, the Jacobian's products do not make the segment rerun:
    as many Jacobians and evaluations as backprop, and the same gradient."""
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    stiff = torch.tensor([[-50.0, 1.0], [0.0, -0.5]], dtype=torch.float64)
    field = lambda t, y: a * (y @ stiff.T) + torch.sin(y)  # noqa: E731
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 4, dtype=torch.float64)
    counts, grads = [], []
    for gradient in ("backprop", "checkpoint"):
        ys, stats = odeint(field, y0, t, method=method, options=options, rtol=1e-6, atol=1e-8,
                           gradient=gradient, return_stats=True)  # fmt: skip
        grads.append(torch.autograd.grad(ys[-1].sum(), a)[0])
        counts.append((stats.n_jacobians, stats.nfe))
    assert counts[0] == counts[1]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)
