"""Modules: the NeuralODE block (with augmentation and conditioning), the solver configuration
modules share, and time-conditioned layers for vector fields."""

from .layers import ConcatConv2d, ConcatLinear, MLPField
from .neural_ode import ConditionedField, NeuralODE
from .solve import ODEModule, SolverConfig

__all__ = [
    "ConcatConv2d",
    "ConcatLinear",
    "ConditionedField",
    "MLPField",
    "NeuralODE",
    "ODEModule",
    "SolverConfig",
]
