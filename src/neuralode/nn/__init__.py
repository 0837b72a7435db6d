"""Modules: the NeuralODE block and time-conditioned layers for vector fields."""

from .layers import ConcatConv2d, ConcatLinear
from .neural_ode import NeuralODE

__all__ = ["ConcatConv2d", "ConcatLinear", "NeuralODE"]
