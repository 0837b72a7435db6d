"""The data source a :class:`~neuralode.paper.training.Trainer` reads, and sources over
in-memory tensors and over samplers.

A data source has ``len(source)`` batches per epoch and ``source.batches(epoch, start)``, which
yields batches ``start, start + 1, ...`` of that epoch in an order fixed by (seed, epoch) alone:
it must not draw from the global random number generators, so that a resumed run, which asks
for ``start > 0``, gets exactly the batches an uninterrupted run would have. A source whose
epochs differ in length also has ``source.epoch_length(epoch)`` (see :func:`epoch_length`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch


class BatchSource(Protocol):
    batch_size: int
    """Samples in a full batch (under data parallelism: the global batch, over all ranks)."""

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Batches ``start, ..., len(self) - 1`` of epoch ``epoch`` (0-based), in order."""
        ...


def epoch_length(source: BatchSource, epoch: int) -> int:
    """Batches in epoch ``epoch`` of ``source``: ``source.epoch_length(epoch)`` where its epochs
    differ in length, else ``len(source)``."""
    length = getattr(source, "epoch_length", None)
    return length(epoch) if length is not None else len(source)


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


class SampledBatches:
    """``steps_per_epoch`` fresh batches per epoch from ``sampler(n, rng) -> (n, ...) array``.

    Batch i of epoch e draws from ``numpy.random.default_rng([seed, e, i])``: any batch can be
    made again on its own, so a resumed run sees the batches of an uninterrupted one. Each batch
    is a 1-tuple holding a float32 tensor.
    """

    def __init__(
        self,
        sampler: Callable[[int, np.random.Generator], np.ndarray],
        batch_size: int,
        steps_per_epoch: int,
        seed: int = 0,
    ) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        self.steps_per_epoch, self.seed = steps_per_epoch, seed

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor]]:
        for i in range(start, self.steps_per_epoch):
            rng = np.random.default_rng([self.seed, epoch, i])
            yield (torch.as_tensor(self.sampler(self.batch_size, rng), dtype=torch.float32),)
