"""Continuous normalizing flows against discrete flows (the paper's section 4 and FFJORD).

Three tasks, one per kind of ``--data`` / ``--target``:

- maximum likelihood on a 2-D toy density (``--data moons``, ...): fresh samples every step,
  test NLL in nats on 10,000 held-out samples;
- density matching (``--target two_circles``, ...): minimise KL(q‖p) to an unnormalised
  density p̃ from the model's own samples; the KL is reported with log Z from quadrature;
- maximum likelihood on 14×14 MNIST (``--data mnist14``, 196 dimensions): dequantised, logit
  transform with α = 0.05, test bits per dimension.

Models: ``cnf`` (FFJORD's concat-squash MLP field), ``cnf-hyper`` (the paper's hypernetwork
field of gated planar units), ``planar`` (K stacked planar layers) and ``gaussian`` (a diagonal
Gaussian). ``neuralode cnf train`` trains one with the shared trainer; ``eval`` scores a saved
model; ``sample`` draws from one and plots the samples.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralode.nn import (
    CNF,
    ConcatSquashMLP,
    DiagonalGaussian,
    HyperNetField,
    PlanarFlow,
    SolverConfig,
    standard_normal_samples,
)

from .. import arguments
from ..data import load_mnist
from ..data.dequantize import bits_per_dim, dequantize_logit, downscale
from ..data.toy2d import TARGETS, TOY_DATASETS, sample_toy
from ..errors import UsageError
from ..mnist_models import count_parameters
from ..training import SampledBatches, Trainer
from ..training.progress import evaluation_bar
from .cnf_figures import plot_image_grid, plot_samples_2d
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

MODELS = ("cnf", "cnf-hyper", "planar", "gaussian")
IMAGE_DATASETS = ("mnist14",)
LOGIT_ALPHA = 0.05
TEST_SEED = 2018
"""Seed of the held-out toy samples and of the density-matching evaluation draws."""
GRID_LIMIT, GRID_POINTS = 8.0, 801
"""Quadrature grid for log Z of the density-matching targets: [−8, 8]², 801² points."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument(
        "--data",
        choices=(*TOY_DATASETS, *IMAGE_DATASETS),
        help="fit by maximum likelihood to samples of this dataset",
    )
    task.add_argument(
        "--target", choices=tuple(TARGETS), help="fit by minimising KL(q||p) to this density"
    )
    parser.add_argument("--model", choices=MODELS, default="cnf", help="the flow (default cnf)")
    parser.add_argument(
        "--iterations",
        type=arguments.positive_int,
        default=10000,
        help="optimizer steps, a multiple of --eval-every (FFJORD: 10,000)",
    )
    parser.add_argument(
        "--eval-every",
        type=arguments.positive_int,
        default=500,
        help="steps between evaluations and log lines",
    )
    parser.add_argument(
        "--batch-size", type=arguments.positive_int, default=100, help="samples per step"
    )
    parser.add_argument(
        "--lr", type=arguments.positive_float, default=1e-3, help="Adam learning rate"
    )
    parser.add_argument(
        "--weight-decay", type=arguments.nonnegative_float, default=1e-5, help="Adam weight decay"
    )
    parser.add_argument(
        "--hidden", type=arguments.widths, default="64,64,64", help="cnf: hidden widths of the MLP"
    )
    parser.add_argument(
        "--width", type=arguments.positive_int, default=64, help="cnf-hyper: planar units M"
    )
    parser.add_argument(
        "--layers", type=arguments.positive_int, default=64, help="planar: stacked layers K"
    )
    parser.add_argument(
        "--t1",
        type=arguments.positive_float,
        default=0.5,
        help="CNF end time (learnt from here)",
    )
    parser.add_argument(
        "--trace",
        choices=("exact", "hutchinson"),
        default=None,
        help="CNF trace (default: exact up to 10 dimensions, else Hutchinson)",
    )
    parser.add_argument(
        "--kinetic", type=arguments.nonnegative_float, default=0.0, help="weight of ∫‖f‖² dt"
    )
    parser.add_argument(
        "--jacobian",
        type=arguments.nonnegative_float,
        default=0.0,
        help="weight of ∫‖∂f/∂z‖²_F dt",
    )
    parser.add_argument(
        "--eval-samples", type=arguments.positive_int, default=2000, help="samples per evaluation"
    )
    add_run_arguments(parser, "runs/cnf/DATA-MODEL", checkpoint_every=120.0)
    _add_solver_arguments(parser, default_tol=1e-5)
    _add_common(parser)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    add_test_samples_argument(parser, "test samples (images: the first N)")
    add_tol_override_argument(parser, "solver tolerance")
    _add_common(parser)


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--samples", type=arguments.positive_int, default=20000, help="how many samples to draw"
    )
    parser.add_argument("--out", type=Path, required=True, help="PNG of the samples")
    add_tol_override_argument(parser, "solver tolerance")
    _add_common(parser)


