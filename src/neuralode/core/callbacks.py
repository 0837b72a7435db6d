"""torchdiffeq's step callbacks: methods of ``func`` that the loop calls around each step.

``func.callback_step(t0, y0, dt)`` before each attempted step, and, for adaptive methods,
``func.callback_accept_step(t0, y0, dt)`` or ``func.callback_reject_step(t0, y0, dt)`` after it;
t0 and dt are 0-d tensors, y0 the state at t0 (shaped like y0 for a tensor state, flat for a
tuple state, as torchdiffeq passes it). The adjoint's backward solve calls the ``*_adjoint``
variants with its augmented state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .state import StateLayout

NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")

Callback = Callable[[torch.Tensor, Any, torch.Tensor], Any]


@dataclass(frozen=True)
class Callbacks:
    """The callbacks found on a vector field (None where it has none), and how to show them the
    state."""

    step: Callback | None
    accept: Callback | None
    reject: Callback | None
    layout: StateLayout

    @classmethod
    def find(cls, func: Any, layout: StateLayout, adjoint: bool = False) -> Callbacks | None:
        """The callbacks of ``func`` (the ``*_adjoint`` ones for the adjoint's backward solve),
        or None if it has none."""
        suffix = "_adjoint" if adjoint else ""
        # Looked up on the class (once per class) and the instance's own attributes: a miss
        # raises and catches an exception, and nn.Module's __getattr__ another (every solve
        # would pay for them).
        own = getattr(func, "__dict__", {})
        on_class = _on_class(type(func), suffix)
        if not on_class and own.keys().isdisjoint(name + suffix for name in NAMES):
            return None
        found = [
            getattr(func, name + suffix) if name + suffix in on_class else own.get(name + suffix)
            for name in NAMES
        ]
        if not any(callable(c) for c in found):
            return None
        step, accept, reject = (c if callable(c) else None for c in found)
        return cls(step, accept, reject, layout)

    def _arguments(self, t: float, y: torch.Tensor, step: float) -> tuple[Any, ...]:
        layout = self.layout
        shown = y.reshape(-1) if layout.is_tuple else layout.unflatten(y.reshape(-1))
        dtype, device = layout.time_dtype, layout.device
        return (torch.tensor(t, dtype=dtype, device=device), shown,
                torch.tensor(step, dtype=dtype, device=device))  # fmt: skip

    def before(self, t: float, y: torch.Tensor, step: float) -> None:
        """Before an attempted step of size ``step`` from (t, y)."""
        if self.step is not None:
            self.step(*self._arguments(t, y, step))

    def after(self, accepted: bool, t: float, y: torch.Tensor, step: float) -> None:
        """After the controller's verdict on that step."""
        callback = self.accept if accepted else self.reject
        if callback is not None:
            callback(*self._arguments(t, y, step))


@functools.lru_cache(maxsize=256)
def _on_class(cls: type, suffix: str) -> frozenset[str]:
    """The callback names (with ``suffix``) that ``cls`` defines."""
    return frozenset(name + suffix for name in NAMES if hasattr(cls, name + suffix))
