"""Data sets: half-moon and the projected MNIST 3-vs-5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchdht.data import (
    default_root,
    load_halfmoon,
    load_mnist35,
    projection_matrix,
    unproject,
    with_bias,
)


def test_halfmoon_split_and_determinism():
    s = load_halfmoon()
    assert s.x_train.shape == (800, 2) and s.x_test.shape == (200, 2)
    assert s.y_train.dtype == torch.int64 and set(s.y_train.tolist()) == {0, 1}
    again = load_halfmoon()
    assert torch.equal(s.x_train, again.x_train) and torch.equal(s.y_test, again.y_test)
    assert not torch.equal(s.x_train, load_halfmoon(seed=1).x_train)
    b = load_halfmoon(bias=True, dtype=torch.float64)
    assert b.x_train.shape == (800, 3) and bool((b.x_train[:, 2] == 1).all())
    assert b.x_train.dtype == torch.float64


def test_halfmoon_bad_arguments():
    with pytest.raises(ValueError, match="n_train"):
        load_halfmoon(n=10, n_train=10)
    with pytest.raises(ValueError, match="noise"):
        load_halfmoon(noise=-1.0)


def test_projection_matrix_fixed_and_pseudo_inverse():
    p = projection_matrix()
    assert p.shape == (784, 24)
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(p, projection_matrix())
    assert not torch.equal(p, projection_matrix(seed=1))
    assert abs(float(p.std()) - 784**-0.5) < 0.002
    p64 = projection_matrix(dtype=torch.float64)
    z = torch.randn(3, 24, dtype=torch.float64)
    imgs = unproject(z, p64)
    assert imgs.shape == (3, 28, 28)
    torch.testing.assert_close(imgs.reshape(3, -1) @ p64, z)  # P^+ is a right inverse of P^T
    with pytest.raises(ValueError, match="z must have shape"):
        unproject(torch.zeros(2, 5), p64)


def test_with_bias():
    assert with_bias(torch.zeros(3, 2)).tolist() == [[0.0, 0.0, 1.0]] * 3


def test_mnist35(mnist_root):
    d = load_mnist35(root=mnist_root)
    assert d.x_train.shape == (1000, 24) and d.x_test.shape == (100, 24)
    assert set(d.y_train.tolist()) == {0, 1} and set(d.y_test.tolist()) == {0, 1}
    torch.testing.assert_close(d.projection, projection_matrix())
    # features are pixels in [-1, 1] times P: recompute the first training image
    from torchvision.datasets import MNIST

    ds = MNIST(str(mnist_root), train=True, download=False)
    first = int(((ds.targets == 3) | (ds.targets == 5)).nonzero()[0])
    pixels = ds.data[first].reshape(-1).double() / 255 * 2 - 1
    assert int(d.y_train[0]) == int(ds.targets[first] == 5)
    expect = pixels @ projection_matrix(dtype=torch.float64)
    torch.testing.assert_close(d.x_train[0].double(), expect, rtol=1e-5, atol=1e-5)
    small = load_mnist35(root=mnist_root, n_train=10, n_test=5, bias=True)
    assert small.x_train.shape == (10, 25) and bool((small.x_train[:, -1] == 1).all())
    torch.testing.assert_close(small.x_test[:, :24], d.x_test[:5])


def test_mnist35_missing_root(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        load_mnist35(root=tmp_path)
    monkeypatch.setenv("TORCHDHT_DATA", str(tmp_path))
    assert default_root() == Path(tmp_path)
    with pytest.raises(FileNotFoundError, match="TORCHDHT_DATA"):
        load_mnist35()
    monkeypatch.delenv("TORCHDHT_DATA")
    sibling = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    # ../shared/data beside the repository (whatever the working directory), else cwd-relative
    want = sibling if sibling.is_dir() else Path("..") / "shared" / "data"
    assert default_root() == want
