"""The flow report: ``neuralode cnf report`` turns finished runs into results/cnf.md, cnf.json and
figures.

For every run folder with a ``model.pt`` it scores the model on held-out data (the same data for
every model: 10,000 toy samples, 10,000 draws for density matching, the MNIST test set), reads
the training time and NFE from ``log.jsonl``, and copies the model (a small file) and the log to
``OUT/cnf/<run>.pt`` and ``<run>.log.jsonl`` unless the run folder already lies under
``OUT/cnf`` (as ``results/cnf/runs/<run>``, whose ``model.pt`` is then the committed model).
``neuralode cnf eval --checkpoint`` on the model named in the report's last table reproduces a
row. Figures: target against learned densities and samples
(results/cnf_toy.png, cnf_matching.png), and samples and density flowing from the base Gaussian
to the data over t (cnf_flow.png).

Runs of one data set and model with other seeds are folders ``<run>-seed<S>`` (``<run>`` or
``<run>-seed0`` the first): the tables give the mean and range (min–max) of their scores, the
figures show the first seed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralode.nn import CNF, standard_normal_log_prob

from ..data.toy2d import TARGETS, reference_log_prob
from ..mnist_models import count_parameters
from ..training.run_log import read_log
from .cnf import (
    ImageTask,
    LikelihoodTask,
    MatchingTask,
    add_test_samples_argument,
    draw_samples,
    load_flow,
    make_task,
    target_log_normalizer,
)
from .cnf_figures import density_grid, plot_image_grid, plot_panels
from .common import add_device_arguments, add_mnist_folder_argument, keep_run, start_command

MODEL_NAMES = {
    "cnf": "CNF",
    "cnf-hyper": "CNF (hypernet)",
    "planar": "planar NF",
    "gaussian": "diag. Gaussian",
}
"""Names by model; a CNF's name adds its hidden widths, a planar flow's its layers."""
SCORE_NAMES = {"test_bpd": "bits/dim", "test_kl": "KL", "test_nll": "NLL"}
"""A run's score by task (an image run has an NLL too, but is scored in bits/dim)."""
FLOW_RUNS = ("circles-cnf", "moons-cnf")
FLOW_TIMES = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/cnf"), help="folder of run folders (runs/cnf)"
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="where cnf.md goes")
    add_test_samples_argument(parser, "held-out samples per score")
    add_mnist_folder_argument(parser, "MNIST folder for mnist14 runs")
    add_device_arguments(parser)


def score_run(
    folder: Path, samples: int, device: torch.device, data_dir: Path | None
) -> dict[str, Any]:
    """One table row: the run's held-out score, size, training time and NFE."""
    model, config = load_flow(folder / "model.pt", device)
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    task = make_task(config)
    metrics = task.evaluate(model, samples, device)
    epochs, _ = read_log(folder / "log.jsonl")
    reference = None
    if isinstance(task, LikelihoodTask) and not isinstance(task, ImageTask):
        log_prob = reference_log_prob(task.data, task.test_set(samples).double().numpy())
        reference = None if log_prob is None else -float(log_prob.mean())
    data = config.get("target") or config["data"]
    return {
        "run": folder.name,
        "label": re.sub(r"-seed\d+$", "", folder.name).removeprefix(f"{data}-"),
        "seed": config.get("seed", 0),
        "task": "matching" if config.get("target") else "likelihood",
        "data": data,
        "model": config["model"],
        "regularized": bool(config.get("kinetic") or config.get("jacobian")),
        "kinetic": config.get("kinetic", 0.0),
        "jacobian": config.get("jacobian", 0.0),
        "parameters": count_parameters(model),
        "hidden": config["hidden"] if config["model"] == "cnf" else None,
        "layers": config["layers"] if config["model"] == "planar" else None,
        "iterations": epochs[-1]["step"],
        "batch_size": config["batch_size"],
        "tol": config["tol"] if isinstance(model, CNF) else None,
        "train_minutes": sum(e["seconds"] for e in epochs) / 60,
        "train_nfe": epochs[-1]["nfe_forward"],
        "t1": model.t1.detach().item() if isinstance(model, CNF) else None,
        "reference_nll": reference,
        **metrics,
    }


