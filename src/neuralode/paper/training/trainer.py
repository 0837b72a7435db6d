"""One training loop for every experiment, with exact resumption.

An experiment hands :class:`Trainer` its model, optimizer, data source and loss; the trainer runs
the epochs, shows progress, writes ``log.jsonl``, checkpoints, and resumes a stopped run at the
batch where it stopped, so that the resumed run ends with the parameters of an uninterrupted one.

Under ``torchrun`` (see :mod:`neuralode.paper.training.distributed`) the loss runs inside
``DistributedDataParallel``: each rank trains on its slice of every global batch, gradients are
averaged over the ranks, and the logged metrics and NFE are means over them.

Files in ``out_dir`` (written only by rank 0):

- ``log.jsonl``: one JSON object per line, appended and flushed; ``"kind": "epoch"`` lines (one
  per epoch) and, with ``log_every``, ``"kind": "step"`` lines.
- ``checkpoint.pt``: everything needed to resume, written atomically at every epoch end, every
  ``checkpoint_every`` seconds, and when the run is stopped (SIGINT, SIGTERM, KeyboardInterrupt).
- ``model.pt``: the final model's ``state_dict`` and the config, once all epochs have run.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from neuralode.nn import ODEModule

from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .data import BatchSource
from .device import batch_size, move_to_device
from .distributed import Distributed

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]]
"""``loss_fn(model, batch) -> (loss, metrics)``: the scalar loss to minimize and floats to log."""

EvalFn = Callable[[nn.Module], Mapping[str, float]]
"""``evaluate(model) -> metrics``, called in eval mode at each epoch end (it picks its own
``torch.no_grad``: a continuous normalizing flow may need gradients to evaluate)."""

ANOTHER_RANK = "a stop on another rank"
"""``FitResult.stopped_by`` on the ranks that were not signalled themselves."""
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
MODEL_FILE = "model.pt"


@dataclass
class Position:
    """Where the run stands: the epoch in progress (0-based), the batches of it already trained
    on, and the optimizer steps taken since the start of the run."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0


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


