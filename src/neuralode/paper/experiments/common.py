"""What the experiment commands share: run-folder, results, guard and device options, the
options naming a saved run (--checkpoint, --tol) or the MNIST folder, the start of a command
(joining the ``torchrun`` process group for training), the configuration a run saves, and
loading a saved run (checked to come from the right experiment and to fit its model)."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import arguments
from ..training import resolve_device, seed_everything
from ..training.checkpoint import CheckpointError, load_run_state
from ..training.distributed import Distributed, join_process_group
from ..training.divergence import DEFAULT_MAX_BAD_BATCHES, DEFAULT_MAX_LOSS_GROWTH

RUN_OPTIONS = frozenset(
    {
        "out",
        "resume",
        "checkpoint_every",
        "dist_timeout",
        "max_bad_batches",
        "max_loss_growth",
        "device",
        "threads",
        "data_dir",
        "download",
        "log_every",
        "debug",
    }
)
"""Options a resumed run may change: where and how it runs, not what it computes."""


def add_run_arguments(
    parser: argparse.ArgumentParser,
    default_out: str,
    checkpoint_every: float,
    batch_option: bool = True,
) -> None:
    """--out (default ``default_out``), --resume, --checkpoint-every and --dist-timeout
    (seconds), the divergence guard's --max-bad-batches and --max-loss-growth, and an epilog on
    data-parallel launches (which explains --batch-size if ``batch_option``)."""
    batch = (
        "--batch-size is then the global batch (a multiple of N); "
        if batch_option
        else "Each rank takes its share of every batch; "
    )
    parser.epilog = (
        "On several processes, GPUs or hosts, launch the same command with torchrun, e.g.\n"
        "  torchrun --standalone --nproc_per_node=N -m neuralode "
        f"{parser.prog.removeprefix('neuralode ')} [OPTIONS]\n"
        f"{batch}rank 0 logs and checkpoints.\n"
        "--resume continues a stopped run with the options it was started with: other values "
        "of options\nthat change the result (--lr, --epochs, ...) are refused with the list "
        "of differences."
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"run folder (default: {default_out})"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run folder's checkpoint (with the same options)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=arguments.seconds,
        default=checkpoint_every,
        help="seconds between mid-epoch checkpoints (inf: at epoch ends only)",
    )
    parser.add_argument(
        "--dist-timeout",
        type=arguments.positive_float,
        default=1800.0,
        help="under torchrun: seconds a rank waits for the others before failing",
    )
    parser.add_argument(
        "--max-bad-batches",
        type=arguments.positive_int,
        default=DEFAULT_MAX_BAD_BATCHES,
        help="stop (exit 1) after this many batches in a row with a NaN/Inf loss or gradient "
        "or an exploding loss; each is skipped",
    )
    parser.add_argument(
        "--max-loss-growth",
        type=arguments.positive_float,
        default=DEFAULT_MAX_LOSS_GROWTH,
        help="a loss above this many times the first one (at least 1) counts as a bad batch",
    )


def add_results_run_arguments(
    parser: argparse.ArgumentParser, folder: str, what: str, checkpoint_every: float
) -> None:
    """The options of a command that trains its runs and then writes ``what`` (a table and
    figures): --results, the folder of ``what`` (default ``folder``, under runs/; pass
    ``results`` to update the committed ones), then :func:`add_run_arguments`' (--out also
    defaulting to ``folder``; no --batch-size) and :func:`add_device_arguments`'."""
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(folder),
        help=f"folder of the {what} (results: update the committed ones)",
    )
    add_run_arguments(parser, folder, checkpoint_every, batch_option=False)
    add_device_arguments(parser)


RESULTS_RUN_OPTIONS = RUN_OPTIONS | {"results"}
"""Options a resumed run of :func:`add_results_run_arguments`' command may change."""


