"""FFJORD's two-dimensional toy densities (Grathwohl et al. 2019, ``lib/toy_data.py``), written
with numpy alone, and the paper's unnormalised targets for density matching (Chen et al. 2018,
figure 4).

Samplers: ``sample_toy(name, n, rng)`` returns an (n, 2) float64 array. The recipes, all with
Gaussian noise unless stated:

- ``8gaussians``: centres at radius 4 in the 8 directions k·45°, std 0.5, all divided by 1.414.
- ``moons``: scikit-learn's two moons (n/2 points evenly spaced on each), noise 0.1, then ×2
  and shifted by (−1, −0.2).
- ``circles``: scikit-learn's two circles (factor 0.5, evenly spaced angles), noise 0.08, ×3.
- ``rings``: four circles of radius 3, 2.25, 1.5 and 0.75 (a quarter of the points evenly
  spaced on each), noise 0.08.
- ``checkerboard``: uniform on the 8 dark squares of a 4×4 board on [−4, 4]².
- ``pinwheel``: 5 arms; radial std 0.3, tangential std 0.1, rate 0.25, ×2.
- ``2spirals``: two interleaved spirals of 1.5 turns, uniform jitter 0.5, /3, noise 0.1.
- ``swissroll``: scikit-learn's swiss roll (x, z) coordinates, noise 1.0, /5.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Sampler = Callable[[int, np.random.Generator], np.ndarray]


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angles = np.arange(8) * np.pi / 4
    centres = 4.0 * np.stack((np.cos(angles), np.sin(angles)), axis=1)
    points = centres[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, 2))
    return points / 1.414


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    n_outer = n // 2
    outer = np.linspace(0, np.pi, n_outer)
    inner = np.linspace(0, np.pi, n - n_outer)
    points = np.concatenate(
        (
            np.stack((np.cos(outer), np.sin(outer)), axis=1),
            np.stack((1 - np.cos(inner), 0.5 - np.sin(inner)), axis=1),
        )
    )
    points = points + 0.1 * rng.standard_normal((n, 2))
    return rng.permutation(points) * 2 + np.array([-1.0, -0.2])


def _circle_points(counts: list[int], radii: list[float]) -> np.ndarray:
    """Evenly spaced points on concentric circles: counts[k] points at radius radii[k]."""
    parts = []
    for count, radius in zip(counts, radii, strict=True):
        angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
        parts.append(radius * np.stack((np.cos(angles), np.sin(angles)), axis=1))
    return np.concatenate(parts)


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    points = _circle_points([n - n // 2, n // 2], [1.0, 0.5])
    points = points + 0.08 * rng.standard_normal((n, 2))
    return rng.permutation(points) * 3


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    quarter = n // 4
    points = _circle_points([n - 3 * quarter, quarter, quarter, quarter], [1.0, 0.75, 0.5, 0.25])
    return rng.permutation(points) * 3 + 0.08 * rng.standard_normal((n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2 * np.stack((x1, x2), axis=1)


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms, rate = 5, 0.25
    features = rng.standard_normal((n, 2)) * np.array([0.3, 0.1])
    features[:, 0] += 1.0
    labels = rng.integers(0, arms, n)
    angles = 2 * np.pi * labels / arms + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    rotated = np.stack(
        (features[:, 0] * cos - features[:, 1] * sin, features[:, 0] * sin + features[:, 1] * cos),
        axis=1,
    )
    return 2 * rotated


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    half = n // 2
    turn = np.sqrt(rng.uniform(0, 1, half)) * 3 * np.pi
    arm = np.stack((-np.cos(turn) * turn, np.sin(turn) * turn), axis=1)
    arm = arm + 0.5 * rng.uniform(0, 1, (half, 2))
    points = np.concatenate((arm, -arm))
    if n > 2 * half:
        points = np.concatenate((points, arm[:1]))
    points = points / 3 + 0.1 * rng.standard_normal((n, 2))
    return rng.permutation(points)


def _swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    turn = 1.5 * np.pi * (1 + 2 * rng.uniform(0, 1, n))
    points = np.stack((turn * np.cos(turn), turn * np.sin(turn)), axis=1)
    return (points + rng.standard_normal((n, 2))) / 5


TOY_DATASETS: dict[str, Sampler] = {
    "8gaussians": _eight_gaussians,
    "moons": _moons,
    "circles": _circles,
    "rings": _rings,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "swissroll": _swissroll,
}


def sample_toy(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples (n, 2), float64, of the toy density ``name`` (see the module docstring)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets are: {', '.join(TOY_DATASETS)}")
    return TOY_DATASETS[name](n, rng)


def _ring_target(z: torch.Tensor) -> torch.Tensor:
    """A ring of radius 2: log p̃ = −(‖z‖ − 2)² / (2·0.4²)."""
    return -(z.norm(dim=-1) - 2).square() / (2 * 0.4**2)


def _two_circles_target(z: torch.Tensor) -> torch.Tensor:
    """Two rings, radius 1 and 2.5, width 0.25."""
    radius = z.norm(dim=-1)
    inner = -(radius - 1).square() / (2 * 0.25**2)
    outer = -(radius - 2.5).square() / (2 * 0.25**2)
    return torch.logaddexp(inner, outer)


def _two_moons_target(z: torch.Tensor) -> torch.Tensor:
    """Rezende & Mohamed's U2-like two moons: ring of radius 2 cut at z₁ = ±2."""
    ring = -0.5 * ((z.norm(dim=-1) - 2) / 0.4).square()
    left = -0.5 * ((z[:, 0] + 2) / 0.6).square()
    right = -0.5 * ((z[:, 0] - 2) / 0.6).square()
    return ring + torch.logaddexp(left, right)


