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
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    last_dt: float = math.nan

    @property
    def n_steps(self) -> int:
        """Attempted steps, accepted or rejected."""
        return self.n_accepted + self.n_rejected
