"""MNIST 3 vs 5 projected to 24 dimensions (the paper's appendix B).

Pixels are scaled to [-1, 1] and each flattened 784-pixel image is mapped to
24 features by a fixed random Gaussian matrix ``P`` (784, 24) with entries
``N(0, 1/784)`` drawn from ``torch.Generator().manual_seed(projection_seed)``
(default seed 0), so the features are O(1). The pseudo-inverse ``P^+``
(24, 784) maps features back to pictures (:func:`unproject`).

The training set is the first ``n_train`` (default 1000) images of digit 3 or
5 in MNIST's training file, the test set the first ``n_test`` (default 100) of
its test file; class 0 is the digit 3 and class 1 the digit 5
(:func:`load_mnist35_images` gives the training images themselves, for the
image-space generators of :mod:`torchdht.linear.unrolled`). The images are
read with ``torchvision.datasets.MNIST(root, train=..., download=False)``; the
root comes from the ``root`` argument, else :func:`torchdht.data.default_root`
(``TORCHDHT_DATA``, else ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_int
from .halfmoon import with_bias
from .root import default_root

__all__ = [
    "MNIST35",
    "PROJECTION_SEED",
    "default_root",
    "load_mnist35",
    "load_mnist35_images",
    "projection_matrix",
    "unproject",
]

PROJECTION_SEED = 0
"""Seed of the fixed projection matrix."""
DIGITS = (3, 5)
"""The two digits; class index 0 is the first."""


class MNIST35(NamedTuple):
    """The projected 3-vs-5 split; labels are class indices (0: digit 3, 1: digit 5)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    projection: Tensor
    """``P`` of shape (784, dim): features = pixels @ P."""


