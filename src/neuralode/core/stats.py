"""Statistics of one solve, returned to the caller (no global state)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PerSampleStats:
    """Per-sample counters of a solve with ``options={"per_sample": True}``, each a (B,) tensor:
    field evaluations the sample needed (while it was not done), accepted and rejected steps
    (int64), and the magnitude of its last accepted step (float64, NaN before one)."""

    nfe: torch.Tensor
    n_accepted: torch.Tensor
    n_rejected: torch.Tensor
    last_dt: torch.Tensor


@dataclass
class SolverStats:
    """Counters of one solve.

    Attributes:
        nfe: evaluations of the vector field (the initial-step heuristic's included).
        n_accepted: accepted steps (per-sample solves: of the sample that attempted the most;
            every sample's are in ``per_sample``).
        n_rejected: rejected steps (always 0 for fixed-step solves; per-sample solves: as
            ``n_accepted``).
        last_dt: magnitude of the last accepted step, in units of t (NaN before any step;
            per-sample solves: as ``n_accepted``).
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
