"""Figures of the flow experiments: 2-D densities and samples, their evolution over t, and image
samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes

from ..plots import new_figure, save_figure

LIMIT = 4.5
"""Half-width of the square [−LIMIT, LIMIT]² every 2-D panel shows."""


def density_grid(points_per_axis: int = 200) -> tuple[torch.Tensor, float]:
    """Cell centres of a grid over the plotted square: (points², 2) float32, and the cell area."""
    edges = torch.linspace(-LIMIT, LIMIT, points_per_axis + 1)
    centres = (edges[1:] + edges[:-1]) / 2
    grid = torch.cartesian_prod(centres, centres).flip(-1)  # row-major: y varies slowest
    return grid, float(edges[1] - edges[0]) ** 2


def show_density(ax: Axes, density: np.ndarray, title: str) -> None:
    """A density on the :func:`density_grid` (points,) as an image."""
    side = round(len(density) ** 0.5)
    ax.imshow(
        density.reshape(side, side),
        origin="lower",
        extent=(-LIMIT, LIMIT, -LIMIT, LIMIT),
        cmap="magma",
        interpolation="nearest",
    )
    _style(ax, title)


def show_samples(ax: Axes, samples: np.ndarray, title: str) -> None:
    """Samples (n, 2) as a 2-D histogram on the plotted square."""
    ax.hist2d(
        samples[:, 0],
        samples[:, 1],
        bins=150,
        range=((-LIMIT, LIMIT), (-LIMIT, LIMIT)),
        cmap="magma",
    )
    _style(ax, title)


def _style(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-LIMIT, LIMIT)
    ax.set_ylim(-LIMIT, LIMIT)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_samples_2d(samples: torch.Tensor, path: Path, title: str) -> Path:
    """One histogram of 2-D samples (n, 2)."""
    fig = new_figure(4.5, 4.8)
    show_samples(fig.subplots(), samples.numpy(), title)
    return save_figure(fig, path)


def plot_image_grid(images: torch.Tensor, path: Path, title: str) -> Path:
    """Up to 100 grey images (n, H, W) with values in [0, 1], 10 per row."""
    n = min(len(images), 100)
    rows = -(-n // 10)
    fig = new_figure(6.0, 0.6 * rows + 0.5)
    axes = np.atleast_2d(fig.subplots(rows, 10))
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < n:
            ax.imshow(images[index].numpy(), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_panels(
    rows: Sequence[Sequence[tuple[str, str, np.ndarray]]], path: Path, title: str
) -> Path:
    """A grid of 2-D panels: each row a list of (kind, caption, array) with kind ``"density"``
    (values on :func:`density_grid`) or ``"samples"`` ((n, 2) points)."""
    columns = max(len(row) for row in rows)
    fig = new_figure(2.3 * columns, 2.4 * len(rows) + 0.4)
    axes = np.atleast_2d(fig.subplots(len(rows), columns))
    for row, row_axes in zip(rows, axes, strict=True):
        for ax in row_axes[len(row) :]:
            ax.axis("off")
        for (kind, caption, values), ax in zip(row, row_axes, strict=False):
            if kind == "density":
                show_density(ax, values, caption)
            else:
                show_samples(ax, values, caption)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