def projection_matrix(
    dim: int = 24,
    in_features: int = 784,
    seed: int = PROJECTION_SEED,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The fixed Gaussian projection ``P`` (in_features, dim), entries ``N(0, 1/in_features)``.

    Drawn in float64 on the CPU from its own generator, so it is the same on
    every machine and unaffected by the global RNG.

    Example:
        >>> P = projection_matrix()
        >>> P.shape, torch.equal(P, projection_matrix())
        (torch.Size([784, 24]), True)
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    g = torch.Generator().manual_seed(int(seed))
    p = torch.randn(in_features, dim, generator=g, dtype=torch.float64) / in_features**0.5
    return p.to(dtype)


def unproject(z: Tensor, projection: Tensor, shape: tuple[int, int] = (28, 28)) -> Tensor:
    """Map features back to images with the pseudo-inverse: ``z @ pinv(P)``, reshaped.

    The result is the minimum-norm image with those features; values are not
    clipped (clip to [-1, 1] for display).

    Args:
        z: features (N, dim).
        projection: ``P`` (784, dim).
        shape: image shape (default: (28, 28)).

    Returns:
        Images of shape (N, *shape).

    Example:
        >>> P = projection_matrix(dtype=torch.float64)
        >>> img = torch.rand(2, 784, dtype=torch.float64)
        >>> back = unproject(img @ P, P)
        >>> torch.allclose(back.reshape(2, -1) @ P, img @ P)
        True
    """
    if z.dim() != 2 or z.shape[1] != projection.shape[1]:
        raise ValueError(
            f"z must have shape (N, {projection.shape[1]}) to match the projection, got "
            f"{tuple(z.shape)}"
        )
    pinv = torch.linalg.pinv(projection.to(z.dtype))
    return (z @ pinv).reshape(z.shape[0], *shape)


def _mnist_root(root: str | os.PathLike[str] | None) -> Path:
    """``root`` (default :func:`default_root`) once it holds ``MNIST/raw``."""
    path = Path(root) if root is not None else default_root()
    if not (path / "MNIST" / "raw").is_dir():
        raise FileNotFoundError(
            f"root: MNIST not found under {path} (expected {path / 'MNIST' / 'raw'}); pass "
            "root= or set TORCHDHT_DATA to a folder holding MNIST/raw"
        )
    return path


def _mnist(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """MNIST's raw images (N, 28, 28) uint8 and digits from ``root``'s train or test file."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MNIST 3/5 loaders need torchvision: pip install 'torchdht[vision]'"
        ) from err
    ds = MNIST(str(root), train=train, download=False)
    return ds.data, ds.targets


def _pixels(images: Tensor) -> Tensor:
    """uint8 pixels scaled to [-1, 1] in float64."""
    return images.to(torch.float64) / 255.0 * 2.0 - 1.0


def _select(images: Tensor, labels: Tensor, n: int, split: str) -> tuple[Tensor, Tensor]:
    keep = (labels == DIGITS[0]) | (labels == DIGITS[1])
    idx = keep.nonzero().flatten()
    if idx.numel() < n:
        raise ValueError(f"n_{split} must be at most {idx.numel()} (3s and 5s available), got {n}")
    idx = idx[:n]
    classes = (labels[idx] == DIGITS[1]).to(torch.int64)
    return images[idx], classes


def load_mnist35(
    root: str | os.PathLike[str] | None = None,
    n_train: int = 1000,
    n_test: int = 100,
    dim: int = 24,
    projection_seed: int = PROJECTION_SEED,
    bias: bool = False,
    dtype: torch.dtype = torch.float32,
) -> MNIST35:
    """Load MNIST 3 vs 5, pixels in [-1, 1], projected to ``dim`` features.

    Args:
        root: folder holding ``MNIST/raw`` (default: :func:`default_root`).
        n_train: training images, the first 3s and 5s of MNIST's train file
            (default: 1000).
        n_test: test images, the first 3s and 5s of its test file (default: 100).
        dim: number of features (default: 24).
        projection_seed: seed of the projection matrix (default: 0).
        bias: append a constant feature 1 after projecting (default: False).
        dtype: floating dtype (default: float32).

    Returns:
        An :class:`MNIST35` (inputs (N, dim) or (N, dim + 1), class indices, ``P``).

    Raises:
        FileNotFoundError: if MNIST is not under ``root``.

    Example:
        >>> found = (default_root() / "MNIST" / "raw").is_dir()
        >>> d = load_mnist35(n_train=10, n_test=5) if found else None
        >>> d is None or (d.x_train.shape == (10, 24) and d.y_train.tolist()[:3] == [1, 0, 0])
        True
    """
    path = _mnist_root(root)
    for name, val in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be an int >= 1, got {val!r}")
    proj = projection_matrix(dim, 784, projection_seed, dtype=torch.float64)
    out = []
    for train, n, split in ((True, n_train, "train"), (False, n_test, "test")):
        imgs, classes = _select(*_mnist(path, train), n, split)
        feats = _pixels(imgs.reshape(n, -1)) @ proj
        if bias:
            feats = with_bias(feats)
        out += [feats.to(dtype), classes]
    return MNIST35(out[0], out[1], out[2], out[3], proj.to(dtype))


def load_mnist35_images(
    root: str | os.PathLike[str] | None = None,
    n_train: int = 1000,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """The MNIST 3/5 training images behind :func:`load_mnist35`, in [-1, 1].

    The same images in the same order as ``load_mnist35(root, n_train).x_train``
    (whose features are ``images.flatten(1) @ P``): what the MNIST
    discriminator and VAE of :mod:`torchdht.linear.unrolled` see.

    Returns:
        ``(images (N, 1, 28, 28), classes (N,))``, class 0 the digit 3.

    Raises:
        FileNotFoundError: if MNIST is not under ``root``.

    Example:
        >>> found = (default_root() / "MNIST" / "raw").is_dir()
        >>> imgs, c = load_mnist35_images(n_train=4) if found else (torch.zeros(4, 1, 28, 28), 0)
        >>> imgs.shape
        torch.Size([4, 1, 28, 28])
    """
    path = _mnist_root(root)
    n_train = check_int(n_train, "n_train", 1)
    imgs, classes = _select(*_mnist(path, True), n_train, "train")
    return _pixels(imgs).unsqueeze(1).to(dtype), classes
