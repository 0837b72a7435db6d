"""Bouncing ball: learn gravity and restitution from observed bounce times.

A ball dropped from rest at height h bounces when its height crosses zero; each bounce
reverses and scales its velocity by the restitution e. The times of the first bounces,
observed with noise, are fitted by gradient descent on (g, e): each flight is an
``odeint_event`` solve, and the gradient of a bounce time with respect to g and e reaches it
through the event times before it (implicit function theorem) and the velocities at impact.
Writes bouncing_ball.{md,json,png} to --results (default runs/bouncing_ball; the committed
ones: --results results).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralode import odeint, odeint_event

from .. import arguments
from ..plots import new_figure, save_figure
from ..training import TensorBatches, Trainer
from .common import (
    RESULTS_RUN_OPTIONS,
    add_results_run_arguments,
    run_config,
    start_training,
    trainer_options,
)

TRUE_G, TRUE_RESTITUTION, HEIGHT = 9.81, 0.8, 5.0
TOL = 1e-8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    positive_int, positive_float = arguments.positive_int, arguments.positive_float
    parser.add_argument("--bounces", type=positive_int, default=6, help="observed bounce times")
    parser.add_argument(
        "--noise",
        type=arguments.nonnegative_float,
        default=0.01,
        help="std of the observed times (s)",
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=500, help="Adam steps (one per epoch)"
    )
    parser.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate")
    parser.add_argument(
        "--init-g", type=positive_float, default=5.0, help="initial gravity guess (m/s²)"
    )
    parser.add_argument(
        "--init-restitution",
        type=arguments.open_unit_float,
        default=0.5,
        help="initial restitution guess",
    )
    add_results_run_arguments(
        parser, "runs/bouncing_ball", "table and figure", checkpoint_every=60.0
    )


class BouncingBall(nn.Module):
    """The ball's flight dy/dt = (v, -g) on states (height, velocity), with g > 0 and
    0 < e < 1 kept by their parametrisation (log g, logit e)."""

    def __init__(self, g: float, restitution: float, height: float = HEIGHT) -> None:
        super().__init__()
        self.log_g = nn.Parameter(torch.tensor(math.log(g), dtype=torch.float64))
        self.logit_e = nn.Parameter(
            torch.tensor(math.log(restitution / (1 - restitution)), dtype=torch.float64)
        )
        self.register_buffer("height", torch.tensor(height, dtype=torch.float64))

    @property
    def g(self) -> torch.Tensor:
        return self.log_g.exp()

    @property
    def restitution(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_e)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([state[1], -self.g.to(state.dtype)])

    def flights(self, bounces: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(start time, start state, bounce time) of each of the first ``bounces`` flights."""
        t = torch.zeros((), dtype=torch.float64, device=self.height.device)
        state = torch.stack([self.height, torch.zeros_like(self.height)])
        out = []
        for _ in range(bounces):
            bounce, solution = odeint_event(self, state, t, event_fn=_height, rtol=TOL, atol=TOL)
            out.append((t, state, bounce))
            impact_velocity = solution[-1, 1]
            t, state = (
                bounce,
                torch.stack([torch.zeros_like(bounce), -self.restitution * impact_velocity]),
            )
        return out

    def bounce_times(self, bounces: int) -> torch.Tensor:
        """The first ``bounces`` bounce times, (bounces,), differentiable in g and e."""
        return torch.stack([bounce for _, _, bounce in self.flights(bounces)])


def _height(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    return state[0]


def observed_times(bounces: int, noise: float, seed: int) -> torch.Tensor:
    """Bounce times of the true ball plus Gaussian noise of std ``noise``."""
    with torch.no_grad():
        exact = BouncingBall(TRUE_G, TRUE_RESTITUTION).bounce_times(bounces)
    generator = torch.Generator().manual_seed(seed)
    return exact + noise * torch.randn(bounces, generator=generator, dtype=torch.float64)


def loss_fn(model: BouncingBall, batch: tuple[torch.Tensor, torch.Tensor]):
    """Mean squared error of the bounce times (s²); the batch is (bounce indices, observed
    times), in any order."""
    indices, observed = batch
    predicted = model.bounce_times(int(indices.max()) + 1)[indices]
    loss = (predicted - observed).square().mean()
    metrics = {"g": model.g.item(), "restitution": model.restitution.item()}
    return loss, metrics


def run(args: argparse.Namespace) -> int:
    distributed, device = start_training(args)
    observed = observed_times(args.bounces, args.noise, args.seed)
    model = BouncingBall(args.init_g, args.init_restitution)
    initial = BouncingBall(args.init_g, args.init_restitution)
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=args.lr),
        TensorBatches(torch.arange(args.bounces), observed, batch_size=args.bounces, seed=0),
        loss_fn,
        out_dir=args.out or Path("runs/bouncing_ball"),
        epochs=args.epochs,
        device=device,
        config={**run_config(args)},
        distributed=distributed,
        **trainer_options(args, may_change=RESULTS_RUN_OPTIONS),
    )
    result = trainer.fit(resume=args.resume)
    if not result.completed:
        return 130
    if distributed.is_main:
        write_results(args, model.cpu(), initial, observed, result.history)
    return 0


