"""``solve``: one solve, returned as a :class:`Solution` (times, states, statistics, status)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from .core.config import make_problem
from .core.loop import RUNNING
from .core.state import State, VectorFieldFn
from .core.stats import SolverStats
from .core.tableau import Tableau
from .gradients import GradientMode, gradient_mode
from .gradients.times import with_time_gradients

DEFAULT_RTOL, DEFAULT_ATOL = 1e-7, 1e-9  # torchdiffeq's

STATUS_NAMES = {0: "success", 1: "step size underflow", 2: "NaN or Inf", 3: "max_num_steps"}
"""What a :attr:`Solution.status` code means."""


@dataclass
class Solution:
    """The result of :func:`solve`.

    Attributes:
        ts: the output times, (T,).
        ys: the states at ``ts``: (T, *y0.shape), or a tuple of such for tuple states; NaN at
            the times a failed sample did not reach.
        stats: the solve's :class:`SolverStats` (backward fields fill in after the backward
            pass).
        status: 0-d int64 for shared steps, (B,) per sample with ``options={"per_sample":
            True}``: 0 success, 1 step-size underflow, 2 NaN/Inf, 3 max_num_steps
            (:data:`STATUS_NAMES`).
        error: the error of the first sample that failed, or None.
    """

    ts: torch.Tensor
    ys: State
    stats: SolverStats
    status: torch.Tensor
    error: Exception | None

    def __post_init__(self) -> None:
        self.status = torch.as_tensor(self.status)

    @property
    def success(self) -> bool:
        """Every sample reached the last time."""
        return self.error is None

    @property
    def failed(self) -> torch.Tensor:
        """Indices of the samples that failed, (k,) int64."""
        return (self.status.reshape(-1) != RUNNING).nonzero().reshape(-1)

    def raise_for_status(self) -> None:
        """Raise the first failed sample's error, if any."""
        if self.error is not None:
            raise self.error


def solve(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    *,
    rtol: float | torch.Tensor = DEFAULT_RTOL,
    atol: float | torch.Tensor = DEFAULT_ATOL,
    method: str | Tableau | None = None,
    options: Mapping[str, Any] | None = None,
    gradient: str | GradientMode = "backprop",
    raise_on_failure: bool = True,
) -> Solution:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, at the times ``t``; see :func:`neuralode.odeint`
    for the arguments.

    Args:
        raise_on_failure: raise the solver's error when the solve (or a sample of a per-sample
            solve) cannot reach the end; with False the failure is reported in
            :attr:`Solution.status` and :attr:`Solution.error`, and the other samples are
            solved to the end.

    Returns:
        A :class:`Solution`.
    """
    mode = gradient_mode(gradient)
    problem = make_problem(func, y0, t, rtol, atol, method, options)
    if not raise_on_failure:
        problem = replace(problem, raise_on_failure=False)
    flat = with_time_gradients(problem, t, mode.solve, problem.y0)
    ys = problem.layout.unflatten(flat)
    outcome = problem.outcome
    return Solution(
        t, ys, problem.stats, 0 if outcome.status is None else outcome.status, outcome.error
    )
