"""What a run measures: one optimizer step as seen by all ranks together, the running sums of
the epoch in progress, and the log records (``"kind": "step"`` and ``"epoch"``) made of them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from neuralode.nn import ODEModule

from .distributed import Distributed


@dataclass(frozen=True)
class StepReport:
    """One optimizer step as seen by all ranks together: samples of the global batch, metrics
    averaged over them, NFE averaged over the ranks (and the largest forward NFE of a rank), and
    whether any rank was asked to stop; and the gradient bytes a rank all-reduced."""

    samples: int
    metrics: dict[str, float]
    nfe_forward: float
    nfe_backward: float
    nfe_forward_max: float
    stop: bool
    gradient_bytes: float = 0.0

    @classmethod
    def reduce(
        cls,
        distributed: Distributed,
        samples: int,
        metrics: Mapping[str, float],
        nfe: tuple[int, int],
        stop: bool,
        gradient_bytes: int = 0,
    ) -> StepReport:
        """Combine every rank's share of a step (one all-gather of a few numbers)."""
        names = sorted(metrics)
        values = [samples, nfe[0], nfe[1], float(stop), gradient_bytes]
        rows = distributed.gather_rows([*values, *(metrics[k] * samples for k in names)])
        counts = rows[:, 0]
        total = int(counts.sum())
        return cls(
            samples=total,
            metrics={k: float(rows[:, 5 + i].sum()) / total for i, k in enumerate(names)},
            nfe_forward=float(rows[:, 1].mean()),
            nfe_backward=float(rows[:, 2].mean()),
            nfe_forward_max=float(rows[:, 1].max()),
            stop=bool(rows[:, 3].any()),
            gradient_bytes=float(rows[:, 4].mean()),
        )

    def record(self, epoch: int, step: int, lr: float) -> dict[str, Any]:
        """The step's log line, after ``step`` optimizer steps, in epoch ``epoch`` (1-based)."""
        return {
            "kind": "step",
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "nfe_forward": self.nfe_forward,
            "nfe_backward": self.nfe_backward,
            "train": self.metrics,
        }


@dataclass
class EpochTotals:
    """Running sums over the batches of the epoch in progress.

    ``metric_sums`` holds each metric times its batch's samples, so :meth:`means` weighs a
    smaller last batch by its size; NFE sums are per step (one solve per step and block; the
    mean over the ranks, and in ``nfe_forward_max`` the slowest rank's forward NFE).
    """

    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    nfe_forward: float = 0.0
    nfe_backward: float = 0.0
    nfe_forward_max: float = 0.0
    gradient_bytes: float = 0.0
    metric_sums: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    """Batches the divergence guard skipped (not counted in the other fields)."""

    def add(self, step: StepReport, seconds: float) -> None:
        """Count one step that took ``seconds`` (data loading included)."""
        self.samples += step.samples
        self.steps += 1
        self.seconds += seconds
        self.nfe_forward += step.nfe_forward
        self.nfe_backward += step.nfe_backward
        self.nfe_forward_max += step.nfe_forward_max
        self.gradient_bytes += step.gradient_bytes
        samples = step.samples
        for name, value in step.metrics.items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + value * samples

    def means(self) -> dict[str, float]:
        """Each metric averaged over the epoch's samples so far."""
        return {name: total / max(self.samples, 1) for name, total in self.metric_sums.items()}

    def mean_nfe(self) -> tuple[float, float, float]:
        """Mean forward, backward and slowest rank's forward NFE per step."""
        steps = max(self.steps, 1)
        return (
            self.nfe_forward / steps,
            self.nfe_backward / steps,
            self.nfe_forward_max / steps,
        )

    def samples_per_second(self) -> float:
        """Training throughput, in samples/s."""
        return self.samples / self.seconds if self.seconds > 0 else math.nan

    def record(
        self,
        epoch: int,
        step: int,
        lr: float,
        eval_metrics: dict[str, float],
        eval_seconds: float,
        world_size: int,
    ) -> dict[str, Any]:
        """The log line of epoch ``epoch`` (1-based), which ended after ``step`` optimizer steps:
        ``seconds`` is training time (s), ``eval_seconds`` evaluation."""
        nfe_forward, nfe_backward, nfe_forward_max = self.mean_nfe()
        return {
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "seconds": self.seconds,
            "eval_seconds": eval_seconds,
            "samples_per_s": self.samples_per_second(),
            "nfe_forward": nfe_forward,
            "nfe_backward": nfe_backward,
            "nfe_forward_max": nfe_forward_max,
            "world_size": world_size,
            "gradient_bytes_per_step": self.gradient_bytes / max(self.steps, 1),
            "skipped": self.skipped,
            "train": self.means(),
            "eval": eval_metrics,
        }


def solver_nfe(blocks: Sequence[ODEModule]) -> tuple[int, int]:
    """Forward and backward evaluations of the vector fields of ``blocks`` in their last solve,
    summed over the blocks."""
    return sum(b.nfe_forward for b in blocks), sum(b.nfe_backward for b in blocks)
