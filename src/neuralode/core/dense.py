"""Dense output of a whole solve: the accepted steps kept, evaluated anywhere in between."""

from __future__ import annotations

import bisect

import torch

from .loop import AcceptedStep


class DenseOutput:
    """Watches a solve's accepted steps (one row) and keeps each step, so the solution can be
    evaluated at any time between the first and the last by the solve's own interpolant (the
    method's, or a fixed grid's ``interp``). Differentiable when the solve records a graph.

    Args:
        direction: +1 or −1, the direction of integration.
    """

    def __init__(self, direction: float) -> None:
        self.direction = direction
        self.keys: list[float] = []  # direction · t at each step's start, increasing
        self.steps: list[AcceptedStep] = []

    def __call__(self, step: AcceptedStep) -> bool:
        """Keep an accepted step (a watcher of :meth:`~neuralode.core.loop.Loop.run`)."""
        if step.loop.needs_end_derivative:
            step.end_derivative = step.f1  # evaluated during the solve, as the solve counts it
        self.keys.append(self.direction * step.t)
        self.steps.append(step)
        return False

    def evaluate(self, times: list[float]) -> torch.Tensor:
        """The flat states at ``times`` (floats within the solve's interval): (len(times), N)."""
        values = []
        for time in times:
            index = max(0, bisect.bisect_right(self.keys, self.direction * time) - 1)
            values.append(self.steps[min(index, len(self.steps) - 1)].at([time])[0])
        return torch.stack(values)
