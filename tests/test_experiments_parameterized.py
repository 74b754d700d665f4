"""The parameterized-teaching experiment, end to end in --quick mode."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest

from torchdht.experiments import EXPERIMENTS, parameterized
from torchdht.experiments.__main__ import main as cli

ROWS = {"transform": "DHT-transform", "blackbox": "DHT-blackbox"}
BASE_ROWS = ("SGD", "IMT", "DHT-greedy")


def _args(argv):
    p = argparse.ArgumentParser()
    parameterized.add_arguments(p)
    return p.parse_args(argv)


def _run(argv):
    return parameterized.main(_args(["--quick", "--no-progress", *argv]))


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _check_results(out, teacher, seeds=2, iters=30, baselines=BASE_ROWS):
    rows = _rows(out / "results.csv")
    names = {*baselines, ROWS[teacher]}
    assert {r["teacher"] for r in rows} == names
    assert len(rows) == len(names) * seeds * (iters + 1)
    for name in names:
        got = {(r["seed"], r["iter"]) for r in rows if r["teacher"] == name}
        assert got == {(str(s), str(i)) for s in range(seeds) for i in range(iters + 1)}
    assert all(math.isfinite(float(r["distance"])) for r in rows)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    # every teacher starts from the same w0 for a given seed
    assert len({(r["seed"], r["distance"]) for r in rows if r["iter"] == "0"}) == seeds
    return rows


@pytest.fixture(scope="module")
def halfmoon_transform(tmp_path_factory):
    out = tmp_path_factory.mktemp("hm-transform")
    return out, _run(["--out", str(out)])


def test_quick_halfmoon_transform(halfmoon_transform, capsys):
    out, res = halfmoon_transform
    _check_results(out, "transform")
    for name in ("results.csv", "summary.csv", "teacher.pt", "teacher_fit.csv", "config.json"):
        assert (out / name).stat().st_size > 0
    for png in ("convergence.png", "halfmoon_points.png"):
        assert (out / png).stat().st_size > 1000
    summary = _rows(out / "summary.csv")
    assert {r["iter"] for r in summary} == {"0", "30"}
    assert all(math.isfinite(float(r[k])) for r in summary
               for k in ("dist_mean", "dist_std", "acc_mean", "acc_std"))
    assert len(_rows(out / "teacher_fit.csv")) == 40
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_train_seconds"] > 0 and cfg["teacher_train_seconds"] == res[
        "teacher_seconds"]
    assert cfg["teacher_loaded_from"] is None
    assert math.isfinite(cfg["fit_loss_start"]) and math.isfinite(cfg["fit_loss_end"])
    assert cfg["dtype"] == "float32" and cfg["lr"] == 1e-3 and cfg["alpha"] == 0.0
    assert cfg["teacher_config"]["in_features"] == 8  # [w, w - w*, x, onehot(y)]
    assert cfg["teacher_config"]["unroll"] == 10 and cfg["teacher_seed"] == 10_000
    assert 0.5 < cfg["w_star_test_accuracy"] <= 1.0
    assert set(cfg["wall_seconds"]) == {*BASE_ROWS, "DHT-transform"}
    # the returned dict carries the summary rows and timings
    assert [r["teacher"] for r in res["table"]] == [*BASE_ROWS, "DHT-transform"]
    assert res["checkpoints"] == [30]
    assert all(len(r["dist_30"]) == 2 for r in res["table"])
    assert res["fit_loss"] == (cfg["fit_loss_start"], cfg["fit_loss_end"])


def test_quick_halfmoon_blackbox_via_cli(tmp_path, capsys):
    out = tmp_path / "bb"
    assert cli(["parameterized", "--teacher", "blackbox", "--quick", "--no-progress",
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "\nDHT-blackbox " in printed and "|w-w*| @30" in printed and "wall s" in printed
    _check_results(out, "blackbox")
    cfg = json.loads((out / "config.json").read_text())
    # the last 20 % of the 800 training points are the validation set, never the test set
    assert cfg["pool_size"] == 640 and cfg["validation_size"] == 160
    assert cfg["teacher_config"]["kind"] == "blackbox"
    assert cfg["teacher_config"]["in_features"] == 6  # [w, x, onehot(y)]
    assert cfg["teacher_train_seconds"] > 0
    assert (out / "halfmoon_points.png").stat().st_size > 1000


def test_quick_mnist35_transform(tmp_path, mnist_root):
    out = tmp_path / "mn"
    res = _run(["--dataset", "mnist35", "--data-root", str(mnist_root), "--seeds", "1",
                "--iters", "6", "--outer-iters", "5", "--unroll", "4", "--hidden", "32,32",
                "--out", str(out)])
    _check_results(out, "transform", seeds=1, iters=6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_config"]["in_features"] == 2 * 24 + 24 + 2
    assert cfg["teacher_config"]["policy"] == {"hidden": [32, 32], "batch_norm": True}
    assert res["teacher_seconds"] > 0
    assert (out / "mnist_samples.png").stat().st_size > 1000


def test_load_reproduces_teacher_rows(halfmoon_transform, tmp_path, capsys):
    out, _ = halfmoon_transform
    again = tmp_path / "loaded"
    res = _run(["--load", str(out / "teacher.pt"), "--baselines", "", "--no-plots",
                "--out", str(again)])
    assert "loaded from" in capsys.readouterr().out
    assert res["teacher_seconds"] == 0.0 and res["fit_loss"] is None
    assert not (again / "teacher_fit.csv").exists()
    first = [r for r in _rows(out / "results.csv") if r["teacher"] == "DHT-transform"]
    second = _rows(again / "results.csv")
    assert {r["teacher"] for r in second} == {"DHT-transform"}
    assert second == first
    cfg = json.loads((again / "config.json").read_text())
    assert cfg["teacher_loaded_from"] == str(out / "teacher.pt")


def test_bad_load_names_the_differing_key(halfmoon_transform, tmp_path):
    out, _ = halfmoon_transform
    ckpt = str(out / "teacher.pt")
    with pytest.raises(ValueError, match="unroll"):
        _run(["--load", ckpt, "--unroll", "3", "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="kind"):
        _run(["--load", ckpt, "--teacher", "blackbox", "--out", str(tmp_path / "b")])


def test_options_checked(tmp_path):
    with pytest.raises(ValueError, match="teacher-seed"):
        _run(["--teacher-seed", "1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown"):
        _run(["--baselines", "SGD,GAN", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        _run(["--lr", "0", "--out", str(tmp_path)])


def test_registry_and_defaults():
    assert EXPERIMENTS["parameterized"] == "torchdht.experiments.parameterized"
    assert set(parameterized.TEACHERS) >= {"transform", "blackbox"}
    a = _args(["--dataset", "mnist35"])
    parameterized._resolve(a)
    # the paper's setting
    assert (a.seeds, a.iters, a.outer_iters, a.unroll, a.lr, a.teacher_lr) == (
        10, 300, 1000, 40, 1e-3, 2e-3)
    assert a.hidden == [128, 256, 512, 512, 1024] and a.batch_norm is True
    b = _args(["--quick", "--unroll", "3"])
    parameterized._resolve(b)
    assert b.unroll == 3 and b.hidden == [32, 16] and b.batch_norm is False
