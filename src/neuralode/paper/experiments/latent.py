"""The latent ODE on irregularly sampled spirals against an RNN (the paper's Table 2).

``neuralode latent train --obs 30|50|100 --model latent_ode|ode_rnn|rnn`` trains one model on
1,000 spirals that each observe n random points of their first 100 (see
:mod:`neuralode.paper.data.spirals`); ``eval`` scores a saved model on 100 held-out spirals: RMSE
of the predictions at all 200 grid times against the noise-free trajectory (and separately over
the observation window, interpolation, and after it, extrapolation).

Models: ``latent_ode`` (GRU encoder run backwards, latent ODE, decoder; trained as a VAE),
``ode_rnn`` (the same with the ODE-RNN encoder of Rubanova et al. 2019) and ``rnn`` (a GRU fed
the time gaps that predicts the next observation; it extrapolates by feeding back its own
predictions).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralode.nn import GapRNN, LatentODE, SolverConfig

from .. import arguments
from ..data.spirals import WINDOW, Spirals, make_spirals
from ..mnist_models import count_parameters
from ..training import TensorBatches, Trainer
from .common import (
    add_checkpoint_argument,
    add_device_arguments,
    add_run_arguments,
    load_run,
    run_config,
    start_command,
    start_training,
    trainer_options,
)

MODELS = ("latent_ode", "ode_rnn", "rnn")
OBSERVATIONS = (30, 50, 100)
TEST_SEED = 10_000
"""Seed of the held-out spirals (training spirals use ``--seed``)."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--obs", type=int, choices=OBSERVATIONS, default=30, help="observed points per spiral"
    )
    parser.add_argument("--model", choices=MODELS, default="latent_ode", help="the model")
    positive_int, positive_float = arguments.positive_int, arguments.positive_float
    parser.add_argument("--epochs", type=positive_int, default=400, help="passes over the spirals")
    parser.add_argument("--batch-size", type=positive_int, default=50, help="spirals per step")
    parser.add_argument(
        "--lr", type=positive_float, default=1e-2, help="Adam learning rate (cosine decay)"
    )
    parser.add_argument("--train-size", type=positive_int, default=1000, help="training spirals")
    parser.add_argument("--noise", type=positive_float, default=0.1, help="observation noise std")
    parser.add_argument(
        "--latent-dim", type=positive_int, default=4, help="latent dimension (paper: 4)"
    )
    parser.add_argument(
        "--field-hidden",
        type=arguments.widths,
        default="20",
        help="hidden widths of the latent vector field, comma-separated (paper: 20)",
    )
    parser.add_argument(
        "--weight-decay",
        type=arguments.nonnegative_float,
        default=0.0,
        help="decoupled weight decay (AdamW's) of every parameter, per unit learning rate",
    )
    parser.add_argument("--tol", type=positive_float, default=1e-5, help="latent solve rtol = atol")
    parser.add_argument(
        "--kl-weight",
        type=positive_float,
        default=1.0,
        help="latent ODE: β, the weight of the KL term in the loss (1: the ELBO)",
    )
    parser.add_argument(
        "--prefix-prob",
        type=arguments.probability,
        default=0.0,
        help="latent ODE: the share of training spirals whose encoder sees only the points "
        "before a random cut in the window (all points are still scored): trains the latent "
        "dynamics to carry a trajectory past what the encoder saw",
    )
    add_run_arguments(parser, "runs/latent/obsN-MODEL", checkpoint_every=120.0)
    _add_common(parser)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    _add_common(parser)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--test-size", type=arguments.positive_int, default=100, help="held-out spirals"
    )
    add_device_arguments(parser)


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The model a run's config describes (keys: model, noise, tol)."""
    if config["model"] == "rnn":
        return GapRNN()
    solver = SolverConfig(rtol=config["tol"], atol=config["tol"])
    return LatentODE(
        latent_dim=config["latent_dim"],
        field_hidden=tuple(int(width) for width in str(config["field_hidden"]).split(",")),
        obs_std=config["noise"],
        kl_weight=config.get("kl_weight", 1.0),
        ode_rnn=config["model"] == "ode_rnn",
        solver=solver,
    )


def held_out_spirals(config: Mapping[str, Any], size: int) -> Spirals:
    """The held-out spirals of a run's setting (same for every model)."""
    return make_spirals(size, config["obs"], config["noise"], seed=TEST_SEED)


def predict(model: nn.Module, spirals: Spirals, device: torch.device) -> torch.Tensor:
    """Predictions at all grid times (n, 200, 2) from each spiral's observed window points."""
    times = spirals.times.to(device)
    values, mask = spirals.observed.to(device), spirals.mask.to(device)
    with torch.no_grad():
        if isinstance(model, GapRNN):
            return model(values, mask, times, window=WINDOW).cpu()
        window = slice(0, WINDOW)
        return model(values[:, window], mask[:, window], times[window], predict_times=times).cpu()


