"""The Table 1 MNIST models: parameter counts, shapes, options, and that the ODE-Net trains."""

from __future__ import annotations

import pytest
import torch

from neuralode.nn import NeuralODE, SolverConfig
from neuralode.paper.mnist_models import MNIST_PARAMETER_COUNTS, build_mnist_model, count_parameters

NAMES = ["odenet", "resnet", "rknet", "mlp"]


@pytest.mark.parametrize(
    ("name", "count"),
    [("odenet", 208_266), ("resnet", 576_778), ("rknet", 208_266), ("mlp", 238_510)],
)
def test_parameter_counts(name: str, count: int) -> None:
    assert count_parameters(build_mnist_model(name)) == count == MNIST_PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_logits_for_each_image(name: str) -> None:
    logits = build_mnist_model(name)(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()


def test_ode_blocks_use_the_requested_solver() -> None:
    odenet = build_mnist_model("odenet", tol=1e-2, gradient="backprop")
    assert isinstance(odenet.features, NeuralODE)
    assert odenet.features.solver == SolverConfig("dopri5", rtol=1e-2, atol=1e-2)
    rknet = build_mnist_model("rknet", step_size=0.5)
    rknet(torch.randn(2, 1, 28, 28))
    assert rknet.features.solver.method == "rk4" and rknet.features.nfe_forward == 8  # 2 steps × 4


def test_bad_names_and_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown MNIST model"):
        build_mnist_model("vgg")
    with pytest.raises(TypeError, match="step_size"):
        build_mnist_model("odenet", step_size=0.1)
    with pytest.raises(TypeError, match="tol"):
        build_mnist_model("mlp", tol=1e-3)


def test_odenet_sgd_steps_reduce_the_loss() -> None:
    model = build_mnist_model("odenet")  # adjoint gradients
    images, labels = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.features.nfe_backward > 0
    with torch.no_grad():
        final = torch.nn.functional.cross_entropy(model(images), labels).item()
    assert final < losses[0] - 0.1, [*losses, final]
