"""Dense output of a whole solve: the accepted steps kept, evaluated anywhere in between."""

from __future__ import annotations

import bisect

import torch

from .loop import AcceptedStep
from .steppers import dense_weights, interpolate
from .tableau import Tableau


class DenseOutput:
    """Watches a solve's accepted steps (one row) and keeps each step's start, size, state and
    stages, so the solution can be evaluated at any time between the first and the last by the
    method's own interpolant. Differentiable when the solve records a graph.

    Args:
        method: the solve's method (its interpolant).
        direction: +1 or −1, the direction of integration.
    """

    def __init__(self, method: Tableau, direction: float) -> None:
        self.method, self.direction = method, direction
        self.keys: list[float] = []  # direction · t at each step's start, increasing
        self.steps: list[tuple[float, float, torch.Tensor, list[torch.Tensor]]] = []

    def __call__(self, step: AcceptedStep) -> bool:
        """Keep an accepted step (a watcher of :meth:`~neuralode.core.loop.Loop.run`)."""
        self.keys.append(self.direction * step.t)
        self.steps.append((step.t, step.t1 - step.t, step.y, [*step.ks, step.f1]))
        return False

    def evaluate(self, times: list[float]) -> torch.Tensor:
        """The flat states at ``times`` (floats within the solve's interval): (len(times), N)."""
        values = []
        for time in times:
            index = max(0, bisect.bisect_right(self.keys, self.direction * time) - 1)
            t, h, y, basis = self.steps[min(index, len(self.steps) - 1)]
            theta = torch.tensor([[(time - t) / h]], dtype=torch.float64, device=y.device)
            dense = dense_weights(self.method, y.device)
            values.append(interpolate(dense, y, h, basis, theta)[0, 0])
        return torch.stack(values)
