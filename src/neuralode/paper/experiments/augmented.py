"""Where a plain Neural ODE fails and augmented or input-conditioned ones do not.

The flow of an ODE is a homeomorphism: trajectories never cross, so in its own dimension a Neural
ODE can neither swap two points on a line nor pull a disc out of the ring around it. Two tasks
(Dupont et al. 2019) and three models:

- ``map1d``: the map g(−1) = 1, g(1) = −1 on the line; the output is h(T) itself (the first
  coordinate for the augmented model). Loss: mean squared error.
- ``circles``: the inner disc (|x| < 0.5) is class −1, the ring 1 < |x| < 1.5 class +1; a
  linear layer reads the label from h(T). Loss: mean squared error to ±1; accuracy by sign.

- ``plain``: dh/dt = f(t, h), h(0) = x, in the data's dimension d.
- ``augmented``: h(0) = [x, 0], one extra dimension (d + 1).
- ``conditioned``: dh/dt = f(t, h, x): the input x enters the field at every evaluation.

``neuralode augmented`` trains the six runs with the shared trainer (runs/augmented/TASK-MODEL)
and writes augmented.md, augmented.json and the figures augmented_map1d.png and
augmented_circles.png to --results (default runs/augmented; the committed ones: --results
results).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralode.nn import MLPField, NeuralODE, SolverConfig

from .. import arguments
from ..data.topology import concentric_circles, map1d
from ..training import TensorBatches, Trainer
from .augmented_figures import plot_circles, plot_map1d
from .common import (
    RESULTS_RUN_OPTIONS,
    add_results_run_arguments,
    run_config,
    start_training,
    trainer_options,
)

TASKS = ("map1d", "circles")
MODELS = ("plain", "augmented", "conditioned")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    positive_int = arguments.positive_int
    parser.add_argument(
        "--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="the tasks to run"
    )
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="the models to train"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=100, help="passes over the training set"
    )
    parser.add_argument(
        "--lr", type=arguments.positive_float, default=3e-3, help="Adam learning rate"
    )
    parser.add_argument("--hidden", type=positive_int, default=32, help="width of the field's MLP")
    parser.add_argument(
        "--tol", type=arguments.positive_float, default=1e-3, help="dopri5 rtol = atol"
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=3, help="seeds --seed, --seed + 1, ..."
    )
    add_results_run_arguments(parser, "runs/augmented", "table and figures", checkpoint_every=120.0)


RUN_WIDE_OPTIONS = RESULTS_RUN_OPTIONS | {"tasks", "models", "repeats"}
"""Options a resumed run may change: also those that choose the runs, not what one computes."""


def make_data(task: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, d) and targets (n, 1) of a task."""
    return (map1d if task == "map1d" else concentric_circles)(n, seed)


class Classifier(nn.Module):
    """x (batch, d) → the ODE block → a readout (batch, 1): identity on h(T) for map1d, a
    linear layer for circles."""

    def __init__(self, task: str, model: str, hidden: int, tol: float) -> None:
        super().__init__()
        dim = 1 if task == "map1d" else 2
        augment = 1 if model == "augmented" else 0
        field = MLPField(
            dim + augment, (hidden, hidden), condition_dim=dim * (model == "conditioned")
        )
        self.conditioned = model == "conditioned"
        self.ode = NeuralODE(
            field,
            solver=SolverConfig(rtol=tol, atol=tol),
            augment_dim=augment,
            augment_output="drop" if task == "map1d" else "keep",
        )
        self.readout = nn.Identity() if task == "map1d" else nn.Linear(dim + augment, 1)

    def forward(self, x: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, 1) outputs; with ``times``, the states (len(times), batch, d [+ 1])."""
        condition = x if self.conditioned else None
        states = self.ode(x, times, condition=condition)
        return states if times is not None else self.readout(states)


def mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    output = model(x)
    loss = nn.functional.mse_loss(output, y)
    return loss, {"accuracy": float((output.sign() == y).float().mean())}


@torch.no_grad()
def evaluate(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Test loss, accuracy (sign of the output) and forward NFE."""
    output = model(x)
    return {
        "test_loss": float(nn.functional.mse_loss(output, y)),
        "test_accuracy": float((output.sign() == y).float().mean()),
        "test_nfe": float(model.ode.nfe_forward),
    }