@dataclass(frozen=True)
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        history: one record per finished epoch (the ``"kind": "epoch"`` log lines), including
            epochs run before a resume.
        stopped_by: ``"SIGINT"``, ``"SIGTERM"`` or ``"KeyboardInterrupt"`` when the run stopped
            early (its checkpoint is saved: run again with ``resume=True``); None when all epochs
            ran.
    """

    history: list[dict[str, Any]]
    stopped_by: str | None = None

    @property
    def completed(self) -> bool:
        return self.stopped_by is None


class Trainer:
    """Trains ``model`` on ``train_data`` for ``epochs`` epochs.

    Args:
        model: moved to ``device``.
        optimizer: over the model's parameters.
        train_data: a :class:`~neuralode.paper.training.data.BatchSource`.
        loss_fn: ``loss_fn(model, batch) -> (loss, metrics)``; the batch is on ``device``.
            ``"loss"`` is logged as a metric unless ``metrics`` has its own ``"loss"``.
        out_dir: directory of ``log.jsonl``, ``checkpoint.pt`` and ``model.pt``.
        epochs: total epochs of the run (a resumed run counts the epochs already done).
        device: where the model and the batches go.
        scheduler: optional learning-rate scheduler, stepped (without arguments) after every
            optimizer step (``scheduler_interval="step"``) or at each epoch end (``"epoch"``).
        evaluate: optional ``evaluate(model) -> metrics``, run in eval mode at each epoch end.
        checkpoint_every: seconds between mid-epoch checkpoints (``math.inf``: epoch ends only).
        grad_clip: if given, the maximal 2-norm of the gradient of all parameters.
        log_every: if given, also log a ``"kind": "step"`` line every ``log_every`` steps.
        config: the experiment's configuration (picklable), saved in the checkpoint and model.
        distributed: this process's rank and world size (default: a process alone; from
            :func:`~neuralode.paper.training.distributed.join_process_group`); with several
            ranks the loss runs in ``DistributedDataParallel`` on each rank's slice of the global
            batch, ``evaluate`` runs on rank 0 only, and only rank 0 prints and writes files.

    Raises:
        ValueError: ``train_data.batch_size`` is not divisible by the world size.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: BatchSource,
        loss_fn: LossFn,
        *,
        out_dir: str | Path,
        epochs: int,
        device: str | torch.device = "cpu",
        scheduler: LRScheduler | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        evaluate: EvalFn | None = None,
        checkpoint_every: float = 300.0,
        grad_clip: float | None = None,
        log_every: int | None = None,
        config: Mapping[str, Any] | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"scheduler_interval must be 'step' or 'epoch', not {scheduler_interval!r}"
            )
        self.distributed = distributed or Distributed()
        self.distributed.check_batch_size(train_data.batch_size)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.train_data, self.loss_fn, self.evaluate = train_data, loss_fn, evaluate
        self.out_dir, self.epochs = Path(out_dir), epochs
        self.checkpoint_every = checkpoint_every
        self.grad_clip, self.log_every = grad_clip, log_every
        self.config = dict(config or {})
        self.position, self.totals = Position(), EpochTotals()
        self.history: list[dict[str, Any]] = []
        self._ode_blocks = [m for m in model.modules() if isinstance(m, ODEModule)]
        self._gradient_bytes = [0]
        self._loss = self._loss_module(_LossModule(self.model, loss_fn))
        self._at_boundary = True  # False while a step or an epoch end is changing the state
        self._last_save = time.monotonic()

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes files (rank 0)."""
        return self.distributed.is_main

    def _loss_module(self, loss: _LossModule) -> nn.Module:
        """``loss`` itself on one process; with several ranks, wrapped in
        ``DistributedDataParallel``, counting the gradient bytes each rank all-reduces."""
        if not self.distributed.active:
            return loss
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(loss, device_ids=device_ids)

        # DDP checks the hook's annotations and rejects the strings of postponed evaluation
        def counting_allreduce(counter, bucket):
            buffer = bucket.buffer()
            counter[0] += buffer.numel() * buffer.element_size()
            return default_hooks.allreduce_hook(None, bucket)

        wrapped.register_comm_hook(self._gradient_bytes, counting_allreduce)
        return wrapped

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    def fit(self, resume: bool = False) -> FitResult:
        """Run the remaining epochs; with ``resume``, first load ``checkpoint.pt`` if it exists.

        SIGINT and SIGTERM stop the run at the next batch boundary (a second SIGINT interrupts at
        once); a KeyboardInterrupt raised between steps (e.g. by the data source) stops it too.
        Either way the checkpoint is saved and the result says what stopped the run. A
        KeyboardInterrupt in the middle of a step propagates, leaving the last checkpoint.
        """
        self._start(resume)
        self.model.train()
        with _StopOnSignal() as stop:
            try:
                while self.position.epoch < self.epochs and not stop.agreed(self.distributed):
                    self._train_epoch(stop)
                    if stop.reason is None:
                        self._end_epoch()
            except KeyboardInterrupt:
                if not self._at_boundary:
                    self._print("interrupted in the middle of a step: checkpoint not updated")
                    raise
                stop.reason = "KeyboardInterrupt"
        if self.position.epoch < self.epochs:
            self._save_checkpoint()
            self._print(f"stopped by {stop.reason}; checkpoint saved to {self.checkpoint_path}")
            return FitResult(list(self.history), stopped_by=stop.reason)
        self._save_model()
        return FitResult(list(self.history))

    def _start(self, resume: bool) -> None:
        """Load the checkpoint (resume) or start afresh, and cut the log to match."""
        if self.distributed.broadcast(resume and self.checkpoint_path.exists()):
            log_offset = self._load_checkpoint()
            self._print(
                f"resumed from {self.checkpoint_path} at epoch {self.position.epoch + 1}, "
                f"batch {self.position.batch}"
            )
        else:
            log_offset = 0
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _truncate(self.log_path, log_offset)
        self._last_save = time.monotonic()

    def _train_epoch(self, stop: _StopOnSignal) -> None:
        """Train on the rest of the epoch in progress, or until a stop is requested."""
        epoch = self.position.epoch
        with self._progress_bar() as bar:
            tick = time.perf_counter()
            for batch in self.train_data.batches(epoch, self.position.batch):
                self._at_boundary = False
                step = self._train_step(batch, stop)
                self.totals.add(step, time.perf_counter() - tick)
                self.position.batch += 1
                self.position.global_step += 1
                self._at_boundary = True
                self._report_step(bar, step)
                if step.stop:
                    stop.reason = stop.reason or ANOTHER_RANK
                    return
                if time.monotonic() - self._last_save >= self.checkpoint_every:
                    self._save_checkpoint()
                tick = time.perf_counter()

    def _train_step(self, batch: Any, stop: _StopOnSignal) -> StepReport:
        """One optimizer step on this rank's slice of the global ``batch``."""
        local, weight = self.distributed.shard(batch)
        local = move_to_device(local, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        self._gradient_bytes[0] = 0
        loss, metrics = self._loss(local)
        (loss * weight if weight != 1.0 else loss).backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        metrics = {"loss": loss.item(), **{name: float(v) for name, v in metrics.items()}}
        nfe = solver_nfe(self._ode_blocks)
        return StepReport.reduce(
            self.distributed,
            batch_size(local),
            metrics,
            nfe,
            stop.reason is not None,
            self._gradient_bytes[0],
        )

    def _report_step(self, bar: tqdm, step: StepReport) -> None:
        """Update the progress bar and, every ``log_every`` steps, log a step line."""
        bar.set_postfix_str(self._postfix(step), refresh=False)
        bar.update(1)
        if self.log_every and self.position.global_step % self.log_every == 0 and self.is_main:
            record = {
                "kind": "step",
                "epoch": self.position.epoch + 1,
                "step": self.position.global_step,
                "lr": self._lr(),
                "nfe_forward": step.nfe_forward,
                "nfe_backward": step.nfe_backward,
                "train": step.metrics,
            }
            _append_jsonl(self.log_path, record)

    def _postfix(self, step: StepReport) -> str:
        """The progress bar's text: epoch-average metrics, this step's NFE, samples/s."""
        metrics = " ".join(f"{k}={v:.4g}" for k, v in self.totals.means().items())
        rate = self.totals.samples_per_second()
        nfe = f"nfe={step.nfe_forward:.3g}/{step.nfe_backward:.3g}"
        return f"{metrics} {nfe} {rate:.3g} samples/s"

    def _end_epoch(self) -> None:
        """Step an epoch scheduler, evaluate, log the epoch, move to the next one, checkpoint."""
        self._at_boundary = False
        lr = self._lr()
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        eval_metrics, eval_seconds = self._evaluate()
        record = self._epoch_record(lr, eval_metrics, eval_seconds)
        self.history.append(record)
        if self.is_main:
            _append_jsonl(self.log_path, record)
        self._print(format_epoch(record, self.epochs))
        self.position = Position(self.position.epoch + 1, 0, self.position.global_step)
        self.totals = EpochTotals()
        self._at_boundary = True
        self._save_checkpoint()

    def _evaluate(self) -> tuple[dict[str, float], float]:
        """The evaluation metrics (empty without ``evaluate``) and the seconds they took."""
        if self.evaluate is None:
            return {}, 0.0
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if self.is_main:
            self.model.eval()
            try:
                metrics = {name: float(v) for name, v in self.evaluate(self.model).items()}
            finally:
                self.model.train()
        return self.distributed.broadcast(metrics), time.perf_counter() - start

    def _epoch_record(
        self, lr: float, eval_metrics: dict[str, float], eval_seconds: float
    ) -> dict[str, Any]:
        """The epoch's log line: ``seconds`` is training time (s), ``eval_seconds`` evaluation."""
        nfe_forward, nfe_backward, nfe_forward_max = self.totals.mean_nfe()
        steps = max(self.totals.steps, 1)
        return {
            "kind": "epoch",
            "epoch": self.position.epoch + 1,
            "step": self.position.global_step,
            "lr": lr,
            "seconds": self.totals.seconds,
            "eval_seconds": eval_seconds,
            "samples_per_s": self.totals.samples_per_second(),
            "nfe_forward": nfe_forward,
            "nfe_backward": nfe_backward,
            "nfe_forward_max": nfe_forward_max,
            "world_size": self.distributed.world_size,
            "gradient_bytes_per_step": self.totals.gradient_bytes / steps,
            "train": self.totals.means(),
            "eval": eval_metrics,
        }

    def _lr(self) -> float:
        """The learning rate of the optimizer's first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": capture_rng_state(),
            **asdict(self.position),
            "totals": asdict(self.totals),
            "history": self.history,
            "log_offset": self.log_path.stat().st_size if self.log_path.exists() else 0,
            "config": self.config,
        }

    def _save_checkpoint(self) -> None:
        if self.is_main:
            save_checkpoint(self.checkpoint_path, self._checkpoint_state())
        self._last_save = time.monotonic()

    def _load_checkpoint(self) -> int:
        """Restore the state saved by :meth:`_save_checkpoint` (read by rank 0, sent to every
        rank, whatever the world size that wrote it); return the log's size then."""
        state = None
        if self.is_main:
            state = load_checkpoint(self.checkpoint_path, map_location="cpu")
        state = self.distributed.broadcast(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.position = Position(state["epoch"], state["batch"], state["global_step"])
        self.totals = EpochTotals(**state["totals"])
        self.history = state["history"]
        restore_rng_state(state["rng"])
        return state["log_offset"]

    def _save_model(self) -> None:
        if self.is_main:
            state = {"model": self.model.state_dict(), "config": self.config}
            save_checkpoint(self.model_path, state)

    def _progress_bar(self) -> tqdm:
        """A bar over the epoch's batches, shown on the main process when stderr is a TTY."""
        return tqdm(
            total=len(self.train_data),
            initial=self.position.batch,
            desc=f"epoch {self.position.epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not (self.is_main and sys.stderr.isatty()),
        )

    def _print(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)


def solver_nfe(blocks: Sequence[ODEModule]) -> tuple[int, int]:
    """Forward and backward evaluations of the vector fields of ``blocks`` in their last solve,
    summed over the blocks."""
    return sum(b.nfe_forward for b in blocks), sum(b.nfe_backward for b in blocks)


def format_epoch(record: Mapping[str, Any], epochs: int) -> str:
    """One human-readable line summing up an epoch record."""

    def metrics(values: Mapping[str, float]) -> str:
        return " ".join(f"{name}={value:.4g}" for name, value in values.items())

    parts = [f"epoch {record['epoch']}/{epochs}", f"train {metrics(record['train'])}"]
    if record["eval"]:
        parts.append(f"eval {metrics(record['eval'])}")
    parts += [
        f"nfe {record['nfe_forward']:.1f}/{record['nfe_backward']:.1f}",
        f"lr {record['lr']:.3g}",
        f"{record['seconds']:.1f} s ({record['samples_per_s']:.3g} samples/s)",
    ]
    return " | ".join(parts)


class _StopOnSignal:
    """While active (in the main thread), SIGINT and SIGTERM set ``reason`` instead of
    interrupting, so the loop stops at a batch boundary; a second SIGINT raises
    KeyboardInterrupt at once. The previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def agreed(self, distributed: Distributed) -> bool:
        """Whether any rank was asked to stop (every rank gets the same answer)."""
        flags = distributed.gather_rows([float(self.reason is not None)])
        if flags.any() and self.reason is None:
            self.reason = ANOTHER_RANK
        return self.reason is not None

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name


class _LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module's forward, so that ``DistributedDataParallel`` sees
    the whole loss (which may call any of the model's methods, not only its forward)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, float]]:
        return self.loss_fn(self.model, batch)


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line (the file is closed, hence flushed, at once)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate(path: Path, size: int) -> None:
    """Cut the file at ``path`` (created if missing) to ``size`` bytes."""
    with path.open("a") as f:
        f.truncate(size)
