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
from .odeint import odeint
from .solvers import METHODS
from .stats import SolverStats

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "MaxStepsExceededError",
    "NonFiniteStateError",
    "ODEInputError",
    "SolverError",
    "SolverStats",
    "StepSizeUnderflowError",
    "odeint",
]
