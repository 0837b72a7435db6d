"""neuralode: Neural Ordinary Differential Equations in PyTorch.

``odeint`` is a drop-in replacement for ``torchdiffeq.odeint``; :func:`solve` returns a
:class:`Solution`.
"""

from .core.methods import METHODS
from .core.stats import PerSampleStats, SolverStats
from .core.tableau import Tableau
from .errors import (
    ConvergenceError,
    MaxStepsExceededError,
    NonFiniteStateError,
    ODEInputError,
    SolverError,
    StepSizeUnderflowError,
    TransformError,
)
from .events import EventNotFoundError, odeint_event
from .gradients import Adjoint, Backprop, Checkpointed
from .odeint import odeint, odeint_adjoint, odeint_dense
from .solution import Solution, solve

__version__ = "0.1.0"  # the version's one home: pyproject.toml reads it

__all__ = [
    "METHODS",
    "Adjoint",
    "Backprop",
    "Checkpointed",
    "ConvergenceError",
    "EventNotFoundError",
    "MaxStepsExceededError",
    "NonFiniteStateError",
    "ODEInputError",
    "PerSampleStats",
    "Solution",
    "SolverError",
    "SolverStats",
    "StepSizeUnderflowError",
    "Tableau",
    "TransformError",
    "odeint",
    "odeint_adjoint",
    "odeint_dense",
    "odeint_event",
    "solve",
]
