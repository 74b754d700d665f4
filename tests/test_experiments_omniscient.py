"""The omniscient-teaching experiment, end to end in --quick mode."""

from __future__ import annotations

import csv
import json

import pytest

from torchdht.experiments import EXPERIMENTS, omniscient
from torchdht.experiments.__main__ import build_parser
from torchdht.experiments.__main__ import main as cli
from torchdht.experiments.omniscient import OmniscientConfig


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_quick_halfmoon_end_to_end(tmp_path, capsys):
    out = tmp_path / "hm"
    assert cli(["omniscient", "--dataset", "halfmoon", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("SGD", "IMT", "DHT", "SGD+Label", "IMT+Label", "DHT+Label"):
        assert f"\n{name} " in printed
    assert "|w-w*| @20" in printed and "wall s" in printed
    rows = _rows(out / "results.csv")
    assert len(rows) == 6 * 2 * 21  # teachers x seeds x (iters + 1)
    assert {r["teacher"] for r in rows} == {"SGD", "IMT", "DHT", "SGD+Label", "IMT+Label",
                                            "DHT+Label"}
    # every teacher starts from the same w0 for a given seed
    start = {(r["seed"], r["distance"]) for r in rows if r["iter"] == "0"}
    assert len(start) == 2
    summary = _rows(out / "summary.csv")
    assert {r["iter"] for r in summary} == {"0", "20"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr"] == 1e-3 and cfg["seeds"] == 2 and cfg["iters"] == 20
    assert 0.5 < cfg["w_star_test_accuracy"] <= 1.0
    for png in ("convergence.png", "halfmoon_points.png"):
        assert (out / png).stat().st_size > 1000


def test_quick_options_and_extra_teachers(tmp_path, capsys):
    out = tmp_path / "x"
    cli(["omniscient", "--quick", "--out", str(out), "--learner", "softmax", "--lr", "0.01",
         "--iters", "5", "--seeds", "1", "--teachers", "IMT,DHT-all+Label", "--no-plots"])
    rows = _rows(out / "results.csv")
    assert len(rows) == 2 * 1 * 6
    assert not (out / "convergence.png").exists()
    cli(["omniscient", "--quick", "--out", str(out), "--learner", "lsr", "--iters", "5",
         "--seeds", "1", "--teachers", "Scaling,SGD", "--no-plots"])
    assert "Scaling" in capsys.readouterr().out


def test_unknown_teacher_and_bad_lr(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown teacher"):
        OmniscientConfig(teachers=["SGD", "GAN"])
    with pytest.raises(ValueError, match="--lr must be > 0"):
        OmniscientConfig(lr=0.0)
    # on the command line: usage errors, before anything runs
    with pytest.raises(SystemExit) as info:
        cli(["omniscient", "--quick", "--out", str(tmp_path / "a"), "--teachers", "SGD,GAN"])
    assert info.value.code == 2 and "unknown teacher 'GAN'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli(["omniscient", "--quick", "--out", str(tmp_path / "b"), "--lr", "0"])
    assert info.value.code == 2 and "--lr must be > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_run_returns_the_results_it_writes(tmp_path, capsys):
    res = omniscient.run(OmniscientConfig(seeds=2, iters=5, teachers=["SGD", "DHT+Label"],
                                          restarts=2, solver_steps=5, out=str(tmp_path),
                                          plot=False))
    printed = capsys.readouterr().out
    assert res.out == tmp_path and res.checkpoints == [5]
    assert [r["teacher"] for r in res.table] == ["SGD", "DHT+Label"]
    assert list(res.histories) == ["SGD", "DHT+Label"] and set(res.wall) == set(res.histories)
    assert all(len(hs) == 2 and hs[0].distance.shape == (6,) for hs in res.histories.values())
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg == json.loads(json.dumps(res.config))
    assert cfg["teachers"] == ["SGD", "DHT+Label"] and cfg["dim"] == 2
    # the table printed and summary.csv are the returned rows
    summary = _rows(tmp_path / "summary.csv")
    for row in res.table:
        mine = [r for r in summary if r["teacher"] == row["teacher"]]
        assert [float(r["dist_mean"]) for r in mine] == [row["dist_0"][0], row["dist_5"][0]]
        assert f"{row['dist_5'][0]:.4f}±{row['dist_5'][1]:.4f}" in printed
    # results.csv holds every step of every run
    rows = _rows(tmp_path / "results.csv")
    dht = [float(r["distance"]) for r in rows if r["teacher"] == "DHT+Label" and r["seed"] == "1"]
    assert dht == pytest.approx(res.histories["DHT+Label"][1].distance.tolist(), rel=1e-7)


def test_quick_presets_and_explicit_values():
    from torchdht.experiments._core import parse_config

    quick = parse_config(omniscient, ["--quick"])
    assert (quick.seeds, quick.iters, quick.restarts, quick.solver_steps) == (2, 20, 4, 20)
    full = parse_config(omniscient, [])
    assert (full.seeds, full.iters, full.restarts, full.solver_steps) == (10, 300, 16, 100)
    assert parse_config(omniscient, ["--quick", "--iters", "50"]).iters == 50  # given wins
    assert list(parse_config(omniscient, ["--teachers", "IMT,Scaling"]).teachers) == [
        "IMT", "Scaling"]


def test_quick_mnist35(tmp_path, mnist_root):
    out = tmp_path / "mn"
    cli(["omniscient", "--dataset", "mnist35", "--root", str(mnist_root), "--quick",
         "--seeds", "1", "--iters", "6", "--out", str(out)])
    assert len(_rows(out / "results.csv")) == 6 * 1 * 7
    assert (out / "mnist_samples.png").stat().st_size > 1000


def test_dispatch_lists_experiments():
    assert "omniscient" in EXPERIMENTS
    help_text = build_parser().format_help()
    assert "omniscient" in help_text
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
