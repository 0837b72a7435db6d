"""Figures of the augmented / conditioned experiment: 1-D trajectories and 2-D decision
boundaries with the features the flows reach."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import nn

from ..data.topology import concentric_circles
from ..plots import new_figure, save_figure

TITLES = {
    "plain": "plain: dh/dt = f(t, h)",
    "augmented": "augmented: h(0) = [x, 0]",
    "conditioned": "conditioned: dh/dt = f(t, h, x)",
}


@torch.no_grad()
def plot_map1d(models: Mapping[str, nn.Module], folder: Path, device: torch.device) -> Path:
    """h(t) from 11 starting points in [−1, 1], one panel per model; the two training points
    ±1 and their targets ∓1 are marked. Plain trajectories cannot cross."""
    times = torch.linspace(0, 1, 60, device=device)
    starts = torch.linspace(-1, 1, 11, device=device)[:, None]
    fig = new_figure(4.0 * len(models), 3.6)
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, (name, model) in zip(axes, models.items(), strict=True):
        path = model(starts, times)[..., 0].cpu().numpy()  # (times, starts)
        for index, start in enumerate(starts[:, 0].tolist()):
            trained = abs(abs(start) - 1) < 1e-6
            color = "tab:red" if start > 0 else "tab:blue"
            ax.plot(
                times.cpu(),
                path[:, index],
                color=color if trained else "0.6",
                lw=2.2 if trained else 0.8,
                zorder=3 if trained else 2,
            )
        for start in (-1.0, 1.0):
            color = "tab:red" if start > 0 else "tab:blue"
            ax.plot([1.0], [-start], marker="x", ms=11, mew=2.5, color=color, zorder=4)
        ax.set_title(TITLES[name], fontsize=10)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("h(t) (first coordinate)")
    fig.suptitle(
        "1-D map g(−1) = 1, g(1) = −1: trajectories from x = −1 (blue) and x = 1 (red); "
        "× = target; grey: other starting points"
    )
    return save_figure(fig, folder / "augmented_map1d.png")


@torch.no_grad()
def plot_circles(models: Mapping[str, nn.Module], folder: Path, device: torch.device) -> Path:
    """Top: the learned decision regions over the plane with test points (inner disc blue,
    ring red). Bottom: where each flow takes the test points, h(T), in 3-D for the augmented
    model."""
    x, y = concentric_circles(600, seed=123)
    labels = y[:, 0].numpy()
    grid = np.linspace(-2, 2, 201)
    gx, gy = np.meshgrid(grid, grid)
    points = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    fig = new_figure(4.6 * len(models), 8.4)
    for column, (name, model) in enumerate(models.items()):
        top = fig.add_subplot(2, len(models), column + 1)
        lifted = model.ode.augment_dim > 0
        projection = "3d" if lifted else None
        bottom = fig.add_subplot(2, len(models), len(models) + column + 1, projection=projection)
        score = model(points.to(device)).cpu().numpy().reshape(gx.shape)
        top.contourf(gx, gy, score, levels=[-1e9, 0, 1e9], colors=["#c6dbef", "#fcbba1"])
        top.contour(gx, gy, score, levels=[0], colors="k", linewidths=1)
        _scatter(top, x.numpy(), labels)
        accuracy = float((np.sign(model(x.to(device)).cpu().numpy()[:, 0]) == labels).mean())
        top.set_title(f"{TITLES[name]}\ntest accuracy {100 * accuracy:.1f}%", fontsize=10)
        top.set_aspect("equal")
        top.set_xlim(-2, 2)
        top.set_ylim(-2, 2)
        features = model.ode(x.to(device), condition=x.to(device) if model.conditioned else None)
        _scatter(bottom, features.cpu().numpy(), labels)
        bottom.set_xlabel("h₁(T)")
        bottom.set_ylabel("h₂(T)")
        if lifted:
            bottom.set_zlabel("h₃(T)")
            bottom.set_title(
                "features h(T) in 3-D (h₃ starts at 0):\nthe disc rises out of the ring",
                fontsize=10,
            )
        else:
            bottom.set_title("features h(T) the readout separates", fontsize=10)
            bottom.grid(alpha=0.3)
    fig.suptitle("Concentric circles: inner disc (blue, −1) vs ring (red, +1)")
    return save_figure(fig, folder / "augmented_circles.png")


def _scatter(ax: Axes, points: np.ndarray, labels: np.ndarray) -> None:
    """Points (n, 2) or, on 3-D axes, (n, 3), blue for label −1 and red for +1."""
    for label, color in ((-1.0, "tab:blue"), (1.0, "tab:red")):
        chosen = labels == label
        coordinates = [points[chosen, axis] for axis in range(points.shape[1])]
        ax.scatter(*coordinates, s=5, color=color, alpha=0.7)