def add_test_samples_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """--samples: how many held-out samples (images: the first test images) a flow is scored
    on, 10,000 by default."""
    parser.add_argument("--samples", type=arguments.positive_int, default=10000, help=help)


def _add_solver_arguments(parser: argparse.ArgumentParser, default_tol: float) -> None:
    parser.add_argument(
        "--tol", type=arguments.positive_float, default=default_tol, help="CNF rtol = atol"
    )
    parser.add_argument(
        "--gradient",
        choices=("adjoint", "backprop", "checkpoint"),
        default="backprop",
        help="how the CNF's solve is differentiated (default backprop)",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_mnist_folder_argument(parser, "MNIST folder for --data mnist14")
    parser.add_argument(
        "--download", action="store_true", help="download MNIST if missing (--data mnist14)"
    )
    add_device_arguments(parser)


def build_flow(config: Mapping[str, Any]) -> nn.Module:
    """The flow a run's ``config`` describes (keys: model, dim, hidden, width, layers, t1,
    trace, tol, gradient)."""
    dim, name = config["dim"], config["model"]
    if name == "planar":
        return PlanarFlow(dim, config["layers"])
    if name == "gaussian":
        return DiagonalGaussian(dim)
    if name == "cnf":
        hidden = tuple(int(width) for width in str(config["hidden"]).split(","))
        field: nn.Module = ConcatSquashMLP(dim, hidden)
    else:
        field = HyperNetField(dim, width=config["width"])
    solver = SolverConfig(rtol=config["tol"], atol=config["tol"], gradient=config["gradient"])
    trace = config["trace"] or ("exact" if dim <= 10 else "hutchinson")
    return CNF(field, dim, t1=config["t1"], train_t1=True, trace=trace, solver=solver)


def flow_nfe(model: nn.Module) -> int:
    """Field evaluations of a CNF's last solve (0 for discrete flows)."""
    return model.stats.nfe if isinstance(model, CNF) else 0


@dataclass
class LikelihoodTask:
    """Maximum likelihood from a sampler of a 2-D toy density."""

    data: str
    kinetic: float = 0.0
    jacobian: float = 0.0
    dim: int = 2

    def sampler(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return sample_toy(self.data, n, rng)

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """The model's input for data x (batch, d) and the log-determinant (batch,) of the map
        from x to it: the identity here."""
        return x, 0.0

    def log_prob(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats: (batch, d) → (batch,)."""
        inputs, log_det = self.preprocess(x)
        return model.log_prob(inputs) + log_det

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor]):
        """Negative log-likelihood (nats), plus the regularisers when weighted."""
        (x,) = batch
        if (self.kinetic or self.jacobian) and isinstance(model, CNF):
            inputs, log_det = self.preprocess(x)
            log_prob, reg = model.log_prob(inputs, return_regularization=True)
            penalty = self.kinetic * reg.kinetic.mean() + self.jacobian * reg.jacobian.mean()
            nll = -(log_prob + log_det).mean()
            return nll + penalty, {"nll": float(nll.detach()), "penalty": float(penalty.detach())}
        nll = -self.log_prob(model, x).mean()
        return nll, {"nll": float(nll.detach())}

    def test_set(self, n: int) -> torch.Tensor:
        """n held-out samples (n, d), the same for every model."""
        return torch.as_tensor(
            self.sampler(n, np.random.default_rng(TEST_SEED)), dtype=torch.float32
        )

    def evaluate(self, model: nn.Module, n: int, device: torch.device) -> dict[str, float]:
        """Test NLL (nats) on n held-out samples, its standard error, and the mean NFE per
        solve."""
        log_probs, nfe = _batched_scores(
            model, lambda x: self.log_prob(model, x), self.test_set(n), device
        )
        nll = -log_probs
        return {"test_nll": float(nll.mean()), "test_nll_se": standard_error(nll), "test_nfe": nfe}


class ImageTask(LikelihoodTask):
    """Maximum likelihood on 14×14 MNIST digits (196-d): dequantised, logit-transformed, then
    standardised per pixel, s' = (s − μ)/σ with the training set's μ and σ (log-det −Σ log σ),
    so that every model starts from the right location and scale.

    Args:
        data_dir: the MNIST folder (None: the default one).
        statistics: (μ, σ) as lists of 196 floats, as saved in a run's config; computed from the
            training images (dequantisation noise seeded) when None.
    """

    def __init__(
        self,
        data_dir: Path | None,
        statistics: tuple[list[float], list[float]] | None = None,
        download: bool = False,
    ) -> None:
        super().__init__("mnist14", dim=196)
        self.data_dir, self.download = data_dir, download
        self._pixels: dict[str, torch.Tensor] = {}
        if statistics is None:
            generator = torch.Generator().manual_seed(0)
            s, _ = dequantize_logit(self.pixels("train"), LOGIT_ALPHA, generator)
            statistics = (s.mean(0).tolist(), s.std(0).tolist())
        self.statistics = statistics
        self.mean, self.std = (torch.tensor(v) for v in statistics)

    def pixels(self, split: str) -> torch.Tensor:
        """The split's images as (n, 196) pixel values in {0, …, 255}, float32."""
        if split not in self._pixels:
            images, _ = load_mnist(self.data_dir, split, download=self.download)
            small = downscale(images.numpy(), 2).reshape(len(images), -1)
            self._pixels[split] = torch.from_numpy(small).float()
        return self._pixels[split]

    def sampler(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n training images drawn with replacement."""
        pixels = self.pixels("train")
        return pixels[rng.integers(0, len(pixels), n)].numpy()

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels x (batch, 196) → standardised logits s', with log|ds'/dy| (batch,) of the map
        from the dequantised image y = (x + u)/256, so that log p(y) = log p(s') + log-det."""
        s, log_det = dequantize_logit(x, LOGIT_ALPHA)
        mean, std = self.mean.to(s), self.std.to(s)
        return (s - mean) / std, log_det - std.log().sum()

    def to_intensities(self, samples: torch.Tensor) -> torch.Tensor:
        """Model samples (n, 196) back to pixel intensities in [0, 1]."""
        s = self.mean.to(samples) + self.std.to(samples) * samples
        return ((torch.sigmoid(s) - LOGIT_ALPHA) / (1 - 2 * LOGIT_ALPHA)).clamp(0, 1)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor]):
        loss, metrics = super().loss(model, batch)
        metrics["bpd"] = float(bits_per_dim(-torch.tensor(metrics["nll"]), self.dim))
        return loss, metrics

    def test_set(self, n: int) -> torch.Tensor:
        return self.pixels("test")[:n]

    def evaluate(self, model: nn.Module, n: int, device: torch.device) -> dict[str, float]:
        """Test bits/dim and its standard error on the first n test images (dequantisation
        noise from TEST_SEED)."""
        torch.manual_seed(TEST_SEED)
        metrics = super().evaluate(model, n, device)
        metrics["test_bpd"] = float(bits_per_dim(-torch.tensor(metrics["test_nll"]), self.dim))
        metrics["test_bpd_se"] = metrics["test_nll_se"] / (self.dim * math.log(2))
        return metrics


@dataclass
class MatchingTask:
    """Density matching: minimise E_q[log q(x) − log p̃(x)] = KL(q‖p) − log Z over the model's
    own samples x = f(z), z ~ N(0, I) (a batch holds the base points z)."""

    target: str
    dim: int = 2

    def sampler(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.dim))

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor]):
        (z,) = batch
        x, log_q = model.from_base(z)
        loss = (log_q - TARGETS[self.target](x)).mean()
        return loss, {"kl": float(loss.detach()) + target_log_normalizer(self.target)}

    def evaluate(self, model: nn.Module, n: int, device: torch.device) -> dict[str, float]:
        """KL(q‖p) (nats) estimated from n draws of q, its standard error, and the mean NFE per
        solve."""
        z = torch.as_tensor(self.sampler(n, np.random.default_rng(TEST_SEED)), dtype=torch.float32)

        def gap(points: torch.Tensor) -> torch.Tensor:
            x, log_q = model.from_base(points)
            return log_q - TARGETS[self.target](x)

        gaps, nfe = _batched_scores(model, gap, z, device)
        kl = float(gaps.mean()) + target_log_normalizer(self.target)
        return {"test_kl": kl, "test_kl_se": standard_error(gaps), "test_nfe": nfe}