def rmse_scores(predictions: torch.Tensor, spirals: Spirals) -> dict[str, float]:
    """RMSE per coordinate against the noise-free spirals: at all 200 times, in the window
    (interpolation) and after it (extrapolation); and against the noisy values at all times."""

    def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).square().mean().sqrt())

    window = slice(0, WINDOW)
    after = slice(WINDOW, None)
    return {
        "rmse": rmse(predictions, spirals.truth),
        "rmse_interp": rmse(predictions[:, window], spirals.truth[:, window]),
        "rmse_extrap": rmse(predictions[:, after], spirals.truth[:, after]),
        "rmse_noisy": rmse(predictions, spirals.observed),
    }


def make_loss(times: torch.Tensor, prefix_prob: float = 0.0):
    """The training loss over a batch (values, mask) of window points, for either model (see
    ``--prefix-prob`` and :func:`encoder_view` for the latent ODE's)."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        values, mask = batch
        t = times.to(values.device)
        if isinstance(model, GapRNN):
            mse = model.loss(values, mask, t)
            return mse, {"mse": float(mse.detach())}
        elbo = model.elbo(values, mask, t, seen=encoder_view(mask, prefix_prob))
        metrics = {"log_lik": float(elbo.log_likelihood.detach()), "kl": float(elbo.kl.detach())}
        return elbo.loss, metrics

    return loss_fn


def encoder_view(mask: torch.Tensor, prefix_prob: float) -> torch.Tensor:
    """The points the encoder sees: for a share ``prefix_prob`` of the trajectories (drawn from
    torch's generator), only those before a cut drawn uniformly from the second to the last
    quarter of the window; the others see all. mask (batch, T) bool → (batch, T) bool."""
    if prefix_prob == 0.0:
        return mask
    batch, length = mask.shape
    cut = torch.randint(length // 4, length, (batch, 1), device=mask.device)
    prefix = torch.arange(length, device=mask.device) < cut
    cropped = torch.rand(batch, 1, device=mask.device) < prefix_prob
    return mask & (prefix | ~cropped)


def train(args: argparse.Namespace) -> int:
    """Train one model; returns an exit status (0 when all epochs ran)."""
    distributed, device = start_training(args)
    config = run_config(args)
    model = build_model(config)
    config["parameters"] = count_parameters(model)
    out = args.out or Path("runs/latent") / f"obs{args.obs}-{args.model}"
    spirals = make_spirals(args.train_size, args.obs, args.noise, seed=args.seed)
    window = slice(0, WINDOW)
    data = TensorBatches(
        spirals.observed[:, window], spirals.mask[:, window], batch_size=args.batch_size
    )
    test = held_out_spirals(config, args.test_size)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=args.lr, weight_decay=args.weight_decay, decoupled_weight_decay=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    if distributed.is_main:
        print(f"obs{args.obs}-{args.model}: {config['parameters']:,} parameters, writing to {out}")
    trainer = Trainer(
        model,
        optimizer,
        data,
        make_loss(spirals.times[window], args.prefix_prob),
        out_dir=out,
        epochs=args.epochs,
        device=device,
        scheduler=scheduler,
        evaluate=lambda m: rmse_scores(predict(m, test, device), test),
        config=config,
        distributed=distributed,
        **trainer_options(args),
    )
    result = trainer.fit(resume=args.resume)
    return 0 if result.completed else 130


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A saved model in eval mode and its config."""
    return load_run(path, device, build_model, experiment="latent")


def evaluate(args: argparse.Namespace) -> int:
    """Print the RMSEs of a saved model on the held-out spirals (JSON on the last line)."""
    device = start_command(args)
    model, config = load_model(args.checkpoint, device)
    test = held_out_spirals(config, args.test_size)
    seed, kl_weight = config.get("seed", 0), config.get("kl_weight", 1.0)
    weighted = config["model"] != "rnn" and kl_weight != 1.0  # (an RNN has no KL term)
    name = f"obs{config['obs']}-{config['model']}" + (f"-kl{kl_weight:g}" if weighted else "")
    name += f"-seed{seed}" if seed else ""
    print(f"{name}: evaluating on {args.test_size:,} held-out spirals ({device})", flush=True)
    start = time.perf_counter()
    scores = rmse_scores(predict(model, test, device), test)
    result = {
        "run": name,
        "parameters": count_parameters(model),
        "spirals": args.test_size,
        **scores,
        "seconds": time.perf_counter() - start,
    }
    print(f"{result['run']}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    print(json.dumps(result))
    return 0