def trainer_options(
    args: argparse.Namespace, may_change: frozenset[str] = RUN_OPTIONS
) -> dict[str, Any]:
    """The Trainer's keyword arguments that come from :func:`add_run_arguments`' options, with
    ``may_change``: the options a resumed run may change."""
    return {
        "checkpoint_every": args.checkpoint_every,
        "max_bad_batches": args.max_bad_batches,
        "max_loss_growth": args.max_loss_growth,
        "may_change": may_change,
    }


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """--checkpoint: a saved run's model.pt or checkpoint.pt (required)."""
    parser.add_argument(
        "--checkpoint",
        type=arguments.existing_file,
        required=True,
        help="model.pt or checkpoint.pt",
    )


def add_tol_override_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--tol: a solver tolerance (rtol = atol) replacing the saved run's; ``what`` starts its
    help, which ends "(default: as trained)"."""
    parser.add_argument(
        "--tol",
        type=arguments.positive_float,
        default=None,
        help=f"{what} (default: as trained)",
    )


def add_mnist_folder_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--data-dir: the folder of the MNIST files; ``what`` starts its help, which ends with the
    default folder (:func:`~neuralode.paper.data.mnist.default_data_dir`)."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"{what} (default: $NEURALODE_DATA or ~/.cache/neuralode/mnist)",
    )


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --seed and --threads."""
    parser.add_argument(
        "--device", type=arguments.device, default="auto", help="auto, cpu, cuda or cuda:N"
    )
    parser.add_argument("--seed", type=arguments.nonnegative_int, default=0, help="random seed")
    parser.add_argument(
        "--threads",
        type=arguments.positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )


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
    experiment: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A saved run's model (model.pt or checkpoint.pt), rebuilt by ``build`` from its config with
    ``overrides`` applied, on ``device`` in eval mode; and that config.

    Raises:
        CheckpointError: naming ``path`` and the problem: unreadable or not a run's file,
            written by another experiment than ``experiment`` (``"mnist"``, ...), or weights
            that do not fit the model its config describes.
    """
    saved = load_run_state(path, map_location=device)
    if experiment is not None:
        check_experiment(path, saved["config"], experiment)
    config = {**saved["config"], **(overrides or {})}
    try:
        model = build(config)
    except KeyError as error:
        raise CheckpointError(
            f"checkpoint {path}: its config lacks the option {error}; was it written by an "
            "older version? Train the model again"
        ) from error
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit the model its options describe "
            f"({_state_mismatch(str(error))})"
        ) from error
    return model.to(device).eval(), config


def check_experiment(path: Path, config: Mapping[str, Any], experiment: str) -> None:
    """Raise CheckpointError unless ``config`` is that of a ``neuralode EXPERIMENT`` run."""
    written_by = config.get("command_0")
    if written_by == experiment:
        return
    source = f"`neuralode {written_by}`" if written_by else "another program"
    raise CheckpointError(
        f"checkpoint {path} was written by {source}, not `neuralode {experiment}`: pass the "
        f"model.pt or checkpoint.pt of a {experiment} run"
    )


def _state_mismatch(message: str) -> str:
    """The first differing key or shape of a ``load_state_dict`` error, in one line."""
    lines = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    return lines[0] if lines else message.splitlines()[0]


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as a picklable dict (paths as strings), saved with the run."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key != "handler"
    }


def keep_run(folder: Path, saved: Path) -> Path:
    """Copy a finished run's model and log from its folder to ``saved/<run>.pt`` and
    ``saved/<run>.log.jsonl``, beside a report's tables, unless the run already lies under
    ``saved`` (its own folder is then the committed copy). Returns the kept model's path."""
    saved.mkdir(parents=True, exist_ok=True)
    if folder.resolve().is_relative_to(saved.resolve()):
        return folder / "model.pt"
    shutil.copyfile(folder / "model.pt", saved / f"{folder.name}.pt")
    shutil.copyfile(folder / "log.jsonl", saved / f"{folder.name}.log.jsonl")
    return saved / f"{folder.name}.pt"
