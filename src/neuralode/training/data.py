"""The data source a :class:`~neuralode.training.Trainer` reads, and one over in-memory tensors.

A data source has ``len(source)`` batches per epoch and ``source.batches(epoch, start)``, which
yields batches ``start, start + 1, ...`` of that epoch in an order fixed by (seed, epoch) alone:
it must not draw from the global random number generators, so that a resumed run, which asks
for ``start > 0``, gets exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch


class BatchSource(Protocol):
    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Batches ``start, ..., len(self) - 1`` of epoch ``epoch`` (0-based), in order."""
        ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch) alone, independent of the global RNGs."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class TensorBatches:
    """Mini-batches of in-memory tensors that share their first dimension.

    Each batch is a tuple with one slice per tensor. With ``shuffle``, every epoch draws its own
    permutation from (seed, epoch); the last, smaller batch is dropped with ``drop_last``.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("TensorBatches needs tensors with the same first dimension")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        n = self.tensors[0].shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.tensors[0].shape[0]
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for i in range(start, len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(t[index] for t in self.tensors)
