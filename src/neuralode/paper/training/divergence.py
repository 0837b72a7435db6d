"""The divergence guard: batches whose loss or gradient is not finite (or whose loss has grown
far beyond the run's first) never reach the optimizer; too many of them in a row stop the run.

:class:`DivergenceGuard` judges each batch and keeps the count; :class:`DivergenceError` is what
stops the run, naming the step, the last finite loss and the last good checkpoint. A solver
failure during training (:class:`neuralode.errors.SolverError`) is reported the same way, with
the solver's message beneath. :func:`nonfinite_entries` checks a state before it is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_MAX_BAD_BATCHES = 3
DEFAULT_MAX_LOSS_GROWTH = 1e6


class NonFiniteModelError(ValueError):
    """A model state holding a NaN or an infinity was about to be written."""


class DivergenceError(RuntimeError):
    """Training diverged: the run stopped without writing anything non-finite.

    Attributes:
        step: the batch (1-based, counted over the whole run) at which the run stopped.
        last_loss: the last finite loss that reached the optimizer (None if none did).
        checkpoint: the last checkpoint written, or None if there is none.
    """

    def __init__(
        self,
        reason: str,
        step: int,
        last_loss: float | None,
        checkpoint: Path | None,
        detail: str | None = None,
    ) -> None:
        self.step, self.last_loss, self.checkpoint = step, last_loss, checkpoint
        loss = f"{last_loss:.6g}" if last_loss is not None else "none"
        good = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint was written yet"
        )
        message = f"training diverged at step {step}: {reason}; last finite loss {loss}; {good}"
        super().__init__(message + (f"\n  {detail}" if detail else ""))


@dataclass
class GuardState:
    """What the guard carries across batches (and checkpoints): the bad batches in a row and in
    all, the last finite loss that reached the optimizer, and the run's first loss."""

    streak: int = 0
    skipped: int = 0
    last_loss: float | None = None
    first_loss: float | None = None


class DivergenceGuard:
    """Judges each batch: a loss or gradient that is NaN or infinite, or a loss whose magnitude
    exceeds ``max_loss_growth`` times the run's first (at least 1), is bad. A bad batch is
    skipped (the caller does not step the optimizer); ``max_bad_batches`` of them in a row raise
    :class:`DivergenceError`.

    Raises:
        ValueError: ``max_bad_batches`` < 1 or ``max_loss_growth`` not > 0.
    """

    def __init__(
        self,
        max_bad_batches: int = DEFAULT_MAX_BAD_BATCHES,
        max_loss_growth: float = DEFAULT_MAX_LOSS_GROWTH,
    ) -> None:
        if max_bad_batches < 1:
            raise ValueError(f"max_bad_batches must be >= 1, got {max_bad_batches}")
        if not max_loss_growth > 0:
            raise ValueError(f"max_loss_growth must be > 0, got {max_loss_growth}")
        self.max_bad_batches, self.max_loss_growth = max_bad_batches, max_loss_growth
        self.state = GuardState()

    def loss_problem(self, loss: float) -> str | None:
        """Why ``loss`` is bad, or None when it may reach the optimizer."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        first = self.state.first_loss
        if first is not None and abs(loss) > self.max_loss_growth * max(1.0, abs(first)):
            return (
                f"the loss {loss:.3g} exceeds {self.max_loss_growth:g} times the first loss "
                f"{first:.3g}"
            )
        return None

    @staticmethod
    def gradient_problem(parameters: Iterable[nn.Parameter]) -> str | None:
        """Why the gradients of ``parameters`` are bad (some entry NaN or infinite), or None."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            return "the gradient is not finite"
        return None

    def accept(self, loss: float) -> None:
        """Count a batch that reached the optimizer with this finite ``loss``."""
        self.state.streak = 0
        self.state.last_loss = loss
        if self.state.first_loss is None:
            self.state.first_loss = loss

    def reject(self, reason: str, step: int, checkpoint: Path | None) -> None:
        """Count a skipped batch at ``step``; raise :class:`DivergenceError` when it makes
        ``max_bad_batches`` in a row."""
        self.state.streak += 1
        self.state.skipped += 1
        if self.state.streak >= self.max_bad_batches:
            raise DivergenceError(
                f"{reason} ({self.state.streak} bad batches in a row)",
                step,
                self.state.last_loss,
                checkpoint,
            )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (None, from an older checkpoint: a fresh count)."""
        self.state = GuardState(**state) if state else GuardState()


def nonfinite_entries(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` (a ``state_dict``) that hold a NaN
    or an infinity."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(value.isfinite().all())
    ]
