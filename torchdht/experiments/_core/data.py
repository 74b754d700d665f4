"""The experiments' data: MNIST and CIFAR-10 from the data root, read once per process.

The root is resolved by :func:`torchdht.data.resolve_root` (the argument, else
``$TORCHDHT_DATA``, else ``../shared/data`` beside the repository); a missing data
set fails there, in one line that says where it looked.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...data import resolve_root

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "cifar_to_float",
    "decode_images",
    "load_mnist",
    "mnist_root",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def mnist_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``MNIST/raw/``: ``root`` (or its parent when ``root`` is the
    ``MNIST`` folder itself), else the default data root.

    Raises:
        FileNotFoundError: no ``MNIST/raw`` there (one line saying where it looked).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "MNIST" / "raw").mkdir(parents=True)
        >>> mnist_root(d / "MNIST") == mnist_root(d) == d
        True
    """
    if root is not None:
        path = Path(root).expanduser()
        if path.name == "MNIST" and (path / "raw").is_dir():
            return path.parent
        root = path
    return resolve_root(root, need="MNIST/raw")


@functools.lru_cache(maxsize=2)
def _read_mnist(root: Path, normalize: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading MNIST needs torchvision: pip install torchvision (or "
                          "torchdht[vision])") from exc
    out: list[Tensor] = []
    for train in (True, False):
        ds = MNIST(str(root), train=train, download=False)
        x = ds.data.to(torch.float32).div_(255.0)
        if normalize:
            x = (x - MNIST_MEAN) / MNIST_STD
        out += [x.reshape(len(x), -1), ds.targets.to(torch.int64)]
    return out[0], out[1], out[2], out[3]


def load_mnist(
    root: str | os.PathLike[str] | None = None, *, normalize: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST as flattened float32 images and int64 labels, read without download and kept
    for the process (the same tensors on the next call: do not modify them in place).

    Args:
        root: the data root (see :func:`mnist_root`; default: None, the default root).
        normalize: standardise with MNIST's mean and std (0.1307, 0.3081); False keeps
            pixels in [0, 1] (default: True).

    Returns:
        ``(x_train (60000, 784), y_train, x_test (10000, 784), y_test)``.
    """
    return _read_mnist(mnist_root(root), normalize)


def decode_images(paths: Sequence[str | os.PathLike[str]]) -> Tensor:
    """Decode image files into one uint8 tensor ``(N, 3, H, W)`` (RGB; all of one size)."""
    import numpy as np
    from PIL import Image

    arrays = []
    for path in paths:
        with Image.open(path) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    if not arrays:
        return torch.empty(0, 3, 32, 32, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


_CIFAR_MEAN = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
_CIFAR_STD = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)


def cifar_to_float(x: Tensor) -> Tensor:
    """uint8 CIFAR images ``(N, 3, 32, 32)`` to float32, standardised per channel.

    Example:
        >>> cifar_to_float(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))[0, :, 0, 0]
        tensor([-1.9895, -1.9803, -1.7068])
    """
    return (x.to(torch.float32).div_(255.0) - _CIFAR_MEAN.to(x.device)) / _CIFAR_STD.to(x.device)
