"""NeuralODE: an nn.Module that maps h(0) to h(T) by solving dh/dt = f(t, h)."""

from __future__ import annotations

import torch
from torch import nn

from .solve import ODEModule, SolverConfig


class NeuralODE(ODEModule):
    """An ODE block: ``forward(h0)`` returns h(T) (or the trajectory at ``times``).

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, h)``.
        t_span: (t0, T), the interval of integration (default (0, 1)).
        solver: method, tolerances, options and gradient mode (default: dopri5 at
            rtol = atol = 1e-3, backpropagation).

    Attributes:
        stats: the :class:`SolverStats` of the last forward pass (its backward fields fill in
            after the backward pass): ``nfe_forward`` and ``nfe_backward`` read them.
    """

    def __init__(
        self,
        func: nn.Module,
        t_span: tuple[float, float] = (0.0, 1.0),
        solver: SolverConfig | None = None,
    ) -> None:
        super().__init__(solver)
        self.func = func
        self.register_buffer("t_span", torch.tensor(t_span, dtype=torch.float64), persistent=False)

    def forward(self, h0: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """h0: (batch, ...) → h(T) of the same shape, or (len(times), batch, ...) if ``times``."""
        t = self.t_span if times is None else times
        solution = self.solve(self.func, h0, t.to(h0.dtype))
        return solution if times is not None else solution[-1]

    def extra_repr(self) -> str:
        t0, t1 = self.t_span.tolist()
        return f"t_span=({t0:g}, {t1:g}), {self.solver.describe()}"
