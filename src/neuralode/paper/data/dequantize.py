"""Images as continuous data for density models: downscaling, uniform dequantisation and the logit
transform (RealNVP's), with the log-determinant that keeps likelihoods in pixel units.

An image x ∈ {0, …, 255}^D becomes y = (x + u) / 256, u ~ U[0, 1)^D, then
s = logit(α + (1 − 2α) y). For a density p_s of s, log p(y) = log p_s(s) + Σ log|ds/dy|, and the
discrete model's bits per dimension are bounded by −(log p(y) − D log 256) / (D log 2).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def downscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool uint8 images (n, H, W) by ``factor`` and round: (n, H/factor, W/factor),
    uint8."""
    n, height, width = images.shape
    blocks = images.reshape(n, height // factor, factor, width // factor, factor)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)


def dequantize_logit(
    pixels: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """s = logit(α + (1 − 2α)(x + u)/256) for integer pixels x (batch, D), u ~ U[0, 1):
    s (batch, D) float32 and Σ_d log|ds_d/dy_d| (batch,)."""
    noise = torch.rand(pixels.shape, generator=generator, device=pixels.device)
    y = (pixels.float() + noise) / 256
    v = alpha + (1 - 2 * alpha) * y
    s = torch.log(v) - torch.log1p(-v)
    log_det = (math.log(1 - 2 * alpha) - torch.log(v) - torch.log1p(-v)).sum(-1)
    return s, log_det


def bits_per_dim(log_prob_y: torch.Tensor, dim: int) -> torch.Tensor:
    """Bits per dimension of 8-bit data from log p(y) (batch,) of y = (x + u)/256 ∈ [0, 1)^D."""
    return -(log_prob_y - dim * math.log(256)) / (dim * math.log(2))
