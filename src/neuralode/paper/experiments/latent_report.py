"""The Table 2 report: ``neuralode latent report`` turns finished runs into results/latent_ode.md,
latent_ode.json and figures.

For every run folder ``obsN-MODEL`` with a ``model.pt`` it scores the model on the held-out
spirals, reads the training time and NFE from ``log.jsonl``, and copies the model and log to
``OUT/latent/`` unless the run folder already lies there (as ``results/latent/runs/<run>``), so
that ``neuralode latent eval --checkpoint`` on ``results/latent/<run>.pt`` or
``results/latent/runs/<run>/model.pt`` reproduces a row (its ``checkpoint`` in latent_ode.json).
Figures: reconstructions and extrapolations of test spirals (the paper's figure 8) and the latent
trajectories projected to 2-D, coloured by direction (figure 9).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralode.nn import LatentODE

from .. import arguments
from ..data.spirals import WINDOW
from ..mnist_models import count_parameters
from ..plots import new_figure, save_figure
from ..training.run_log import read_log
from .common import add_device_arguments, keep_run, start_command
from .latent import OBSERVATIONS, held_out_spirals, load_model, predict, rmse_scores

PAPER = {"rnn": (0.3937, 0.3202, 0.1813), "latent_ode": (0.1642, 0.1502, 0.1346)}
MODEL_NAMES = {
    "rnn": "RNN with time gaps",
    "latent_ode": "Latent ODE",
    "ode_rnn": "Latent ODE, ODE-RNN encoder",
}
SHOWN = 4
"""Test spirals drawn in the reconstruction figure."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/latent"), help="folder of run folders"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="where latent_ode.md goes"
    )
    parser.add_argument(
        "--test-size", type=arguments.positive_int, default=100, help="held-out spirals"
    )
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Score every finished run, copy models and logs to ``--out``/latent (unless the runs already
    lie there), write the table and the figures."""
    device = start_command(args)
    folders = sorted(f for f in args.runs.iterdir() if (f / "model.pt").exists())
    rows, models = [], {}
    saved = args.out / "latent"
    for folder in folders:
        model, config = load_model(folder / "model.pt", device)
        test = held_out_spirals(config, args.test_size)
        epochs, _ = read_log(folder / "log.jsonl")
        rows.append(
            {
                "run": folder.name,
                "model": config["model"],
                "obs": config["obs"],
                "noise": config["noise"],
                "train_size": config["train_size"],
                "lr": config["lr"],
                "weight_decay": config.get("weight_decay", 0.0),
                "seed": config["seed"],
                "field_hidden": config.get("field_hidden") if config["model"] != "rnn" else None,
                "prefix_prob": config.get("prefix_prob", 0.0) if config["model"] != "rnn" else 0.0,
                "kl_weight": config.get("kl_weight", 1.0) if config["model"] != "rnn" else 1.0,
                "latent_dim": config.get("latent_dim", 4) if config["model"] != "rnn" else None,
                "parameters": count_parameters(model),
                "epochs": len(epochs),
                "train_minutes": sum(e["seconds"] for e in epochs) / 60,
                "nfe_forward": epochs[-1]["nfe_forward"],
                **rmse_scores(predict(model, test, device), test),
            }
        )
        models[folder.name] = (model, config)
        rows[-1]["checkpoint"] = str(keep_run(folder, saved))
        print(json.dumps(rows[-1]))
    (args.out / "latent_ode.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "latent_ode.md").write_text(format_table(rows, args.test_size))
    plot_reconstructions(models, args.test_size, device, args.out / "latent_ode_spirals.png")
    plot_latent_paths(models, args.test_size, device, args.out / "latent_ode_latents.png")
    print(f"wrote {args.out / 'latent_ode.md'}")
    return 0


def format_table(rows: list[dict[str, Any]], test_size: int) -> str:
    """results/latent_ode.md from the scored rows."""
    noise = sorted({r["noise"] for r in rows})
    train_sizes = sorted({r["train_size"] for r in rows})
    lines = [
        "# Latent ODE against an RNN on irregularly sampled spirals (Table 2)\n",
        "",
        "Made by `neuralode latent report`. Data (`neuralode.paper.data.spirals`): Archimedean "
        "spirals r = 0.3 θ as in the public example, half of them mirrored (clockwise), θ "
        "advancing 6π/999 per time step, each from its own start angle θ0 ~ U[0.6π, 4.8π]; 200 "
        "equally spaced times t = 0, 0.01, …, 1.99 (0.6 of a turn); Gaussian "
        f"noise of std {' / '.join(f'{s:g}' for s in noise)}. "
        f"{' / '.join(f'{n:,}' for n in train_sizes)} training spirals; each "
        "observes n random points (its own) among the first 100 times. Scores on "
        f"{test_size} held-out spirals: RMSE per coordinate of the predictions at all 200 times "
        "against the **noise-free** spirals (the paper's setting is not fully specified; the "
        "last column scores against the noisy values instead, which cannot go below the noise "
        "std). Latent ODE predictions use the posterior mean of z0.",
        "",
        "| model | n | RMSE, all 200 times | paper | interpolation (t < 1) | "
        "extrapolation (t ≥ 1) | vs noisy values | parameters | epochs | train min | NFE |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = {name: index for index, name in enumerate(MODEL_NAMES)}
    lines[-2:-2] = [*_seed_summary(rows, order), "Every run:", ""]
    for r in sorted(rows, key=lambda r: (r["obs"], order[r["model"]])):
        paper = PAPER.get(r["model"])
        paper_value = f"{paper[OBSERVATIONS.index(r['obs'])]:.4f}" if paper else "—"
        lines.append(
            f"| {_name(r)} | {r['obs']} | {r['rmse']:.4f} | {paper_value} | "
            f"{r['rmse_interp']:.4f} | {r['rmse_extrap']:.4f} | {r['rmse_noisy']:.4f} | "
            f"{r['parameters']:,} | {r['epochs']} | {r['train_minutes']:.1f} | "
            f"{r['nfe_forward']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _seed_summary(rows: list[dict[str, Any]], order: dict[str, int]) -> list[str]:
    """Lines of the table of recipes trained with several seeds: mean and range of the RMSEs."""
    recipes: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        recipes.setdefault((r["obs"], order[r["model"]], _name(r, seed=False)), []).append(r)
    lines = [
        "Recipes trained with several seeds (seed s also draws the training spirals): mean and "
        "range (min–max) over the seeds.",
        "",
        "| model | n | seeds | RMSE, mean | range | paper | extrapolation, mean | range |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (obs, _, name), runs in sorted(recipes.items()):
        if len(runs) < 2:
            continue
        paper = PAPER.get(runs[0]["model"])
        paper_value = f"{paper[OBSERVATIONS.index(obs)]:.4f}" if paper else "—"
        cells = []
        for key in ("rmse", "rmse_extrap"):
            values = [r[key] for r in runs]
            cells.append(f"{np.mean(values):.4f} | {min(values):.4f}–{max(values):.4f}")
        lines.append(f"| {name} | {obs} | {len(runs)} | {cells[0]} | {paper_value} | {cells[1]} |")
    return [*lines, ""]


def _name(row: dict[str, Any], seed: bool = True) -> str:
    """The model, its latent size (where not the paper's 4), its latent field's widths, its
    learning rate, its weight decay, epochs and KL weight (where not 0, 400 and 1), its training
    prefix share and (with ``seed``) its seed."""
    latent = row.get("latent_dim")
    field = f"latent {latent}, " if latent not in (None, 4) else ""
    field += f"field {row['field_hidden']}, " if row["field_hidden"] else ""
    extras = f", weight decay {row['weight_decay']:g}" if row.get("weight_decay") else ""
    extras += f", {row['epochs']} epochs" if row.get("epochs", 400) != 400 else ""
    extras += f", KL weight {row['kl_weight']:g}" if row.get("kl_weight", 1.0) != 1.0 else ""
    extras += f", prefix {row['prefix_prob']:g}" if row.get("prefix_prob") else ""
    seeded = f", seed {row['seed']}" if seed and row["seed"] else ""
    return f"{MODEL_NAMES[row['model']]} ({field}lr {row['lr']:g}{extras}{seeded})"


def _main_runs(models: dict[str, tuple[Any, dict]]) -> dict[tuple[str, int], tuple[Any, dict]]:
    """The runs named ``obsN-MODEL`` or ``obsN-MODEL-seed0`` (the final recipe's first seed), by
    (model, n)."""
    return {
        (config["model"], config["obs"]): (model, config)
        for name, (model, config) in models.items()
        if name in {f"obs{config['obs']}-{config['model']}{seed}" for seed in ("", "-seed0")}
    }


def plot_reconstructions(
    runs: dict[str, tuple[Any, dict]], test_size: int, device: torch.device, path: Path
) -> None:
    """Rows: numbers of observations; columns: test spirals. Each panel: the true spiral, the
    observed points, and each model's prediction (solid in the window, dashed after it)."""
    models = _main_runs(runs)
    counts = sorted({obs for _, obs in models})
    if not counts:
        return
    fig = new_figure(3.0 * SHOWN, 3.0 * len(counts) + 0.5)
    axes = np.atleast_2d(fig.subplots(len(counts), SHOWN))
    colors = {"latent_ode": "tab:blue", "ode_rnn": "tab:green", "rnn": "tab:red"}
    for row, obs in zip(axes, counts, strict=True):
        present = {name: m for (name, n), m in models.items() if n == obs}
        config = next(iter(present.values()))[1]
        test = held_out_spirals(config, test_size)
        predictions = {name: predict(m, test, device) for name, (m, _) in present.items()}
        for index, ax in enumerate(row):
            truth = test.truth[index]
            ax.plot(truth[:, 0], truth[:, 1], color="0.6", lw=3, label="true spiral")
            seen = test.observed[index][test.mask[index]]
            ax.scatter(seen[:, 0], seen[:, 1], s=8, color="k", zorder=3, label="observed")
            for name, prediction in predictions.items():
                p = prediction[index]
                ax.plot(p[:WINDOW, 0], p[:WINDOW, 1], color=colors[name], lw=1.5)
                ax.plot(
                    p[WINDOW - 1 :, 0],
                    p[WINDOW - 1 :, 1],
                    color=colors[name],
                    lw=1.5,
                    ls="--",
                    label=MODEL_NAMES[name],
                )
            ax.set_aspect("equal")
            ax.set_title(f"n = {obs}, test spiral {index}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "Held-out spirals: the truth (grey), the observed points (black) and each model's "
        "predictions\n(solid: observed window t < 1; dashed: extrapolation; the RNN starts at 0 "
        "until its first observation)"
    )
    save_figure(fig, path)


def plot_latent_paths(
    runs: dict[str, tuple[Any, dict]], test_size: int, device: torch.device, path: Path
) -> None:
    """The latent ODE's z(t) over t ∈ [0, 2) for the test spirals, projected on its first two
    principal components, coloured by the spiral's direction."""
    models = _main_runs(runs)
    latent = sorted(
        ((obs, m) for (name, obs), m in models.items() if name == "latent_ode"), key=lambda x: x[0]
    )
    if not latent:
        return
    obs, (model, config) = latent[0]  # the sparsest observations
    assert isinstance(model, LatentODE)
    test = held_out_spirals(config, test_size)
    window = slice(0, WINDOW)
    with torch.no_grad():
        mean, _ = model.encoder(
            test.observed[:, window].to(device),
            test.mask[:, window].to(device),
            test.times[window].to(device),
        )
        paths = model.latent_path(mean, test.times.to(device)).cpu()
    flat = paths.reshape(-1, paths.shape[-1])
    centred = flat - flat.mean(0)
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)
    projected = (centred @ basis[:2].T).reshape(len(paths), -1, 2)
    fig = new_figure(5.5, 5.0)
    ax = fig.subplots()
    for trajectory, clockwise in zip(projected, test.clockwise.tolist(), strict=True):
        color = "tab:red" if clockwise else "tab:blue"
        ax.plot(trajectory[:, 0], trajectory[:, 1], color=color, lw=0.8, alpha=0.6)
        ax.scatter(trajectory[0, 0], trajectory[0, 1], color=color, s=6)
    ax.plot([], [], color="tab:red", label="clockwise spirals")
    ax.plot([], [], color="tab:blue", label="counter-clockwise spirals")
    ax.legend(fontsize=8)
    ax.set_xlabel("latent principal component 1")
    ax.set_ylabel("latent principal component 2")
    ax.set_title(f"Latent trajectories z(t), t ∈ [0, 2), n = {obs} (dots: z0)", fontsize=10)
    save_figure(fig, path)
