"""Data sets of the paper's linear experiments: half-moon and projected MNIST 3 vs 5."""

from .halfmoon import Split, load_halfmoon, with_bias
from .mnist35 import MNIST35, default_root, load_mnist35, projection_matrix, unproject

__all__ = [
    "MNIST35",
    "Split",
    "default_root",
    "load_halfmoon",
    "load_mnist35",
    "projection_matrix",
    "unproject",
    "with_bias",
]
