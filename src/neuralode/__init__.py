"""neuralode: Neural Ordinary Differential Equations in PyTorch.

``odeint`` is a drop-in replacement for ``torchdiffeq.odeint``.
"""

from .errors import (
    MaxStepsExceededError,
    NonFiniteStateError,
    ODEInputError,
    SolverError,
    StepSizeUnderflowError,
)
from .events import EventNotFoundError, odeint_event
from .gradients import Adjoint, Backprop, Checkpointed
from .odeint import odeint, odeint_adjoint
from .solvers import METHODS
from .stats import SolverStats

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Adjoint",
    "Backprop",
    "Checkpointed",
    "EventNotFoundError",
    "MaxStepsExceededError",
    "NonFiniteStateError",
    "ODEInputError",
    "SolverError",
    "SolverStats",
    "StepSizeUnderflowError",
    "odeint",
    "odeint_adjoint",
    "odeint_event",
]
