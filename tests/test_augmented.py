"""Augmented and input-conditioned Neural ODEs: shapes, the zero start of the extra channels,
conditions that reach the field, gradients in every mode, and the experiment's command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralode import METHODS
from neuralode.nn import MLPField, NeuralODE, SolverConfig
from neuralode.paper.cli import main
from neuralode.paper.data.topology import INNER_RADIUS, RING, concentric_circles, map1d
from neuralode.paper.mnist_models import ODEVectorField, build_mnist_model

GRADIENTS = ["backprop", "adjoint", "checkpoint"]


def block(dim: int = 2, augment: int = 0, condition_dim: int = 0, **kwargs) -> NeuralODE:
    solver = SolverConfig(rtol=1e-9, atol=1e-9, **kwargs)
    field = MLPField(dim + augment, (16,), condition_dim=condition_dim)
    return NeuralODE(field, solver=solver, augment_dim=augment).double()


def test_augmented_vector_state_shapes_and_zero_start() -> None:
    h0 = torch.randn(5, 2, dtype=torch.float64)
    model = block(augment=3)
    assert model(h0).shape == (5, 5)
    path = model(h0, torch.linspace(0, 1, 4, dtype=torch.float64))
    assert path.shape == (4, 5, 5)
    assert torch.equal(path[0, :, :2], h0)
    assert torch.equal(path[0, :, 2:], torch.zeros(5, 3, dtype=torch.float64))
    assert path[-1, :, 2:].abs().max() > 0  # the extra channels move
    model.augment_output = "drop"
    assert model(h0).shape == (5, 2)
    assert model(h0, torch.linspace(0, 1, 4, dtype=torch.float64)).shape == (4, 5, 2)


def test_augmented_image_state_gets_extra_channels() -> None:
    solver = SolverConfig(method="rk4", options={"step_size": 0.5})
    model = NeuralODE(ODEVectorField(10), solver=solver, augment_dim=2)
    h0 = torch.randn(3, 8, 6, 6)
    assert model.augment(h0).shape == (3, 10, 6, 6)
    assert torch.equal(model.augment(h0)[:, 8:], torch.zeros(3, 2, 6, 6))
    assert model(h0).shape == (3, 10, 6, 6)


def test_augmented_odenet_classifies_with_70_channels() -> None:
    model = build_mnist_model("anode", tol=1e-2, gradient="backprop")
    assert model.features.augment_dim == 6
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="augment_dim must be >= 1, got 0"):
        build_mnist_model("anode", augment_dim=0)


def test_bad_augmentation_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="augment_dim must be >= 0, got -1"):
        NeuralODE(MLPField(2), augment_dim=-1)
    with pytest.raises(ValueError, match="augment_output must be 'keep' or 'drop', not 'sum'"):
        NeuralODE(MLPField(2), augment_dim=1, augment_output="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="this field takes a condition"):
        NeuralODE(MLPField(2, condition_dim=2))(torch.randn(1, 2))


def test_condition_reaches_the_field_every_evaluation() -> None:
    """The solution depends on the condition, and its gradient matches finite differences."""
    model = block(condition_dim=2, gradient="backprop")
    h0 = torch.randn(4, 2, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    calls = []
    model.func.register_forward_hook(lambda module, args, out: calls.append(args[2]))
    model(h0, condition=x)
    assert calls and all(c is x for c in calls)
    assert torch.autograd.gradcheck(lambda c: model(h0, condition=c), (x,), atol=1e-5)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_every_gradient_mode_differentiates_augmented_conditioned_blocks(gradient: str) -> None:
    """Gradients of the parameters, of h0, of the condition and of a condition embedding agree
    with backpropagation (the adjoint to its tolerance)."""

    def gradients(mode: str) -> list[torch.Tensor]:
        torch.manual_seed(0)
        embedding = nn.Linear(3, 2).double()
        model = block(augment=1, condition_dim=2, gradient=mode)
        model.condition_embedding = embedding
        h0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
        x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        model(h0, condition=x).square().sum().backward()
        return [h0.grad, x.grad, *(p.grad for p in model.parameters())]

    reference = gradients("backprop")
    for got, want in zip(gradients(gradient), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_solves_augmented_conditioned_blocks(method: str) -> None:
    """Fixed-step and adaptive methods alike: the same h(T) as dopri8 at tight tolerance, to the
    method's accuracy, and a gradient that reaches the condition."""
    options = {} if METHODS[method].adaptive else {"step_size": 1 / 64}
    h0 = torch.randn(3, 2, dtype=torch.float64)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    model = block(augment=1, condition_dim=2, method=method, options=options)
    reference = NeuralODE(model.func, solver=SolverConfig("dopri8", 1e-10, 1e-10), augment_dim=1)
    got = model(h0, condition=x)
    torch.testing.assert_close(
        got, reference(h0, condition=x), atol=2e-2 if METHODS[method].order == 1 else 1e-5, rtol=0
    )
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_adjoint_on_a_condition_computed_from_a_leaf() -> None:
    """A condition that is a function of a leaf: the adjoint lists the condition, which covers
    the leaf, instead of refusing the solve."""
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    model = block(condition_dim=2, gradient="adjoint")
    model(x, condition=x.square()).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_topology_tasks() -> None:
    x, y = map1d(100, seed=0)
    assert set(x[:, 0].tolist()) == {-1.0, 1.0} and torch.equal(y, -x)
    x, y = concentric_circles(2000, seed=0)
    radius = x.norm(dim=1)
    assert (radius[y[:, 0] < 0] < INNER_RADIUS).all()
    assert ((radius[y[:, 0] > 0] > RING[0]) & (radius[y[:, 0] > 0] < RING[1])).all()
    assert 0.45 < (y > 0).float().mean() < 0.55


def test_augmented_command_writes_table_and_figures(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["augmented", "--epochs", "2", "--repeats", "1", "--out", str(tmp_path / "runs")]
    assert main([*args, "--results", str(results), "--threads", "1"]) == 0
    rows = json.loads((results / "augmented.json").read_text())
    assert [(r["task"], r["model"]) for r in rows] == [
        (task, model)
        for task in ("map1d", "circles")
        for model in ("plain", "augmented", "conditioned")
    ]
    assert all(r["epochs"] == 2 and r["test_nfe"] > 0 for r in rows)
    assert (results / "augmented_map1d.png").stat().st_size > 10_000
    assert (results / "augmented_circles.png").stat().st_size > 10_000
