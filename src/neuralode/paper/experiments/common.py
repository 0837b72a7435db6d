"""What the experiment commands share: run-folder and device options, the start of a command
(joining the ``torchrun`` process group for training), and the configuration a run saves."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..training import resolve_device, seed_everything
from ..training.checkpoint import load_checkpoint
from ..training.distributed import Distributed, join_process_group


def add_run_arguments(
    parser: argparse.ArgumentParser, default_out: str, checkpoint_every: float
) -> None:
    """--out (default ``default_out``), --resume, --checkpoint-every and --dist-timeout
    (seconds), and an epilog on data-parallel launches."""
    parser.epilog = (
        "On several processes, GPUs or hosts, launch the same command with torchrun, e.g.\n"
        "  torchrun --standalone --nproc_per_node=N -m neuralode "
        f"{parser.prog.removeprefix('neuralode ')} [OPTIONS]\n"
        "--batch-size is then the global batch (a multiple of N); rank 0 logs and checkpoints."
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"run folder (default {default_out})"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run folder's checkpoint"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=checkpoint_every,
        help=f"seconds between checkpoints (default {checkpoint_every:g})",
    )
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        help="under torchrun: seconds a rank waits for the others before failing (default 1800)",
    )


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --seed and --threads."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def start_command(args: argparse.Namespace) -> torch.device:
    """Apply --threads and --seed; return the --device to run on."""
    _apply_threads_and_seed(args)
    return resolve_device(args.device)


def start_training(args: argparse.Namespace) -> tuple[Distributed, torch.device]:
    """Apply --threads and --seed; join the process group when launched by ``torchrun`` (with
    --dist-timeout) and check that every rank got the same options. Returns this process's
    rank and world size, and its device (``cuda:LOCAL_RANK`` for --device auto on GPUs)."""
    _apply_threads_and_seed(args)
    distributed, device = join_process_group(args.device, args.dist_timeout)
    distributed.check_same("options", run_config(args))
    return distributed, device


def _apply_threads_and_seed(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)


def load_run(
    path: Path,
    device: torch.device,
    build: Callable[[dict[str, Any]], nn.Module],
    overrides: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A saved run's model (model.pt or checkpoint.pt), rebuilt by ``build`` from its config with
    ``overrides`` applied, on ``device`` in eval mode; and that config."""
    saved = load_checkpoint(path, map_location=device)
    config = {**saved["config"], **(overrides or {})}
    model = build(config)
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), config


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as a picklable dict (paths as strings), saved with the run."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key != "handler"
    }
