"""Models of the paper's experiments."""

from .cnf import CNF, ConcatSquashMLP, HyperNetField, Regularization
from .flows import DiagonalGaussian, PlanarFlow
from .mnist import (
    MNIST_PARAMETER_COUNTS,
    ODEVectorField,
    ResBlock,
    build_mnist_model,
    count_parameters,
)
from .trace import exact_trace, hutchinson_trace

__all__ = [
    "CNF",
    "MNIST_PARAMETER_COUNTS",
    "ConcatSquashMLP",
    "DiagonalGaussian",
    "HyperNetField",
    "ODEVectorField",
    "PlanarFlow",
    "Regularization",
    "ResBlock",
    "build_mnist_model",
    "count_parameters",
    "exact_trace",
    "hutchinson_trace",
]
