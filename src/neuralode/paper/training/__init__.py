"""Training: one loop for every experiment, with checkpoints that resume a run exactly."""

from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .data import BatchSource, SampledBatches, TensorBatches, epoch_generator
from .device import batch_size, move_to_device, resolve_device
from .seeding import seed_everything
from .trainer import EvalFn, FitResult, LossFn, Trainer, format_epoch, solver_nfe

__all__ = [
    "BatchSource",
    "EvalFn",
    "FitResult",
    "LossFn",
    "SampledBatches",
    "TensorBatches",
    "Trainer",
    "batch_size",
    "capture_rng_state",
    "epoch_generator",
    "format_epoch",
    "load_checkpoint",
    "move_to_device",
    "resolve_device",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "solver_nfe",
]