def run(args: argparse.Namespace) -> int:
    """Train every (task, model, seed) run and write the table and figures."""
    distributed, device = start_training(args)
    out = args.out or Path("runs/augmented")
    runs, models = [], {}
    for seed in range(args.seed, args.seed + args.repeats):
        for task in args.tasks:
            x_train, y_train = make_data(task, 256 if task == "circles" else 64, seed=seed)
            x_test, y_test = (v.to(device) for v in make_data(task, 1000, seed=seed + 1000))
            for name in args.models:
                torch.manual_seed(seed)
                model = Classifier(task, name, args.hidden, args.tol)
                trainer = Trainer(
                    model,
                    torch.optim.Adam(model.parameters(), lr=args.lr),
                    TensorBatches(x_train, y_train, batch_size=32, seed=seed),
                    mse_loss,
                    out_dir=out / f"{task}-{name}-seed{seed}",
                    epochs=args.epochs,
                    device=device,
                    evaluate=lambda m, x=x_test, y=y_test: evaluate(m, x, y),
                    config={**run_config(args), "task": task, "model": name, "seed": seed},
                    distributed=distributed,
                    **trainer_options(args, may_change=RUN_WIDE_OPTIONS),
                )
                result = trainer.fit(resume=args.resume)
                if not result.completed:
                    return 130
                runs.append({"seed": seed, **summarize(task, name, model, result.history)})
                models.setdefault((task, name), model.eval())  # the first seed's, for figures
    if distributed.is_main:
        write_results(args.results, runs, models, device)
    return 0


def summarize(task: str, name: str, model: nn.Module, history: list[dict[str, Any]]) -> dict:
    """One run's record from its epoch records."""
    last = history[-1]
    return {
        "task": task,
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        **last["eval"],
        "train_loss": last["train"]["loss"],
        "train_nfe_forward": last["nfe_forward"],
        "train_seconds": sum(epoch["seconds"] for epoch in history),
        "epochs": len(history),
    }


def table_rows(runs: list[dict]) -> list[str]:
    """One markdown row per (task, model): means over seeds, with the range where it varies."""

    def spread(values: list[float], fmt: str, scale: float = 1.0, unit: str = "") -> str:
        low, high = (format(v * scale, fmt) + unit for v in (min(values), max(values)))
        mean = format(sum(values) / len(values) * scale, fmt) + unit
        return mean if low == high else f"{mean} ({low}–{high})"

    rows = []
    keys = dict.fromkeys((r["task"], r["model"]) for r in runs)
    for task, name in keys:
        group = [r for r in runs if (r["task"], r["model"]) == (task, name)]
        column = {k: [r[k] for r in group] for k in group[0]}
        rows.append(
            f"| {task} | {name} | {group[0]['parameters']:,} | "
            f"{spread(column['test_loss'], '.3g')} | "
            f"{spread(column['test_accuracy'], '.1f', 100, '%')} | "
            f"{spread(column['test_nfe'], '.0f')} | {spread(column['train_nfe_forward'], '.1f')} | "
            f"{spread(column['train_seconds'], '.1f')} |"
        )
    return rows


def write_results(
    folder: Path,
    runs: list[dict],
    models: Mapping[tuple[str, str], Classifier],
    device: torch.device,
) -> None:
    """results/augmented.md, augmented.json and the two figures."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Plain, augmented and input-conditioned Neural ODEs",
        "",
        "Command: `neuralode augmented --results results`. Tasks and models: see "
        "`neuralode augmented --help`. "
        "dopri5 at rtol = atol = 1e-3 (backpropagation through the solver), Adam, batch 32, "
        "64 (map1d) or 256 (circles) training points; test sets of 1,000 points. Test NFE: "
        "evaluations of the field in the solve of the test set after training; training NFE: "
        "mean per step of the last epoch. Each cell: the mean over seeds "
        f"{sorted({r['seed'] for r in runs})} (training data, test data and initialisation "
        "change with the seed), with the range in brackets.",
        "",
        "| task | model | parameters | test MSE | test accuracy | test NFE | training NFE "
        "| training seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *table_rows(runs),
    ]
    text = "\n".join(lines) + "\n"
    (folder / "augmented.md").write_text(text)
    (folder / "augmented.json").write_text(json.dumps(runs, indent=2))
    print(text)
    tasks = {task for task, _ in models}
    if "map1d" in tasks:
        plot_map1d({m: models[t, m] for t, m in models if t == "map1d"}, folder, device)
    if "circles" in tasks:
        plot_circles({m: models[t, m] for t, m in models if t == "circles"}, folder, device)
