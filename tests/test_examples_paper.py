"""The paper's example scripts: CIFAR on FakeData with every method, MNIST for real."""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    path = REPO / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small CPU convolutions are far faster on one thread, above all on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _log(out: Path) -> list[dict[str, str]]:
    assert (out / "accuracy.png").stat().st_size > 0
    with (out / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("method", ["sgd", "random", "dht", "dht-released"])
def test_cifar_example_fake_data_every_method(tmp_path: Path, method: str, one_thread) -> None:
    cifar = _load("cifar100_cnn15")
    out = tmp_path / method
    res = cifar.main(["--fake-data", "--arch", "cnn3", "--method", method, "--iters", "3",
                      "--batch-size", "4", "--workers", "0", "--no-progress", "--out", str(out)])
    rows = _log(out)
    assert [int(r["iter"]) for r in rows] == [3]
    assert 0.0 <= res["test_acc"] <= 100.0 and float(rows[-1]["train_loss"]) > 0


def test_cifar_example_cnn15_cifar10(tmp_path: Path, one_thread) -> None:
    cifar = _load("cifar100_cnn15")
    res = cifar.main(["--fake-data", "--dataset", "cifar10", "--method", "dht-released",
                      "--iters", "2", "--batch-size", "2", "--workers", "0", "--no-progress",
                      "--out", str(tmp_path)])
    assert len(_log(tmp_path)) == 1 and 0.0 <= res["test_acc"] <= 100.0


def test_cifar_example_defaults_are_the_papers() -> None:
    args = _load("cifar100_cnn15").parse_args([])
    assert (args.arch, args.dataset, args.iters, args.batch_size, args.lr) == (
        "cnn15", "cifar100", 42_500, 128, 0.1)
    assert (args.momentum, args.weight_decay) == (0.9, 5e-4)


def test_mnist_example_learns(tmp_path: Path, mnist_root: Path, one_thread) -> None:
    mnist = _load("mnist_mlp")
    common = ["--data-root", str(mnist_root), "--no-progress", "--eval-every", "100"]
    sgd = mnist.main(["--method", "sgd", "--iters", "300", "--out", str(tmp_path / "sgd"),
                      *common])
    accs = [float(r["test_acc"]) for r in _log(tmp_path / "sgd")]
    assert len(accs) == 3 and accs[-1] > accs[0]
    assert sgd["test_acc"] > 40.0  # chance is 10 %
    dht = mnist.main(["--method", "dht", "--iters", "200", "--out", str(tmp_path / "dht"),
                      *common])
    assert dht["test_acc"] > 30.0
    assert torch.get_num_threads() >= 1


def test_mnist_example_defaults_are_the_papers() -> None:
    args = _load("mnist_mlp").parse_args([])
    assert (args.iters, args.batch_size, args.lr, args.weight_decay) == (39_000, 128, 1e-3, 5e-4)
