"""What a run shows on the terminal: a progress bar over each epoch's batches and one line per
epoch, on the main process only."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from tqdm import tqdm

from .metrics import EpochTotals, StepReport


class Progress:
    """Prints (rank 0: ``show``) and shows a bar per epoch (also needs ``bar`` and stderr a
    terminal); messages go through ``tqdm.write`` so that they do not break a bar."""

    def __init__(self, show: bool = True, bar: bool = True) -> None:
        self.show, self.bar = show, bar

    def epoch_bar(self, total: int, done: int, description: str) -> tqdm:
        """A bar over an epoch's ``total`` batches, ``done`` of them already trained on."""
        return tqdm(
            total=total,
            initial=done,
            desc=description,
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not (self.show and self.bar and sys.stderr.isatty()),
        )

    def step(self, bar: tqdm, totals: EpochTotals, step: StepReport) -> None:
        """Advance ``bar`` by one step; its text: epoch-average metrics, this step's NFE,
        samples/s."""
        metrics = " ".join(f"{k}={v:.4g}" for k, v in totals.means().items())
        rate = totals.samples_per_second()
        nfe = f"nfe={step.nfe_forward:.3g}/{step.nfe_backward:.3g}"
        bar.set_postfix_str(f"{metrics} {nfe} {rate:.3g} samples/s", refresh=False)
        bar.update(1)

    def print(self, message: str) -> None:
        if self.show:
            tqdm.write(message)


T = TypeVar("T")


def evaluation_bar(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """``items`` with a progress bar on stderr when it is a terminal (an evaluation's batches)."""
    return iter(
        tqdm(
            items,
            total=total,
            desc=description,
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
        )
    )


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
