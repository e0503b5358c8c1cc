"""Datasets: real MNIST from the package index or IDX files, and user images."""
from .mnist import MNIST_SHA256, load_mnist, mnist_cache_path, read_idx
from .transforms import from_model_range, to_model_range

__all__ = ["MNIST_SHA256", "load_mnist", "mnist_cache_path", "read_idx", "to_model_range", "from_model_range"]
