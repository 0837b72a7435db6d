"""How the ``neuralode`` command reports a failure: one line, ``neuralode: error: ...``, and an
exit status (2 for options that cannot work, 1 for anything that went wrong while running).

The traceback is printed only with ``--debug`` or ``NEURALODE_DEBUG=1``.
"""

from __future__ import annotations

import os

from neuralode.errors import ODEInputError

from .data.mnist import MissingDataError
from .training.checkpoint import CheckpointError, RunFolderError
from .training.divergence import DivergenceError
from .training.resume import ResumeError

DEBUG_VARIABLE = "NEURALODE_DEBUG"


class UsageError(ValueError):
    """Options that are valid one by one but cannot work together (exit status 2)."""


EXPLAINED = (
    UsageError,
    CheckpointError,
    ResumeError,
    RunFolderError,
    DivergenceError,
    MissingDataError,
    ODEInputError,
)
"""Errors whose message already says what is wrong and what to do: shown as they are."""


def debug_requested(flag: bool = False) -> bool:
    """Whether tracebacks are wanted: ``--debug`` or ``NEURALODE_DEBUG`` set (not 0)."""
    return flag or os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0")


def exit_status(error: BaseException) -> int:
    """2 for a :class:`UsageError`, 1 for any other error."""
    return 2 if isinstance(error, UsageError) else 1


def describe(error: BaseException) -> str:
    """The one line (with a solver's detail beneath a divergence) that reports ``error``."""
    if isinstance(error, MissingDataError):
        return error.message("pass --download")
    if isinstance(error, EXPLAINED):
        return str(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    hint = f"(set {DEBUG_VARIABLE}=1 or pass --debug for the traceback)"
    return f"{type(error).__name__}: {text} {hint}" if text else f"{type(error).__name__} {hint}"
