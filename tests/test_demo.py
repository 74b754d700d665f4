"""Tests of the demo (``python -m torchdht demo``) on tiny settings."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from torchdht import demo  # noqa: E402
from torchdht.__main__ import main  # noqa: E402
from torchdht.experiments._core import mnist_root as resolve_mnist_root  # noqa: E402

from conftest import data_root  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(out: Path, methods: list[str]) -> list[dict[str, str]]:
    rows = _read_csv(out / "results.csv")
    assert [r["method"] for r in rows] == methods
    for r in rows:
        assert 0.0 <= float(r["test_acc_mean"]) <= 100.0
        for acc in r["test_acc_per_seed"].split(";"):
            assert 0.0 <= float(acc) <= 100.0
        assert float(r["ms_per_step_mean"]) > 0.0
    png = out / "accuracy.png"
    assert png.is_file() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    return rows


def test_run_demo_digits(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "demo"
    rows = demo.run(demo.DemoConfig(iters=30, seeds=1, eval_every=10, out=out, progress=False,
                                    echo=False))
    methods = list(demo.METHODS)
    csv_rows = _check_outputs(out, methods)
    assert [r["method"] for r in rows] == methods
    for r, c in zip(rows, csv_rows):
        assert r["dataset"] == "digits" and c["dataset"] == "digits"
        assert r["eval_points"] == [0, 10, 20, 30]
        assert len(r["curves"]) == 1 and len(r["curves"][0]) == 4
        assert r["test_acc_per_seed"] == [r["curves"][0][-1]]
        assert r["test_acc_std"] == 0.0
    by = {r["method"]: r for r in rows}
    assert by["sgd"]["time_vs_sgd"] == pytest.approx(1.0)
    assert by["sgd"]["angle_mean_rad"] == 0.0
    # eps = 0.1 is a chord: the angle moved is at most 2 asin(0.05) ~ 0.10004 rad.
    for name in ("random", "dht", "dht-released"):
        assert 0.0 < by[name]["angle_mean_rad"] <= 0.1001


def test_same_seed_is_reproducible() -> None:
    kw = dict(iters=15, seeds=2, eval_every=5, methods=["sgd", "random"], out=None,
              progress=False, echo=False)
    first = demo.run(demo.DemoConfig(**kw))
    second = demo.run(demo.DemoConfig(**kw))
    for a, b in zip(first, second):
        assert a["curves"] == b["curves"]


def test_main_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--iters", "20", "--seeds", "2", "--quiet", "--methods", "sgd,dht",
                 "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and "ms/step" in printed and "time vs sgd" in printed
    assert re.search(r"^sgd\s+\|", printed, re.M) and re.search(r"^dht\s+\|", printed, re.M)
    assert "Best mean test accuracy:" in printed
    _check_outputs(tmp_path, ["sgd", "dht"])


def test_help_exits_zero() -> None:
    proc = subprocess.run([sys.executable, "-m", "torchdht", "demo", "--help"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--data-root" in proc.stdout and "--iters" in proc.stdout


def test_unknown_method_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--methods", "sgd,nope"])
    assert info.value.code == 2
    assert "nope" in capsys.readouterr().err


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-folder"
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        demo.run(demo.DemoConfig(iters=5, seeds=1, data_root=missing, out=out, progress=False,
                                 echo=False))
    assert not out.exists()  # fails before writing anything
    assert main(["demo", "--quiet", "--data-root", str(missing), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "MNIST/raw" in err


def test_data_root_without_mnist(tmp_path: Path) -> None:
    where = re.escape(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"MNIST/raw not found under {where}"):
        demo.load_data(tmp_path)


def test_env_var_sets_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "env-folder"
    monkeypatch.setenv(demo.DATA_ENV_VAR, str(missing))
    assert main(["demo", "--quiet", "--out", str(tmp_path / "out")]) == 1
    assert str(missing) in capsys.readouterr().err


def test_run_demo_mnist(tmp_path: Path, mnist_root: Path) -> None:
    """On the offline MNIST under ``$TORCHDHT_DATA`` (else ``../shared/data``); skips without."""
    pytest.importorskip("torchvision")
    assert resolve_mnist_root(mnist_root / "MNIST") == mnist_root
    rows = demo.run(demo.DemoConfig(iters=10, seeds=1, eval_every=5, data_root=mnist_root,
                                    out=tmp_path, progress=False, echo=False))
    assert all(r["dataset"] == "mnist" for r in rows)
    _check_outputs(tmp_path, list(demo.METHODS))


def test_data_root_follows_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests read the data where ``TORCHDHT_DATA`` says, as the demo does."""
    monkeypatch.setenv(demo.DATA_ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv(demo.DATA_ENV_VAR)
    assert data_root() == REPO_ROOT.parent / "shared" / "data"
