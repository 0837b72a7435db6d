"""Two tasks that no homeomorphism of the data's own space solves (Dupont et al. 2019).

- :func:`map1d`: points x = ±1 on the line with targets −x: the map swaps them, which a
  continuous flow on the line cannot (its trajectories would have to cross).
- :func:`concentric_circles`: the disc |x| < 0.5 (label −1) inside the ring 1 < |x| < 1.5
  (label +1): no flow of the plane pulls the disc out of the ring, so no linear readout of
  h(T) separates them exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

INNER_RADIUS = 0.5
RING = (1.0, 1.5)


def map1d(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n inputs (n, 1) drawn from {−1, 1} and their targets −x (n, 1), float32."""
    x = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, 1))
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(-x, dtype=torch.float32)


def concentric_circles(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (n, 2), uniform over the disc or over the ring with probability 1/2 each, and
    their labels (n, 1): −1 in the disc, +1 in the ring; float32."""
    rng = np.random.default_rng(seed)
    inner = rng.random(n) < 0.5
    radius = np.where(
        inner,
        INNER_RADIUS * np.sqrt(rng.random(n)),
        np.sqrt(rng.uniform(RING[0] ** 2, RING[1] ** 2, n)),
    )
    angle = rng.uniform(0, 2 * math.pi, n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    y = np.where(inner, -1.0, 1.0)[:, None]
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
