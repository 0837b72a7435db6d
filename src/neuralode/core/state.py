"""The user's state and the loop's working state.

The loop sees one 2-D block of rows, (R, N): R = 1 for a shared-step solve of the whole state,
R = B for per-sample steps. Users see their tensor of any shape (0-d included) or their tuple of
tensors. Half-precision states (float16, bfloat16) are worked on in float32: the field sees and
returns the user's dtype, the loop's arithmetic runs in float32. Complex states (complex64,
complex128) are worked on as their real view, each entry a (real, imaginary) pair of float32 or
float64 (torchdiffeq's meaning is kept: the error scale and the norm take each entry's modulus,
see :class:`~neuralode.core.controllers.Tolerance`); the field sees and returns complex tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .stats import SolverStats

State = torch.Tensor | tuple[torch.Tensor, ...]
VectorFieldFn = Callable[[torch.Tensor, State], State]

LOW_PRECISION = (torch.float16, torch.bfloat16)
COMPLEX = (torch.complex64, torch.complex128)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loop computes in for a state of ``dtype``: float32 for half precision, the
    real dtype of a complex state's entries (complex64 → float32, complex128 → float64)."""
    if dtype.is_complex:
        return dtype.to_real()
    return torch.float32 if dtype in LOW_PRECISION else dtype


class StateLayout:
    """Shapes and dtype of a state (one tensor or a tuple of tensors) and its flat form.

    Attributes:
        shapes: the parts' shapes.
        numels: the parts' sizes in the flat form (twice the entries for a complex state: its
            real view interleaves real and imaginary parts).
        size: the flat form's size.
        dtype: the user's dtype; ``working_dtype`` the flat form's; ``time_dtype`` the dtype of
            the time func gets (the real dtype of a complex state).
        is_complex: the state is complex (the flat form is its real view).
    """

    def __init__(self, y0: State) -> None:
        self.is_tuple = isinstance(y0, tuple)
        parts = y0 if isinstance(y0, tuple) else (y0,)
        self.dtype = parts[0].dtype
        self.is_complex = self.dtype.is_complex
        self.shapes = [p.shape for p in parts]
        self.numels = [p.numel() * (2 if self.is_complex else 1) for p in parts]
        self.size = sum(self.numels)
        self.device = parts[0].device
        self.working_dtype = working_dtype(self.dtype)
        self.time_dtype = self.dtype.to_real() if self.is_complex else self.dtype

    def flatten(self, state: State, rows: int | None = None) -> torch.Tensor:
        """State → tensor of shape (size,) in the working dtype, or (rows, size / rows)."""
        parts = state if self.is_tuple else (state,)
        if self.is_complex:
            parts = tuple(torch.view_as_real(part.resolve_conj()) for part in parts)
        shape = -1 if rows is None else (rows, -1)
        if self.is_tuple:
            flat = torch.cat([part.reshape(-1) for part in parts]).view(shape)
        else:
            flat = parts[0].reshape(shape)
        return flat if flat.dtype == self.working_dtype else flat.to(self.working_dtype)

    def unflatten(self, flat: torch.Tensor, cast: bool = True) -> State:
        """Tensor of shape (*lead, size) → state with each part of shape (*lead, *part_shape), in
        the user's dtype (or the working dtype, without ``cast``; complex for complex states)."""
        lead = tuple(flat.shape[:-1])
        if self.is_complex:
            pieces = flat.split(self.numels, dim=-1) if self.is_tuple else (flat,)
            parts = tuple(
                torch.view_as_complex(p.reshape(lead + tuple(s) + (2,)).contiguous())
                for p, s in zip(pieces, self.shapes, strict=True)
            )
            return parts if self.is_tuple else parts[0]
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
            if self.is_complex:  # one tolerance for both halves of an entry
                pieces[-1] = pieces[-1].repeat_interleave(2)
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
        self.time_dtype, self.device = layout.time_dtype, layout.device

    def count(self, evaluations: int) -> None:
        """Record evaluations of the field (the one writer of ``stats.nfe``; row solves count
        theirs per iteration)."""
        self.stats.nfe += evaluations

    def time(self, t: float | torch.Tensor) -> torch.Tensor:
        """The 0-d time tensor func gets for the float time t (or a 0-d float64 tensor: an
        instance's time under torch.func.vmap over t)."""
        layout = self.layout
        if torch.is_tensor(t):
            return t.to(layout.time_dtype)
        return torch.scalar_tensor(t, dtype=layout.time_dtype, device=layout.device)

    def __call__(self, t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at the time t (see :meth:`time`) for the (1, N) row y; returns a (1, N) row
        (counted)."""
        self.stats.nfe += 1
        if isinstance(t, float):  # (the shared-step clock; written out: once per evaluation)
            time = torch.scalar_tensor(t, dtype=self.time_dtype, device=self.device)
        else:
            time = self.time(t)
        if self.is_row:
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
            return self.evaluate(t[0].to(layout.time_dtype), y).view(1, -1)
        rows = y.shape[0]
        t_shape = (rows,) + (1,) * (len(self.shape) - 1)
        time = t.to(layout.time_dtype).reshape(t_shape)
        if layout.is_complex:
            return self.evaluate(time, y).view(rows, -1)
        out = self.func(time, y.to(layout.dtype).view(self.shape))
        return out.reshape(rows, -1).to(y.dtype)
