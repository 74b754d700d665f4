"""The experiments' common core: run settings, the training loop, the writer, the common
command line of the demo and every experiment, and the older flag spellings."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchdht.__main__ import COMMANDS
from torchdht.__main__ import main as torchdht_main
from torchdht.experiments import _core as core
from torchdht.experiments._core import (
    COMMON_FLAGS,
    Writer,
    build_parser,
    eval_points,
    format_table,
    parse_config,
    seeded,
    torch_threads,
    train_loop,
)

PORTED = ("demo", "attribution", "sampler", "mixup", "omniscient", "parameterized")
"""The commands built on the core: all of them."""


def _module(name: str):
    return importlib.import_module(COMMANDS[name])


# ----------------------------------------------------------------------- run settings
def test_seeded_seeds_and_restores_the_global_generator() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(7):
        a = torch.rand(3)
        with seeded(8):  # nested
            torch.rand(5)
        b = torch.rand(3)  # the outer stream goes on where it was
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(a, torch.rand(3)) and torch.equal(b, torch.rand(3))
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError), seeded(1):
        raise RuntimeError("restored on errors too")
    assert torch.equal(torch.get_rng_state(), before)


def test_torch_threads_sets_and_restores() -> None:
    old = torch.get_num_threads()
    target = 1 if old != 1 else 2
    with torch_threads(target) as used:
        assert used == target == torch.get_num_threads()
    assert torch.get_num_threads() == old
    with pytest.raises(KeyError), torch_threads(target):
        raise KeyError
    assert torch.get_num_threads() == old
    for leave in (None, 0):
        with torch_threads(leave) as used:
            assert used == old == torch.get_num_threads()


# --------------------------------------------------------------------------- the loop
def test_the_loop_evaluates_at_its_points_and_calls_back_after_every_step() -> None:
    events: list[tuple] = []
    stats = train_loop(
        7, lambda batch: batch * 2, fetch=lambda it: it + 100,
        eval_at=set(eval_points(7, 3)),
        evaluate=lambda it, s: events.append(("eval", it, s.steps)),
        callbacks=[lambda it, out, s: events.append(("step", it, out, s.steps)),
                   lambda it, out, s: events.append(("second", it))],
    )
    assert eval_points(7, 3) == [0, 3, 6, 7]
    assert [e for e in events if e[0] == "eval"] == [
        ("eval", 0, 0), ("eval", 3, 3), ("eval", 6, 6), ("eval", 7, 7)]
    steps = [e for e in events if e[0] == "step"]
    assert steps == [("step", it, 2 * (it + 100), it + 1) for it in range(7)]
    # each evaluation comes after the step before it, each callback in order
    assert events[:4] == [("eval", 0, 0), ("step", 0, 200, 1), ("second", 0), ("step", 1, 202, 2)]
    assert events.index(("eval", 3, 3)) == events.index(("second", 2)) + 1
    assert stats.steps == 7 and not stats.stopped
    assert stats.step_seconds >= 0.0 and stats.fetch_seconds >= 0.0


def test_a_callback_stops_the_loop_without_a_further_evaluation() -> None:
    evals: list[int] = []
    stats = train_loop(10, lambda b: None, eval_at={0, 5, 10},
                       evaluate=lambda it, s: evals.append(it),
                       callbacks=[lambda it, out, s: it == 6])
    assert stats.stopped and stats.steps == 7 and evals == [0, 5]


def test_accuracy_restores_the_training_mode() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    net.train()
    assert core.accuracy(net, x, torch.tensor([0, 1, 1]), chunk=2) == pytest.approx(200 / 3)
    assert net.training
    net.eval()
    assert core.accuracy(net, x, torch.tensor([0, 1, 0]), chunk=1) == 100.0
    assert not net.training


# ------------------------------------------------------------------------- the writer
def test_the_writer_writes_csv_json_text_and_a_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    w = Writer(tmp_path / "new" / "folder")
    rows = [{"name": "a", "acc": 97.123456, "per_seed": [96.5, 97.75], "ratio": None,
             "n": 3, "loss": float("nan"), "extra": "ignored"},
            {"name": "b", "acc": 1.0, "per_seed": [1.0], "ratio": 0.5, "n": 1, "loss": 0.25,
             "extra": 0}]
    w.csv("r.csv", rows, ["name", "acc", "per_seed", "ratio", "n", "loss"], float_format=".2f",
          formats={"ratio": ".3f", "loss": lambda v: "" if v != v else f"{v:.1f}"})
    with (tmp_path / "new" / "folder" / "r.csv").open(newline="") as fh:
        got = list(csv.reader(fh))
    assert got == [["name", "acc", "per_seed", "ratio", "n", "loss"],
                   ["a", "97.12", "96.50;97.75", "", "3", ""],
                   ["b", "1.00", "1.00", "0.500", "1", "0.2"]]
    w.json("config.json", {"path": Path("/x"), "k": [1, 2]})
    assert json.loads((w.out / "config.json").read_text()) == {"path": "/x", "k": [1, 2]}
    w.text("notes.md", "# hi\n")
    with w.figure("plot.png", 2, figsize=(4, 2)) as axes:
        assert len(axes) == 2
        axes[0].plot([0, 1], [1, 0])
    assert (w.out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in w.written] == ["r.csv", "config.json", "notes.md", "plot.png"]
    nowhere = Writer(None)
    assert nowhere.csv("r.csv", rows, ["name"]) is None and nowhere.json("c", {}) is None
    assert nowhere.written == [] and Writer("").out is None


def test_the_writer_draws_grids_and_gives_paths_for_other_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    w = Writer(tmp_path / "w")
    with w.figure("grid.png", 3, figsize=(3, 2), nrows=2, dpi=50) as axes:
        assert len(axes) == 6 and axes[0].figure is axes[5].figure
        assert axes[3].get_subplotspec().rowspan.start == 1  # row after row
    path = w.path("teacher.pt")
    assert path == tmp_path / "w" / "teacher.pt" and not path.exists()
    torch.save({"a": torch.zeros(1)}, path)
    assert [p.name for p in w.written] == ["grid.png", "teacher.pt"]
    assert Writer(None).path("teacher.pt") is None


def test_config_checks_name_the_flag() -> None:
    from types import SimpleNamespace

    cfg = SimpleNamespace(solver_steps=0, d_steps=0, lr=float("nan"), alpha=-1.0, eps=None)
    with pytest.raises(ValueError, match="^--solver-steps must be >= 1, got 0$"):
        core.check_min(cfg, ["solver_steps", "d_steps"], 1)
    core.check_min(cfg, ["d_steps", "eps"], 0)  # None: not set, not checked
    with pytest.raises(ValueError, match="^--lr must be > 0 and finite, got nan$"):
        core.check_rate(cfg, ["lr"], positive=True)
    with pytest.raises(ValueError, match="^--alpha must be >= 0 and finite, got -1.0$"):
        core.check_rate(cfg, ["eps", "alpha"], positive=False)
    with pytest.raises(ValueError, match="--dataset must be one of"):
        core.check_choice("dataset", "cifar", ("halfmoon", "mnist35"))


def test_one_table_formatter() -> None:
    text = format_table(("method", "acc"), [("sgd", "97.10"), ("dht-released", "9.00")])
    assert text.splitlines() == ["method       |   acc", "-------------+------",
                                 "sgd          | 97.10", "dht-released |  9.00"]
    md = format_table(("a", "b"), [("1", "2")], markdown=True)
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


# ----------------------------------------------------------------------- command line
@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_the_common_flags_with_defaults(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        torchdht_main([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m torchdht {name} ")
    listed = {ln.split()[0].rstrip(",") for ln in text.splitlines() if ln.startswith("  -")}
    assert set(COMMON_FLAGS) <= listed, f"{name} --help lacks {set(COMMON_FLAGS) - listed}"
    # every option with a value shows its default (the parser that printed the help)
    parser = build_parser(_module(name), name)
    formatter = parser._get_formatter()
    shown = {a.option_strings[0]: a for a in parser._actions if a.option_strings
             and a.nargs != 0 and a.help != argparse.SUPPRESS}
    assert {"--data-root", "--out", "--seeds", "--iters", "--workers"} <= set(shown)
    for flag, action in shown.items():
        assert "(default" in formatter._expand_help(action), (name, flag, action.help)
    assert " ".join(text.split()).count("(default") >= len(shown)  # as printed
    assert "--root " not in text and "--iterations" not in text and "--quiet" not in text


@pytest.mark.parametrize("name", PORTED)
def test_common_flags_parse_the_same_everywhere(name: str, tmp_path: Path) -> None:
    module = _module(name)
    parser = build_parser(module, name)
    args = parser.parse_args(["--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--seeds", "2", "--iters", "7", "--quick", "--workers", "1",
                              "--no-progress"])
    assert (args.data_root, args.out, args.seeds, args.iters, args.quick, args.workers,
            args.no_progress) == (str(tmp_path), str(tmp_path / "o"), 2, 7, True, 1, True)
    cfg = module.config_from_args(args)
    assert cfg.seeds == 2 and cfg.progress is False  # explicit values win over --quick
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "0"])  # a count, at least 1


@pytest.mark.parametrize("name", ("demo", "sampler", "mixup", "omniscient", "parameterized"))
def test_single_process_commands_accept_one_worker_only(
    name: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        torchdht_main([name, "--workers", "2"])
    assert info.value.code == 2 and "--workers" in capsys.readouterr().err


def test_quick_fills_what_is_not_given() -> None:
    from torchdht import demo
    from torchdht.experiments import mixup, sampler

    quick = parse_config(demo, ["--quick"])
    assert (quick.iters, quick.seeds) == (demo.QUICK["iters"], demo.QUICK["seeds"])
    assert parse_config(demo, ["--quick", "--iters", "9"]).iters == 9
    full = parse_config(demo, [])
    assert (full.iters, full.seeds) == (3000, 3)
    s = parse_config(sampler, ["--quick"])
    assert (s.iters, s.seeds, s.eval_every, s.linear_iters) == (200, 2, 50, 100)
    m = parse_config(mixup, ["--quick"])
    assert (m.train_size, m.val_size, m.test_size, m.epochs) == (1000, 200, 500, 2)
    assert parse_config(mixup, ["--full"]).train_size == 40000
    with pytest.raises(SystemExit):
        parse_config(mixup, ["--full", "--quick"])


def test_every_command_is_on_the_core() -> None:
    assert set(PORTED) == set(COMMANDS)
    for name in COMMANDS:
        module = _module(name)
        for attr in ("DESCRIPTION", "add_arguments", "config_from_args", "run", "main"):
            assert hasattr(module, attr), (name, attr)


def test_older_spellings_still_parse(tmp_path: Path) -> None:
    """The commands recorded in benchmarks/RESULTS.md and the method cards still run."""
    from torchdht import demo
    from torchdht.experiments import omniscient, parameterized, sampler

    o = parse_config(omniscient, ["--root", str(tmp_path), "--teachers", "SGD,IMT"])
    assert (o.data_root, list(o.teachers)) == (str(tmp_path), ["SGD", "IMT"])
    assert parse_config(omniscient, ["--data-root", str(tmp_path)]).data_root == str(tmp_path)
    assert parse_config(omniscient, []).data_root is None
    p = parse_config(parameterized, ["--baselines", "", "--hidden", "32,32", "--no-batch-norm",
                                     "--box", "--teacher-lr", "1e-2", "--grad-clip", "1"])
    assert (p.baselines, p.hidden, p.batch_norm, p.box) == ([], [32, 32], False, True)
    assert (p.teacher_lr, p.grad_clip) == (1e-2, 1.0)

    d = parse_config(demo, ["--quiet"])
    assert d.progress is False
    s = parse_config(sampler, ["--root", str(tmp_path), "--iterations", "12",
                               "--linear-iterations", "3", "--methods", "random", "loss"])
    assert (s.data_root, s.iters, s.linear_iters) == (str(tmp_path), 12, 3)
    assert list(s.methods) == ["random", "loss"]  # space-separated, as it was
    assert list(parse_config(sampler, ["--methods", "random,greedy"]).methods) == [
        "random", "greedy"]
    assert parse_config(demo, ["--methods", "sgd,dht"]).methods == ["sgd", "dht"]


RECORDED = [  # the commands of benchmarks/RESULTS.md and the method cards (DIR: a folder)
    "demo --quiet", "demo --quiet --out DIR",
    "sampler --root ../shared/data --out runs/sampler",
    "attribution --parts mnist --mnist-iters 3000 --seeds 1",
    "attribution --parts mnist,cifar --conditions sgd,sgd-lr-x2,sgd-lr-x4,sgd-lr-x6,sgd-lr-x8,"
    "sgd-enc-x6,random,random-released,dht,dht-released",
    "attribution --parts mnist,cifar --workers 2",
    "attribution --quick --fake-data --no-progress --out DIR",
    "attribution --parts mnist --conditions sgd,dht --seeds 1 --workers 2 --no-progress "
    "--out DIR",
    "mixup --data-root ../shared/data",
    "mixup --data-root ../shared/data --methods reinforce-restarts --out runs/mixup-restarts",
    "mixup --data-root ../shared/data --first-seed 1 --seeds 2 --methods "
    "erm,cmixup,dmixup,unroll,reinforce,reinforce-restarts --out DIR",
    "mixup --seeds 3 --methods erm,cmixup,dmixup,unroll,reinforce,reinforce-restarts",
    "omniscient --dataset halfmoon", "omniscient --dataset mnist35",
    "omniscient --dataset halfmoon --lr 0.05",
    "omniscient --dataset mnist35 --seeds 10 --iters 300",
    "omniscient --dataset halfmoon --threads 1",
    "parameterized --dataset halfmoon --teacher transform",
    "parameterized --dataset mnist35 --teacher blackbox",
    "parameterized --dataset halfmoon --teacher transform --teacher-lr 1e-2 --grad-clip 1",
    "parameterized --dataset mnist35 --teacher transform --box",
    "parameterized --dataset mnist35 --teacher transform --box --teacher-lr 1e-2 --grad-clip 1",
    "parameterized --dataset halfmoon --teacher gan",
    "parameterized --dataset mnist35 --teacher gan --adv-weight 0.1",
    "parameterized --dataset halfmoon --teacher vae",
    "parameterized --dataset mnist35 --teacher vae",
    "parameterized --dataset halfmoon --teacher vae --kl-weight 0.01",
    "parameterized --dataset halfmoon --teacher privacy",
    "parameterized --dataset halfmoon --teacher privacy --eps 230",
    "parameterized --dataset mnist35 --teacher privacy --cache-dir runs/vae-cache",
]


@pytest.mark.parametrize("command", RECORDED)
def test_recorded_commands_still_parse(command: str) -> None:
    name, *argv = command.split()
    config = parse_config(_module(name), argv, name)
    if "--seeds" in argv:
        assert config.seeds == int(argv[argv.index("--seeds") + 1])
    if name == "sampler":
        assert str(config.data_root) == "../shared/data" and config.iters == 5000
    if "--workers" in argv:
        assert config.workers == 2
    if name in ("omniscient", "parameterized"):  # the paper's setting, as recorded
        assert (config.dataset, config.seeds, config.iters) == (
            argv[argv.index("--dataset") + 1], 10, 300)
    for flag in ("--lr", "--teacher-lr", "--grad-clip", "--kl-weight", "--adv-weight", "--eps"):
        if flag in argv:
            assert getattr(config, flag[2:].replace("-", "_")) == float(
                argv[argv.index(flag) + 1])


def test_linear_experiments_dispatch(tmp_path: Path) -> None:
    code = torchdht_main(["omniscient", "--seeds", "1", "--iters", "3", "--teachers", "SGD",
                          "--no-plots", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0 and (tmp_path / "results.csv").is_file()
    code = torchdht_main(["parameterized", "--seeds", "1", "--iters", "3", "--outer-iters", "1",
                          "--unroll", "2", "--baselines", "SGD", "--no-plots", "--no-progress",
                          "--out", str(tmp_path / "p")])
    assert code == 0 and (tmp_path / "p" / "teacher.pt").is_file()


# ------------------------------------------------------------------- the experiments
def test_sampler_experiment_on_synthetic_data(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from torchdht.experiments import sampler

    code = sampler.main(["--synthetic", "--iters", "6", "--seeds", "1", "--first-seed", "3",
                         "--eval-every", "3", "--linear-iters", "4", "--batch-size", "16",
                         "--out", str(tmp_path), "--no-plots", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| MLP method |" in printed and "seed 3" not in printed  # --no-progress: no run lines
    with (tmp_path / "curves.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["seed"] for r in rows} == {"3"}
    assert [r["iteration"] for r in rows if r["learner"] == "mlp" and r["method"] == "loss"] == [
        "0", "3", "6"]
    assert {p.name for p in tmp_path.iterdir()} == {"curves.csv", "summary.csv",
                                                    "summary_linear.csv"}
    again = sampler.run(sampler.SamplerConfig(
        synthetic=True, iters=6, seeds=1, first_seed=3, eval_every=3, linear_iters=4,
        batch_size=16, out=tmp_path / "again", plot=False, verbose=False))
    with (tmp_path / "again" / "curves.csv").open() as fh:
        same = list(csv.DictReader(fh))
    assert [r["test_acc"] for r in same] == [r["test_acc"] for r in rows]  # seeded
    assert len(again["rows"]) == 4


@pytest.mark.parametrize("name", ("sampler", "attribution"))
def test_missing_data_is_one_line_and_exit_status_1(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = torchdht_main([name, "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err and "MNIST/raw" in err
    assert err.startswith(f"python -m torchdht {name}: error: ")


def test_mixup_iters_ends_each_run_early() -> None:
    from torchdht.experiments import mixup

    cfg = mixup.MixupConfig(fake_data=True, train_size=64, val_size=16, test_size=16, epochs=3,
                            batch_size=16, iters=6, methods=["erm", "dmixup"], out="",
                            progress=False, echo=False)
    data = mixup.load_cifar10(fake=True, train_size=64, val_size=16, test_size=16)
    rows = mixup.run(cfg, data)
    assert [r["method"] for r in rows] == ["erm", "dmixup"]
    runs = mixup._train_one("dmixup", data, 0, cfg, lambda: None)
    assert [r["epoch"] for r in runs["curve"]] == [1, 2]  # 4 steps, then 2 of the second
    assert runs["curve"][-1]["frac_lam0"] + runs["curve"][-1]["frac_lam05"] \
        + runs["curve"][-1]["frac_lam1"] == pytest.approx(1.0)
    full = mixup._train_one("dmixup", data, 0, mixup.MixupConfig(
        **{**vars(cfg), "iters": None}), lambda: None)
    assert full["curve"][0] == runs["curve"][0]  # the same first epoch
    assert len(full["curve"]) == 3


def test_configs_check_themselves() -> None:
    from torchdht import demo
    from torchdht.experiments import attribution, mixup, omniscient, parameterized, sampler

    for make in (lambda: demo.DemoConfig(iters=0), lambda: demo.DemoConfig(methods=["x"]),
                 lambda: sampler.SamplerConfig(linear_iters=-1),
                 lambda: mixup.MixupConfig(methods=["cutmix"]),
                 lambda: attribution.AttributionConfig(parts=["imagenet"]),
                 lambda: attribution.AttributionConfig(conditions=["nope"]),
                 lambda: omniscient.OmniscientConfig(dataset="cifar"),
                 lambda: omniscient.OmniscientConfig(learner="svm"),
                 lambda: omniscient.OmniscientConfig(teachers=[]),
                 lambda: omniscient.OmniscientConfig(solver_steps=0),
                 lambda: parameterized.ParameterizedConfig(teacher="diffusion"),
                 lambda: parameterized.ParameterizedConfig(teacher="gan", box=True),
                 lambda: parameterized.ParameterizedConfig(hidden=[8, 0]),
                 lambda: parameterized.ParameterizedConfig(l2=-1.0)):
        with pytest.raises(ValueError):
            make()
    assert attribution.AttributionConfig(quick=True).out == "runs/attribution-quick"
    s = attribution.AttributionConfig(quick=True, iters=4, cifar_iters=2).settings()
    assert (s["mnist"].iters, s["cifar"].iters) == (4, 2)


def test_aliases_keep_the_option_type() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=None)
    core.add_aliases(p, {"iters": ["--iterations"]})
    assert p.parse_args(["--iterations", "4"]).iters == 4
    assert p.parse_args([]).iters is None
    with pytest.raises(SystemExit):
        p.parse_args(["--iterations", "x"])
