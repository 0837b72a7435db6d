"""Exceptions raised by the solvers: each message names the problem and, and the fix."""

from __future__ import annotations


class ODEInputError(ValueError):
    """Bad arguments to ``odeint``: shapes, dtypes, devices, times, method or options."""


class SolverError(RuntimeError):
    """The solve started but could not finish; the message says at which t."""

    def __init__(self, message: str, t: float) -> None:
        super().__init__(message)
        self.t = t


class StepSizeUnderflowError(SolverError):
    """The adaptive step size fell below the floating-point resolution of t."""


class MaxStepsExceededError(SolverError):
    """The solve needed more than ``max_num_steps`` steps."""


class NonFiniteStateError(SolverError):
    """The state (or dy/dt) became NaN or Inf during the solve."""


class ConvergenceError(SolverError):
    """An implicit method's stage equations did not converge within ``max_iters`` Newton
    iterations (or gave NaN/Inf iterates) in a step."""


class TransformError(RuntimeError):
    """A derivative or transform this combination cannot compute correctly (a differentiable
    backward pass, a torch.func transform, forward mode): refused rather than answered wrongly;
    the message names the gradient mode or option to use instead."""
