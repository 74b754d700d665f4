"""Data sets of the paper's linear experiments: half-moon and projected MNIST 3 vs 5."""

from .halfmoon import Split, load_halfmoon, with_bias
from .mnist35 import MNIST35, load_mnist35, load_mnist35_images, projection_matrix, unproject
from .root import DATA_ENV_VAR, default_root, resolve_root

__all__ = [
    "DATA_ENV_VAR",
    "MNIST35",
    "Split",
    "default_root",
    "load_halfmoon",
    "load_mnist35",
    "load_mnist35_images",
    "projection_matrix",
    "resolve_root",
    "unproject",
    "with_bias",
]
