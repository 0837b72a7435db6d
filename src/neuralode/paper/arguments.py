"""Validation at the door: ``argparse`` types that refuse nonsense with the flag's name, a help
formatter that shows every default, and a parser whose errors are one line.

A type here raises :class:`argparse.ArgumentTypeError`, which ``argparse`` reports as
``argument --lr: must be a finite number > 0, not 'nan'`` and exit status 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, not {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (NaN and infinities refused)."""
    value = _number(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text, float)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds >= 0; ``inf`` (never) is allowed, NaN is not."""
    value = _number(text, float)
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (or inf), not {text!r}")
    return value


def open_unit_float(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number between 0 and 1 (exclusive), not {text!r}"
        )
    return value


def probability(text: str) -> float:
    """A number from 0 to 1 (inclusive)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}")
    return value


def widths(text: str) -> str:
    """Comma-separated layer widths (integers >= 1), e.g. ``64,64,64``; returned as given."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers >= 1 such as 64,64, not {text!r}"
        )
    return text


def existing_file(text: str) -> Path:
    """A path to a file that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder: pass its model.pt or checkpoint.pt"
        )
    return path


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, available on this machine."""
    from .training.device import resolve_device

    try:
        resolve_device(text)
    except (ValueError, RuntimeError) as error:
        raise argparse.ArgumentTypeError(f"{error}: use --device cpu or auto") from None
    return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and ends each option's help with its default, unless the
    help already states it (or the option is a flag, or has no default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.nargs == 0
            or action.default in (None, argparse.SUPPRESS)
        ):
            return text
        value = action.default
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
