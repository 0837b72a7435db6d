"""The paper's irregularly sampled spirals (section 5.1, Table 2), generated with numpy.

The paper gives no equations, so this module states its own: the Archimedean spirals of the
public example (torchdiffeq's ``latent_ode.py``: r = b·θ, b = 0.3, θ ∈ [0, 6π] on 1,000 grid
points, windows of 100 points), made irregular and split into train and test:

- Two base curves: counter-clockwise r = b·θ, and its mirror image (x, −y), which turns
  clockwise. θ advances 6π/999 per grid point, as in the public example: ω = 1.887 rad per unit
  time with the grid step 0.01.
- Each trajectory starts at its own angle θ0 ~ U[0.6π, 6π − 1.2π] (the public example's window
  starts) and is sampled at 200 equally spaced times t_i = i/100, i = 0..199 (0.6 of a turn): the
  first 100 (t < 1) are the observation window, the last 100 are for extrapolation. It turns
  one way or the other with probability 1/2.
- Observations carry Gaussian noise of std ``noise_std`` (0.1). A training input observes a random
  subset of n ∈ {30, 50, 100} of the 100 points of the window, different for every trajectory,
  as a mask.

Scores are RMSEs against the noise-free trajectory at all 200 times, or at the 100 of the
window (interpolation) or the 100 after it (extrapolation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

RATE = 6 * math.pi / 999 / 0.01
"""ω, rad per unit time: the public example's 6π/999 per grid point."""
PITCH = 0.3
"""b in r = b·θ."""
TIMES = 200
WINDOW = 100
"""Points in the observation window; the rest are for extrapolation."""
DT = 0.01


@dataclass(frozen=True)
class Spirals:
    """A set of trajectories on the common grid ``times`` (200,).

    Attributes:
        times: t_i = i/100, float32 (200,).
        truth: noise-free positions, float32 (n, 200, 2).
        observed: noisy positions, float32 (n, 200, 2) (the model sees only masked ones).
        mask: which of the window's points each input observes, bool (n, 200); False from
            index 100 on.
        clockwise: direction of each trajectory, bool (n,).
    """

    times: torch.Tensor
    truth: torch.Tensor
    observed: torch.Tensor
    mask: torch.Tensor
    clockwise: torch.Tensor

    def __len__(self) -> int:
        return len(self.truth)

    def subset(self, index: torch.Tensor | slice) -> Spirals:
        """The trajectories at ``index``."""
        return Spirals(
            self.times,
            self.truth[index],
            self.observed[index],
            self.mask[index],
            self.clockwise[index],
        )


def make_spirals(n: int, n_observed: int, noise_std: float = 0.1, seed: int = 0) -> Spirals:
    """n trajectories, each observing ``n_observed`` (≤ 100) random points of its window."""
    if not 1 <= n_observed <= WINDOW:
        raise ValueError(f"n_observed must be in [1, {WINDOW}], got {n_observed}")
    rng = np.random.default_rng(seed)
    times = np.arange(TIMES) * DT
    theta = rng.uniform(0.6 * np.pi, 4.8 * np.pi, n)[:, None] + RATE * times
    radius = PITCH * theta
    clockwise = rng.uniform(size=n) < 0.5
    sign = np.where(clockwise, -1.0, 1.0)[:, None]
    truth = np.stack((radius * np.cos(theta), sign * radius * np.sin(theta)), axis=-1)
    observed = truth + noise_std * rng.standard_normal(truth.shape)
    mask = np.zeros((n, TIMES), dtype=bool)
    for row in mask:
        row[np.sort(rng.choice(WINDOW, n_observed, replace=False))] = True
    return Spirals(
        torch.tensor(times, dtype=torch.float32),
        torch.tensor(truth, dtype=torch.float32),
        torch.tensor(observed, dtype=torch.float32),
        torch.from_numpy(mask),
        torch.from_numpy(clockwise),
    )
