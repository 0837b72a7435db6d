"""The user's state and the loop's working state.

The loop sees one 2-D block of rows, (R, N): R = 1 for a shared-step solve of the whole state,
R = B for per-sample steps. Users see their tensor of any shape (0-d included) or their tuple of
tensors. Half-precision states (float16, bfloat16) are worked on in float32: the field sees and
returns the user's dtype, the loop's arithmetic runs in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .stats import SolverStats

State = torch.Tensor | tuple[torch.Tensor, ...]
VectorFieldFn = Callable[[torch.Tensor, State], State]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loop computes in for a state of ``dtype``: float32 for half precision."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


class StateLayout:
    """Shapes and dtype of a state (one tensor or a tuple of tensors) and its flat form."""

    def __init__(self, y0: State) -> None:
        self.is_tuple = isinstance(y0, tuple)
        parts = y0 if isinstance(y0, tuple) else (y0,)
        self.shapes = [p.shape for p in parts]
        self.numels = [p.numel() for p in parts]
        self.size = sum(self.numels)
        self.dtype = parts[0].dtype
        self.device = parts[0].device
        self.working_dtype = working_dtype(self.dtype)

    def flatten(self, state: State) -> torch.Tensor:
        """State → tensor of shape (size,) in the working dtype."""
        if self.is_tuple:
            flat = torch.cat([part.reshape(-1) for part in state])
        else:
            flat = state.reshape(-1)
        return flat if flat.dtype == self.working_dtype else flat.to(self.working_dtype)

    def unflatten(self, flat: torch.Tensor, cast: bool = True) -> State:
        """Tensor of shape (*lead, size) → state with each part of shape (*lead, *part_shape), in
        the user's dtype (or the working dtype, without ``cast``)."""
        lead = tuple(flat.shape[:-1])
        if cast and flat.dtype != self.dtype:
            flat = flat.to(self.dtype)
        if not self.is_tuple:
            return flat.reshape(lead + tuple(self.shapes[0]))
        parts = flat.split(self.numels, dim=-1)
        return tuple(p.reshape(lead + tuple(s)) for p, s in zip(parts, self.shapes, strict=True))

    def broadcast(self, value: float | torch.Tensor, name: str) -> torch.Tensor:
        """A tolerance given as a float or as tensors broadcastable to the state → flat tensor in
        the working dtype (0-d when it is one number for every entry). Raises ValueError when
        it does not broadcast."""
        dtype, device = self.working_dtype, self.device
        if not torch.is_tensor(value) and not isinstance(value, (tuple, list)):
            return torch.scalar_tensor(float(value), dtype=dtype, device=device)
        values = value if self.is_tuple and isinstance(value, (tuple, list)) else None
        pieces = []
        for index, shape in enumerate(self.shapes):
            piece = torch.as_tensor(
                values[index] if values is not None else value, dtype=dtype, device=device
            )
            try:
                pieces.append(piece.broadcast_to(shape).reshape(-1))
            except RuntimeError:
                raise ValueError(
                    f"{name} of shape {tuple(piece.shape)} does not broadcast to the state's shape "
                    f"{tuple(shape)}"
                ) from None
        return torch.cat(pieces)


class FlatField:
    """``func(t, y)`` as the loop sees it: flat rows in, flat rows out, evaluations counted.

    Args:
        func: the user's vector field, called with a time tensor and the state as the user
            shaped it; returns dy/dt of the same shape.
        layout: the state's layout.
        stats: the counters to update (``nfe``).
    """

    def __init__(self, func: VectorFieldFn, layout: StateLayout, stats: SolverStats) -> None:
        self.func = func
        self.layout = layout
        self.stats = stats
        shape = tuple(layout.shapes[0])
        # A single-tensor state in the working dtype needs no cast and, shaped (1, N), no view:
        # it already is a row (batch-1 fields).
        self.plain = not layout.is_tuple and layout.dtype == layout.working_dtype
        self.is_row = self.plain and len(shape) == 2 and shape[0] == 1
        self.shape = shape

    def count(self, evaluations: int) -> None:
        """Record evaluations of the field (the one writer of ``stats.nfe``; row solves count
        theirs per iteration)."""
        self.stats.nfe += evaluations

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at the float time t for the (1, N) row y; returns a (1, N) row (counted)."""
        self.stats.nfe += 1
        time = torch.scalar_tensor(t, dtype=self.layout.dtype, device=self.layout.device)
        if self.is_row and y.dim() == 2:
            return self.func(time, y)
        if self.plain:
            return self.func(time, y.view(self.shape)).reshape(1, -1)
        return self.evaluate(time, y).view(1, -1)

    def evaluate(self, time: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at the 0-d ``time`` for the flat state y, as a flat (N,) tensor, uncounted (for
        Jacobians and vector-Jacobian products, whose cost is counted apart)."""
        return self.layout.flatten(self.func(time, self.layout.unflatten(y.reshape(-1))))

    def rows(self, t: torch.Tensor, y: torch.Tensor, per_sample: bool) -> torch.Tensor:
        """dy/dt for rows, uncounted (the row loop counts its iterations): t of shape (R,)
        float64, y of shape (R, N). Per sample, the field gets the (B, ...) state and t as a
        (B, 1, ..., 1) tensor; otherwise the one row is the whole state and t is 0-d."""
        layout = self.layout
        if not per_sample:
            return self.evaluate(t[0].to(layout.dtype), y).view(1, -1)
        rows = y.shape[0]
        t_shape = (rows,) + (1,) * (len(self.shape) - 1)
        out = self.func(t.to(layout.dtype).reshape(t_shape), y.to(layout.dtype).view(self.shape))
        return out.reshape(rows, -1).to(y.dtype)
