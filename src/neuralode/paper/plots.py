"""Matplotlib helpers that write the experiments' figures as PNG files.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas directly, so
no GUI backend is ever opened and the caller's global pyplot state is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

TRUE_STYLE = {"color": "black", "linewidth": 2.0, "alpha": 0.75}
LEARNED_STYLE = {"color": "tab:red", "linewidth": 1.5, "linestyle": "--"}
COMPONENT_COLORS = ("tab:blue", "tab:orange")
DPI = 120


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of width × height inches, drawn by Agg (no display)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, parent folders created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def plot_trajectories(
    t: np.ndarray,
    true_y: np.ndarray,
    learned_y: np.ndarray,
    path: Path,
    *,
    observations: np.ndarray,
    title: str,
) -> Path:
    """Draw the true and learned trajectory: phase plane (left) and x(t), y(t) (right).

    Args:
        t: output times, shape (T,).
        true_y: true states, shape (T, 2).
        learned_y: states of the learned ODE started from the same y0, shape (T, 2).
        path: PNG file to write.
        observations: the observed states the model was trained on, shape (N, 2), drawn as dots
            in the phase plane.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = new_figure(12.0, 5.6)
    phase, series = fig.subplots(1, 2, width_ratios=(1.0, 1.6))

    phase.plot(true_y[:, 0], true_y[:, 1], label="true", **TRUE_STYLE)
    phase.plot(
        observations[:, 0],
        observations[:, 1],
        ".",
        color="tab:gray",
        markersize=2.0,
        label="observations (training data)",
    )
    phase.plot(learned_y[:, 0], learned_y[:, 1], label="learned", **LEARNED_STYLE)
    phase.plot(*true_y[0], "o", color="tab:green", markersize=8, label=f"start, t = {t[0]:g}")
    phase.set(
        title="Phase plane",
        xlabel="x",
        ylabel="y",
        aspect="equal",
    )
    phase.grid(alpha=0.3)
    phase.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize="small")

    for k, (name, color) in enumerate(zip(("x", "y"), COMPONENT_COLORS, strict=True)):
        series.plot(t, true_y[:, k], color=color, linewidth=2.0, alpha=0.6, label=f"{name} true")
        series.plot(t, learned_y[:, k], color=color, linestyle="--", label=f"{name} learned")
    series.set(title="States over time", xlabel="time t", ylabel="state value")
    series.grid(alpha=0.3)
    series.legend(loc="upper right", ncols=2, fontsize="small")

    fig.suptitle(title)
    return save_figure(fig, path)


