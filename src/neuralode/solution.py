"""``solve``: one solve, returned as a :class:`Solution` (times, states, statistics, status)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .core.config import Execution, make_problem
from .core.dense import DenseOutput
from .core.loop import RUNNING
from .core.state import State, StateLayout, VectorFieldFn
from .core.stats import SolverStats
from .core.tableau import Tableau
from .errors import ODEInputError
from .gradients import Checkpointed, GradientMode, gradient_mode
from .gradients.times import with_time_gradients

DEFAULT_RTOL, DEFAULT_ATOL = 1e-7, 1e-9  # torchdiffeq's

STATUS_NAMES = {0: "success", 1: "step size underflow", 2: "NaN or Inf", 3: "max_num_steps",
                5: "stage equations not converged"}  # fmt: skip
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
        dense_output: the kept steps, with ``solve(..., dense=True)`` (see :meth:`evaluate`).
    """

    ts: torch.Tensor
    ys: State
    stats: SolverStats
    _status: torch.Tensor | int = field(repr=False)
    error: Exception | None
    dense_output: DenseOutput | None = None
    layout: StateLayout | None = None

    @property
    def status(self) -> torch.Tensor:
        """The status codes as a tensor (made when first asked: odeint never asks)."""
        if not torch.is_tensor(self._status):
            self._status = torch.as_tensor(self._status)
        return self._status

    @property
    def success(self) -> bool:
        """Every sample reached the last time."""
        return self.error is None

    @property
    def failed(self) -> torch.Tensor:
        """Indices of the samples that failed, (k,) int64."""
        return (self.status.reshape(-1) != RUNNING).nonzero().reshape(-1)

    def evaluate(self, t: torch.Tensor) -> State:
        """The solution at the times ``t`` (1-D, within the solve's interval, any order) from the
        method's dense output of the accepted steps: (len(t), *y0.shape), or a tuple of such.
        Needs ``solve(..., dense=True)``; differentiable like the solve (backprop)."""
        if self.dense_output is None or self.layout is None:
            raise ODEInputError("Solution.evaluate needs the steps: solve(..., dense=True)")
        low, high = sorted((float(self.ts[0]), float(self.ts[-1])))
        times = t.detach().double().reshape(-1).tolist()
        outside = [time for time in times if not low <= time <= high]
        if outside:
            raise ODEInputError(
                f"Solution.evaluate: t={outside[0]:.6g} is outside the solved interval "
                f"[{low:.6g}, {high:.6g}]"
            )
        return self.layout.unflatten(self.dense_output.evaluate(times))

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
    dense: bool = False,
) -> Solution:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, at the times ``t``; see :func:`neuralode.odeint`
    for the arguments.

    Args:
        raise_on_failure: raise the solver's error when the solve (or a sample of a per-sample
            solve) cannot reach the end; with False the failure is reported in
            :attr:`Solution.status` and :attr:`Solution.error`, and the other samples are
            solved to the end.
        dense: keep every accepted step, so that :meth:`Solution.evaluate` gives the solution
            at any time in between (shared steps, eager, backprop or adjoint; memory grows with
            the steps).

    Returns:
        A :class:`Solution`.
    """
    mode = gradient_mode(gradient)
    problem = make_problem(func, y0, t, rtol, atol, method, options)
    if not raise_on_failure:
        problem = replace(problem, raise_on_failure=False)
    dense_output = None
    if dense:
        if problem.execution != Execution() or isinstance(mode, Checkpointed):
            raise ODEInputError(
                "dense=True keeps the steps of shared-step eager solves: it cannot be combined "
                "with options 'per_sample' or 'compile', with method='scipy_solver', or with "
                "gradient='checkpoint'"
            )
        direction = 1.0 if problem.times[-1] >= problem.times[0] else -1.0
        dense_output = DenseOutput(direction)
        problem = replace(problem, watch=dense_output)
    flat = with_time_gradients(problem, t, mode.solve, problem.y0)
    ys = problem.layout.unflatten(flat)
    outcome = problem.outcome
    status = 0 if outcome.status is None else outcome.status
    return Solution(t, ys, problem.stats, status, outcome.error, dense_output, problem.layout)
