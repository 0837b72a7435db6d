"""The Table 1 report: ``neuralode mnist report`` turns trained runs into results/mnist.md.

For every model with a finished run (``RUNS/<model>/model.pt``, and more seeds in
``RUNS/<model>-seed<S>/``; the report keeps a copy of each final model as ``RUNS/<run>.pt``, which
it reads where ``model.pt`` is missing) it measures the test error of each run on the full test
set (mean and range over the seeds), the peak memory of one training step on a batch of 128
(in a fresh process), and reads the time per step and the NFE from the run's ``log.jsonl``. For
the ODE-Net it also redoes the paper's adaptive-computation figures: NFE and test error against
the solver tolerance, NFE over the training epochs, and backward against forward NFE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import arguments
from ..mnist_models import build_mnist_model, count_parameters
from ..plots import plot_adaptive_computation
from ..training import resolve_device
from ..training.run_log import read_log
from .common import add_mnist_folder_argument
from .mnist import (
    ADAPTIVE_MODELS,
    MODELS,
    SOLVING_MODELS,
    add_limit_argument,
    classification_loss,
    load_model,
    load_split,
    model_kwargs,
    test_error,
)

PAPER = {
    "mlp": (1.60, "0.24M"),
    "resnet": (0.41, "0.60M"),
    "rknet": (0.47, "0.22M"),
    "odenet": (0.42, "0.22M"),
    "anode": None,  # not in the paper (augmented Neural ODEs came a year later)
}
TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
MEMORY_BATCH = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("results/mnist"),
        help="folder of run folders, one per model (default results/mnist)",
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="where mnist.md goes")
    parser.add_argument(
        "--tolerances",
        type=arguments.positive_float,
        nargs="+",
        default=list(TOLERANCES),
        help="ODE-Net tolerances for the adaptive-computation figure",
    )
    add_limit_argument(parser, "--test-limit", "test")
    add_mnist_folder_argument(parser, "folder with MNIST IDX files")
    parser.add_argument("--download", action="store_true", help="download MNIST if missing")
    parser.add_argument(
        "--device", type=arguments.device, default="auto", help="auto, cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--threads",
        type=arguments.positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )


def training_step_memory(model_name: str, gradient: str, threads: int) -> float:
    """Peak resident memory (MiB) that one training step on a batch of 128 adds, measured in a
    fresh process with glibc's mmap threshold fixed so freed tensors leave the resident set."""
    command = [
        sys.executable,
        "-m",
        "neuralode.paper.experiments.mnist_report",
        model_name,
        gradient,
        str(threads),
    ]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return float(output.stdout.strip().splitlines()[-1])


