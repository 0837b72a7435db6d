"""The paper's Table 1: ODE-Net, ResNet, RK-Net and MLP on MNIST.

``neuralode mnist train`` trains one model with the shared trainer (checkpoints, resume, JSONL
log); ``neuralode mnist eval`` measures the test error of a saved model on all 10,000 test images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralode.nn import ODEModule

from .. import arguments
from ..data import MNISTBatches, load_mnist
from ..mnist_models import build_mnist_model, count_parameters
from ..training import Trainer
from ..training.progress import evaluation_bar
from .common import (
    add_checkpoint_argument,
    add_device_arguments,
    add_mnist_folder_argument,
    add_run_arguments,
    add_tol_override_argument,
    load_run,
    run_config,
    start_command,
    start_training,
    trainer_options,
)

MODELS = ("odenet", "anode", "resnet", "rknet", "mlp")
ADAPTIVE_MODELS = ("odenet", "anode")
"""Models whose ODE block is solved adaptively (``--tol`` and ``--gradient`` apply)."""
SOLVING_MODELS = (*ADAPTIVE_MODELS, "rknet")
"""Models with an ODE block (they report NFE and a gradient mode)."""
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
"""Images in each MNIST split."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="odenet", help="which Table 1 row")
    parser.add_argument("--epochs", type=arguments.positive_int, default=15, help="training epochs")
    parser.add_argument(
        "--batch-size", type=arguments.positive_int, default=128, help="images per batch"
    )
    parser.add_argument(
        "--lr", type=arguments.positive_float, default=0.1, help="peak SGD learning rate"
    )
    parser.add_argument(
        "--weight-decay", type=arguments.nonnegative_float, default=5e-4, help="SGD weight decay"
    )
    parser.add_argument(
        "--tol", type=arguments.positive_float, default=1e-3, help="ODE-Net solver rtol = atol"
    )
    parser.add_argument(
        "--gradient",
        choices=("adjoint", "backprop", "checkpoint"),
        default="adjoint",
        help="how the ODE-Net's solve is differentiated (default adjoint: O(1) memory)",
    )
    add_limit_argument(parser, "--limit", "train")
    add_limit_argument(parser, "--test-limit", "test")
    _add_common(parser)
    add_run_arguments(parser, "runs/mnist/MODEL", checkpoint_every=300.0)
    parser.add_argument(
        "--log-every",
        type=arguments.positive_int,
        default=20,
        help="steps between per-step lines in log.jsonl",
    )


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    add_tol_override_argument(parser, "evaluate the ODE-Net at this tolerance")
    add_limit_argument(parser, "--test-limit", "test")
    _add_common(parser)


def add_limit_argument(parser: argparse.ArgumentParser, flag: str, split: str) -> None:
    """``flag`` (--limit, --test-limit): use only the first N images of the ``split``."""
    parser.add_argument(
        flag,
        type=arguments.positive_int,
        default=None,
        help=f"{split} on the first N images (default: all {SPLIT_SIZES[split]:,})",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_mnist_folder_argument(parser, "folder with the MNIST IDX files, .gz or not")
    parser.add_argument("--download", action="store_true", help="download MNIST if missing")
    add_device_arguments(parser)


def load_split(
    args: argparse.Namespace, split: str, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (None: all) images, uint8 (N, 28, 28), and labels, int64 (N,), of
    an MNIST ``split`` from --data-dir (downloaded if missing and --download)."""
    images, labels = load_mnist(args.data_dir, split, download=args.download)
    return images[:limit], labels[:limit]


def model_kwargs(name: str, tol: float, gradient: str) -> dict[str, Any]:
    return {"tol": tol, "gradient": gradient} if name in ADAPTIVE_MODELS else {}


def load_model(
    path: Path, device: torch.device, tol: float | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A saved Table 1 model in eval mode and its config; ``tol`` overrides the ODE-Net's."""

    def build(config: dict[str, Any]) -> nn.Module:
        kwargs = model_kwargs(config["model"], config.get("tol", 1e-3), "backprop")
        return build_mnist_model(config["model"], **kwargs)

    return load_run(path, device, build, {"tol": tol} if tol is not None else None, "mnist")


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """Cross-entropy of (B, 10) logits; metrics: loss and accuracy (fraction)."""
    images, labels = batch
    logits = model(images)
    loss = nn.functional.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, {"loss": float(loss.detach()), "acc": float(accuracy)}


@torch.no_grad()
def test_error(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    batch_size: int = 500,
) -> dict[str, float]:
    """Test error (%) over all given images, and the mean forward NFE of the ODE blocks."""
    model.eval()
    data = MNISTBatches(images, labels, batch_size, shuffle=False, augment=False)
    blocks = [m for m in model.modules() if isinstance(m, ODEModule)]
    wrong, total, nfe = 0, 0, []
    for x, y in evaluation_bar(data.batches(0), len(data), "test images"):
        x, y = x.to(device), y.to(device)
        wrong += int((model(x).argmax(dim=1) != y).sum())
        total += len(y)
        nfe.append(sum(block.nfe_forward for block in blocks))
    return {"test_error": 100.0 * wrong / total, "test_nfe": sum(nfe) / len(nfe)}


def train(args: argparse.Namespace) -> int:
    """Train one Table 1 model; returns an exit status (0 when all epochs ran)."""
    distributed, device = start_training(args)
    out = args.out or Path("runs/mnist") / args.model
    train_images, train_labels = load_split(args, "train", args.limit)
    test_images, test_labels = load_split(args, "test", args.test_limit)

    model = build_mnist_model(args.model, **model_kwargs(args.model, args.tol, args.gradient))
    data = MNISTBatches(
        train_images, train_labels, args.batch_size, shuffle=True, augment=True, seed=args.seed
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=True
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(data)
    )
    config = run_config(args)
    config["parameters"] = count_parameters(model)
    if distributed.is_main:
        print(
            f"{args.model}: {config['parameters']:,} parameters, {len(data)} batches per epoch, "
            f"writing to {out}"
        )
    trainer = Trainer(
        model,
        optimizer,
        data,
        classification_loss,
        out_dir=out,
        epochs=args.epochs,
        device=device,
        scheduler=scheduler,
        scheduler_interval="step",
        evaluate=lambda m: test_error(m, test_images, test_labels, device),
        log_every=args.log_every,
        config=config,
        distributed=distributed,
        **trainer_options(args),
    )
    result = trainer.fit(resume=args.resume)
    return 0 if result.completed else 130


def evaluate(args: argparse.Namespace) -> int:
    """Print the test error of a saved model (JSON on the last line)."""
    device = start_command(args)
    model, config = load_model(args.checkpoint, device, args.tol)
    tol = config.get("tol", 1e-3)
    images, labels = load_split(args, "test", args.test_limit)
    name = config["model"]
    print(f"{name}: evaluating on {len(labels):,} test images ({device})", flush=True)
    start = time.perf_counter()
    metrics = test_error(model, images, labels, device)
    result = {
        "model": name,
        "parameters": count_parameters(model),
        "images": len(labels),
        "tol": tol if name in ADAPTIVE_MODELS else None,
        **metrics,
        "seconds": time.perf_counter() - start,
    }
    print(
        f"{result['model']}: test error {result['test_error']:.2f}% on {result['images']:,} "
        f"images, {result['parameters']:,} parameters, mean forward NFE "
        f"{result['test_nfe']:.1f}"
    )
    print(json.dumps(result))
    return 0
