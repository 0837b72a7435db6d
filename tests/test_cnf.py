"""Continuous normalizing flows: trace estimators, the change of variables against closed forms,
forward/backward consistency, regularisers, gradient modes, vector fields and planar flows."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from neuralode import METHODS
from neuralode.nn import (
    CNF,
    ConcatSquashMLP,
    DiagonalGaussian,
    HyperNetField,
    PlanarFlow,
    PlanarLayer,
    SolverConfig,
    exact_trace,
    hutchinson_trace,
    sample_noise,
    standard_normal_log_prob,
)

TIGHT = SolverConfig(rtol=1e-10, atol=1e-10)
DTYPE = torch.float64


class Linear(nn.Module):
    """f(t, z) = A z."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


def mlp(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d)).to(DTYPE)


def linear_log_prob(a: torch.Tensor, x: torch.Tensor, t1: float) -> torch.Tensor:
    """Closed form for f(z) = A z: log N(exp(A t1) x; 0, I) + t1 tr(A)."""
    z = x @ torch.linalg.matrix_exp(a * t1).T
    return standard_normal_log_prob(z) + t1 * torch.trace(a)


def test_exact_trace_matches_autograd_jacobian() -> None:
    net = mlp(5)
    z = torch.randn(4, 5, dtype=DTYPE, requires_grad=True)
    jacobians = torch.stack([torch.autograd.functional.jacobian(net, row) for row in z])
    torch.testing.assert_close(exact_trace(net(z), z), jacobians.diagonal(dim1=1, dim2=2).sum(-1))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_trace_is_unbiased(kind: str) -> None:
    """20,000 probes at one point, in one batched call: their mean lies within 5 standard errors
    (from the probes' sample variance) of the exact trace; a false alarm has probability ~6e-7
    by the central limit theorem."""
    net = mlp(5)
    point = torch.randn(1, 5, dtype=DTYPE, requires_grad=True)
    exact = exact_trace(net(point), point, create_graph=False)[0]
    z = point.detach().expand(20_000, 5).clone().requires_grad_(True)
    noise = sample_noise(z, kind)
    estimates = hutchinson_trace(net(z), z, noise, create_graph=False)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 5 * standard_error
    if kind == "rademacher":
        assert set(noise.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize(
    ("trace", "noise", "diagonal"),
    [("exact", "gaussian", False), ("hutchinson", "rademacher", True)],
)
def test_linear_field_log_prob_matches_closed_form(trace: str, noise: str, diagonal: bool) -> None:
    """The exact trace is exact for any A; Rademacher probes are exact for diagonal A only
    (εᵀAε = tr A + Σ_{i≠j} ε_i A_ij ε_j with ε_i² = 1)."""
    a = torch.randn(3, 3, dtype=DTYPE) * 0.5
    a = torch.diag(a.diagonal()) if diagonal else a
    cnf = CNF(Linear(a), 3, t1=0.7, trace=trace, noise=noise, solver=TIGHT).to(DTYPE)
    x = torch.randn(6, 3, dtype=DTYPE)
    torch.testing.assert_close(cnf.log_prob(x), linear_log_prob(a, x, 0.7), rtol=1e-8, atol=1e-8)


def test_gaussian_hutchinson_log_prob_is_unbiased_for_linear_field() -> None:
    """For f(z) = A z each sample's log p carries the error t1 (εᵀAε − tr A), of mean zero: the
    mean over 4,000 copies of one point lies within 5 standard errors of the closed form."""
    a = torch.randn(3, 3, dtype=DTYPE) * 0.5
    cnf = CNF(Linear(a), 3, t1=0.7, trace="hutchinson", noise="gaussian").to(DTYPE)
    x = torch.randn(1, 3, dtype=DTYPE).expand(4000, 3)
    with torch.no_grad():
        log_prob = cnf.log_prob(x)
    standard_error = log_prob.std() / math.sqrt(len(log_prob))
    assert abs(log_prob.mean() - linear_log_prob(a, x[:1], 0.7)[0]) < 5 * standard_error


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_regularizers_match_closed_form_for_diagonal_linear_field(trace: str) -> None:
    """f(z) = diag(a) z: z_i(t) = e^{a_i t} x_i, so ∫_0^T ‖f‖² dt = Σ_i a_i x_i² (e^{2 a_i T} − 1)/2
    and ∫_0^T ‖∂f/∂z‖_F² dt = T Σ_i a_i² (also for Rademacher probes: ‖εᵀ diag(a)‖² = Σ a_i²)."""
    a = torch.tensor([-0.8, 0.3, 1.1], dtype=DTYPE)
    cnf = CNF(Linear(torch.diag(a)), 3, t1=0.6, trace=trace, noise="rademacher", solver=TIGHT)
    x = torch.randn(5, 3, dtype=DTYPE)
    _, regularization = cnf.log_prob(x, return_regularization=True)
    kinetic = (a * x.square() * torch.expm1(2 * a * 0.6) / 2).sum(-1)
    torch.testing.assert_close(regularization.kinetic, kinetic)
    torch.testing.assert_close(regularization.jacobian, 0.6 * a.square().sum().expand(5))


def test_sampling_and_density_are_consistent() -> None:
    """Base samples carried to data and back return to themselves, the log-density found while
    sampling equals log_prob of the sample, and sample() draws the same points."""
    cnf = CNF(HyperNetField(2, width=8, hidden=16), 2, t1=0.8, solver=TIGHT).to(DTYPE)
    torch.manual_seed(1)
    x, log_q = cnf.sample_with_log_prob(16)
    torch.manual_seed(1)
    z = torch.randn(16, 2, dtype=DTYPE)
    torch.manual_seed(1)
    torch.testing.assert_close(cnf.sample(16), x, rtol=1e-8, atol=1e-8)
    with torch.no_grad():
        torch.testing.assert_close(cnf.log_prob(x), log_q, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(cnf.transform(x, torch.zeros(16, dtype=DTYPE))[0], z)
    assert cnf.stats.nfe > 0


@pytest.mark.parametrize(
    ("trace", "data_requires_grad"), [("exact", False), ("hutchinson", False), ("exact", True)]
)
def test_adjoint_and_checkpoint_gradients_match_backprop(
    trace: str, data_requires_grad: bool
) -> None:
    """A tiny CNF with learnable t1 and both regularisers: the gradients with respect to the
    field's parameters, t1 (and x when it requires grad) agree across the three gradient modes
    (same probes)."""
    field = HyperNetField(2, width=4, hidden=8).to(DTYPE)
    x = torch.randn(5, 2, dtype=DTYPE, requires_grad=data_requires_grad)

    def gradients(mode: str) -> tuple[torch.Tensor, ...]:
        solver = replace(TIGHT, gradient=mode)
        cnf = CNF(field, 2, t1=0.5, train_t1=True, trace=trace, solver=solver)
        cnf = cnf.to(DTYPE)
        torch.manual_seed(2)
        log_prob, reg = cnf.log_prob(x, return_regularization=True)
        loss = -log_prob.mean() + 0.1 * reg.kinetic.mean() + 0.1 * reg.jacobian.mean()
        inputs = [*field.parameters(), cnf.sqrt_t1] + ([x] if data_requires_grad else [])
        return torch.autograd.grad(loss, inputs)

    expected = gradients("backprop")
    for mode in ("adjoint", "checkpoint"):
        for got, want in zip(gradients(mode), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_learnable_t1_gradient_matches_closed_form(gradient: str) -> None:
    """f(z) = A z: log p(x) = log N(z; 0, I) + t1 tr A with z = exp(A t1) x, so
    d log p/d t1 = −zᵀ A z + tr A, and t1 = s² gives d/ds = 2 s d/d t1."""
    a = torch.tensor([[-0.4, 0.5], [-0.3, 0.2]], dtype=DTYPE)
    solver = replace(TIGHT, gradient=gradient)
    cnf = CNF(Linear(a), 2, t1=0.8, train_t1=True, solver=solver).to(DTYPE)
    x = torch.randn(3, 2, dtype=DTYPE)
    (grad,) = torch.autograd.grad(cnf.log_prob(x).sum(), cnf.sqrt_t1)
    z = x @ torch.linalg.matrix_exp(a * cnf.t1.detach()).T
    expected = 2 * cnf.sqrt_t1.detach() * (-((z @ a.T) * z).sum(-1) + torch.trace(a)).sum()
    torch.testing.assert_close(grad, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_solver_gives_the_linear_density(method: str) -> None:
    a = torch.tensor([[-0.4, 0.5], [-0.3, 0.2]], dtype=DTYPE)
    options = {} if METHODS[method].adaptive else {"step_size": 0.01}
    cnf = CNF(Linear(a), 2, solver=SolverConfig(method, rtol=1e-7, atol=1e-7, options=options))
    x = torch.randn(4, 2, dtype=DTYPE)
    log_prob = cnf.log_prob(x)
    log_prob.sum().backward()
    assert torch.isfinite(cnf.field.a.grad).all()
    tolerance = 1e-2 if METHODS[method].order == 1 else 1e-4
    torch.testing.assert_close(log_prob, linear_log_prob(a, x, 1.0), rtol=0, atol=tolerance)


def test_vector_field_shapes_and_gates() -> None:
    z = torch.randn(7, 3)
    for field in (HyperNetField(3, width=5, hidden=8), ConcatSquashMLP(3, hidden=(16, 16))):
        assert field(torch.tensor(0.3), z).shape == (7, 3)
    hypernet = HyperNetField(3, width=5, hidden=8)
    for t in (-10.0, 0.0, 0.5, 10.0):
        u, w, b, gate = hypernet.planar_units(torch.tensor(t))
        assert (u.shape, w.shape, b.shape, gate.shape) == ((5, 3), (5, 3), (5,), (5,))
        assert ((gate > 0) & (gate < 1)).all()


def test_planar_log_det_matches_autograd_jacobian() -> None:
    layer = PlanarLayer(3).to(DTYPE)
    nn.init.normal_(layer.u, std=1.5)
    nn.init.normal_(layer.b, std=1.0)
    z = torch.randn(4, 3, dtype=DTYPE)
    _, log_det = layer(z)
    for row, value in zip(z, log_det, strict=True):
        jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], row)
        sign, log_abs_det = torch.linalg.slogdet(jacobian)
        assert sign > 0
        torch.testing.assert_close(value, log_abs_det)


def test_planar_reparameterisation_keeps_layers_invertible() -> None:
    """wᵀû = softplus(wᵀu) − 1 ≥ −1 for random parameters of any scale, and the û built from the
    parameters has that product (float64: at scale 10, wᵀû sums terms of size ‖w‖‖u‖ ~ 100 to
    about −1, and softplus(wᵀu) can round to 0, making wᵀû = −1 exactly)."""
    for scale in (0.1, 1.0, 10.0):
        for _ in range(50):
            layer = PlanarLayer(4).to(DTYPE)
            nn.init.normal_(layer.u, std=scale)
            nn.init.normal_(layer.w, std=scale)
            assert layer.w_dot_u_hat() >= -1
            torch.testing.assert_close(layer.w @ layer.u_hat(), layer.w_dot_u_hat())


def test_planar_flow_densities_integrate_to_one() -> None:
    """Both directions define normalised densities: log_prob on a 2-D grid integrates to 1, and
    sample_with_log_prob's log q equals log N(z) − Σ log|det| along the samples."""
    flow = PlanarFlow(2, K=4).to(DTYPE)
    for layer in flow.layers:
        nn.init.normal_(layer.u, std=1.0)
        nn.init.normal_(layer.w, std=1.0)
    grid = torch.linspace(-9, 9, 601, dtype=DTYPE)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = flow.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    torch.testing.assert_close(mass.item(), 1.0, rtol=0, atol=1e-3)

    torch.manual_seed(3)
    x, log_q = flow.sample_with_log_prob(10)
    torch.manual_seed(3)
    z = torch.randn(10, 2, dtype=DTYPE)
    mapped, log_det = flow(z)
    torch.testing.assert_close(mapped, x)
    torch.testing.assert_close(log_q, standard_normal_log_prob(z) - log_det)


def test_diagonal_gaussian_matches_torch_distributions() -> None:
    gaussian = DiagonalGaussian(3).to(DTYPE)
    with torch.no_grad():
        gaussian.mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        gaussian.log_std.copy_(torch.tensor([0.1, -0.7, 0.3]))
    reference = torch.distributions.Normal(gaussian.mean.detach(), gaussian.log_std.detach().exp())
    x = torch.randn(5, 3, dtype=DTYPE)
    torch.testing.assert_close(gaussian.log_prob(x), reference.log_prob(x).sum(-1))
    samples, log_q = gaussian.from_base(torch.randn(5, 3, dtype=DTYPE))
    torch.testing.assert_close(log_q, reference.log_prob(samples).sum(-1))


def test_planar_layers_start_near_the_identity() -> None:
    """m(wᵀu) = 0 at initialisation, and a 64-layer stack moves points by little."""
    torch.manual_seed(0)
    flow = PlanarFlow(2, K=64)
    for layer in flow.layers:
        assert abs(layer.w_dot_u_hat().item()) < 1e-6
    x = 2 * torch.randn(100, 2)
    z, log_det = flow(x)
    assert (z - x).norm(dim=-1).max() < 0.5 and log_det.abs().max() < 1e-5
