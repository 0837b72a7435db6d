"""One optimizer step as a run takes it: the optimizer, gradient clipping, and a learning-rate
scheduler stepped after every step or at every epoch end."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

SchedulerInterval = Literal["step", "epoch"]


class Optimization:
    """``optimizer`` with an optional ``scheduler``, stepped (without arguments) after every
    optimizer step (``scheduler_interval="step"``) or at each epoch end (``"epoch"``), and, with
    ``grad_clip``, the 2-norm of the gradient of all parameters clipped to it before each step.

    Raises:
        ValueError: ``scheduler_interval`` is neither ``"step"`` nor ``"epoch"``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler | None = None,
        scheduler_interval: SchedulerInterval = "epoch",
        grad_clip: float | None = None,
    ) -> None:
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"scheduler_interval must be 'step' or 'epoch', not {scheduler_interval!r}"
            )
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scheduler_interval, self.grad_clip = scheduler_interval, grad_clip

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, parameters: Iterable[nn.Parameter]) -> None:
        """Clip the gradients of ``parameters``, step the optimizer, and a per-step scheduler."""
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(parameters, self.grad_clip)
        self.optimizer.step()
        self._step_scheduler("step")

    def end_epoch(self) -> None:
        """Step a per-epoch scheduler."""
        self._step_scheduler("epoch")

    @property
    def lr(self) -> float:
        """The learning rate of the optimizer's first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's and the scheduler's state (None without a scheduler)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def _step_scheduler(self, interval: SchedulerInterval) -> None:
        if self.scheduler is not None and self.scheduler_interval == interval:
            self.scheduler.step()
