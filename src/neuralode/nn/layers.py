"""Time-conditioned layers: t enters as one extra input feature or channel."""

from __future__ import annotations

import torch
from torch import nn


class ConcatLinear(nn.Module):
    """Linear layer on [h, t]: (batch, in_features) → (batch, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features + 1, out_features, bias=bias)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        time = t.to(h.dtype).expand(*h.shape[:-1], 1)
        return self.linear(torch.cat([h, time], dim=-1))


class ConcatConv2d(nn.Module):
    """2-D convolution on [h, t] with t as an extra constant channel:
    (batch, in_channels, H, W) → (batch, out_channels, H', W')."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels + 1, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        time = t.to(h.dtype).expand(h.shape[0], 1, *h.shape[2:])
        return self.conv(torch.cat([h, time], dim=1))


def mlp(sizes: tuple[int, ...], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them."""
    layers: list[nn.Module] = []
    for index in range(len(sizes) - 1):
        if index:
            layers.append(activation())
        layers.append(nn.Linear(sizes[index], sizes[index + 1]))
    return nn.Sequential(*layers)


class MLPField(nn.Module):
    """A vector field of vectors: f(t, h) = MLP([h, t]), or f(t, h, c) = MLP([h, c, t]) with a
    condition c; (batch, dim) → (batch, dim).

    Args:
        dim: state features (augmented ones included).
        hidden: widths of the hidden layers, each followed by ``activation``.
        condition_dim: features of the condition c (0: the field takes no condition).
    """

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...] = (32,),
        condition_dim: int = 0,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        self.net = mlp((dim + condition_dim + 1, *hidden, dim), activation)

    def forward(
        self, t: torch.Tensor, h: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (condition is None) != (self.condition_dim == 0):
            got = "none" if condition is None else "one"
            raise ValueError(
                f"this field takes {'a' if self.condition_dim else 'no'} condition "
                f"(condition_dim={self.condition_dim}); got {got}"
            )
        time = t.to(h.dtype).expand(*h.shape[:-1], 1)
        inputs = [h, time] if condition is None else [h, condition, time]
        return self.net(torch.cat(inputs, dim=-1))
