"""Checkpointed gradients: the exact gradient of the discrete solve in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import Problem
from ..core.execution import integrate
from ..core.transforms import under_transform
from ..errors import ODEInputError


@dataclass(frozen=True)
class Checkpointed:
    """Exact discrete gradient with memory O((steps / every) + every) states: autograd keeps
    the loop's carry at the start of each segment of ``every`` attempted steps and reruns the
    segment in the backward pass (counted as ``backward_nfe`` and ``backward_steps``).

    Args:
        every: attempted steps per recomputed segment.
    """

    every: int = 32

    def __post_init__(self) -> None:
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ODEInputError(
                f"Checkpointed(every=...) must be a positive integer, got {self.every!r}"
            )

    def solve(self, problem: Problem, y0: torch.Tensor) -> torch.Tensor:
        if under_transform():
            # torch.func's transforms refuse the saved-tensor hooks of checkpointing: the same
            # discrete gradient by backpropagation through the steps (memory not bounded)
            return integrate(problem, y0)
        return integrate(problem, y0, every=self.every)