def plot_vector_fields(
    xs: np.ndarray,
    ys: np.ndarray,
    true_field: np.ndarray,
    learned_field: np.ndarray,
    trajectory: np.ndarray,
    path: Path,
    *,
    title: str,
) -> Path:
    """Draw the true field, the learned field (streamlines coloured by speed |dy/dt|), and the
    size of their difference, each with the training trajectory on top.

    Args:
        xs: grid x coordinates, shape (nx,), evenly spaced.
        ys: grid y coordinates, shape (ny,), evenly spaced.
        true_field: true dy/dt on the grid, shape (ny, nx, 2) (row i is y = ys[i]).
        learned_field: learned dy/dt on the grid, shape (ny, nx, 2).
        trajectory: the true trajectory the model was trained on, shape (T, 2).
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = new_figure(16.0, 5.2)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    speeds = [np.linalg.norm(field, axis=-1) for field in (true_field, learned_field)]
    top_speed = max(float(s.max()) for s in speeds)
    speed_norm = LogNorm(vmin=top_speed * 1e-3, vmax=top_speed)

    panels = zip(
        axes[:2],
        (true_field, learned_field),
        speeds,
        ("True field  dy/dt = y³ A", "Learned field  dy/dt = f_θ(y)"),
        strict=True,
    )
    for ax, field, speed, panel_title in panels:
        stream = ax.streamplot(
            xs,
            ys,
            field[..., 0],
            field[..., 1],
            color=speed,
            cmap="viridis",
            norm=speed_norm,
            density=1.3,
            linewidth=1.0,
            arrowsize=1.2,
        )
        ax.set_title(panel_title)
    fig.colorbar(stream.lines, ax=axes[:2].tolist(), label="speed |dy/dt|  (log scale)", shrink=0.9)

    error = np.linalg.norm(learned_field - true_field, axis=-1)
    floor = max(float(error.max()) * 1e-4, 1e-8)
    mesh = axes[2].pcolormesh(
        xs,
        ys,
        np.maximum(error, floor),
        cmap="magma",
        norm=LogNorm(vmin=floor, vmax=max(float(error.max()), 10 * floor)),
        shading="auto",
    )
    axes[2].set_title("Error of the learned field")
    fig.colorbar(mesh, ax=axes[2], label="|learned dy/dt − true dy/dt|  (log scale)", shrink=0.9)

    for k, ax in enumerate(axes):
        ax.plot(
            trajectory[:, 0],
            trajectory[:, 1],
            color="tab:cyan" if k == 2 else "tab:red",
            linewidth=1.0,
            alpha=0.8,
            label="training trajectory",
        )
        ax.set(xlabel="x", ylabel="y", aspect="equal", xlim=(xs[0], xs[-1]), ylim=(ys[0], ys[-1]))
        ax.legend(loc="upper left", fontsize="small")

    fig.suptitle(title)
    return save_figure(fig, path)


def plot_training_curve(
    train_loss: Sequence[float],
    checkpoint_iterations: Sequence[int],
    checkpoint_loss: Sequence[float],
    path: Path,
    *,
    title: str,
) -> Path:
    """Draw the training loss per iteration and the full-trajectory loss at the checkpoints.

    Args:
        train_loss: loss of each training iteration (iteration i + 1 at index i), length N >= 1.
        checkpoint_iterations: iterations at which the full trajectory was evaluated.
        checkpoint_loss: full-trajectory loss at those iterations, same length.
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = new_figure(8.0, 4.5)
    ax = fig.subplots()
    iterations = np.arange(1, len(train_loss) + 1)
    ax.plot(
        iterations,
        train_loss,
        color="tab:blue",
        alpha=0.3,
        linewidth=0.8,
        label="training loss on the short windows, per iteration",
    )
    window = len(train_loss) // 50
    if window > 1:
        smooth = np.convolve(train_loss, np.ones(window) / window, mode="valid")
        ax.plot(
            iterations[window - 1 :],
            smooth,
            color="tab:blue",
            label=f"training loss on the short windows, running mean of {window} iterations",
        )
    ax.plot(
        checkpoint_iterations,
        checkpoint_loss,
        "o-",
        color="tab:red",
        label="loss on the full trajectory (model solved from y(0) over all times)",
    )
    ax.set(title=title, xlabel="training iteration", ylabel="mean |predicted − true|", yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_adaptive_computation(
    *,
    tolerances: np.ndarray,
    nfe: np.ndarray,
    error: np.ndarray,
    epoch_nfe: np.ndarray,
    step_nfe: np.ndarray,
    path: Path,
) -> Path:
    """The paper's Figure 3 for a trained ODE-Net, four panels.

    Args:
        tolerances: solver tolerances evaluated, shape (K,).
        nfe: mean forward NFE on the test set at each tolerance, shape (K,).
        error: test error (%) at each tolerance, shape (K,).
        epoch_nfe: mean (forward, backward) NFE of each training epoch, shape (E, 2).
        step_nfe: (forward, backward) NFE of logged training steps, shape (S, 2).
        path: PNG file to write.
    """
    fig = new_figure(11, 8.5)
    (a, b), (c, d) = fig.subplots(2, 2)
    a.semilogx(tolerances, nfe, marker="o")
    a.set(
        xlabel="solver tolerance (rtol = atol)",
        ylabel="forward NFE per test batch",
        title="(a) NFE against tolerance",
    )
    b.semilogx(tolerances, error, marker="o", color="tab:red")
    b.set(
        xlabel="solver tolerance (rtol = atol)",
        ylabel="test error (%)",
        title="(b) test error against tolerance",
    )
    epochs = np.arange(1, len(epoch_nfe) + 1)
    c.plot(epochs, epoch_nfe[:, 0], marker="o", label="forward")
    c.plot(epochs, epoch_nfe[:, 1], marker="s", label="backward (adjoint)")
    c.set(
        xlabel="training epoch", ylabel="mean NFE per training step", title="(c) NFE over training"
    )
    c.xaxis.set_major_locator(MaxNLocator(integer=True))
    c.legend()
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, step_nfe.shape)
    d.scatter(*(step_nfe + jitter).T, s=6, alpha=0.3)
    lim = [0, step_nfe.max() * 1.05]
    d.plot(lim, lim, color="grey", linestyle=":", label="backward = forward")
    d.set(
        xlim=lim,
        ylim=lim,
        xlabel="forward NFE",
        ylabel="backward NFE",
        title="(d) backward against forward NFE (training steps)",
    )
    d.legend()
    for axis in (a, b, c, d):
        axis.grid(True, which="both", alpha=0.3)
    fig.suptitle("ODE-Net on MNIST: adaptive computation")
    return save_figure(fig, path)
