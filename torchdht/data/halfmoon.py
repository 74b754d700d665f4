"""The half-moon data set of the paper's omniscient experiments (appendix B).

``sklearn.datasets.make_moons(1000, noise=0.2)``, the first 800 points for
training and the last 200 for testing. Labels are class indices 0/1; convert
them to a learner's labels with ``learner.targets(classes)`` (+-1 for LSR
and LR).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Split", "load_halfmoon", "with_bias"]


class Split(NamedTuple):
    """A train/test split; labels are class indices (int64)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def with_bias(x: Tensor) -> Tensor:
    """Append a constant feature 1 (gives a bias-free linear learner a bias).

    Example:
        >>> with_bias(torch.zeros(2, 1))
        tensor([[0., 1.],
                [0., 1.]])
    """
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def load_halfmoon(
    n: int = 1000,
    noise: float = 0.2,
    n_train: int = 800,
    seed: int = 0,
    bias: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Two interleaving half circles with Gaussian noise, split into train and test.

    Args:
        n: number of points in all (default: 1000).
        noise: standard deviation of the Gaussian noise (default: 0.2).
        n_train: how many of the (shuffled) points go to training; the rest
            are the test set (default: 800).
        seed: ``random_state`` of ``make_moons`` (default: 0).
        bias: append a constant feature 1 (default: False, as in the paper).
        dtype: floating dtype of the inputs (default: float32).

    Returns:
        A :class:`Split` with inputs (N, 2) (or (N, 3) with ``bias``) and class
        indices 0/1.

    Example:
        >>> s = load_halfmoon()
        >>> s.x_train.shape, s.x_test.shape, s.y_train.unique().tolist()
        (torch.Size([800, 2]), torch.Size([200, 2]), [0, 1])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 0 < n_train < n:
        raise ValueError(f"n_train must be an int in [1, n), got {n_train!r} with n={n}")
    if not (noise >= 0):
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    try:
        from sklearn.datasets import make_moons
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_halfmoon needs scikit-learn: pip install 'torchdht[examples]'"
        ) from err
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed, shuffle=True)
    xt = torch.as_tensor(x, dtype=dtype)
    if bias:
        xt = with_bias(xt)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return Split(xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:])