Task = LikelihoodTask | MatchingTask


@functools.cache
def target_log_normalizer(target: str) -> float:
    """log ∫ p̃ over [−8, 8]² by the midpoint rule on 801² points (float64)."""
    axis = torch.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_POINTS, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    cell = float(axis[1] - axis[0]) ** 2
    return float(torch.logsumexp(TARGETS[target](points), 0)) + math.log(cell)


def standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of independent draws (n,): std / √n."""
    return float(values.double().std() / math.sqrt(values.numel()))


def _batched_scores(
    model: nn.Module,
    score: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    device: torch.device,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, float]:
    """``score`` of every row of x, in batches without autograd: (n,), and the model's mean NFE
    per batch."""
    results, nfe = [], []
    chunks = x.split(batch_size)
    with torch.no_grad():
        for chunk in evaluation_bar(chunks, len(chunks), "test batches"):
            results.append(score(chunk.to(device)).cpu())
            nfe.append(flow_nfe(model))
    return torch.cat(results), sum(nfe) / len(nfe)


def make_task(config: Mapping[str, Any]) -> Task:
    """The task of a run's config (keys data or target, kinetic, jacobian, data_dir)."""
    if config.get("target"):
        return MatchingTask(config["target"])
    if config["data"] in IMAGE_DATASETS:
        data_dir = config.get("data_dir")
        statistics = config.get("image_statistics")
        download = bool(config.get("download"))
        return ImageTask(Path(data_dir) if data_dir else None, statistics, download)
    return LikelihoodTask(config["data"], config.get("kinetic", 0.0), config.get("jacobian", 0.0))


