"""One training loop for every experiment, with exact resumption.

An experiment hands :class:`Trainer` its model, optimizer, data source and loss; the trainer runs
the epochs, shows progress, writes ``log.jsonl``, checkpoints, and resumes a stopped run at the
batch where it stopped, so that the resumed run ends with the parameters of an uninterrupted one.

The trainer is the loop; each of its other concerns has a module of its own: the optimizer step
with its scheduler and clipping (:mod:`.optimization`), the loss under data parallelism
(:mod:`.distributed`), what a step and an epoch measure and log (:mod:`.metrics`), the log file
(:mod:`.run_log`), checkpoints and random states (:mod:`.checkpoint`), the progress bar and
printed lines (:mod:`.progress`), and stopping on a signal (:mod:`.stopping`).

Under ``torchrun`` (see :mod:`neuralode.paper.training.distributed`) the loss runs inside
``DistributedDataParallel``: each rank trains on its slice of every global batch, gradients are
averaged over the ranks, and the logged metrics and NFE are means over them.

Files in ``out_dir`` (written only by rank 0):

- ``log.jsonl``: one JSON object per line, appended and flushed; ``"kind": "epoch"`` lines (one
  per epoch) and, with ``log_every``, ``"kind": "step"`` lines.
- ``checkpoint.pt``: everything needed to resume, written atomically at every epoch end, every
  ``checkpoint_every`` seconds, and when the run is stopped (SIGINT, SIGTERM, KeyboardInterrupt).
- ``model.pt``: the final model's ``state_dict`` and the config, once all epochs have run.

Before the first step the folder must be writable (else :class:`~.checkpoint.RunFolderError`),
and temporary files left by a run killed mid-write are removed. A resumed run must have the
config it was started with, apart from ``may_change`` (:mod:`.resume`); a finished run says so.

The divergence guard (:mod:`.divergence`): a batch whose loss or gradient is not finite, or
whose loss exceeds ``max_loss_growth`` times the first, is skipped (no optimizer or scheduler
step; counted in the epoch record's ``skipped``); ``max_bad_batches`` in a row, or a solver
failure (:class:`neuralode.errors.SolverError`), raise :class:`~.divergence.DivergenceError`.
Nothing non-finite is written to ``checkpoint.pt`` or ``model.pt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from neuralode.errors import SolverError
from neuralode.nn import ODEModule

from .checkpoint import Checkpointer, CheckpointError, capture_rng_state, restore_rng_state
from .data import BatchSource, epoch_length
from .device import batch_size, move_to_device
from .distributed import DataParallelLoss, Distributed
from .divergence import (
    DEFAULT_MAX_BAD_BATCHES,
    DEFAULT_MAX_LOSS_GROWTH,
    DivergenceError,
    DivergenceGuard,
    NonFiniteModelError,
)
from .metrics import EpochTotals, StepReport, solver_nfe
from .optimization import Optimization, SchedulerInterval
from .progress import Progress, format_epoch
from .resume import check_resumable
from .run_log import RunLog
from .stopping import StopOnSignal

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]]
"""``loss_fn(model, batch) -> (loss, metrics)``: the scalar loss to minimize and floats to log."""

EvalFn = Callable[[nn.Module], Mapping[str, float]]
"""``evaluate(model) -> metrics``, called in eval mode at each epoch end (it picks its own
``torch.no_grad``: a continuous normalizing flow may need gradients to evaluate)."""

LOG_FILE = "log.jsonl"


@dataclass
class Position:
    """Where the run stands: the epoch in progress (0-based), the batches of it already trained
    on, and the batches (steps, skipped ones included) since the start of the run."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0


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
        progress_bar: whether to show the progress bar (on rank 0, when stderr is a terminal).
        max_bad_batches: bad batches in a row (see :mod:`.divergence`) that stop the run.
        max_loss_growth: a loss above this many times the first one (at least 1) is bad.
        may_change: keys of ``config`` that may differ when the run is resumed.

    Raises:
        ValueError: ``train_data.batch_size`` is not divisible by the world size, or a guard
            setting is out of range.
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
        scheduler_interval: SchedulerInterval = "epoch",
        evaluate: EvalFn | None = None,
        checkpoint_every: float = 300.0,
        grad_clip: float | None = None,
        log_every: int | None = None,
        config: Mapping[str, Any] | None = None,
        distributed: Distributed | None = None,
        progress_bar: bool = True,
        max_bad_batches: int = DEFAULT_MAX_BAD_BATCHES,
        max_loss_growth: float = DEFAULT_MAX_LOSS_GROWTH,
        may_change: Collection[str] = (),
    ) -> None:
        self.guard = DivergenceGuard(max_bad_batches, max_loss_growth)
        self.may_change = frozenset(may_change)
        self.optimization = Optimization(optimizer, scheduler, scheduler_interval, grad_clip)
        self.distributed = distributed or Distributed()
        self.distributed.check_batch_size(train_data.batch_size)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_data, self.loss_fn, self.evaluate = train_data, loss_fn, evaluate
        self.out_dir, self.epochs = Path(out_dir), epochs
        self.log_every = log_every
        self.config = dict(config or {})
        self.position, self.totals = Position(), EpochTotals()
        self.history: list[dict[str, Any]] = []
        self.log = RunLog(self.out_dir / LOG_FILE, write=self.is_main)
        self.checkpointer = Checkpointer(self.out_dir, checkpoint_every, self.distributed)
        self.progress = Progress(show=self.is_main, bar=progress_bar)
        self._ode_blocks = [m for m in model.modules() if isinstance(m, ODEModule)]
        self._loss = DataParallelLoss(self.model, loss_fn, self.distributed, self.device)
        self._at_boundary = True  # False while a step or an epoch end is changing the state

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes files (rank 0)."""
        return self.distributed.is_main

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimization.optimizer

    @property
    def scheduler(self) -> LRScheduler | None:
        return self.optimization.scheduler

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpointer.path

    @property
    def log_path(self) -> Path:
        return self.log.path

    @property
    def model_path(self) -> Path:
        return self.checkpointer.model_path

    def fit(self, resume: bool = False) -> FitResult:
        """Run the remaining epochs; with ``resume``, first load ``checkpoint.pt`` if it exists.

        SIGINT and SIGTERM stop the run at the next batch boundary (a second SIGINT interrupts at
        once); a KeyboardInterrupt raised between steps (e.g. by the data source) stops it too.
        Either way the checkpoint is saved and the result says what stopped the run. A
        KeyboardInterrupt in the middle of a step propagates, leaving the last checkpoint.

        Raises:
            RunFolderError: ``out_dir`` cannot be written (before the first step).
            CheckpointError, ResumeError: with ``resume``, the checkpoint cannot be read or was
                started with other options.
            DivergenceError: training diverged (see :mod:`.divergence`); nothing was written
                since the last good checkpoint.
        """
        self._start(resume)
        self.model.train()
        with StopOnSignal() as stop:
            try:
                while self.position.epoch < self.epochs and not stop.agreed(self.distributed):
                    self._train_epoch(stop)
                    if not stop.requested:
                        self._end_epoch()
            except KeyboardInterrupt:
                if not self._at_boundary:
                    self.progress.print(
                        "interrupted in the middle of a step: checkpoint not updated"
                    )
                    raise
                stop.reason = "KeyboardInterrupt"
        if self.position.epoch < self.epochs:
            self._save_checkpoint()
            self.progress.print(
                f"stopped by {stop.reason}; checkpoint saved to {self.checkpoint_path}"
            )
            return FitResult(list(self.history), stopped_by=stop.reason)
        self._guarded_save(
            lambda: self.checkpointer.save_model(
                {"model": self.model.state_dict(), "config": self.config}
            )
        )
        return FitResult(list(self.history))

    def _start(self, resume: bool) -> None:
        """Check the folder, load the checkpoint (resume) or start afresh, and cut the log to
        match."""
        self.checkpointer.prepare()
        if resume and self.checkpointer.exists():
            log_offset = self._restore(self.checkpointer.load())
            if self.position.epoch >= self.epochs:
                self.progress.print(
                    f"{self.out_dir}: the run already finished its {self.epochs} epochs; "
                    "nothing left to train"
                )
            else:
                self.progress.print(
                    f"resumed from {self.checkpoint_path} at epoch {self.position.epoch + 1}, "
                    f"batch {self.position.batch}"
                )
        else:
            if resume:
                self.progress.print(f"no checkpoint in {self.out_dir}: starting a new run")
            log_offset = 0
        self.log.truncate(log_offset)
        self.checkpointer.restart_clock()

    def _train_epoch(self, stop: StopOnSignal) -> None:
        """Train on the rest of the epoch in progress, or until a stop is requested."""
        epoch = self.position.epoch
        total = epoch_length(self.train_data, epoch)
        description = f"epoch {epoch + 1}/{self.epochs}"
        with self.progress.epoch_bar(total, self.position.batch, description) as bar:
            tick = time.perf_counter()
            for batch in self.train_data.batches(epoch, self.position.batch):
                self._at_boundary = False
                step = self._train_step(batch, stop)
                if step is None:  # skipped by the divergence guard
                    self.totals.skipped += 1
                    step = StepReport.reduce(self.distributed, 0, {}, (0, 0), stop.requested)
                else:
                    self.totals.add(step, time.perf_counter() - tick)
                    self.progress.step(bar, self.totals, step)
                self.position.batch += 1
                self.position.global_step += 1
                self._at_boundary = True
                if step.samples:
                    self._log_step(step)
                else:
                    bar.update(1)
                if step.stop:
                    stop.stopped_elsewhere()
                    return
                if self.checkpointer.due():
                    self._save_checkpoint()
                tick = time.perf_counter()

    def _train_step(self, batch: Any, stop: StopOnSignal) -> StepReport | None:
        """One optimizer step on this rank's slice of the global ``batch``; None when the
        divergence guard skips the batch (the optimizer is not stepped).

        Raises:
            DivergenceError: the batch makes ``max_bad_batches`` bad ones in a row, or the ODE
                solver failed.
        """
        local, weight = self.distributed.shard(batch)
        local = move_to_device(local, self.device)
        self.optimization.zero_grad()
        try:
            loss, metrics = self._loss(local)
            loss_value = self._global_loss(loss.item(), batch_size(local))
            problem = self.guard.loss_problem(loss_value)
            if problem is None:
                (loss * weight if weight != 1.0 else loss).backward()
                problem = self.guard.gradient_problem(self.model.parameters())
        except SolverError as error:
            raise self._divergence("the ODE solver failed", str(error)) from error
        if problem is not None:
            self.optimization.zero_grad()
            self.guard.reject(problem, self.position.global_step + 1, self.checkpointer.last_saved)
            return None
        self.guard.accept(loss_value)
        self.optimization.step(self.model.parameters())
        metrics = {"loss": loss.item(), **{name: float(v) for name, v in metrics.items()}}
        return StepReport.reduce(
            self.distributed,
            batch_size(local),
            metrics,
            solver_nfe(self._ode_blocks),
            stop.requested,
            self._loss.gradient_bytes,
        )

    def _global_loss(self, loss: float, samples: int) -> float:
        """The loss of the global batch (the sample-weighted mean over the ranks), which every
        rank's guard judges alike."""
        if not self.distributed.active:
            return loss
        rows = self.distributed.gather_rows([loss * samples, samples])
        return float(rows[:, 0].sum() / rows[:, 1].sum())

    def _divergence(
        self, reason: str, detail: str | None = None, step: int | None = None
    ) -> DivergenceError:
        """The error that stops a diverged run at ``step`` (default: the step in progress)."""
        return DivergenceError(
            reason,
            self.position.global_step + 1 if step is None else step,
            self.guard.state.last_loss,
            self.checkpointer.last_saved,
            detail,
        )

    def _guarded_save(self, save: Callable[[], None]) -> None:
        """Run ``save``; a model with a NaN or an infinity is a divergence, and is not saved."""
        try:
            save()
        except NonFiniteModelError as error:
            step = self.position.global_step  # the last step taken
            raise self._divergence("the parameters are not finite", str(error), step) from error

    def _save_checkpoint(self) -> None:
        self._guarded_save(lambda: self.checkpointer.save(self._checkpoint_state))

    def _log_step(self, step: StepReport) -> None:
        """Every ``log_every`` steps, log a step line."""
        if self.log_every and self.position.global_step % self.log_every == 0:
            epoch, global_step = self.position.epoch + 1, self.position.global_step
            self.log.append(step.record(epoch, global_step, self.optimization.lr))

    def _end_epoch(self) -> None:
        """Step an epoch scheduler, evaluate, log the epoch, move to the next one, checkpoint."""
        self._at_boundary = False
        lr = self.optimization.lr
        self.optimization.end_epoch()
        eval_metrics, eval_seconds = self._evaluate()
        record = self.totals.record(
            self.position.epoch + 1,
            self.position.global_step,
            lr,
            eval_metrics,
            eval_seconds,
            self.distributed.world_size,
        )
        self.history.append(record)
        self.log.append(record)
        self.progress.print(format_epoch(record, self.epochs))
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

    def _checkpoint_state(self) -> dict[str, Any]:
        """Everything a resumed run needs (written by rank 0 only)."""
        return {
            "model": self.model.state_dict(),
            **self.optimization.state_dict(),
            "rng": capture_rng_state(),
            **asdict(self.position),
            "totals": asdict(self.totals),
            "history": self.history,
            "log_offset": self.log.size(),
            "config": self.config,
            "guard": self.guard.state_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> int:
        """Restore the state of :meth:`_checkpoint_state` (whatever the world size that wrote
        it); return the log's size then.

        Raises:
            ResumeError: the run was started with another config (see :mod:`.resume`).
            CheckpointError: the file is not a resumable checkpoint, or does not fit the model.
        """
        path = self.checkpoint_path
        check_resumable(path, state["config"], self.config, self.may_change)
        try:
            self.model.load_state_dict(state["model"])
            self.optimization.load_state_dict(state)
            self.position = Position(state["epoch"], state["batch"], state["global_step"])
            self.totals = EpochTotals(**state["totals"])
            self.history = state["history"]
            restore_rng_state(state["rng"])
            log_offset = state["log_offset"]
        except KeyError as error:
            raise CheckpointError(
                f"checkpoint {path} lacks {error} (a model.pt, or another program's file?): "
                "it cannot resume a run; start a new run without --resume"
            ) from error
        except (RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {path} does not fit this run's model or optimizer: "
                f"{str(error).strip().splitlines()[0]}"
            ) from error
        self.guard.load_state_dict(state.get("guard"))
        return log_offset
