"""NeuralODE: an nn.Module that maps h(0) to h(T) by solving dh/dt = f(t, h), optionally with
zero channels appended to the state (augmentation) and an input passed to the field at every
evaluation (conditioning)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .solve import ODEModule, SolverConfig

AugmentOutput = Literal["keep", "drop"]


class NeuralODE(ODEModule):
    """An ODE block: ``forward(h0)`` returns h(T) (or the trajectory at ``times``).

    The general form h(0) = [h0, 0], dh/dt = f(t, h, c), out = h(T):

    - ``augment_dim = k`` appends k zero channels to the state along dimension 1 (features of
      a (batch, d) vector, channels of a (batch, C, H, W) map): the flow runs in d + k
      dimensions, where trajectories can pass each other (Augmented Neural ODEs, Dupont et al.
      2019). ``augment_output`` says what the head gets: ``"keep"`` the whole (batch, d + k,
      ...) state, ``"drop"`` its first d channels.
    - ``forward(h0, condition=x)`` calls the field as ``func(t, h, c)`` with c = x, or
      c = ``condition_embedding(x)`` (computed once per forward), at every evaluation
      ("data-controlled" Neural ODEs, Massaroli et al. 2020). Gradients reach x and the
      embedding in every gradient mode.

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, h)``, or ``func(t, h, c)``
            when a condition is given; h has d + k channels.
        t_span: (t0, T), the interval of integration (default (0, 1)).
        solver: method, tolerances, options and gradient mode (default: dopri5 at
            rtol = atol = 1e-3, backpropagation).
        augment_dim: k >= 0 zero channels appended to the state.
        augment_output: ``"keep"`` or ``"drop"`` the augmented channels of the output.
        condition_embedding: optional module applied to the condition before the solve.

    Attributes:
        stats: the :class:`SolverStats` of the last forward pass (its backward fields fill in
            after the backward pass): ``nfe_forward`` and ``nfe_backward`` read them.
    """

    def __init__(
        self,
        func: nn.Module,
        t_span: tuple[float, float] = (0.0, 1.0),
        solver: SolverConfig | None = None,
        *,
        augment_dim: int = 0,
        augment_output: AugmentOutput = "keep",
        condition_embedding: nn.Module | None = None,
    ) -> None:
        super().__init__(solver)
        if augment_dim < 0:
            raise ValueError(f"augment_dim must be >= 0, got {augment_dim}")
        if augment_output not in ("keep", "drop"):
            raise ValueError(f"augment_output must be 'keep' or 'drop', not {augment_output!r}")
        self.func = func
        self.augment_dim, self.augment_output = augment_dim, augment_output
        self.condition_embedding = condition_embedding
        self.register_buffer("t_span", torch.tensor(t_span, dtype=torch.float64), persistent=False)

    def forward(
        self,
        h0: torch.Tensor,
        times: torch.Tensor | None = None,
        *,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """h0: (batch, d, ...) → h(T): (batch, d + k, ...), or (batch, d, ...) when the
        augmented channels are dropped; with ``times``, the states at those times stacked
        first: (len(times), batch, ...). ``condition``: any tensor ``func`` (after the
        embedding) accepts as its third argument."""
        t = self.t_span if times is None else times
        state = self.augment(h0)
        if condition is None:
            solution = self.solve(self.func, state, t.to(h0.dtype))
        else:
            if self.condition_embedding is not None:
                condition = self.condition_embedding(condition)
            field = ConditionedField(self.func, condition)
            solution = self.solve(field, state, t.to(h0.dtype), inputs=(condition,))
        if self.augment_dim and self.augment_output == "drop":
            solution = solution[:, :, : h0.shape[1]]  # (len(t), batch, channels, ...)
        return solution if times is not None else solution[-1]

    def augment(self, h0: torch.Tensor) -> torch.Tensor:
        """h0 (batch, d, ...) with ``augment_dim`` zero channels appended: (batch, d + k, ...)."""
        if not self.augment_dim:
            return h0
        zeros = h0.new_zeros(h0.shape[0], self.augment_dim, *h0.shape[2:])
        return torch.cat([h0, zeros], dim=1)

    def extra_repr(self) -> str:
        t0, t1 = self.t_span.tolist()
        augment = (
            f", augment_dim={self.augment_dim} ({self.augment_output})" if self.augment_dim else ""
        )
        return f"t_span=({t0:g}, {t1:g}){augment}, {self.solver.describe()}"


class ConditionedField(nn.Module):
    """``func(t, h, condition)`` as a field of (t, h): its parameters are ``func``'s, and the
    condition is held for the duration of one solve."""

    def __init__(self, func: nn.Module, condition: torch.Tensor) -> None:
        super().__init__()
        self.func, self.condition = func, condition

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.func(t, h, self.condition)
