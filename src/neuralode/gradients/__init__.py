"""How a solve is differentiated: three gradient modes, picked by one argument.

- :class:`Backprop`: autograd through every operation of the solver. The exact gradient of the
  discrete solve; memory grows with the number of steps.
- :class:`~neuralode.gradients.adjoint.Adjoint`: the adjoint sensitivity method (Chen et al.
  2018). The forward solve keeps no graph; the backward pass solves the augmented ODE
  [y, a, ∂L/∂θ] from the last time to the first. Memory is O(1) in the number of steps; the
  gradient is exact up to the solver's error.
- :class:`~neuralode.gradients.checkpoint.Checkpointed`: the exact gradient of the discrete
  solve, like Backprop, with memory bounded by segments of ``every`` steps, each recomputed
  during the backward pass.

Gradients with respect to the output times are attached by :mod:`neuralode.gradients.times`
whatever the mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..core.config import Problem
from ..core.execution import integrate
from ..errors import ODEInputError
from .adjoint import Adjoint
from .checkpoint import Checkpointed


class GradientMode(Protocol):
    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        """States at ``problem.times`` from the flat ``y0``: shape (len(times), N)."""
        ...


@dataclass(frozen=True)
class Backprop:
    """Backpropagate through the solver (torchdiffeq's ``odeint``)."""

    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        return integrate(problem, y0)


GRADIENT_MODES: dict[str, type] = {
    "backprop": Backprop,
    "adjoint": Adjoint,
    "checkpoint": Checkpointed,
}


def gradient_mode(gradient: str | GradientMode) -> GradientMode:
    """A gradient mode from its name ('backprop', 'adjoint', 'checkpoint') or itself."""
    if isinstance(gradient, str):
        if gradient not in GRADIENT_MODES:
            raise ODEInputError(
                f"unknown gradient {gradient!r}; valid gradients are: {', '.join(GRADIENT_MODES)}"
            )
        return GRADIENT_MODES[gradient]()
    return gradient


__all__ = ["GRADIENT_MODES", "Adjoint", "Backprop", "Checkpointed", "GradientMode", "gradient_mode"]
