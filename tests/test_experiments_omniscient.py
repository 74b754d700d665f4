"""The omniscient-teaching experiment, end to end in --quick mode."""

from __future__ import annotations

import csv
import json

import pytest

from torchdht.experiments import EXPERIMENTS
from torchdht.experiments.__main__ import build_parser
from torchdht.experiments.__main__ import main as cli


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


def test_unknown_teacher_and_bad_lr(tmp_path):
    with pytest.raises(ValueError, match="unknown teacher"):
        cli(["omniscient", "--quick", "--out", str(tmp_path), "--teachers", "SGD,GAN"])
    with pytest.raises(SystemExit):
        cli(["omniscient", "--quick", "--out", str(tmp_path), "--lr", "0"])


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
