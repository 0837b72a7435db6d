"""Statistics of one solve, returned to the caller (no global state)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class SolverStats:
    """Counters of one solve.

    Attributes:
        nfe: evaluations of the vector field (the initial-step heuristic's included).
        n_accepted: accepted steps.
        n_rejected: rejected steps (always 0 for fixed-step solves).
        last_dt: size of the last accepted step, in units of t (NaN before any step).
        backward_nfe: evaluations in the backward pass (adjoint solves or checkpoint
            recomputation; each adjoint evaluation is one vector-Jacobian product). Filled in
            when the gradient is computed.
        backward_steps: attempted steps in the backward pass.
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    last_dt: float = math.nan
    backward_nfe: int = 0
    backward_steps: int = 0

    @property
    def n_steps(self) -> int:
        """Attempted steps, accepted or rejected."""
        return self.n_accepted + self.n_rejected
