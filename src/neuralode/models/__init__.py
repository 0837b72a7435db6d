"""Models of the paper's experiments."""

from .cnf import CNF, ConcatSquashMLP, HyperNetField, PlanarFlow, Regularization
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
