"""First demo: learn the vector field of a 2-D spiral from its trajectory (torchdiffeq's ode_demo).

The true system is dy/dt = y³ A with A = [[-0.1, 2.0], [-2.0, -0.1]] (y³ taken elementwise),
y(0) = [2, 0], observed at 1000 evenly spaced times in [0, 25]. The model is dy/dt = MLP(y³),
a 2 → 50 → 2 tanh network. Each training iteration picks --batch-size random windows of
--batch-time consecutive observations, integrates the model from each window's first state
through the window, and minimises the mean absolute error of the predicted states (gradients by
backpropagation through the solver). At checkpoints the model is integrated from y(0) over the
whole time span and compared with the full true trajectory.

`neuralode demo` prints a table of the checkpoints and writes trajectories.png,
vector_field.png, training.png and metrics.json to --out; train_spiral() is the same from Python.
The shared trainer runs the iterations, one epoch from a checkpoint to the next: --out also gets
its log.jsonl (a line per iteration), checkpoint.pt and model.pt, and --resume continues a run
that was stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralode import METHODS, odeint
from neuralode.nn import NeuralODE, SolverConfig

from .. import arguments, plots
from ..training import Trainer, resolve_device, seed_everything
from ..training.run_log import read_log

TRUE_A = ((-0.1, 2.0), (-2.0, -0.1))
Y0 = (2.0, 0.0)
DEFAULT_ITERATIONS = 8000
PLOT_FILES = ("trajectories.png", "vector_field.png", "training.png")


@dataclass(frozen=True)
class SpiralConfig:
    """Settings of one demo run (times in the ODE's time units)."""

    iterations: int = DEFAULT_ITERATIONS
    batch_size: int = 20
    batch_time: int = 10
    data_size: int = 1000
    t_end: float = 25.0
    hidden: int = 50
    lr: float = 3e-3
    method: str = "dopri5"
    rtol: float = 1e-7
    atol: float = 1e-9
    checkpoints: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.iterations, self.batch_size, self.hidden, self.checkpoints) < 1:
            raise ValueError("iterations, batch_size, hidden and checkpoints must be >= 1")
        if not 2 <= self.batch_time < self.data_size:
            raise ValueError(f"batch_time must be in [2, {self.data_size})")


@dataclass(frozen=True)
class Checkpoint:
    """The model's state after ``iteration`` updates.

    ``window_loss`` and ``window_nfe`` are means over the iterations since the previous
    checkpoint (None at iteration 0); the trajectory columns come from one solve of the model from
    y(0) over the whole time span.
    """

    iteration: int
    window_loss: float | None
    window_nfe: float | None
    trajectory_loss: float
    trajectory_nfe: int
    elapsed_s: float


class SpiralField(nn.Module):
    """The learned vector field f_θ(y) = MLP(y³); y and the output have shape (..., 2)."""

    def __init__(self, hidden: int = 50) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.1)
                nn.init.zeros_(layer.bias)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y**3)


@dataclass
class SpiralResult:
    """Everything a run produced; arrays are NumPy on the CPU.

    Attributes:
        model: the trained model (its field is ``model.func``).
        t: observation times, shape (T,).
        true_y: true trajectory, shape (T, 2).
        learned_y: the trained model's trajectory from the same y(0), shape (T, 2).
        train_loss, train_nfe: loss and forward NFE of every training iteration.
        true_nfe: NFE of the reference solve of the true system.
        wall_time_s: seconds of training and evaluation up to the last checkpoint.
    """

    config: SpiralConfig
    model: NeuralODE
    t: np.ndarray
    true_y: np.ndarray
    learned_y: np.ndarray
    true_nfe: int
    train_loss: list[float]
    train_nfe: list[int]
    checkpoints: list[Checkpoint]
    wall_time_s: float


def true_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The true dynamics dy/dt = y³ A; y has shape (..., 2)."""
    return (y**3) @ torch.tensor(TRUE_A, dtype=y.dtype, device=y.device)


def true_trajectory(
    t_end: float, points: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The true solution at ``points`` evenly spaced times in [0, t_end]: times (T,) and states
    (T, 2), float32 on ``device``, and the NFE of the reference solve (dopri5 in float64 on the
    CPU, rtol 1e-10, atol 1e-12)."""
    t = torch.linspace(0.0, t_end, points, dtype=torch.float64)
    y0 = torch.tensor(Y0, dtype=torch.float64)
    with torch.no_grad():
        y, stats = odeint(
            true_field, y0, t, rtol=1e-10, atol=1e-12, method="dopri5", return_stats=True
        )
    return t.to(device, torch.float32), y.to(device, torch.float32), stats.nfe


