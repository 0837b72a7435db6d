"""What the solver needs to know about torch.func's transforms (vmap, grad, jvp) around it.

Under ``torch.func.vmap`` every tensor of the solve is a batched tensor whose values differ per
instance, and asking for a Python value (``bool``, ``float``, ``.tolist()``) is refused. The
solve then runs the row loop (:data:`~neuralode.core.arith.ROWS`: (R,) clocks, masked updates),
so that every instance keeps its own steps, and the only questions asked on the host, whether
some row still runs and the final counts, are asked of all instances at once by unwrapping the
batched tensor (:func:`truth`, :func:`unwrap`): one solve of the whole batch, each instance's
steps those it takes alone. Outside any transform the check is one C call per solve.
"""

from __future__ import annotations

import torch
from torch._C import _functorch
from torch.autograd import forward_ad

_VMAP = _functorch.TransformType.Vmap
_EXITED = -2
"""The level torch.func reports for a wrapper whose transform has exited."""
_JVP = _functorch.TransformType.Jvp


def under_transform() -> bool:
    """Some torch.func transform (vmap, grad, jvp, ...) is active."""
    return _functorch.peek_interpreter_stack() is not None


def under_vmap() -> bool:
    """torch.func.vmap is active (at any level)."""
    if _functorch.peek_interpreter_stack() is None:
        return False
    return any(level.key() == _VMAP for level in _functorch.get_interpreter_stack() or ())


def unwrap(x: torch.Tensor) -> torch.Tensor:
    """The plain tensor under torch.func's wrappers (every vmap instance's values, in one
    tensor whose extra dimensions are the instances)."""
    while _functorch.maybe_get_level(x) != -1:
        x = _functorch.get_unwrapped(x)
    return x


def first_instance(x: torch.Tensor) -> torch.Tensor:
    """The plain tensor of ``x``'s values in the first instance of every vmap level (its
    logical shape)."""
    while _functorch.maybe_get_level(x) != -1:
        bdim = _functorch.maybe_get_bdim(x) if _functorch.is_batchedtensor(x) else None
        x = _functorch.get_unwrapped(x)
        if bdim is not None:
            x = x.select(bdim, 0)
    return x


def alive(x: torch.Tensor | None) -> torch.Tensor | None:
    """``x`` without its outer wrappers of torch.func levels that have exited (None stays
    None). Such a wrapper stands for the tensor it wraps, but inside a later grad level (the
    Newton Jacobian's torch.func.vjp of an implicit method) it trips functorch's internal
    assert ("escaped?"). An autograd.Function's backward gets them as its saved tensors when
    torch.func.vjp's pullback runs after its transform returned (``jacrev``: under vmap)."""
    while x is not None and _functorch.maybe_get_level(x) == _EXITED:
        x = _functorch.get_unwrapped(x)
    return x


def is_wrapped(x: torch.Tensor) -> bool:
    """``x`` is a torch.func wrapper (batched or tracked by a transform)."""
    return _functorch.maybe_get_level(x) != -1


def truth(x: torch.Tensor) -> bool:
    """``bool(x)`` of a 0-d bool tensor; for a batched one, whether it holds in some instance."""
    if _functorch.maybe_get_level(x) == -1:
        return bool(x)
    return bool(unwrap(x).any())


def is_batched(x: torch.Tensor) -> bool:
    """``x`` is batched by a torch.func.vmap (at any level of its wrappers)."""
    while _functorch.maybe_get_level(x) != -1:
        if _functorch.is_batchedtensor(x):
            return True
        x = _functorch.get_unwrapped(x)
    return False


def carries_tangent(x: torch.Tensor) -> bool:
    """``x`` carries a forward-mode tangent: a dual tensor of torch.autograd.forward_ad, or of an
    enclosing torch.func.jvp (its wrapper at a jvp level is a dual tensor; jvp wraps its other
    arguments too, with none; grad's and vmap's wrappers carry none). forward_ad's tangent is
    asked of the plain tensor under the wrappers (:func:`has_dual_tangent`: a batched tensor
    refuses the question)."""
    stack = _functorch.get_interpreter_stack()
    if stack:
        levels = {level.level() for level in stack if level.key() == _JVP}
        while _functorch.maybe_get_level(x) != -1:
            level = _functorch.maybe_get_level(x)
            at_jvp = level in levels and not _functorch.is_batchedtensor(x)
            if at_jvp and forward_ad.unpack_dual(x).tangent is not None:
                return True
            x = _functorch.get_unwrapped(x)
    return has_dual_tangent(x)


def has_dual_tangent(x: torch.Tensor) -> bool:
    """The plain tensor under ``x``'s wrappers is a dual tensor of an open
    torch.autograd.forward_ad level."""
    if forward_ad._current_level < 0:
        return False
    return forward_ad.unpack_dual(unwrap(x)).tangent is not None


def differentiated_further(*tensors: torch.Tensor) -> bool:
    """In a backward pass: its result will itself be differentiated. Autograd records it and,
    below the torch.func grad level whose backward this is (if any), one of the tensors
    requires grad or carries a tangent of an enclosing grad or jvp level (vmap's batching
    alone does not count). A single torch.func.grad records every backward pass, yet nothing
    differentiates it again: no."""
    if not torch.is_grad_enabled():
        return False
    current = _functorch.maybe_current_level()
    for x in tensors:
        level = _functorch.maybe_get_level(x)
        # This backward's own level, or a level that has exited (a torch.func.vjp's pullback,
        # called after its transform returned): neither differentiates the backward again.
        own = (current is not None and level == current) or level == _EXITED
        if own and not _functorch.is_batchedtensor(x):
            x = _functorch.get_unwrapped(x)
        elif x.requires_grad:
            return True
        if _functorch.maybe_get_level(x) == -1 and x.requires_grad:
            return True
        while _functorch.maybe_get_level(x) != -1:
            exited = _functorch.maybe_get_level(x) == _EXITED
            if not (exited or _functorch.is_batchedtensor(x)):
                return True
            x = _functorch.get_unwrapped(x)
        if x.requires_grad:
            return True
    return False
