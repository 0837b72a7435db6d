"""NeuralODE: an nn.Module that maps h(0) to h(T) by solving dh/dt = f(t, h)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..gradients import GradientMode, gradient_mode
from ..odeint import odeint
from ..stats import SolverStats


class NeuralODE(nn.Module):
    """An ODE block: ``forward(h0)`` returns h(T) (or the trajectory at ``times``).

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, h)``.
        t_span: (t0, T), the interval of integration (default (0, 1)).
        method: solver (default ``"dopri5"``); ``rtol``/``atol`` its tolerances.
        options: solver options (see :func:`neuralode.odeint`).
        gradient: ``"backprop"``, ``"adjoint"`` or ``"checkpoint"`` (or a configured mode).

    Attributes:
        stats: the :class:`SolverStats` of the last forward pass (its backward fields fill in
            after the backward pass): ``nfe_forward`` and ``nfe_backward`` read them.
    """

    def __init__(
        self,
        func: nn.Module,
        t_span: tuple[float, float] = (0.0, 1.0),
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        options: Mapping[str, Any] | None = None,
        gradient: str | GradientMode = "backprop",
    ) -> None:
        super().__init__()
        self.func = func
        self.register_buffer("t_span", torch.tensor(t_span, dtype=torch.float64), persistent=False)
        self.method, self.rtol, self.atol = method, rtol, atol
        self.options = dict(options or {})
        self.gradient = gradient_mode(gradient)
        self.stats = SolverStats()

    def forward(self, h0: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """h0: (batch, ...) → h(T) of the same shape, or (len(times), batch, ...) if ``times``."""
        t = self.t_span if times is None else times
        solution, self.stats = odeint(
            self.func,
            h0,
            t.to(h0.dtype),
            rtol=self.rtol,
            atol=self.atol,
            method=self.method,
            options=self.options,
            gradient=self.gradient,
            return_stats=True,
        )
        return solution if times is not None else solution[-1]

    @property
    def nfe_forward(self) -> int:
        return self.stats.nfe

    @property
    def nfe_backward(self) -> int:
        return self.stats.backward_nfe

    def extra_repr(self) -> str:
        t0, t1 = self.t_span.tolist()
        return (
            f"t_span=({t0:g}, {t1:g}), method={self.method!r}, rtol={self.rtol:g}, "
            f"atol={self.atol:g}, gradient={type(self.gradient).__name__}"
        )