def run(args: argparse.Namespace) -> int:
    """Score every finished run, copy models and logs to ``--out``/cnf (unless the runs already
    lie there), write the tables and the figures."""
    device = start_command(args)
    folders = sorted(f for f in args.runs.iterdir() if (f / "model.pt").exists())
    rows = []
    for folder in folders:
        rows.append(score_run(folder, args.samples, device, args.data_dir))
        rows[-1]["checkpoint"] = str(keep_run(folder, args.out / "cnf"))
        print(json.dumps(rows[-1]))
    (args.out / "cnf.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "cnf.md").write_text(format_report(rows, args.samples))
    runs: dict[str, Path] = {}  # (each data set and model's first seed, by its first run's name)
    for row, folder in sorted(zip(rows, folders, strict=True), key=lambda pair: pair[0]["seed"]):
        runs.setdefault(f"{row['data']}-{row['label']}", folder / "model.pt")
    write_figures(runs, args.out, device)
    print(f"wrote {args.out / 'cnf.md'}")
    return 0


def _table(header: list[str], lines: list[list[str]]) -> str:
    rows = [header, ["---"] + ["---:"] * (len(header) - 1), *lines]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows) + "\n"


def format_report(rows: list[dict[str, Any]], samples: int) -> str:
    """results/cnf.md from the rows of :func:`score_run`."""
    plain = [r for r in rows if not r["regularized"]]
    parts = ["# Continuous normalizing flows against planar flows\n\n", _setup(rows)]
    comparisons = [
        (
            "Maximum likelihood on 2-D toy densities",
            f"Test NLL in nats (lower is better) on {samples:,} held-out samples per dataset, "
            "the same samples for every model. *True density*: the NLL of the generator's own "
            "density on those samples (closed form or quadrature along its curves, where one "
            "exists): the best any model can do, up to sampling noise.",
            [r for r in plain if r["task"] == "likelihood" and r["data"] != "mnist14"],
            "test_nll",
        ),
        (
            "Density matching: KL(q‖p) to an unnormalised target",
            f"KL(q‖p) in nats (lower is better), estimated from {samples:,} draws of each model "
            "(log Z of the target by quadrature on [−8, 8]²).",
            [r for r in plain if r["task"] == "matching"],
            "test_kl",
        ),
    ]
    for title, intro, section, score in comparisons:
        if section:
            parts += [f"\n## {title}\n\n", intro, "\n\n", _comparison(section, score)]
    images = [r for r in rows if r["data"] == "mnist14"]
    image_tols = sorted({f"{r['tol']:g}" for r in images if r["tol"] is not None})
    if images:
        parts += [
            "\n## 14×14 MNIST (196 dimensions)\n\n",
            "MNIST averaged over 2×2 blocks and rounded to 8 bits, dequantised with uniform noise, "
            "logit-transformed (α = 0.05) and standardised per pixel with the training set's "
            "mean and std; bits/dim of the 8-bit images on the full test set, every Jacobian "
            "included. Batches of 100 training images drawn with replacement; Adam, learning "
            "rate 1e-3 (Gaussian: 1e-2). The CNF's trace is Hutchinson's (Gaussian probes, "
            "unbiased for log p); dopri5 at rtol = atol = "
            f"{' / '.join(image_tols)}.\n\n",
            _table(
                ["model", "test bits/dim", "parameters", "iterations", "train min", "test NFE"],
                [
                    [
                        _name(r),
                        f"{r['test_bpd']:.3f}",
                        f"{r['parameters']:,}",
                        f"{r['iterations']:,}",
                        f"{r['train_minutes']:.1f}",
                        f"{r['test_nfe']:.0f}",
                    ]
                    for r in images
                ],
            ),
        ]
    regularized = [r for r in rows if r["regularized"]]
    if regularized:
        parts += ["\n## Regularised dynamics (Finlay et al. 2020)\n\n", _regularization(rows)]
    parts += [
        "\n## Every run\n\n",
        "Each score ± its standard error over the held-out samples (the precision of the "
        "estimate, not the spread between seeds or training runs).\n\n",
        _every_run(rows),
    ]
    return "".join(parts)


def _setup(rows: list[dict[str, Any]]) -> str:
    """How the 2-D runs were made, from their configs."""
    flat = [r for r in rows if r["data"] != "mnist14"]
    iterations = sorted({r["iterations"] for r in flat})
    batches = sorted({r["batch_size"] for r in flat})
    tols = sorted({r["tol"] for r in flat if r["tol"] is not None})
    return (
        "Made by `neuralode cnf report` from the runs of `neuralode cnf train` (commands in "
        "docs/experiments/cnf.md). 2-D runs: Adam, learning rate 1e-3, weight decay 1e-5, "
        f"{' / '.join(f'{i:,}' for i in iterations)} iterations of batch "
        f"{' / '.join(str(b) for b in batches)} (fresh samples each iteration, seeded), the same "
        "for every model. CNF: FFJORD's concat-squash MLP field (tanh; hidden widths in its "
        "name), exact trace, end time learnt from t1 = 0.5, dopri5 at rtol = atol = "
        f"{' / '.join(f'{t:g}' for t in tols)}, gradients by backpropagation through the solver. "
        "Planar NF: K stacked layers (K = 64 against 64 hidden units is the paper's comparison), "
        "initialised near the identity. Training minutes are wall-clock on a 2-core machine "
        "shared by up to five runs at once: compare them loosely. `neuralode cnf eval "
        "--checkpoint MODEL` reproduces a run's score, MODEL being its file in the last "
        "table.\n"
    )


