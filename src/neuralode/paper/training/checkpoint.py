"""Checkpoint files written atomically, capture/restore of every random number generator, and
the checkpoints of a run folder: when to write them, and who writes and reads them."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import Distributed
from .divergence import NonFiniteModelError, nonfinite_entries

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
TEMPORARY_PATTERN = ".*.pt.*.tmp"
"""Temporary files of :func:`save_checkpoint` (``.checkpoint.pt.XXXX.tmp``), left by a kill."""
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


class RunFolderError(OSError):
    """A run folder that cannot be written; the message names it and the cause."""


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

    Raises:
        CheckpointError: the file is missing, a folder, empty, truncated or corrupt, or not a
            PyTorch file at all (the message names the file and which).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a model.pt or checkpoint.pt")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: pass its model.pt or checkpoint.pt")
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write never finished")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as error:
        problem = "truncated or corrupt" if head == _ZIP_MAGIC else "not a PyTorch checkpoint"
        detail = str(error).split(". ")[0].strip().rstrip(".")
        raise CheckpointError(f"checkpoint {path} is {problem} ({detail})") from error


def load_run_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A run's ``model.pt`` or ``checkpoint.pt``: :func:`load_checkpoint`, checked to hold the
    model's ``state_dict`` and the run's config.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or the file holds something else (a bare
            ``state_dict``, say).
    """
    state = load_checkpoint(path, map_location)
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "config" in state:
        return state
    if (
        isinstance(state, dict)
        and state
        and all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        what = "a bare state_dict"
    else:
        what = f"a {type(state).__name__} without 'model' and 'config'"
    raise CheckpointError(
        f"checkpoint {path} holds {what}, not a run's model and config: pass the model.pt or "
        "checkpoint.pt of a run folder"
    )


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a run killed while writing a checkpoint left in
    ``folder``; return them."""
    stale = sorted(Path(folder).glob(TEMPORARY_PATTERN))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` if needed and write (then delete) a file in it.

    Raises:
        RunFolderError: the folder cannot be created or written, naming it and the cause.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        Path(probe).unlink()
    except OSError as error:
        cause = error.strerror or str(error)
        raise RunFolderError(
            f"run folder {folder} cannot be written ({cause}): choose another --out"
        ) from error


def check_finite(path: str | Path, state: dict[str, Any]) -> None:
    """Refuse to write ``state`` to ``path`` when its model holds a NaN or an infinity.

    Raises:
        NonFiniteModelError: naming the file and the first offending tensors.
    """
    bad = nonfinite_entries(state.get("model", {}))
    if bad:
        names = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteModelError(f"not writing {path}: the model holds NaN or Inf in {names}")


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

    def prepare(self) -> None:
        """Before the first step (rank 0): check that the folder can be written and remove the
        temporary files of an earlier run killed mid-write."""
        if self.distributed.is_main:
            check_writable(self.out_dir)
            remove_stale_temporaries(self.out_dir)

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
        """Write ``state()`` (called on rank 0 only; its model finite) to :attr:`path`; restart
        the clock. :attr:`last_saved` is then the path."""
        if self.distributed.is_main:
            content = state()
            check_finite(self.path, content)
            save_checkpoint(self.path, content)
        self.restart_clock()

    @property
    def last_saved(self) -> Path | None:
        """The checkpoint on disk, the last good state (None before the first)."""
        return self.path if self.path.exists() else None

    def load(self) -> dict[str, Any]:
        """The checkpoint, read by rank 0 (tensors on the CPU) and sent to every rank.

        Raises:
            CheckpointError: it cannot be read, or is not a run's checkpoint.
        """
        state = None
        if self.distributed.is_main:
            state = load_run_state(self.path, map_location="cpu")
        return self.distributed.broadcast(state)

    def save_model(self, state: dict[str, Any]) -> None:
        """Write the final ``state`` (its model finite) to :attr:`model_path` (rank 0)."""
        if self.distributed.is_main:
            check_finite(self.model_path, state)
            save_checkpoint(self.model_path, state)