def write_results(
    args: argparse.Namespace,
    model: BouncingBall,
    initial: BouncingBall,
    observed: torch.Tensor,
    history: list[dict[str, Any]],
) -> None:
    with torch.no_grad():
        fitted = model.bounce_times(args.bounces)
    epochs = [h for h in history if h.get("kind") == "epoch"]
    summary = {
        "true": {"g": TRUE_G, "restitution": TRUE_RESTITUTION},
        "initial": {"g": args.init_g, "restitution": args.init_restitution},
        "fitted": {"g": model.g.item(), "restitution": model.restitution.item()},
        "observed_times": observed.tolist(),
        "fitted_times": fitted.tolist(),
        "noise": args.noise,
        "epochs": args.epochs,
        "final_loss": epochs[-1]["train"]["loss"] if epochs else None,
        "history": [
            {"epoch": h["epoch"], **{k: h["train"][k] for k in ("loss", "g", "restitution")}}
            for h in epochs
        ],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bouncing_ball.json").write_text(json.dumps(summary, indent=1) + "\n")
    rows = [
        "| | g (m/s²) | restitution e | RMS error of bounce times (s) |",
        "| --- | ---: | ---: | ---: |",
        f"| true | {TRUE_G:.3f} | {TRUE_RESTITUTION:.3f} | — |",
        f"| initial guess | {args.init_g:.3f} | {args.init_restitution:.3f} | "
        f"{_rms(initial, observed):.4f} |",
        f"| fitted ({args.epochs} Adam steps) | {model.g.item():.3f} | "
        f"{model.restitution.item():.3f} | {_rms(model, observed):.4f} |",
    ]
    (args.results / "bouncing_ball.md").write_text(
        f"# Bouncing ball: g and e from {args.bounces} bounce times (noise σ = {args.noise} s)"
        "\n\n" + "\n".join(rows) + "\n"
    )
    print("\n".join(rows))
    plot(args.results / "bouncing_ball.png", model, initial, observed, summary["history"])


def _rms(model: BouncingBall, observed: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.bounce_times(observed.shape[0]) - observed).square().mean().sqrt())


def trajectory(model: BouncingBall, bounces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(times, heights) along the first ``bounces`` flights, 50 points per flight."""
    times, heights = [], []
    with torch.no_grad():
        for start, state, bounce in model.flights(bounces):
            t = torch.linspace(float(start), float(bounce), 50, dtype=torch.float64)
            times.append(t)
            heights.append(odeint(model, state, t, rtol=TOL, atol=TOL)[:, 0])
    return torch.cat(times), torch.cat(heights)


def plot(
    path: Path,
    model: BouncingBall,
    initial: BouncingBall,
    observed: torch.Tensor,
    history: list[dict[str, float]],
) -> None:
    fig = new_figure(11, 4)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    bounces = observed.shape[0]
    truth = BouncingBall(TRUE_G, TRUE_RESTITUTION)
    for ball, style, label in (
        (truth, dict(color="black", lw=2), f"true (g={TRUE_G}, e={TRUE_RESTITUTION})"),
        (initial, dict(color="0.6", ls="--"),
         f"initial guess (g={initial.g.item():.2f}, e={initial.restitution.item():.2f})"),
        (model, dict(color="tab:blue", ls=":", lw=2),
         f"fitted (g={model.g.item():.2f}, e={model.restitution.item():.3f})"),
    ):  # fmt: skip
        t, h = trajectory(ball, bounces)
        left.plot(t, h, label=label, **style)
    left.plot(observed, torch.zeros_like(observed), "rx", ms=9, mew=2, label="observed bounces")
    left.set_xlabel("time (s)")
    left.set_ylabel("height (m)")
    left.set_title("Ball trajectories; the fit sees only the bounce times")
    left.legend(fontsize=8)
    epochs = [h["epoch"] for h in history]
    right.plot(epochs, [h["g"] / TRUE_G for h in history], label="g / true g")
    right.plot(epochs, [h["restitution"] / TRUE_RESTITUTION for h in history],
               label="e / true e")  # fmt: skip
    right.axhline(1.0, color="black", lw=0.8, ls="--")
    right.set_xlabel("Adam step")
    right.set_ylabel("fitted / true")
    right.set_title("Parameters during the fit")
    right.legend(fontsize=8)
    save_figure(fig, path)
