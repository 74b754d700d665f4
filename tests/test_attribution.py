"""The attribution study's runner: quick mode end to end, resume, statistics."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from torchdht.experiments import attribution as att
from torchdht.experiments._core import parse_config

from conftest import data_root


def test_paired_comparison() -> None:
    r = att.paired_comparison([95.0, 95.5, 96.0, 95.2, 95.1], [94.0, 94.2, 94.9, 94.3, 94.0])
    assert r["n"] == 5 and r["wins"] == 5 and r["significant"]
    assert r["diff_mean"] == pytest.approx(1.08)
    assert r["p"] is None or r["p"] < 0.01
    same = att.paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert not same["significant"] and same["diff_mean"] == 0.0
    noisy = att.paired_comparison([1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0])
    assert not noisy["significant"]
    assert "no test" in att.paired_comparison([2.0], [1.0])["statement"]
    with pytest.raises(ValueError):
        att.paired_comparison([1.0], [1.0, 2.0])


def test_conditions() -> None:
    names = [c.name for c in att.MNIST_CONDITIONS]
    assert len(names) == len(set(names)) == 21
    for n in ("sgd", "sgd-enc-x6", "sgd-lr-x8", "random", "random-released", "dht",
              "dht-released"):
        assert n in names
    assert sum(c.group == "grid" for c in att.MNIST_CONDITIONS) == 11  # 12 minus "dht"
    enc = next(c for c in att.MNIST_CONDITIONS if c.name == "sgd-enc-x6")
    assert enc.encoder_lr_mult == 6.0 and enc.lr_mult == 1.0
    assert {c.name for c in att.CIFAR_CONDITIONS} == {
        "sgd", "sgd-enc-x6", "random", "random-released", "dht", "dht-released"}
    assert att.FULL["mnist"].iters == 39_000 and att.FULL["mnist"].seeds == 5
    assert att.FULL["cifar"].iters == 2_000 and att.FULL["cifar"].lr == 0.1


def test_quick_mode_runs_and_resumes(tmp_path: Path) -> None:
    root = data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {root}")
    argv = ["--quick", "--workers", "1", "--no-progress", "--data-root", str(root),
            "--out", str(tmp_path)]
    if not (root / "cifar10-jpeg" / "train").is_dir():
        argv.append("--fake-data")
    res = att.run(parse_config(att, argv))
    assert len(res["mnist"]) == 8 and len(res["cifar"]) == 6
    sgd = next(r for r in res["mnist"] if r["condition"] == "sgd")
    assert sgd["n_seeds"] == 2 and sgd["acc_mean"] > 15.0  # above chance after 100 steps
    assert all(0.0 <= r["acc_mean"] <= 100.0 for r in res["cifar"])
    for name in ("results.csv", "summary.csv", "comparisons.csv", "attribution.png",
                 "conclusion.md", "config.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 8 * 2 + 6
    assert any(c["a"] == "dht-released" and c["b"] == "random-released"
               for c in res["comparisons"])
    text = (tmp_path / "conclusion.md").read_text()
    assert "What causes the gain" in text and "Time taken" in text
    # A second invocation reuses every saved run.
    again = att.run(parse_config(att, argv))
    assert again["timings"]["mnist"]["runs_reused"] == 16
    assert again["timings"]["cifar"]["runs_reused"] == 6
    assert [r["acc_mean"] for r in again["mnist"]] == [r["acc_mean"] for r in res["mnist"]]
    # More seeds later: the saved seeds are reused, only the new ones run.
    more = att.run(parse_config(att, [*argv, "--parts", "mnist", "--conditions", "sgd",
                                      "--seeds", "3"]))
    assert more["timings"]["mnist"]["runs_reused"] == 2
    assert more["timings"]["mnist"]["runs"] == 3


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        att.main(["--parts", "imagenet", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        att.main(["--conditions", "nope", "--out", str(tmp_path), "--parts", "mnist"])
    p = argparse.ArgumentParser()
    att.add_arguments(p)
    assert p.parse_args([]).workers >= 1
