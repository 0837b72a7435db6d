"""Resume semantics: a run continues only with the options it was started with.

A checkpoint records the run's config. Resuming compares it with the config of the resuming
command: any difference outside the keys that may change (devices, paths, logging, the
checkpoint interval: ``may_change``) is refused with the list of differences, since applying a
new learning rate, schedule or size halfway through would give a run that no single command
describes. Start a new run (another ``--out``) to change them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any


class ResumeError(ValueError):
    """The resuming command's options differ from those the run was started with."""


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], may_change: Collection[str] = ()
) -> list[str]:
    """``--key NEW (the run's: OLD)`` for each key of both configs whose values differ, except
    those in ``may_change``; keys only one config has (other versions) are not compared."""
    return [
        f"--{key.replace('_', '-')} {current[key]} (the run's: {saved[key]})"
        for key in current
        if key in saved and key not in may_change and current[key] != saved[key]
    ]


def check_resumable(
    path: Path,
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    may_change: Collection[str] = (),
) -> None:
    """Raise :class:`ResumeError` when ``current`` differs from ``saved`` (see
    :func:`config_differences`), naming the checkpoint at ``path`` and each difference."""
    differences = config_differences(saved, current, may_change)
    if differences:
        raise ResumeError(
            f"cannot resume {path}: options differ from the run's: {', '.join(differences)}; "
            "resume with the run's options, or start a new run with another --out"
        )
