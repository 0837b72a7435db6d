"""Data sets for the paper's experiments, without torchvision."""

from .mnist import (
    MNIST_MD5,
    MNIST_MEAN,
    MNIST_MIRRORS,
    MNIST_STD,
    MNISTBatches,
    default_data_dir,
    download_mnist,
    load_mnist,
)

__all__ = [
    "MNIST_MD5",
    "MNIST_MEAN",
    "MNIST_MIRRORS",
    "MNIST_STD",
    "MNISTBatches",
    "default_data_dir",
    "download_mnist",
    "load_mnist",
]
