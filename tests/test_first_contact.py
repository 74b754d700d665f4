"""First contact: the console script, ``--help``, quiet logs, the demo's note, the examples
without their optional packages, and README's Quick start."""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torchdht.__main__ import main
from torchdht.experiments import EXPERIMENTS
from torchdht.experiments.__main__ import main as experiments_main

from conftest import REPO, worker_env

EXAMPLES = {  # example -> what its one line must name
    "mnist_mlp": ("torchvision", '".[examples,vision]"'),
    "cifar100_cnn15": ("torchvision", '".[examples,vision]"'),
    "timm_any_model": ("timm", '".[vision]"'),
}


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _command_lines(help_text: str, names: list[str]) -> dict[str, str]:
    """The line of ``help_text`` that lists each command (indented, name first)."""
    found = {}
    for line in help_text.splitlines():
        m = re.match(r"^ +(\S+) +(\S.*)$", line)
        if m and m.group(1) in names:
            found[m.group(1)] = m.group(2)
    return found


# ------------------------------------------------------------------- command line
def test_console_script_is_declared_and_returns_an_exit_code(tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["torchdht"].split(":")
    entry = getattr(importlib.import_module(module), func)
    assert entry is main
    code = entry(["omniscient", "--seeds", "1", "--iters", "3", "--teachers", "SGD",
                  "--no-plots", "--threads", "1", "--out", str(tmp_path / "a")])
    assert code == 0 and type(code) is int  # what the console script hands to sys.exit
    code = experiments_main(["omniscient", "--seeds", "1", "--iters", "3", "--teachers",
                             "SGD", "--no-plots", "--threads", "1", "--out", str(tmp_path / "b")])
    assert code == 0  # python -m torchdht.experiments NAME still works
    for out in ("a", "b"):
        assert (tmp_path / out / "results.csv").is_file()


def test_help_lists_the_demo_and_every_experiment_one_line_each(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    names = ["demo", *EXPERIMENTS]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    lines = _command_lines(text, names)
    assert sorted(lines) == sorted(names), text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "python -m torchdht COMMAND --help" in text
    with pytest.raises(SystemExit) as info:
        experiments_main(["--help"])
    assert info.value.code == 0
    assert sorted(_command_lines(capsys.readouterr().out, names)) == sorted(EXPERIMENTS)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_help_through_torchdht(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m torchdht {name} ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'mixup'" in err and "'demo'" in err


# ----------------------------------------------------------- progress bars and logs
def test_demo_log_has_no_carriage_returns_and_explains_random(tmp_path: Path) -> None:
    """stderr is a pipe here, as in a log: the progress bar stays off without --quiet."""
    proc = subprocess.run(
        [sys.executable, "-m", "torchdht", "demo", "--iters", "30", "--seeds", "1",
         "--methods", "sgd,random", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, env=worker_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert "it/s" not in proc.stderr and "step/s" not in proc.stderr
    from torchdht.demo import RANDOM_NOTE

    assert RANDOM_NOTE in proc.stdout.splitlines()
    assert "\n" not in RANDOM_NOTE and "uniformly drawn point of the same cap" in RANDOM_NOTE


def test_demo_bar_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from torchdht.demo import RANDOM_NOTE, DemoConfig, run

    kw = dict(iters=4, seeds=1, eval_every=2, methods=["sgd"], out=None, echo=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run(DemoConfig(progress=True, **kw))
    assert "\r" in terminal.getvalue()  # a terminal gets the bar
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    run(DemoConfig(progress=False, **kw))  # --no-progress (or the older --quiet)
    assert quiet.getvalue() == ""
    monkeypatch.undo()
    run(DemoConfig(**{**kw, "echo": True}))  # no random row: no note
    assert RANDOM_NOTE not in capsys.readouterr().out


def test_demo_quiet_is_an_older_spelling_of_no_progress() -> None:
    from torchdht import demo
    from torchdht.experiments._core import build_parser

    parser = build_parser(demo, "python -m torchdht demo")
    assert parser.parse_args(["--quiet"]).no_progress is True
    assert parser.parse_args(["--no-progress"]).no_progress is True
    assert parser.parse_args([]).no_progress is False
    assert demo.config_from_args(parser.parse_args(["--quiet"])).progress is False


def test_linear_teacher_bar_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from torchdht.linear import LR, TransformTeacher

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, generator=g)
    y = torch.where(x[:, 0] > 0, 1.0, -1.0)

    def fit(stream: io.StringIO) -> str:
        t = TransformTeacher(LR, (x, y), 0.1, w_star=torch.tensor([2.0, 1.0]), unroll=2,
                             trajectories=2, horizon=4, seed=0)
        monkeypatch.setattr(sys, "stderr", stream)
        t.fit(3, progress=True)
        monkeypatch.undo()
        return stream.getvalue()

    assert "\r" in fit(_Terminal())
    assert fit(io.StringIO()) == ""  # a log file or a pipe: no bar at all


# ------------------------------------------------- examples without optional packages
_BLOCKED = """
import runpy, sys
sys.modules["timm"] = None
sys.modules["torchvision"] = None
path = sys.argv[1]
sys.argv = [path, "--help"]
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as exc:
    print(f"help exit {exc.code}")
sys.argv = [path]
runpy.run_path(path, run_name="__main__")
"""


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_names_its_extra_when_packages_are_missing(name: str) -> None:
    package, extra = EXAMPLES[name]
    path = REPO / "examples" / f"{name}.py"
    proc = subprocess.run([sys.executable, "-c", _BLOCKED, str(path)], capture_output=True,
                          text=True, cwd=REPO, env=worker_env(), timeout=120)
    assert "usage:" in proc.stdout and "help exit 0" in proc.stdout, proc.stderr  # --help
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert "Traceback" not in proc.stderr
    line = lines[0]
    assert line.startswith(f"{name}.py: this example needs ")
    assert f"cannot import {package}" in line and f"pip install -e {extra}" in line


# ------------------------------------------------------------------------ README
def test_readme_quick_start() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 2
    assert re.match(r'^pip install -e "\.\[examples,vision\]" && python -m torchdht demo$',
                    lines[0])
    assert re.match(r"^pip install .*pytest", lines[1])  # the line .ci/run runs
    before = section[: block.start()]
    assert "clone of this repository" in before
    after = section[block.end():]
    assert re.search(r"2-core", after) and re.search(r"\d{4}-\d{2}-\d{2}", after)
