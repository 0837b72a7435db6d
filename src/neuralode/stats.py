"""Statistics of one solve, returned to the caller (no global state)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PerSampleStats:
    """Per-sample counters of a solve with ``options={"per_sample": True}``, each a (B,) int64
    tensor: field evaluations the sample needed (while it was not done), accepted and rejected
    steps."""

    nfe: torch.Tensor
    n_accepted: torch.Tensor
    n_rejected: torch.Tensor

    @classmethod
    def zeros(cls, batch: int, device: torch.device) -> PerSampleStats:
        return cls(*(torch.zeros(batch, dtype=torch.long, device=device) for _ in range(3)))


@dataclass
class SolverStats:
    """Counters of one solve.

    Attributes:
        nfe: evaluations of the vector field (the initial-step heuristic's included).
        n_accepted: accepted steps.
        n_rejected: rejected steps (always 0 for fixed-step solves).
        last_dt: size of the last accepted step, in units of t (NaN before any step, and
            for row-loop solves: per-sample or compiled).
        backward_nfe: evaluations in the backward pass (adjoint solves or checkpoint
            recomputation; each adjoint evaluation is one vector-Jacobian product). Filled in
            when the gradient is computed.
        backward_steps: attempted steps in the backward pass.
        n_jacobians: Jacobians ∂f/∂y evaluated (implicit methods; each costs an evaluation of
            f with its graph, one reverse-mode product per state feature, and one more
            evaluation for ∂f/∂t).
        per_sample: per-sample counters when the solve took steps per sample (then ``nfe``
            counts evaluations of the field on the whole batch, and the step counts are those
            of the sample that took the most).
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    last_dt: float = math.nan
    backward_nfe: int = 0
    backward_steps: int = 0
    n_jacobians: int = 0
    per_sample: PerSampleStats | None = None

    @property
    def n_steps(self) -> int:
        """Attempted steps, accepted or rejected."""
        return self.n_accepted + self.n_rejected
