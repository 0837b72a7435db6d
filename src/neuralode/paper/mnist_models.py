"""The four MNIST classifiers of the paper's Table 1 (Chen et al. 2018, section 3).

The architectures follow the public reference code (torchdiffeq ``examples/odenet_mnist.py``,
downsampling method "conv"): a convolutional stem takes (B, 1, 28, 28) images to (B, 64, 6, 6)
features, a feature block keeps that shape, and a head maps them to (B, 10) logits.

- ``odenet``: the feature block is one ODE block on t ∈ [0, 1] solved by dopri5 with
  rtol = atol = ``tol`` (default 1e-3) and differentiated by the adjoint method by default.
- ``resnet``: six residual blocks in place of the ODE block.
- ``anode``: the odenet with 6 zero channels appended to the features before the ODE block
  (an augmented Neural ODE, Dupont et al. 2019); the field and the head see 70 channels.
- ``rknet``: the odenet architecture, solved by a fixed-step Runge–Kutta method (default rk4,
  Kutta's 3/8 rule, with step 0.25: 4 steps, 16 evaluations of the vector field) and
  differentiated by backpropagating through the solver's operations.
- ``mlp``: one hidden layer of 300 units on the flattened image.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from neuralode.gradients import GradientMode
from neuralode.nn import ConcatConv2d, NeuralODE, SolverConfig

MNIST_PARAMETER_COUNTS = {
    "odenet": 208_266,
    "anode": 222_966,
    "resnet": 576_778,
    "rknet": 208_266,
    "mlp": 238_510,
}

_WIDTH = 64


def _norm(channels: int) -> nn.GroupNorm:
    """Group normalization with gcd(32, channels) groups: 32 groups of 2 for 64 channels, 2 of
    35 for 70. (Groups of 2 would put the zero-started augmented channels in groups of their
    own, whose near-zero variance makes normalisation amplify solver noise.)"""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(norm(conv(relu(norm(x)))))), with bias-free
    3×3 convolutions; (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        return x + self.conv2(self.relu(self.norm2(out)))


class ODEVectorField(nn.Module):
    """f(t, h) = norm(conv_t(relu(norm(conv_t(relu(norm(h))))))), where conv_t is a 3×3
    convolution that sees t as an extra channel; (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = ConcatConv2d(channels, channels, 3, 1, 1)
        self.norm2 = _norm(channels)
        self.conv2 = ConcatConv2d(channels, channels, 3, 1, 1)
        self.norm3 = _norm(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, self.relu(self.norm1(h)))
        return self.norm3(self.conv2(t, self.relu(self.norm2(out))))


def _downsampling() -> nn.Sequential:
    """(B, 1, 28, 28) → (B, 64, 6, 6): conv 3×3 (26×26), then two stride-2 4×4 convs."""
    return nn.Sequential(
        nn.Conv2d(1, _WIDTH, 3, 1),
        _norm(_WIDTH),
        nn.ReLU(inplace=True),
        nn.Conv2d(_WIDTH, _WIDTH, 4, 2, 1),
        _norm(_WIDTH),
        nn.ReLU(inplace=True),
        nn.Conv2d(_WIDTH, _WIDTH, 4, 2, 1),
    )


def _head(channels: int = _WIDTH) -> nn.Sequential:
    """(B, channels, H, W) → (B, 10) logits: norm, relu, global average pool, linear."""
    return nn.Sequential(
        _norm(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(channels, 10),
    )


def _convnet(features: nn.Module, channels: int = _WIDTH) -> nn.Sequential:
    """(B, 1, 28, 28) → (B, 10); the feature block (which outputs ``channels`` channels) is
    reachable as ``model.features``."""
    parts = OrderedDict(downsampling=_downsampling(), features=features, head=_head(channels))
    return nn.Sequential(parts)


def odenet(
    tol: float = 1e-3, gradient: str | GradientMode = "adjoint", method: str = "dopri5"
) -> nn.Sequential:
    """ODE-Net: (B, 1, 28, 28) → (B, 10) logits; 208,266 parameters. The ODE block
    (``model.features``, a :class:`NeuralODE`) integrates t ∈ [0, 1] adaptively with
    rtol = atol = tol."""
    solver = SolverConfig(method=method, rtol=tol, atol=tol, gradient=gradient)
    block = NeuralODE(ODEVectorField(_WIDTH), solver=solver)
    return _convnet(block)


def anode(
    tol: float = 1e-3,
    gradient: str | GradientMode = "adjoint",
    method: str = "dopri5",
    augment_dim: int = 6,
) -> nn.Sequential:
    """Augmented ODE-Net: the ODE-Net with ``augment_dim`` zero channels appended to the 64
    feature channels before the ODE block; the field and the head see all 64 + k channels.
    (B, 1, 28, 28) → (B, 10) logits; 222,966 parameters for k = 6."""
    if augment_dim < 1:
        raise ValueError(f"augment_dim must be >= 1, got {augment_dim}")
    channels = _WIDTH + augment_dim
    solver = SolverConfig(method=method, rtol=tol, atol=tol, gradient=gradient)
    block = NeuralODE(ODEVectorField(channels), solver=solver, augment_dim=augment_dim)
    return _convnet(block, channels)


def rknet(method: str = "rk4", step_size: float = 0.25) -> nn.Sequential:
    """RK-Net: (B, 1, 28, 28) → (B, 10) logits; 208,266 parameters. The ODE block takes fixed
    steps of ``step_size`` on t ∈ [0, 1] and is differentiated by backpropagation."""
    solver = SolverConfig(method=method, options={"step_size": step_size}, gradient="backprop")
    block = NeuralODE(ODEVectorField(_WIDTH), solver=solver)
    return _convnet(block)


def resnet() -> nn.Sequential:
    """ResNet: (B, 1, 28, 28) → (B, 10) logits with six residual blocks; 576,778 parameters."""
    return _convnet(nn.Sequential(*(ResBlock(_WIDTH) for _ in range(6))))


def mlp() -> nn.Sequential:
    """1-layer MLP: (B, 1, 28, 28) → (B, 10) logits, 300 hidden units; 238,510 parameters."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(inplace=True), nn.Linear(300, 10)
    )


_BUILDERS = {"odenet": odenet, "anode": anode, "resnet": resnet, "rknet": rknet, "mlp": mlp}


def build_mnist_model(name: str, **kwargs: Any) -> nn.Module:
    """The Table 1 model ``name`` (``odenet``, ``anode``, ``resnet``, ``rknet`` or ``mlp``),
    mapping (B, 1, 28, 28) normalised images to (B, 10) logits. kwargs: ``tol``, ``gradient``,
    ``method`` for odenet and anode (and ``augment_dim``); ``method``, ``step_size`` for rknet;
    none for the others."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown MNIST model {name!r}; choose one of {sorted(_BUILDERS)}")
    builder = _BUILDERS[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"MNIST model {name!r} takes no argument(s) {unknown}; it accepts {list(accepted)}"
        )
    return builder(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) in model."""
    return sum(parameter.numel() for parameter in model.parameters())
