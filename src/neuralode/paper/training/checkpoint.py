"""Checkpoint files written atomically, capture/restore of every random number generator, and
the checkpoints of a run folder: when to write them, and who writes and reads them."""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import Distributed

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` with ``torch.save``, atomically.

    The state goes to a temporary file in the same directory, which is flushed, fsynced and then
    renamed over ``path`` (``os.replace``): a reader, or a run killed mid-write, sees either the
    old file or the new one, never a partial one. The temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`, its tensors mapped to ``map_location``.

    The file is unpickled in full (``weights_only=False``: it holds RNG states and the
    config), so load only checkpoints you trust, such as this project's own.
    """
    return torch.load(path, map_location=map_location, weights_only=False)


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global RNG, torch's CPU RNG and, when CUDA is
    available, every CUDA device's RNG: restore them with :func:`restore_rng_state`."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`capture_rng_state`.

    CUDA states are restored when they were captured and CUDA is available now.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Checkpointer:
    """The checkpoint (``checkpoint.pt``) and final model (``model.pt``) of the run folder
    ``out_dir``: rank 0 writes them (atomically) and reads them for every rank.

    Mid-epoch checkpoints are :meth:`due` ``every`` seconds after the last save
    (``math.inf``: never).
    """

    def __init__(
        self, out_dir: str | Path, every: float, distributed: Distributed | None = None
    ) -> None:
        self.out_dir, self.every = Path(out_dir), every
        self.distributed = distributed or Distributed()
        self._last_save = time.monotonic()

    @property
    def path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    def exists(self) -> bool:
        """Whether rank 0 has a checkpoint to resume from (every rank gets its answer)."""
        return self.distributed.broadcast(self.path.exists())

    def restart_clock(self) -> None:
        """Count the time to the next mid-epoch checkpoint from now."""
        self._last_save = time.monotonic()

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last save."""
        return time.monotonic() - self._last_save >= self.every

    def save(self, state: Callable[[], dict[str, Any]]) -> None:
        """Write ``state()`` (called on rank 0 only) to :attr:`path`; restart the clock."""
        if self.distributed.is_main:
            save_checkpoint(self.path, state())
        self.restart_clock()

    def load(self) -> dict[str, Any]:
        """The checkpoint, read by rank 0 (tensors on the CPU) and sent to every rank."""
        state = None
        if self.distributed.is_main:
            state = load_checkpoint(self.path, map_location="cpu")
        return self.distributed.broadcast(state)

    def save_model(self, state: dict[str, Any]) -> None:
        """Write the final ``state`` to :attr:`model_path` (rank 0)."""
        if self.distributed.is_main:
            save_checkpoint(self.model_path, state)