def _measure_step_memory(model_name: str, gradient: str, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_mnist_model(model_name, **model_kwargs(model_name, 1e-3, gradient))
    batch = (torch.randn(MEMORY_BATCH, 1, 28, 28), torch.randint(0, 10, (MEMORY_BATCH,)))
    classification_loss(model, (batch[0][:2], batch[1][:2]))[0].backward()  # warm-up
    model.zero_grad()
    before = _resident_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
    classification_loss(model, batch)[0].backward()
    return _resident_mib("VmHWM") - before


def _resident_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process, in MiB (Linux).
    Unlike ru_maxrss, VmHWM is not inherited from the parent process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def run(args: argparse.Namespace) -> int:
    """Write results/mnist.md, results/mnist.json and results/mnist_adaptive.png."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images, labels = load_split(args, "test", args.test_limit)
    rows, sweep, odenet_log = [], [], None
    for name in MODELS:
        folders = runs_of(args.runs, name)
        if not folders:
            continue
        seeds = []
        for folder in folders:
            seed_model, seed_config = load_model(model_file(folder), device)
            seed_metrics = test_error(seed_model, images, labels, device)
            seeds.append({"seed": seed_config.get("seed", 0), "folder": folder.name,
                          "test_error": seed_metrics["test_error"]})  # fmt: skip
            if (folder / "model.pt").exists():
                shutil.copyfile(folder / "model.pt", saved_model(folder))
            print(f"{folder.name}: test error {seed_metrics['test_error']:.2f}%", flush=True)
        path = model_file(folders[0])
        model, config = load_model(path, device)
        epochs, steps = read_log(folders[0] / "log.jsonl")
        last = epochs[-1]
        gradient = config.get("gradient", "backprop") if name in ADAPTIVE_MODELS else "backprop"
        row = {
            "model": name,
            "parameters": count_parameters(model),
            "test_error": seeds[0]["test_error"],
            "seeds": seeds,
            "epochs": len(epochs),
            "seconds_per_step": last["seconds"] / epochs[0]["step"],
            "nfe_forward": last["nfe_forward"],
            "nfe_backward": last["nfe_backward"],
            "gradient": gradient if name in SOLVING_MODELS else "—",
            "memory_mib": training_step_memory(name, gradient, torch.get_num_threads()),
        }
        rows.append(row)
        if name == "odenet":
            odenet_log = (epochs, steps)
            for tol in args.tolerances:
                swept, _ = load_model(path, device, tol)
                start = time.perf_counter()
                result = test_error(swept, images, labels, device)
                sweep.append({"tol": tol, **result, "seconds": time.perf_counter() - start})
                print(
                    f"  tol {tol:g}: error {result['test_error']:.2f}%, NFE "
                    f"{result['test_nfe']:.1f}",
                    flush=True,
                )
    if not rows:
        print(f"no finished runs (model.pt) under {args.runs}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if odenet_log is not None:
        epochs, steps = odenet_log
        plot_adaptive_computation(
            tolerances=np.array([s["tol"] for s in sweep]),
            nfe=np.array([s["test_nfe"] for s in sweep]),
            error=np.array([s["test_error"] for s in sweep]),
            epoch_nfe=np.array([[e["nfe_forward"], e["nfe_backward"]] for e in epochs]),
            step_nfe=np.array([[s["nfe_forward"], s["nfe_backward"]] for s in steps]),
            path=args.out / "mnist_adaptive.png",
        )
    (args.out / "mnist.json").write_text(
        json.dumps(
            {"models": rows, "odenet_tolerance_sweep": sweep, "test_images": len(labels)}, indent=2
        )
    )
    text = format_table(rows, sweep, len(labels))
    (args.out / "mnist.md").write_text(text)
    print(text)
    return 0


def runs_of(runs: Path, name: str) -> list[Path]:
    """A model's finished run folders: ``RUNS/<model>`` (its first run, seed 0) and
    ``RUNS/<model>-seed<S>``, in that order."""
    seeds = sorted(p for p in runs.glob(f"{name}-seed*") if p.is_dir())
    folders = [runs / name, *seeds]
    return [folder for folder in folders if model_file(folder).exists()]


def saved_model(folder: Path) -> Path:
    """Where the report keeps a run's final model: ``RUNS/<run>.pt`` beside its folder."""
    return folder.parent / f"{folder.name}.pt"


def model_file(folder: Path) -> Path:
    """A run's final model: its ``model.pt``, or the report's copy of it (a fresh clone has
    only the copy: the run folders keep their checkpoint and log)."""
    own = folder / "model.pt"
    return own if own.exists() else saved_model(folder)


def format_table(rows: list[dict], sweep: list[dict], test_images: int) -> str:
    """results/mnist.md: the measured Table 1 beside the paper's, and the tolerance sweep."""
    lines = [
        "# MNIST: the paper's Table 1, measured here",
        "",
        f"Command: `neuralode mnist report` (test error on {test_images:,} test images). Training "
        "runs: `neuralode mnist train --model MODEL --seed S` (see each run's config in its "
        "checkpoint). Test error over the seeds trained: mean and range (min–max); the other "
        "columns are of the first run (seed 0).",
        "",
        "| model | test error, mean | range | seeds | paper | parameters | paper | gradient | "
        "peak memory per training batch of 128 | time per training step | forward NFE | "
        "backward NFE | epochs |",
        "| --- " + "| ---: " * 6 + "| --- " + "| ---: " * 5 + "|",
    ]
    for r in rows:
        paper = PAPER[r["model"]]
        paper_error, paper_params = (f"{paper[0]:.2f}%", paper[1]) if paper else ("—", "—")
        solves = r["model"] in SOLVING_MODELS
        nfe = f"{r['nfe_forward']:.1f} | {r['nfe_backward']:.1f}" if solves else "— | —"
        errors = [seed["test_error"] for seed in r["seeds"]]
        spread = f"{min(errors):.2f}–{max(errors):.2f}%" if len(errors) > 1 else "—"
        lines.append(
            f"| {r['model']} | {sum(errors) / len(errors):.2f}% | {spread} | {len(errors)} | "
            f"{paper_error} | {r['parameters']:,} | {paper_params} | {r['gradient']} | "
            f"{r['memory_mib']:.1f} MiB | {1e3 * r['seconds_per_step']:.0f} ms | {nfe} | "
            f"{r['epochs']} |"
        )
    lines += ["", "## Each run", "", "| run | seed | test error |", "| --- | ---: | ---: |"]
    lines += [
        f"| {seed['folder']} | {seed['seed']} | {seed['test_error']:.2f}% |"
        for r in rows
        for seed in r["seeds"]
    ]
    if sweep:
        lines += [
            "",
            "## ODE-Net at other solver tolerances (evaluation only)",
            "",
            "| rtol = atol | test error | mean forward NFE | seconds |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {s['tol']:g} | {s['test_error']:.2f}% | {s['test_nfe']:.1f} | {s['seconds']:.1f} |"
            for s in sweep
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # child process of training_step_memory
    print(_measure_step_memory(sys.argv[1], sys.argv[2], int(sys.argv[3])))
