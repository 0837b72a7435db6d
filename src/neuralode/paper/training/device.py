"""Devices: parsing a ``--device`` argument, moving batches, and counting a batch's samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch


def resolve_device(spec: str) -> torch.device:
    """The device named by ``spec``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: a CUDA device was asked for and none (or not that index) is available.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA devices"
            )
    return device


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``batch`` with ``fn`` applied to every tensor: a tensor, or tuples (named too), lists and
    dicts of them, nested; other values pass through unchanged."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {key: map_tensors(value, fn) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(map_tensors(value, fn) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(value, fn) for value in batch)
    return batch


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (see :func:`map_tensors`)."""
    return map_tensors(batch, lambda tensor: tensor.to(device, non_blocking=True))


def batch_size(batch: Any) -> int:
    """Samples in ``batch``: the leading dimension of its first tensor (depth first).

    Raises:
        ValueError: the batch holds no tensor with at least one dimension.
    """
    tensor = _first_tensor(batch)
    if tensor is None:
        raise ValueError("cannot count the samples of a batch without a tensor of dimension >= 1")
    return tensor.shape[0]


def _first_tensor(batch: Any) -> torch.Tensor | None:
    """The first tensor with at least one dimension in ``batch`` (depth first), or None."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.dim() > 0 else None
    if isinstance(batch, Mapping):
        items = list(batch.values())
    elif isinstance(batch, (tuple, list)):
        items = list(batch)
    else:
        return None
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None