def _gaussian_ring_target(z: torch.Tensor) -> torch.Tensor:
    """Eight Gaussians of std 0.35 at radius 2.5 (equal weights)."""
    angles = torch.arange(8, dtype=z.dtype, device=z.device) * (torch.pi / 4)
    centres = 2.5 * torch.stack((angles.cos(), angles.sin()), dim=1)
    squared = (z[:, None, :] - centres).square().sum(-1)
    return torch.logsumexp(-squared / (2 * 0.35**2), dim=1)


TARGETS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ring": _ring_target,
    "two_circles": _two_circles_target,
    "two_moons": _two_moons_target,
    "gaussian_ring": _gaussian_ring_target,
}
"""Unnormalised log-densities log p̃(z): (batch, 2) → (batch,), for density matching."""


def _curve_mixture(
    x: np.ndarray, curves: list[tuple[float, np.ndarray]], noise: float
) -> np.ndarray:
    """log density at x (n, 2) of points drawn uniformly along curves and blurred by N(0, noise²I):
    each curve is (weight, points (m, 2) evenly spaced along it), a quadrature of the curve."""
    if len(x) > 500:  # bound the (rows, quadrature points) arrays
        return np.concatenate(
            [_curve_mixture(x[i : i + 500], curves, noise) for i in range(0, len(x), 500)]
        )
    parts = []
    for weight, points in curves:
        squared = ((x[:, None, :] - points[None]) ** 2).sum(-1)
        log_kernel = -squared / (2 * noise**2) - np.log(2 * np.pi * noise**2)
        peak = log_kernel.max(1, keepdims=True)
        mean = np.log(np.exp(log_kernel - peak).mean(1)) + peak[:, 0]
        parts.append(np.log(weight) + mean)
    return np.logaddexp.reduce(np.stack(parts), axis=0)


def _arc(start: float, stop: float, radius: float = 1.0, m: int = 2000) -> np.ndarray:
    angles = start + (np.arange(m) + 0.5) * (stop - start) / m
    return radius * np.stack((np.cos(angles), np.sin(angles)), axis=1)


def reference_log_prob(name: str, x: np.ndarray) -> np.ndarray | None:
    """log density (n,) of the toy density ``name`` at x (n, 2), in the limit of many samples,
    where it has a closed form or a one-dimensional quadrature; None otherwise. Its mean NLL on
    held-out samples is the best any model can score."""
    if name == "8gaussians":
        angles = np.arange(8) * np.pi / 4
        centres = 4.0 * np.stack((np.cos(angles), np.sin(angles)), axis=1) / 1.414
        return _curve_mixture(x, [(1.0, centres)], 0.5 / 1.414)
    if name == "moons":
        y = (x - np.array([-1.0, -0.2])) / 2
        inner = np.array([1.0, 0.5]) - _arc(0, np.pi)
        curves = [(0.5, _arc(0, np.pi)), (0.5, inner)]
        return _curve_mixture(y, curves, 0.1) - np.log(4)
    if name == "circles":
        curves = [(0.5, _arc(0, 2 * np.pi)), (0.5, _arc(0, 2 * np.pi, 0.5))]
        return _curve_mixture(x / 3, curves, 0.08) - np.log(9)
    if name == "rings":
        radii = (3.0, 2.25, 1.5, 0.75)
        return _curve_mixture(x, [(0.25, _arc(0, 2 * np.pi, r)) for r in radii], 0.08)
    if name == "checkerboard":
        dark = (np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2)) % 2 == 0
        inside = (np.abs(x) <= 4).all(1) & dark
        return np.where(inside, -np.log(32.0), -np.inf)
    return None
