"""Training: one loop for every experiment, with checkpoints that resume a run exactly.

:class:`Trainer` (:mod:`.trainer`) composes modules with one job each: :mod:`.optimization`
(optimizer step, scheduler, clipping), :mod:`.distributed` (process group, sharding, the loss
under DDP), :mod:`.metrics` (step and epoch numbers, log records), :mod:`.run_log`
(``log.jsonl``), :mod:`.checkpoint` (atomic files, RNG states, the run's checkpoints, errors
naming a bad file), :mod:`.divergence` (the guard against NaN, Inf and exploding losses),
:mod:`.resume` (which options a resumed run may change), :mod:`.progress` (bar and printed
lines) and :mod:`.stopping` (SIGINT and SIGTERM); and the
data sources (:mod:`.data`), devices (:mod:`.device`) and seeding (:mod:`.seeding`).
"""

from .checkpoint import (
    Checkpointer,
    CheckpointError,
    RunFolderError,
    capture_rng_state,
    load_checkpoint,
    load_run_state,
    restore_rng_state,
    save_checkpoint,
)
from .data import BatchSource, SampledBatches, TensorBatches, epoch_generator
from .device import batch_size, move_to_device, resolve_device
from .divergence import DivergenceError, DivergenceGuard
from .metrics import solver_nfe
from .optimization import Optimization
from .progress import Progress, format_epoch
from .resume import ResumeError
from .run_log import RunLog
from .seeding import seed_everything
from .stopping import StopOnSignal
from .trainer import EvalFn, FitResult, LossFn, Trainer

__all__ = [
    "BatchSource",
    "CheckpointError",
    "Checkpointer",
    "DivergenceError",
    "DivergenceGuard",
    "EvalFn",
    "FitResult",
    "LossFn",
    "Optimization",
    "Progress",
    "ResumeError",
    "RunFolderError",
    "RunLog",
    "SampledBatches",
    "StopOnSignal",
    "TensorBatches",
    "Trainer",
    "batch_size",
    "capture_rng_state",
    "epoch_generator",
    "format_epoch",
    "load_checkpoint",
    "load_run_state",
    "move_to_device",
    "resolve_device",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "solver_nfe",
]
