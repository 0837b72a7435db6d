"""Modules: the NeuralODE block, the solver configuration modules share, and time-conditioned
layers for vector fields."""

from .layers import ConcatConv2d, ConcatLinear
from .neural_ode import NeuralODE
from .solve import ODEModule, SolverConfig

__all__ = ["ConcatConv2d", "ConcatLinear", "NeuralODE", "ODEModule", "SolverConfig"]
