"""A run's ``log.jsonl``: one JSON object per line, appended and flushed line by line, cut back
to a checkpoint's size when a run resumes from it, and read back by the reports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class RunLog:
    """The JSONL log at ``path``; with ``write=False`` (ranks other than 0) it writes nothing.

    A checkpoint stores :meth:`size`; a run resumed from it calls :meth:`truncate` with that
    size, so that the lines written after the checkpoint are dropped and written again.
    """

    def __init__(self, path: str | Path, write: bool = True) -> None:
        self.path, self.write = Path(path), write

    def size(self) -> int:
        """The log's size in bytes (0 before it exists)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        """Cut the log (created, with its folder, if missing) to ``size`` bytes."""
        if not self.write:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.truncate(size)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one JSON line (the file is closed, hence flushed, at once)."""
        if not self.write:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(epoch records, step records) of a run's log.jsonl."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return (
        [r for r in records if r["kind"] == "epoch"],
        [r for r in records if r["kind"] == "step"],
    )
