"""What modules that solve ODEs share: a solver configuration and the statistics of the last
solve."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..core.methods import DEFAULT_METHOD
from ..core.state import State
from ..core.stats import SolverStats
from ..gradients import Adjoint, GradientMode, gradient_mode
from ..odeint import odeint


@dataclass(frozen=True)
class SolverConfig:
    """How a module solves its ODE: the arguments of :func:`neuralode.odeint` but the field,
    the initial state and the times.

    Attributes:
        method: solver name (default ``"dopri5"``).
        rtol, atol: tolerances of adaptive methods.
        options: solver options (``step_size``, ``max_num_steps``, ...).
        gradient: ``"backprop"``, ``"adjoint"`` or ``"checkpoint"``, or a configured mode.
    """

    method: str = DEFAULT_METHOD
    rtol: float = 1e-3
    atol: float = 1e-3
    options: Mapping[str, Any] = field(default_factory=dict)
    gradient: str | GradientMode = "backprop"

    def __post_init__(self) -> None:
        gradient_mode(self.gradient)  # an unknown name fails here, with the valid ones listed

    def solve(
        self,
        func: Callable[[torch.Tensor, State], State],
        y0: State,
        t: torch.Tensor,
        inputs: Sequence[torch.Tensor] = (),
    ) -> tuple[State, SolverStats]:
        """The solution at ``t`` (leading dimension len(t)) and the solve's statistics.

        ``inputs``: tensors other than its parameters that ``func`` depends on (a condition,
        say); the adjoint method differentiates with respect to them too. ``func`` must then be
        an ``nn.Module``.
        """
        mode = gradient_mode(self.gradient)
        if isinstance(mode, Adjoint) and any(x.requires_grad for x in inputs):
            own = mode.params if mode.params is not None else tuple(func.parameters())
            mode = replace(mode, params=(*own, *inputs))
        solution, stats = odeint(
            func,
            y0,
            t,
            rtol=self.rtol,
            atol=self.atol,
            method=self.method,
            options=dict(self.options),
            gradient=mode,
            return_stats=True,
        )
        return solution, stats

    def describe(self) -> str:
        """A one-line summary, for ``extra_repr``."""
        gradient = self.gradient if isinstance(self.gradient, str) else type(self.gradient).__name__
        options = f", options={dict(self.options)}" if self.options else ""
        return (
            f"method={self.method!r}, rtol={self.rtol:g}, atol={self.atol:g}{options}, "
            f"gradient={gradient}"
        )


class ODEModule(nn.Module):
    """Base of modules that run ODE solves (:class:`NeuralODE`, the CNF): ``solve`` runs one
    with the module's :class:`SolverConfig` and keeps its statistics in ``stats``, which the
    trainer logs as ``nfe_forward`` / ``nfe_backward``.

    Attributes:
        solver: the :class:`SolverConfig`.
        stats: the :class:`SolverStats` of the last solve (its backward fields fill in after the
            backward pass).
    """

    def __init__(self, solver: SolverConfig | None = None) -> None:
        super().__init__()
        self.solver = solver if solver is not None else SolverConfig()
        self.stats = SolverStats()

    def solve(
        self,
        func: Callable[[torch.Tensor, State], State],
        y0: State,
        t: torch.Tensor,
        inputs: Sequence[torch.Tensor] = (),
    ) -> State:
        """The solution at ``t``; the solve's statistics go to ``stats``. ``inputs``: see
        :meth:`SolverConfig.solve`."""
        solution, self.stats = self.solver.solve(func, y0, t, inputs)
        return solution

    @property
    def nfe_forward(self) -> int:
        """Field evaluations of the last solve."""
        return self.stats.nfe

    @property
    def nfe_backward(self) -> int:
        """Field evaluations of the last solve's backward pass (adjoint or recomputation)."""
        return self.stats.backward_nfe