def spiral_model(config: SpiralConfig) -> NeuralODE:
    """The model: :class:`SpiralField` solved with the config's method and tolerances, gradients
    by backpropagation through the solver."""
    solver = SolverConfig(method=config.method, rtol=config.rtol, atol=config.atol)
    return NeuralODE(SpiralField(config.hidden), solver=solver)


def model_trajectory(
    model: NeuralODE, y0: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """The model's states at times ``t`` from ``y0`` (without gradients) and the solve's NFE."""
    with torch.no_grad():
        y = model(y0, t)
    return y, model.nfe_forward


def checkpoint_iterations(iterations: int, count: int) -> list[int]:
    """The iterations after which the model is evaluated: 0 and ``count`` more, evenly spread
    (fewer when ``count`` > ``iterations``)."""
    return sorted({round(k * iterations / count) for k in range(count + 1)})


class SpiralWindows:
    """The training batches: iteration i (1-based) trains on ``batch_size`` windows whose first
    indices are the i-th draw of one generator seeded by ``seed``. An epoch runs from one
    checkpoint iteration (``boundaries``, 0 first) to the next, so epochs may differ in length
    by one. A batch is a 1-tuple with the windows' first indices, shape (batch_size,).
    """

    def __init__(
        self,
        observations: int,
        batch_size: int,
        batch_time: int,
        boundaries: Sequence[int],
        seed: int,
    ) -> None:
        self.observations, self.batch_size, self.batch_time = observations, batch_size, batch_time
        self.boundaries, self.seed = tuple(boundaries), seed

    def __len__(self) -> int:
        """Batches in the longest epoch."""
        return max(self.epoch_length(epoch) for epoch in range(len(self.boundaries) - 1))

    def epoch_length(self, epoch: int) -> int:
        return self.boundaries[epoch + 1] - self.boundaries[epoch]

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        first, end = self.boundaries[epoch] + start, self.boundaries[epoch + 1]
        for iteration in range(end):  # the draws before ``first`` only advance the generator
            starts = torch.randint(
                0, self.observations - self.batch_time, (self.batch_size,), generator=generator
            )
            if iteration >= first:
                yield (starts,)


def windows(
    t: torch.Tensor, y: torch.Tensor, starts: torch.Tensor, batch_time: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The windows of the trajectory that begin at indices ``starts`` (B,): times (L,) starting
    at t[0], first states (B, 2) and states (L, B, 2), with L = ``batch_time``."""
    index = starts[None, :] + torch.arange(batch_time, device=starts.device)[:, None]
    window = y[index.to(y.device)]
    return t[:batch_time], window[0], window


def train_spiral(
    config: SpiralConfig, out: Path, *, resume: bool = False, progress: bool = True
) -> SpiralResult | None:
    """Train the spiral model (Adam, cosine-annealed learning rate) with the shared trainer,
    which writes its log and checkpoints to ``out``; return the run's record, or None when a
    signal stopped the run (``resume=True`` continues it from its checkpoint).

    Seeded by ``config.seed``: the same config on the same device and thread count reproduces
    the numbers.

    Raises:
        ValueError: ``config.device`` names a CUDA device that is not available.
    """
    device = resolve_device(config.device)
    seed_everything(config.seed)
    t, true_y, true_nfe = true_trajectory(config.t_end, config.data_size, device)
    model = spiral_model(config).to(device)

    def evaluate(model: NeuralODE) -> dict[str, float]:
        """The full-trajectory loss and the NFE of its solve."""
        learned_y, nfe = model_trajectory(model, true_y[0], t)
        return {"trajectory_loss": float((learned_y - true_y).abs().mean()), "trajectory_nfe": nfe}

    def window_loss(
        model: NeuralODE, batch: tuple[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean absolute error of the model's states through the batch's windows."""
        window_t, window_y0, window_y = windows(t, true_y, batch[0], config.batch_time)
        return (model(window_y0, window_t) - window_y).abs().mean(), {}

    tick = time.perf_counter()
    initial = evaluate(model)  # the untrained model, also when resuming: seeded the same
    initial_seconds = time.perf_counter() - tick
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.iterations, eta_min=config.lr / 100
    )
    boundaries = checkpoint_iterations(config.iterations, config.checkpoints)
    data = SpiralWindows(
        config.data_size, config.batch_size, config.batch_time, boundaries, config.seed
    )
    trainer = Trainer(
        model,
        optimizer,
        data,
        window_loss,
        out_dir=out,
        epochs=len(boundaries) - 1,
        device=device,
        scheduler=scheduler,
        scheduler_interval="step",
        evaluate=evaluate,
        log_every=1,
        config=asdict(config),
        progress_bar=progress,
        may_change={"device"},
    )
    if not trainer.fit(resume=resume).completed:
        return None
    epochs, steps = read_log(trainer.log_path)
    train_loss = [step["train"]["loss"] for step in steps]
    train_nfe = [int(step["nfe_forward"]) for step in steps]
    checkpoints = [
        Checkpoint(
            0, None, None, initial["trajectory_loss"], initial["trajectory_nfe"], initial_seconds
        )
    ]
    elapsed = initial_seconds
    for epoch in epochs:
        since = slice(checkpoints[-1].iteration, epoch["step"])
        elapsed += epoch["seconds"] + epoch["eval_seconds"]
        checkpoints.append(
            Checkpoint(
                iteration=epoch["step"],
                window_loss=float(np.mean(train_loss[since])),
                window_nfe=float(np.mean(train_nfe[since])),
                trajectory_loss=epoch["eval"]["trajectory_loss"],
                trajectory_nfe=int(epoch["eval"]["trajectory_nfe"]),
                elapsed_s=elapsed,
            )
        )
    learned_y, _ = model_trajectory(model, true_y[0], t)
    return SpiralResult(
        config=config,
        model=model,
        t=t.cpu().numpy(),
        true_y=true_y.cpu().numpy(),
        learned_y=learned_y.cpu().numpy(),
        true_nfe=true_nfe,
        train_loss=train_loss,
        train_nfe=train_nfe,
        checkpoints=checkpoints,
        wall_time_s=elapsed,
    )


def format_table(checkpoints: list[Checkpoint]) -> str:
    """The checkpoints as a Markdown table (losses are mean absolute errors)."""

    def cell(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = [
        "| iteration | training loss (windows) | NFE per training solve "
        "| full-trajectory loss | NFE full trajectory | elapsed (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c.iteration} | {cell(c.window_loss, '.2e')} | {cell(c.window_nfe, '.1f')} "
        f"| {c.trajectory_loss:.4f} | {c.trajectory_nfe} | {c.elapsed_s:.1f} |"
        for c in checkpoints
    ]
    return "\n".join(lines)


def _field_on_grid(
    result: SpiralResult, points: int = 81
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid axes xs, ys (n,) covering the trajectory and the true and learned fields (n, n, 2)."""
    half_width = 1.15 * float(np.abs(result.true_y).max())
    axis = np.linspace(-half_width, half_width, points)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1)  # (n, n, 2), row i is y = axis[i]
    parameter = next(result.model.parameters())
    y = torch.as_tensor(grid, dtype=parameter.dtype, device=parameter.device)
    t0 = torch.zeros((), dtype=y.dtype, device=y.device)
    with torch.no_grad():
        true = true_field(t0, y).cpu().numpy()
        learned = result.model.func(t0, y).cpu().numpy()
    return axis, axis, true, learned


def _dense_trajectories(
    result: SpiralResult, factor: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and learned trajectory on a ``factor`` times finer time grid, for smooth curves:
    times (T',), states (T', 2) each."""
    config = result.config
    parameter = next(result.model.parameters())
    t, true_y, _ = true_trajectory(config.t_end, factor * config.data_size, parameter.device)
    learned_y, _ = model_trajectory(result.model, true_y[0], t)
    return t.cpu().numpy(), true_y.cpu().numpy(), learned_y.cpu().numpy()


def save_outputs(result: SpiralResult, out: Path) -> list[Path]:
    """Write the three PNG figures (:data:`PLOT_FILES`) and ``metrics.json`` to ``out``."""
    config = result.config
    final = result.checkpoints[-1]
    subtitle = (
        f"after {config.iterations} iterations ({config.method}, rtol={config.rtol:g}, "
        f"atol={config.atol:g}); full-trajectory loss {final.trajectory_loss:.4f}"
    )
    xs, ys, true, learned = _field_on_grid(result)
    paths = [
        plots.plot_trajectories(
            *_dense_trajectories(result),
            out / PLOT_FILES[0],
            observations=result.true_y,
            title=f"Spiral: true vs learned trajectory from y(0) = {list(Y0)}, {subtitle}",
        ),
        plots.plot_vector_fields(
            xs,
            ys,
            true,
            learned,
            result.true_y,
            out / PLOT_FILES[1],
            title=f"Spiral: true vs learned vector field, {subtitle}",
        ),
        plots.plot_training_curve(
            result.train_loss,
            [c.iteration for c in result.checkpoints],
            [c.trajectory_loss for c in result.checkpoints],
            out / PLOT_FILES[2],
            title="Spiral demo: training progress",
        ),
    ]
    metrics = {
        "config": asdict(config),
        "environment": {
            "torch": torch.__version__,
            "device": str(next(result.model.parameters()).device),
            "threads": torch.get_num_threads(),
        },
        "true_trajectory_nfe": result.true_nfe,
        "wall_time_s": result.wall_time_s,
        "initial_trajectory_loss": result.checkpoints[0].trajectory_loss,
        "final_trajectory_loss": final.trajectory_loss,
        "checkpoints": [asdict(c) for c in result.checkpoints],
        "train_loss": result.train_loss,
        "train_nfe": result.train_nfe,
        "plots": [path.name for path in paths],
    }
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
    return [*paths, metrics_path]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``neuralode demo`` options."""
    defaults = SpiralConfig()

    def add_setting(name: str, help: str, **kwargs: Any) -> None:
        """--NAME for the :class:`SpiralConfig` field ``name``, defaulting to the field's."""
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, default=getattr(defaults, name), help=help, **kwargs)

    positive_int, positive_float = arguments.positive_int, arguments.positive_float
    add_setting(
        "iterations",
        f"training iterations (default {defaults.iterations}: about a minute on a laptop CPU)",
        type=positive_int,
    )
    add_setting("batch_size", "windows per iteration", type=positive_int)
    add_setting(
        "batch_time",
        "observations per window (default %(default)s, i.e. 0.225 time units)",
        type=int,
    )
    add_setting("lr", "initial Adam learning rate (cosine decay)", type=positive_float)
    add_setting("method", "ODE solver for the model (default %(default)s)", choices=sorted(METHODS))
    add_setting("rtol", "solver relative tolerance", type=positive_float)
    add_setting("atol", "solver absolute tolerance", type=positive_float)
    add_setting(
        "checkpoints",
        "evaluations on the full trajectory during training (table rows after row 0)",
        type=positive_int,
    )
    add_setting("seed", "random seed", type=arguments.nonnegative_int)
    add_setting("device", "cpu, cuda, cuda:N or auto (default cpu)", type=arguments.device)
    parser.add_argument(
        "--threads",
        type=arguments.positive_int,
        default=1,
        help="torch CPU threads (default 1: the model is tiny, more threads only add overhead)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="folder for the plots and metrics.json"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the stopped run in --out (its checkpoint)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Train, print the checkpoint table and write the outputs; returns the exit status (0 on
    success, 2 for invalid settings, 130 when stopped by a signal)."""
    try:
        config = SpiralConfig(
            iterations=args.iterations,
            batch_size=args.batch_size,
            batch_time=args.batch_time,
            lr=args.lr,
            method=args.method,
            rtol=args.rtol,
            atol=args.atol,
            checkpoints=args.checkpoints,
            seed=args.seed,
            device=args.device,
        )
        resolve_device(config.device)
    except ValueError as error:
        print(f"neuralode demo: error: {error}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        completed = _run(config, args.out, resume=args.resume, progress=not args.no_progress)
    finally:
        torch.set_num_threads(threads)
    return 0 if completed else 130


def _run(config: SpiralConfig, out: Path, *, resume: bool, progress: bool) -> bool:
    """Train with ``config``, print the table and write the outputs to ``out``; False when the
    run was stopped."""
    print(
        "Learning the spiral dy/dt = y³ A from its trajectory: "
        f"{config.iterations} iterations of {config.batch_size} windows x "
        f"{config.batch_time} observations on {config.device}."
    )
    result = train_spiral(config, out, resume=resume, progress=progress)
    if result is None:
        return False
    print()
    print(format_table(result.checkpoints))
    print()
    print(f"Training took {result.wall_time_s:.1f} s.")
    paths = save_outputs(result, out)
    print(f"Plots and metrics written to {out.resolve()}/:")
    for path in paths:
        print(f"  {path.name}")
    return True