def _comparison(rows: list[dict[str, Any]], score: str) -> str:
    """One line per dataset: the true density's score (where known), each model's score (the
    mean and range over its seeds, and their number, where it has several), which is best (by
    the mean), the main CNF's NFE and each model's training minutes (of the first seed)."""
    rows = sorted(rows, key=lambda r: r["seed"])
    models = list(dict.fromkeys(r["label"] for r in rows))
    names = {r["label"]: _name(r) for r in rows}
    parameters = {r["label"]: r["parameters"] for r in rows}
    references = any(r.get("reference_nll") is not None for r in rows)
    header = ["data", *(["true density"] if references else [])]
    header += [f"{names[m]} ({parameters[m]:,} params)" for m in models]
    header += ["best", "CNF test NFE", "train min (" + " / ".join(names[m] for m in models) + ")"]
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        seeds: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["data"] == data:
                seeds.setdefault(r["label"], []).append(r)
        means = {m: float(np.mean([r[score] for r in runs])) for m, runs in seeds.items()}
        first = {m: runs[0] for m, runs in seeds.items()}
        cnf = first.get("cnf")
        minutes = (f"{first[m]['train_minutes']:.1f}" if m in first else "—" for m in models)
        lines.append(
            [
                data,
                *([_reference(first)] if references else []),
                *(_spread([r[score] for r in seeds[m]]) if m in seeds else "—" for m in models),
                names[min(means, key=means.__getitem__)],
                f"{cnf['test_nfe']:.0f}" if cnf else "—",
                " / ".join(minutes),
            ]
        )
    return _table(header, lines)


