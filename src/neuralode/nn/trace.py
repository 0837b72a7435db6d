"""Traces of the Jacobian ∂f/∂z of a vector field, for the instantaneous change of variables.

All functions assume z of shape (batch, d) and that row b of f depends on row b of z only (no
batch statistics in the field). :func:`exact_trace` and :func:`hutchinson_trace` take
``f_out = f(z)`` computed from ``z`` with autograd recording; with ``create_graph=True`` (the
default) their results can be differentiated again, so a loss built on them trains the field.
:func:`vector_jacobian_products` takes the field itself, for use inside ODE dynamics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NOISES = ("gaussian", "rademacher")


def _batched_vjps(
    f_out: torch.Tensor, z: torch.Tensor, vectors: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """vᵀ ∂f/∂z for every v in ``vectors`` (k, batch, d), in one batched backward: (k, batch, d).
    A single vector skips the batching (vmap), about a third of a small field's VJP time."""
    if len(vectors) == 1:
        return torch.autograd.grad(f_out, z, vectors[0], create_graph=create_graph)[0][None]
    grads = torch.autograd.grad(f_out, z, vectors, create_graph=create_graph, is_grads_batched=True)
    return grads[0]


def basis_vectors(like: torch.Tensor) -> torch.Tensor:
    """The d basis vectors for every row of ``like`` (batch, d): (d, batch, d), [i, b] = e_i."""
    d = like.shape[-1]
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    return eye[:, None, :].expand(d, *like.shape)


def batch_jacobian(f_out: torch.Tensor, z: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """The per-sample Jacobians J[b, i, j] = ∂f_i/∂z_j: (batch, d, d), by one batched
    vector-Jacobian product with the d basis vectors (no Python loop over d)."""
    return _batched_vjps(f_out, z, basis_vectors(f_out), create_graph).transpose(0, 1)


def exact_trace(f_out: torch.Tensor, z: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """tr(∂f/∂z) = Σ_i ∂f_i/∂z_i per sample: (batch,)."""
    return batch_jacobian(f_out, z, create_graph).diagonal(dim1=-2, dim2=-1).sum(-1)


def hutchinson_trace(
    f_out: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool = True
) -> torch.Tensor:
    """Hutchinson's estimate εᵀ (∂f/∂z) ε per sample, ε = ``noise`` (batch, d): (batch,).

    Unbiased when ε has zero mean and identity covariance (see :func:`sample_noise`); one
    vector-Jacobian product. Draw ε once per solve and hold it fixed during the solve.
    """
    return (_batched_vjps(f_out, z, noise[None], create_graph)[0] * noise).sum(-1)


def vector_jacobian_products(
    func: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, vectors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """f = func(z) (batch, d) and vᵀ ∂f/∂z for every v in ``vectors`` (k, batch, d): (k, batch, d).

    Both keep a graph (to z and func's parameters) exactly when autograd is recording, and are
    computed under ``torch.no_grad()`` too. When autograd records and z does not require grad,
    the products come from ``torch.func.vjp``, which leaves z out of the recorded graph.
    ``torch.func`` refuses saved-tensor hooks, so inside non-reentrant checkpointing z must
    require grad.
    """
    if torch.is_grad_enabled() and not z.requires_grad:
        f_out, vjp = torch.func.vjp(func, z)
        return f_out, torch.func.vmap(vjp)(vectors)[0]
    recording = torch.is_grad_enabled()
    with torch.enable_grad():
        z = z if recording else z.detach().requires_grad_(True)
        f_out = func(z)
        products = _batched_vjps(f_out, z, vectors, create_graph=recording)
    return (f_out, products) if recording else (f_out.detach(), products)


def sample_noise(like: torch.Tensor, kind: str) -> torch.Tensor:
    """Probe vectors of ``like``'s shape, dtype and device: ``"gaussian"`` (ε ~ N(0, I)) or
    ``"rademacher"`` (entries ±1 with probability 1/2)."""
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 2).mul_(2).sub_(1)
    raise ValueError(f"unknown noise {kind!r}; valid noises are: {', '.join(NOISES)}")
