"""CIFAR-10 splits held in memory: the JPEG copy (``cifar10-jpeg/``), torchvision's
``cifar-10-batches-py``, or ``FakeData`` for smoke tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ...data import resolve_root
from .data import decode_images

__all__ = ["CLASSES", "CifarData", "load_cifar10"]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
"""CIFAR-10's classes, in label order."""


@dataclass
class CifarData:
    """CIFAR-10 splits held in memory as uint8 images ``(N, 3, 32, 32)`` and int64 labels.

    Attributes:
        x_train, y_train: the training split.
        x_val, y_val: the validation split (held out of the training images).
        x_test, y_test: the test split.
        source: where the images came from.

    Example:
        >>> d = load_cifar10(fake=True, train_size=8, val_size=4, test_size=4)
        >>> d.x_train.shape, d.x_train.dtype, d.y_val.shape
        (torch.Size([8, 3, 32, 32]), torch.uint8, torch.Size([4]))
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    source: str



def _jpeg_dir(root: Path) -> Path | None:
    for cand in (root / "cifar10-jpeg", root):
        if (cand / "train" / CLASSES[0]).is_dir() and (cand / "test" / CLASSES[0]).is_dir():
            return cand
    return None


def _read_jpegs(folder: Path, count: int | None, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Decode a seeded random subset (all when ``count`` is None) of an ImageFolder tree."""
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))
    if tuple(ds.classes) != CLASSES:
        raise ValueError(f"{folder}: expected the CIFAR-10 class folders {CLASSES}, got "
                         f"{tuple(ds.classes)}")
    order = torch.randperm(len(ds.samples), generator=gen)
    if count is not None:
        order = order[:count]
    picked = [ds.samples[j] for j in order.tolist()]
    labels = torch.tensor([label for _, label in picked], dtype=torch.int64)
    return decode_images([path for path, _ in picked]), labels


def _torchvision_cifar(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=train, download=download)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(ds.targets, dtype=torch.int64)


def _fake(n: int, offset: int) -> tuple[Tensor, Tensor]:
    import numpy as np
    from torchvision.datasets import FakeData

    ds = FakeData(size=n, image_size=(3, 32, 32), num_classes=10, random_offset=offset)
    imgs, labels = zip(*(ds[i] for i in range(n)))
    x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in imgs]))
    return x.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(labels, dtype=torch.int64)


def load_cifar10(root: str | os.PathLike[str] | None = None, *, train_size: int = 20000,
                 val_size: int = 5000, test_size: int = 10000, download: bool = True,
                 fake: bool = False, split_seed: int = 0) -> CifarData:
    """Load CIFAR-10 splits: a seeded random train/val split of the training images.

    The split depends only on ``split_seed`` (not on the run's seeds), so
    every method and seed sees the same images.

    Args:
        root: folder holding ``cifar10-jpeg/`` (or the JPEG tree itself), or
            torchvision's ``cifar-10-batches-py`` (default: None, the default data root
            of :func:`torchdht.data.resolve_root`).
        train_size: training images (at most 50,000 minus ``val_size``).
        val_size: validation images, disjoint from the training ones.
        test_size: test images (at most 10,000).
        download: let torchvision download CIFAR-10 into ``root`` when neither
            form is there.
        fake: use ``torchvision.datasets.FakeData`` of those sizes instead
            (random images and labels; for smoke tests).
        split_seed: seed of the split.

    Returns:
        A :class:`CifarData`.

    Example:
        >>> load_cifar10(fake=True, train_size=6, val_size=2, test_size=2).x_test.shape
        torch.Size([2, 3, 32, 32])
    """
    for name, value in (("train_size", train_size), ("val_size", val_size),
                        ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if train_size + val_size > 50000 or test_size > 10000:
        raise ValueError(f"CIFAR-10 has 50,000 training and 10,000 test images; asked for "
                         f"train_size + val_size = {train_size + val_size} and "
                         f"test_size = {test_size}")
    if fake:
        xt, yt = _fake(train_size + val_size, 0)
        xs, ys = _fake(test_size, 10**6)
        return CifarData(xt[:train_size], yt[:train_size], xt[train_size:], yt[train_size:],
                         xs, ys, "torchvision FakeData (random images)")
    base = resolve_root(root)
    gen = torch.Generator().manual_seed(split_seed)
    jpeg = _jpeg_dir(base)
    if jpeg is not None:
        xt, yt = _read_jpegs(jpeg / "train", train_size + val_size, gen)
        xs, ys = _read_jpegs(jpeg / "test", test_size, gen)
        source = f"JPEG re-encodings in {jpeg} (ImageFolder)"
    else:
        try:
            xt, yt = _torchvision_cifar(base, True, download)
            xs, ys = _torchvision_cifar(base, False, download)
        except RuntimeError as exc:
            raise FileNotFoundError(
                f"no CIFAR-10 under {str(base)!r}: expected cifar10-jpeg/{{train,test}}/<class>/ "
                f"or cifar-10-batches-py/ there (or allow the download). Set --data-root or "
                f"$TORCHDHT_DATA. ({exc})"
            ) from exc
        order = torch.randperm(len(xt), generator=gen)[: train_size + val_size]
        xt, yt = xt[order], yt[order]
        order = torch.randperm(len(xs), generator=gen)[:test_size]
        xs, ys = xs[order], ys[order]
        source = f"torchvision CIFAR10 in {base}"
    return CifarData(xt[:train_size], yt[:train_size], xt[train_size:], yt[train_size:],
                     xs, ys, source)