def run_name(config: Mapping[str, Any]) -> str:
    """``DATA-MODEL`` or ``TARGET-MODEL``, e.g. ``moons-cnf``."""
    return f"{config.get('target') or config['data']}-{config['model']}"


def train(args: argparse.Namespace) -> int:
    """Train one flow; returns an exit status (0 when all steps ran)."""
    distributed, device = start_training(args)
    if args.iterations % args.eval_every:
        raise UsageError(
            f"--iterations {args.iterations} must be a multiple of --eval-every "
            f"{args.eval_every}: pass, e.g., --iterations "
            f"{max(1, round(args.iterations / args.eval_every)) * args.eval_every}"
        )
    config = run_config(args)
    task = make_task(config)
    config["dim"] = task.dim
    if isinstance(task, ImageTask):
        config["image_statistics"] = task.statistics
    model = build_flow(config)
    config["parameters"] = count_parameters(model)
    out = args.out or Path("runs/cnf") / run_name(config)
    data = SampledBatches(task.sampler, args.batch_size, args.eval_every, seed=args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if distributed.is_main:
        print(f"{run_name(config)}: {config['parameters']:,} parameters, writing to {out}")
    trainer = Trainer(
        model,
        optimizer,
        data,
        task.loss,
        out_dir=out,
        epochs=args.iterations // args.eval_every,
        device=device,
        evaluate=lambda m: task.evaluate(m, args.eval_samples, device),
        config=config,
        distributed=distributed,
        **trainer_options(args),
    )
    result = trainer.fit(resume=args.resume)
    return 0 if result.completed else 130


def load_flow(
    path: Path, device: torch.device, tol: float | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A saved flow in eval mode and its config; ``tol`` overrides the trained tolerance."""
    return load_run(path, device, build_flow, {"tol": tol} if tol is not None else None, "cnf")


def evaluate(args: argparse.Namespace) -> int:
    """Print the test score of a saved flow (JSON on the last line)."""
    device = start_command(args)
    model, config = load_flow(args.checkpoint, device, args.tol)
    if args.data_dir is not None:
        config["data_dir"] = str(args.data_dir)
    config["download"] = args.download
    print(f"{run_name(config)}: evaluating on {args.samples:,} samples ({device})", flush=True)
    start = time.perf_counter()
    metrics = make_task(config).evaluate(model, args.samples, device)
    result = {
        "run": run_name(config),
        "parameters": count_parameters(model),
        "samples": args.samples,
        "tol": config["tol"] if isinstance(model, CNF) else None,
        **metrics,
        "seconds": time.perf_counter() - start,
    }
    scores = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    print(f"{result['run']}: {scores} on {args.samples:,} samples")
    print(json.dumps(result))
    return 0


def draw_samples(model: nn.Module, config: Mapping[str, Any], n: int) -> torch.Tensor:
    """n samples (n, d) of a saved flow, in data space (images: pixel intensities in [0, 1]).

    Raises:
        ValueError: for a planar flow fitted by maximum likelihood: it maps data to noise and
            has no closed-form inverse to sample with.
    """
    if isinstance(model, PlanarFlow) and not config.get("target"):
        raise ValueError(
            "a planar flow fitted by maximum likelihood maps data to noise and has no closed-form "
            "inverse: sample from a CNF, a Gaussian, or a density-matching (--target) model"
        )
    like = next(model.parameters())
    with torch.no_grad():
        samples = model.from_base(standard_normal_samples(n, config["dim"], like=like))[0]
    task = make_task(config)
    return task.to_intensities(samples) if isinstance(task, ImageTask) else samples


def sample(args: argparse.Namespace) -> int:
    """Draw samples from a saved flow and plot them."""
    device = start_command(args)
    model, config = load_flow(args.checkpoint, device, args.tol)
    try:
        samples = draw_samples(model, config, args.samples).cpu()
    except ValueError as error:
        raise UsageError(str(error)) from error
    title = f"{run_name(config)}: {args.samples:,} samples"
    if config.get("data") in IMAGE_DATASETS:
        plot_image_grid(samples.reshape(-1, 14, 14)[:100], args.out, title)
    else:
        plot_samples_2d(samples, args.out, title)
    print(f"wrote {args.out}")
    return 0
