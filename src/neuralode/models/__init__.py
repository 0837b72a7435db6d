"""Models of the paper's experiments."""

from .mnist import (
    MNIST_PARAMETER_COUNTS,
    ODEVectorField,
    ResBlock,
    build_mnist_model,
    count_parameters,
)

__all__ = [
    "MNIST_PARAMETER_COUNTS",
    "ODEVectorField",
    "ResBlock",
    "build_mnist_model",
    "count_parameters",
]
