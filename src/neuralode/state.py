"""Flat states: the step loop sees one 1-D tensor; users see their tensor or tuple of tensors."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .stats import SolverStats

State = torch.Tensor | tuple[torch.Tensor, ...]
VectorFieldFn = Callable[[torch.Tensor, State], State]


class StateLayout:
    """Shapes of a state (one tensor or a tuple of tensors) and its flat 1-D form."""

    def __init__(self, y0: State) -> None:
        self.is_tuple = isinstance(y0, tuple)
        parts = y0 if isinstance(y0, tuple) else (y0,)
        self.shapes = [p.shape for p in parts]
        self.numels = [p.numel() for p in parts]
        self.size = sum(self.numels)

    def flatten(self, state: State) -> torch.Tensor:
        """State → tensor of shape (size,)."""
        if self.is_tuple:
            return torch.cat([part.reshape(-1) for part in state])
        return state.reshape(-1)

    def unflatten(self, flat: torch.Tensor) -> State:
        """Tensor of shape (*lead, size) → state with each part of shape (*lead, *part_shape)."""
        lead = flat.shape[:-1]
        if not self.is_tuple:
            return flat.view(*lead, *self.shapes[0])
        parts = flat.split(self.numels, dim=-1)
        return tuple(p.reshape(*lead, *s) for p, s in zip(parts, self.shapes, strict=True))

    def broadcast(
        self, value: float | torch.Tensor, name: str, like: torch.Tensor, factor: float = 1.0
    ) -> torch.Tensor:
        """A tolerance given as a float or as tensors broadcastable to the state, times
        ``factor`` → flat tensor (0-d when it is one number for every entry)."""
        if not torch.is_tensor(value) and not isinstance(value, (tuple, list)):
            return torch.scalar_tensor(float(value) * factor, dtype=like.dtype, device=like.device)
        values = value if self.is_tuple and isinstance(value, (tuple, list)) else None
        pieces = []
        for index, shape in enumerate(self.shapes):
            piece = torch.as_tensor(
                values[index] if values is not None else value, dtype=like.dtype, device=like.device
            )
            try:
                pieces.append(piece.broadcast_to(shape).reshape(-1))
            except RuntimeError:
                raise ValueError(
                    f"{name} of shape {tuple(piece.shape)} does not broadcast to the state's shape "
                    f"{tuple(shape)}"
                ) from None
        return torch.cat(pieces).mul_(factor)


class FlatVectorField:
    """``func(t, y)`` seen by the loop: float time, flat state, counted evaluations.

    Args:
        func: the user's vector field, called with a 0-d time tensor and the state as the user
            shaped it; returns dy/dt of the same shape.
        layout: the state's layout.
        like: a tensor with the state's dtype and device (times are passed in that dtype).
        stats: the counters to update (``nfe``).
    """

    def __init__(
        self, func: VectorFieldFn, layout: StateLayout, like: torch.Tensor, stats: SolverStats
    ) -> None:
        self.func = func
        self.layout = layout
        self.dims = tuple(layout.shapes[0])  # ints: view(*dims) dispatches faster than a Size
        # A state shaped (1, N) already is a row: no views in and out (batch-1 fields).
        self.is_row = not layout.is_tuple and len(self.dims) == 2 and self.dims[0] == 1
        self.dtype = like.dtype
        self.device = like.device
        self.stats = stats

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at time t for the flat state y, (N,) or (1, N); returns a (1, N) row."""
        self.stats.nfe += 1
        time = torch.scalar_tensor(t, dtype=self.dtype, device=self.device)
        if self.layout.is_tuple:
            return self.evaluate(time, y).view(1, -1)
        if self.is_row and y.dim() == 2:
            return self.func(time, y)
        return self.func(time, y.view(*self.dims)).reshape(1, -1)

    def evaluate(self, time: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at the 0-d ``time`` for the flat state y, as a flat (N,) tensor, uncounted (for
        Jacobians and vector-Jacobian products, whose cost is counted apart)."""
        return self.layout.flatten(self.func(time, self.layout.unflatten(y.reshape(-1))))


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root mean square of all entries (0-d tensor)."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))
