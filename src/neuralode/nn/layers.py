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
