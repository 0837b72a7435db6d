"""Data-parallel training with torch.distributed: joining the process group, sharding a global
batch, and reducing per-step statistics over the ranks.

Launch any ``train`` command with ``torchrun``: it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`join_process_group` reads them
(backend NCCL on CUDA, gloo on CPU). Without them the process runs alone (world size 1).

Every rank reads the same *global* batch (the data order is a function of seed and epoch) and
trains on its own contiguous slice of it (:meth:`Distributed.shard`): together the ranks see each
global batch once, so a run at any world size follows the same data, and a checkpoint counts
global batches, which is what lets it resume at another world size. The loss runs inside
``DistributedDataParallel`` (:class:`DataParallelLoss`), which averages the gradients over the
ranks and counts the bytes each rank all-reduces.
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from .device import batch_size, map_tensors, resolve_device


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel job; the default is a process on its own.

    Attributes:
        rank: 0 ... world_size - 1; rank 0 prints, logs and writes every file.
        world_size: number of processes training together.
        local_rank: the rank among the processes of this host (picks the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world_size > 1

    def check_batch_size(self, global_batch_size: int) -> None:
        """Raise ValueError unless the global batch splits evenly over the ranks."""
        if global_batch_size % self.world_size:
            raise ValueError(
                f"the global batch size {global_batch_size} is not divisible by the world size "
                f"{self.world_size}: pick a batch size that is a multiple of {self.world_size} "
                "(each rank trains on batch_size / world_size samples)"
            )

    def shard(self, batch: Any) -> tuple[Any, float]:
        """This rank's slice of a global ``batch``, and the weight of its mean loss.

        Tensors whose leading dimension is the batch's sample count are cut into ``world_size``
        contiguous slices (sizes differ by at most one, e.g. in a smaller last batch); other
        values pass through whole. The weight, ``n_rank * world_size / n_global``, makes the
        average of the ranks' weighted mean losses (what DDP's gradient averaging computes)
        the mean over the global batch.

        Raises:
            ValueError: the batch has fewer samples than there are ranks.
        """
        n = batch_size(batch)
        if not self.active:
            return batch, 1.0
        if n < self.world_size:
            raise ValueError(
                f"a batch of {n} samples cannot be split over {self.world_size} ranks: use more "
                "data, a larger batch or fewer processes"
            )

        def cut(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.dim() == 0 or tensor.shape[0] != n:
                return tensor
            return tensor.tensor_split(self.world_size)[self.rank]

        local = map_tensors(batch, cut)
        return local, batch_size(local) * self.world_size / n

    def gather_rows(self, values: Sequence[float]) -> torch.Tensor:
        """Every rank's ``values`` as a (world_size, len(values)) float64 CPU tensor."""
        row = torch.tensor(list(values), dtype=torch.float64)
        if not self.active:
            return row[None]
        device = _collective_device()
        rows = [torch.empty_like(row, device=device) for _ in range(self.world_size)]
        dist.all_gather(rows, row.to(device))
        return torch.stack(rows).cpu()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable; tensors travel as CPU tensors) on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def check_same(self, what: str, values: Mapping[str, Any]) -> None:
        """Raise ValueError on every rank when the ranks disagree on ``values`` (e.g. the
        command-line options), naming the first differing key."""
        if not self.active:
            return
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, dict(values))
        for rank, other in enumerate(gathered):
            for key in sorted(set(other) | set(gathered[0])):
                if other.get(key) != gathered[0].get(key):
                    raise ValueError(
                        f"the ranks were launched with different {what}: {key} is "
                        f"{gathered[0].get(key)!r} on rank 0 but {other.get(key)!r} on rank "
                        f"{rank}; launch every rank with the same command"
                    )


class DataParallelLoss:
    """``loss_fn(model, batch) -> (loss, metrics)`` as this rank computes it: as is on a process
    alone; with several ranks inside ``DistributedDataParallel``, whose backward pass averages
    the gradients over the ranks, counting the gradient bytes this rank all-reduces.

    DDP wraps the whole loss (a module whose forward calls ``loss_fn``), not the model, so that
    the loss may call any of the model's methods, not only its forward.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Any], Any],
        distributed: Distributed,
        device: torch.device,
    ) -> None:
        self._counter = [0]
        self._loss: nn.Module = _LossModule(model, loss_fn)
        if distributed.active:
            device_ids = [device.index] if device.type == "cuda" else None
            self._loss = DistributedDataParallel(self._loss, device_ids=device_ids)
            self._loss.register_comm_hook(self._counter, _counting_allreduce)

    def __call__(self, batch: Any) -> Any:
        """``loss_fn(model, batch)``; restarts the count of :attr:`gradient_bytes`."""
        self._counter[0] = 0
        return self._loss(batch)

    @property
    def gradient_bytes(self) -> int:
        """Gradient bytes this rank all-reduced since the last call (0 on a process alone)."""
        return self._counter[0]


# DDP checks the hook's annotations and rejects the strings of postponed evaluation: none here
def _counting_allreduce(counter, bucket):
    buffer = bucket.buffer()
    counter[0] += buffer.numel() * buffer.element_size()
    return default_hooks.allreduce_hook(None, bucket)


class _LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module's forward."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def join_process_group(
    device_spec: str = "auto", timeout_s: float = 1800.0
) -> tuple[Distributed, torch.device]:
    """This process's :class:`Distributed` and device, joining the default process group when
    the environment (``torchrun``) says there are several processes.

    The device is ``resolve_device(device_spec)``; under ``torchrun`` a CUDA device without an
    index becomes ``cuda:LOCAL_RANK``. The backend is NCCL for CUDA devices and gloo for CPU.
    A collective that waits longer than ``timeout_s`` seconds for a rank fails with an error
    instead of hanging. End with :func:`leave_process_group`; after an error the group is
    destroyed when the interpreter exits.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), resolve_device(device_spec)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(seconds=timeout_s),
        )
        atexit.register(_destroy_process_group)
    return Distributed(rank, world_size, local_rank), device


def leave_process_group() -> None:
    """Wait for every rank, then destroy the default process group (a no-op without one).

    Call it once training is over, with every model wrapped in ``DistributedDataParallel``
    released: a rank that exits first, or a group destroyed while a DDP reducer still holds
    work on it, can abort the other ranks at exit.
    """
    if dist.is_initialized():
        gc.collect()  # DDP's reducer and its communication hooks live in reference cycles
        dist.barrier()
        dist.destroy_process_group()


def _destroy_process_group() -> None:
    """At interpreter exit (after an error, say): destroy the group without waiting for
    anyone."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors must be for the default group's collectives (CUDA for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
