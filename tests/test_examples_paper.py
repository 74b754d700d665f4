"""The paper's example scripts: CIFAR on FakeData with every method, MNIST for real.

Every taught run is compared with a run of the same script, seed and data whose teacher has
``policy="none"`` (a method added for the test): the features reaching the head must differ
at every step by an angle inside the cap ``2 asin(eps / 2)``, and so must the trained heads.
A method that silently trained without teaching fails here."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

import torchdht
from torchdht import PerformativeTeacher

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


def _recording_teacher(made: list) -> type:
    """A PerformativeTeacher that records, for every taught forward of the head, the largest
    angle (arccos in float64) between the features reaching the head and those it computes
    with, and whether they are bit-identical. Its own pre-hook is registered before the
    teacher's, so it sees the raw features; its forward hook sees what the teacher handed the
    head."""

    class Recording(PerformativeTeacher):  # the class itself, never a patched one
        def __init__(self, head, *args, **kwargs):
            self.angles: list[float] = []
            self.untouched: list[bool] = []
            self.feature_dtype: torch.dtype | None = None
            self._raw: torch.Tensor | None = None
            head.register_forward_pre_hook(self._before)
            super().__init__(head, *args, **kwargs)
            head.register_forward_hook(self._after)
            made.append(self)

        def _before(self, module, args):
            if module.training and torch.is_grad_enabled():
                self._raw = args[0].detach().clone()

        def _after(self, module, args, out):
            if self._raw is None:
                return
            self.untouched.append(torch.equal(self._raw, args[0]))
            a, b = self._raw.double(), args[0].detach().double()
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
            self.angles.append(float(torch.arccos(cos.clamp(-1.0, 1.0)).max()))
            self.feature_dtype = args[0].dtype
            self._raw = None

    return Recording


def _run_recorded(module: ModuleType, argv: list[str], monkeypatch) -> tuple[dict, list]:
    """``module.main(argv)`` with the recording teacher and a ``none`` method (policy
    "none": the features pass through); returns the result and the teachers built."""
    made: list = []
    monkeypatch.setattr(torchdht, "PerformativeTeacher", _recording_teacher(made))
    monkeypatch.setitem(module.METHODS, "none", {"policy": "none"})
    return module.main(argv), made


def _check_taught(taught, untaught, eps: float, iters: int) -> None:
    """The taught run moved the head's features inside the cap, the untaught did not, and the
    two runs (same seed, same data) ended with different heads."""
    assert len(taught.angles) == len(untaught.angles) == iters
    assert untaught.untouched == [True] * iters  # policy "none": bit-identical features
    assert not any(taught.untouched)
    tol = 1e-5 if taught.feature_dtype in (torch.float32, torch.float64) else 1e-2  # AMP
    cap = 2 * math.asin(eps / 2)
    assert max(taught.angles) <= cap + tol
    assert min(taught.angles) > 1e-3  # it taught at every step
    moved = (taught.head.weight - untaught.head.weight).detach().abs().max()
    assert float(moved) > 1e-6


CIFAR_ARGS = ["--fake-data", "--arch", "cnn3", "--iters", "3", "--batch-size", "4",
              "--workers", "0", "--no-progress", "--eps", "0.3"]


@pytest.fixture(scope="module")
def cifar_untaught(tmp_path_factory):
    """The CIFAR example with ``policy="none"`` on the same seed and data: the baseline."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            out = tmp_path_factory.mktemp("none")
            res, made = _run_recorded(_load("cifar100_cnn15"),
                                      [*CIFAR_ARGS, "--method", "none", "--out", str(out)], mp)
    finally:
        torch.set_num_threads(old)
    assert len(made) == 1
    return res, _log(out), made[0]


@pytest.mark.parametrize("method", ["sgd", "random", "dht", "dht-released"])
def test_cifar_example_fake_data_every_method(tmp_path: Path, method: str, one_thread,
                                              cifar_untaught, monkeypatch) -> None:
    cifar = _load("cifar100_cnn15")
    out = tmp_path / method
    res, made = _run_recorded(cifar, [*CIFAR_ARGS, "--method", method, "--out", str(out)],
                              monkeypatch)
    rows = _log(out)
    assert [int(r["iter"]) for r in rows] == [3]
    assert 0.0 <= res["test_acc"] <= 100.0 and float(rows[-1]["train_loss"]) > 0
    _, untaught_rows, untaught = cifar_untaught
    if method == "sgd":  # no teacher: exactly the run whose features pass through
        assert made == []
        if torch.cuda.is_available():  # cuDNN's kernels need not be bit-reproducible
            return
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
        assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in untaught_rows]
    else:
        assert len(made) == 1 and made[0].policy == cifar.METHODS[method]["policy"]
        _check_taught(made[0], untaught, eps=0.3, iters=3)
        assert max(made[0].angles) > 2 * math.asin(0.1 / 2)  # --eps reached the teacher


def test_cifar_example_cnn15_cifar10(tmp_path: Path, one_thread, monkeypatch) -> None:
    cifar = _load("cifar100_cnn15")
    res, made = _run_recorded(
        cifar, ["--fake-data", "--dataset", "cifar10", "--method", "dht-released", "--iters",
                "2", "--batch-size", "2", "--workers", "0", "--no-progress", "--out",
                str(tmp_path)], monkeypatch)  # fmt: skip
    assert len(_log(tmp_path)) == 1 and 0.0 <= res["test_acc"] <= 100.0
    (teacher,) = made
    assert teacher.lookahead_encoder_grad and len(teacher.angles) == 2
    assert 1e-3 < max(teacher.angles) <= 2 * math.asin(0.1 / 2) + 1e-5


def test_cifar_example_defaults_are_the_papers() -> None:
    args = _load("cifar100_cnn15").parse_args([])
    assert (args.arch, args.dataset, args.iters, args.batch_size, args.lr) == (
        "cnn15", "cifar100", 42_500, 128, 0.1)
    assert (args.momentum, args.weight_decay) == (0.9, 5e-4)


def test_mnist_example_learns(tmp_path: Path, mnist_root: Path, one_thread,
                              monkeypatch) -> None:
    mnist = _load("mnist_mlp")
    common = ["--data-root", str(mnist_root), "--no-progress", "--eval-every", "100"]
    sgd = mnist.main(["--method", "sgd", "--iters", "300", "--out", str(tmp_path / "sgd"),
                      *common])
    accs = [float(r["test_acc"]) for r in _log(tmp_path / "sgd")]
    assert len(accs) == 3 and accs[-1] > accs[0]
    assert sgd["test_acc"] > 40.0  # chance is 10 %
    dht, (taught,) = _run_recorded(
        mnist, ["--method", "dht", "--iters", "200", "--out", str(tmp_path / "dht"), *common],
        monkeypatch)  # fmt: skip
    assert dht["test_acc"] > 30.0
    _, (untaught,) = _run_recorded(
        mnist, ["--method", "none", "--iters", "200", "--out", str(tmp_path / "none"), *common],
        monkeypatch)  # fmt: skip
    _check_taught(taught, untaught, eps=0.1, iters=200)
    assert torch.get_num_threads() >= 1


def test_mnist_example_defaults_are_the_papers() -> None:
    args = _load("mnist_mlp").parse_args([])
    assert (args.iters, args.batch_size, args.lr, args.weight_decay) == (39_000, 128, 1e-3, 5e-4)