def _spread(values: list[float]) -> str:
    """One score, or the mean, range and number of several seeds' scores."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f}, {len(values)} seeds)"


def _name(row: dict[str, Any]) -> str:
    """The model of a row: ``CNF 64-64-64``, ``planar NF, K = 64``, ``diag. Gaussian``."""
    name = MODEL_NAMES[row["model"]]
    if row.get("hidden"):
        return f"{name} {row['hidden'].replace(',', '-')}"
    if row.get("layers"):
        return f"{name}, K = {row['layers']}"
    return name


def _reference(by_model: dict[str, dict[str, Any]]) -> str:
    values = [r["reference_nll"] for r in by_model.values() if r.get("reference_nll") is not None]
    return f"{values[0]:.3f}" if values else "—"


def _regularization(rows: list[dict[str, Any]]) -> str:
    """Each regularised run beside the plain run of the same data and model."""
    lines = []
    for r in (r for r in rows if r["regularized"]):
        plain = [
            p
            for p in rows
            if not p["regularized"]
            and (p["data"], p["label"], p["seed"]) == (r["data"], r["model"], r["seed"])
        ]
        for run in (*plain, r):
            lines.append(
                [
                    run["run"],
                    f"{run['kinetic']:g} / {run['jacobian']:g}",
                    f"{run['test_nll']:.3f}",
                    f"{run['train_nfe']:.0f}",
                    f"{run['test_nfe']:.0f}",
                    f"{run['train_minutes']:.1f}",
                ]
            )
    header = ["run", "kinetic / Jacobian weight", "test NLL", "train NFE (last epoch)"]
    return _table([*header, "test NFE", "train min"], lines)


def _every_run(rows: list[dict[str, Any]]) -> str:
    """Each run's own score (test NLL, KL or bits/dim) ± its standard error, seed, NFE, time and
    model file."""
    lines = []
    for r in sorted(rows, key=lambda r: (r["task"], r["data"], r["label"], r["seed"])):
        score = next(key for key in SCORE_NAMES if key in r)
        lines.append(
            [
                r["run"],
                str(r["seed"]),
                f"{SCORE_NAMES[score]} {r[score]:.3f} ± {r[f'{score}_se']:.3f}",
                f"{r['test_nfe']:.0f}",
                f"{r['train_minutes']:.1f}",
                f"`{r['checkpoint']}`",
            ]
        )
    return _table(["run", "seed", "score ± s.e.", "test NFE", "train min", "model"], lines)


def _grid_log_prob(model: nn.Module, t: float = 0.0) -> np.ndarray:
    """log-density on :func:`density_grid` (points,), at time t for a CNF."""
    grid, _ = density_grid()
    like = next(model.parameters())
    values = []
    with torch.no_grad():
        for chunk in grid.split(2000):
            chunk = chunk.to(like)
            if isinstance(model, CNF) and t >= model.t1.detach().item():
                values.append(standard_normal_log_prob(chunk))  # the base density itself
            elif isinstance(model, CNF):
                values.append(model.log_prob(chunk, t=t))
            else:
                values.append(model.log_prob(chunk))
    return torch.cat(values).cpu().numpy()


def _density(log_prob: np.ndarray) -> np.ndarray:
    return np.exp(log_prob - log_prob.max())


def write_figures(runs: dict[str, Path], out: Path, device: torch.device) -> None:
    """The toy, matching, flow and image-sample figures for the runs that exist."""
    loaded = {name: load_flow(path, device) for name, path in runs.items()}
    toy_rows, matching_rows = [], []
    for name, (model, config) in loaded.items():
        data = config.get("target") or config["data"]
        if name != f"{data}-cnf":  # the main CNF of each dataset, beside the planar flow
            continue
        planar = loaded.get(f"{data}-planar")
        if config.get("target"):
            matching_rows.append(_matching_row(data, model, config, planar))
        elif data != "mnist14":
            toy_rows.append(_toy_row(data, model, config, planar))
        else:
            images = draw_samples(model, config, 100).cpu().reshape(-1, 14, 14)
            plot_image_grid(images, out / "cnf_mnist14_samples.png", "CNF samples, 14×14 MNIST")
    if toy_rows:
        title = "Maximum likelihood: data, CNF density and samples, planar-flow density"
        plot_panels(toy_rows, out / "cnf_toy.png", title)
    if matching_rows:
        title = "Density matching: target, CNF density and samples, planar-flow samples"
        plot_panels(matching_rows, out / "cnf_matching.png", title)
    flows = [loaded[name] for name in FLOW_RUNS if name in loaded]
    if flows:
        rows = [row for model, config in flows for row in _flow_rows(model, config)]
        title = (
            "From data (t = 0) to the base Gaussian (t = t1): the marginal density (each panel "
            "scaled to its maximum) and samples over t"
        )
        plot_panels(rows, out / "cnf_flow.png", title)


def _toy_row(data: str, model: nn.Module, config: dict, planar: Any) -> list:
    test = make_task(config).test_set(20000).numpy()
    row = [
        ("samples", f"{data}: data", test),
        ("density", "CNF density", _density(_grid_log_prob(model))),
        ("samples", "CNF samples", draw_samples(model, config, 20000).cpu().numpy()),
    ]
    if planar is not None:
        row.append(("density", "planar density", _density(_grid_log_prob(planar[0]))))
    return row


def _matching_row(target: str, model: nn.Module, config: dict, planar: Any) -> list:
    grid, _ = density_grid()
    target_log_prob = TARGETS[target](grid.double()) - target_log_normalizer(target)
    row = [
        ("density", f"{target}: target", _density(target_log_prob.numpy())),
        ("density", "CNF density q", _density(_grid_log_prob(model))),
        ("samples", "CNF samples", draw_samples(model, config, 20000).cpu().numpy()),
    ]
    if planar is not None:
        samples = draw_samples(planar[0], planar[1], 20000).cpu().numpy()
        row.append(("samples", "planar samples", samples))
    return row


def _flow_rows(model: CNF, config: dict) -> list[list]:
    """Two rows: the marginal density and the samples at FLOW_TIMES times from 0 to t1."""
    t1 = model.t1.detach().item()
    times = torch.linspace(0.0, t1, FLOW_TIMES)
    task = make_task(config)
    like = next(model.parameters())
    with torch.no_grad():
        z = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0)).to(like)
        path = model.trajectory(z, times.flip(0)).flip(0).cpu().numpy()
    name = config["data"] if not isinstance(task, MatchingTask) else config["target"]
    densities, samples = [], []
    for index, t in enumerate(times.tolist()):
        density = _density(_grid_log_prob(model, t=t))
        densities.append(("density", f"{name} density, t = {t:.2f}", density))
        samples.append(("samples", f"{name} samples, t = {t:.2f}", path[index]))
    return [densities, samples]
