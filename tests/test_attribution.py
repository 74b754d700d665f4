"""The attribution study's runner: quick mode end to end, resume, statistics."""

from __future__ import annotations

import argparse
import csv
import json
import math
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


# ===================================================================== --parts informed
def test_informed_plan_and_selection_rules() -> None:
    from torchdht.experiments import _informed_study as inf

    plan = inf.Plan(quick=False)
    stage1 = plan.stage1()
    names = [a.name for a in stage1]
    assert len(names) == len(set(names)) == 5 + 4 + 8 + 4
    assert all(a.split == "val" for a in stage1)
    assert all(len(v) <= 8 for v in inf.KNOBS.values())
    plan.tuned_lr = 8.0
    assert [a.lr_mult for a in plan.stage2()] == [1.0] * 5 + [8.0] * 5
    plan.head = {1.0: 16.0, 8.0: 2.0}
    plan.knobs = {"ema": {"target_decay": 0.99}}
    rep = plan.reported(8.0)
    assert all(a.split == "test" for a in rep)
    assert [a.name for a in rep[:2]] == ["sgd@lr-x8", "sgd-head-x2@lr-x8"]  # baselines first
    assert len(rep) == 2 + 2 * (1 + 4)
    ema = next(a for a in rep if a.name == "ema-eps0.1@lr-x8")
    assert ema.teacher["target_decay"] == 0.99 and ema.lr_mult == 8.0
    # ties go to the first name (the smaller step)
    assert inf._best({"a": 1.0, "b": 1.0, "c": 0.5}, ["a", "b", "c"]) == "a"
    plan.tuned_lr = 1.0
    assert plan.global_lrs() == [1.0]


def _fake_mnist():
    """Random inputs and labels of MNIST's training shape (the informed runner's rows)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(60_000, 784, generator=g), torch.randint(0, 10, (60_000,), generator=g)


def test_informed_selection_runs_never_read_the_test_set(monkeypatch) -> None:
    import torch

    from torchdht.experiments import _informed_study as inf

    x, y = _fake_mnist()
    unreadable = torch.empty(7, 0)  # any read of it through the model fails
    monkeypatch.setattr(inf.core, "load_mnist", lambda root: (x, y, unreadable, y[:7]))
    settings = {"iters": 4, "batch_size": 8, "lr": 1e-3, "weight_decay": 5e-4, "eval_every": 2}
    for arm in (inf.Arm("sgd@lr-x1", "val"),
                inf.teacher_arm("heldout", 0.1, 1.0, {"heldout_batch": 16}, "val")):
        rec = inf.run_job({"condition": vars(arm) | {}, "seed": 0, "settings": settings,
                           "data_root": "unused"})
        assert rec["final_acc"] == rec["val_acc"] and 0.0 <= rec["final_acc"] <= 100.0
        assert len(rec["curve"]) == len(rec["step_seconds_at"]) == 3
    with pytest.raises(RuntimeError):  # a reported arm does read it
        inf.run_job({"condition": vars(inf.Arm("sgd@lr-x1", "test")), "seed": 0,
                     "settings": settings, "data_root": "unused"})


def test_informed_run_stops_when_it_diverges(monkeypatch) -> None:

    from torchdht.experiments import _informed_study as inf

    x, y = _fake_mnist()
    monkeypatch.setattr(inf.core, "load_mnist", lambda root: (x, y, x[:7], y[:7]))
    settings = {"iters": 400, "batch_size": 8, "lr": 1e30, "weight_decay": 0.0,
                "eval_every": 100}
    for arm in (inf.Arm("sgd@lr-x1", "val"), inf.teacher_arm("ema", 0.1, 1.0, {}, "val")):
        rec = inf.run_job({"condition": vars(arm), "seed": 0, "settings": settings,
                           "data_root": "unused"})
        assert rec["diverged"] and not math.isfinite(rec["final_loss"])
        # the curve is complete, its tail is the diverged model's accuracy, and every
        # point has its time
        assert len(rec["curve"]) == len(rec["step_seconds_at"]) == len(rec["eval_points"])
        assert rec["step_seconds_at"][-1] == rec["step_seconds_at"][-2]
        assert rec["curve"][-1] == rec["curve"][-2] == rec["final_acc"]


def test_informed_quick_study_runs_and_resumes(tmp_path: Path) -> None:
    root = data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {root}")
    argv = ["--parts", "informed", "--quick", "--iters", "20", "--seeds", "2", "--workers",
            "1", "--no-progress", "--data-root", str(root), "--out", str(tmp_path)]
    res = att.run(parse_config(att, argv))
    sel = res["selection"]
    assert sel["tuned_lr_mult"] in (1.0, 2.0)
    assert set(sel["knobs"]) == {"ema", "buffer", "heldout"}
    arms = {r["arm"] for r in res["rows"]}
    assert "heldout-eps0.1@lr-x1" in arms and "sgd@lr-x1" in arms
    assert all(r["n_seeds"] == 2 for r in res["rows"])
    assert len(res["tests"]) == 8 * len({r["lr_mult"] for r in res["rows"]})
    assert all(t["verdict"] in ("beats", "ties", "loses") for t in res["tests"])
    for name in ("informed.md", "informed_results.csv", "informed_selection.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = len(list((tmp_path / "runs").glob("*.json")))
    again = att.run(parse_config(att, argv))  # every run reused
    assert [r["acc_mean"] for r in again["rows"]] == [r["acc_mean"] for r in res["rows"]]
    assert len(list((tmp_path / "runs").glob("*.json"))) == saved
    # --report-only runs nothing: the same report from the saved runs
    only = att.run(parse_config(att, [*argv, "--report-only"]))
    assert [r["acc_mean"] for r in only["rows"]] == [r["acc_mean"] for r in res["rows"]]
    assert all(r["diverged"] == 0 for r in only["rows"])
    # a report from saved runs times nothing, so it writes no stage timings
    assert json.loads((tmp_path / "informed_selection.json").read_text())[
        "stage_wall_seconds"] == {}
    # a diverged run is counted in its row and said in the report
    saved_run = next((tmp_path / "runs").glob("informed__buffer-eps0.1@lr-x1__seed1.json"))
    saved = json.loads(saved_run.read_text())
    saved["result"]["diverged"] = True
    saved_run.write_text(json.dumps(saved))
    only = att.run(parse_config(att, [*argv, "--report-only"]))
    assert {r["arm"]: r["diverged"] for r in only["rows"]}["buffer-eps0.1@lr-x1"] == 1
    assert "buffer-eps0.1@lr-x1" in next(
        line for line in (tmp_path / "informed.md").read_text().splitlines()
        if "(1 diverged)" in line)
    empty = tmp_path / "empty"
    assert att.main([*argv[:-2], "--out", str(empty), "--report-only"]) == 1  # nothing saved
    assert not (empty / "runs").is_dir() or not list((empty / "runs").iterdir())
    with pytest.raises(SystemExit):
        att.main(["--parts", "informed,mnist", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        att.main(["--parts", "mnist", "--report-only", "--out", str(tmp_path)])
