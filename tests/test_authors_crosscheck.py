"""benchmarks/authors_crosscheck: the command line, and a smoke run on the authors' code.

The smoke run needs a checkout of GitHub ``Zeju1997/data_halucination_teaching``
(commit f218fd3) named by ``$TORCHDHT_AUTHORS_DHT`` and MNIST under the data
root; without them it is skipped. Nothing here needs the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, data_root, worker_env

SCRIPT = REPO / "benchmarks" / "authors_crosscheck" / "crosscheck.py"
OURS = REPO / "benchmarks" / "authors_crosscheck" / "ours.py"
AUTHORS_ENV = "TORCHDHT_AUTHORS_DHT"


def _run(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = worker_env()
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help() -> None:
    for script, flags in ((SCRIPT, ("--authors", "--out", "--seeds", "--iters", "--quick")),
                          (OURS, ("--protocol", "--record"))):
        r = _run(str(script), "--help")
        assert r.returncode == 0, r.stderr
        assert all(f in r.stdout for f in flags), r.stdout


def test_patch_is_shipped_and_only_touches_the_trainer() -> None:
    patch = (SCRIPT.parent / "authors.patch").read_text()
    files = [line.split(" b/")[1] for line in patch.splitlines() if line.startswith("diff --git")]
    assert files == ["teaching_policy/blackbox_implicit.py"]


def test_missing_checkout_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_checkout"
    r = _run(str(SCRIPT), "--authors", str(missing), "--out", str(tmp_path / "out"), "--quick")
    assert r.returncode == 2
    assert "no such folder" in r.stderr and "data_halucination_teaching" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_a_checkout_is_a_clear_error(tmp_path: Path) -> None:
    r = _run(str(SCRIPT), "--authors", str(tmp_path), "--out", str(tmp_path / "out"), "--quick")
    assert r.returncode == 2
    assert "is not a checkout" in r.stderr and "Traceback" not in r.stderr


def test_authors_path_is_required(tmp_path: Path) -> None:
    r = _run(str(SCRIPT), "--out", str(tmp_path / "out"), "--quick", "--side", "authors")
    assert r.returncode == 2 and "--authors PATH is required" in r.stderr


def test_quick_smoke_on_the_authors_code(tmp_path: Path) -> None:
    checkout = os.environ.get(AUTHORS_ENV, "")
    if not checkout or not Path(checkout).is_dir():
        pytest.skip(f"set ${AUTHORS_ENV} to a checkout of Zeju1997/data_halucination_teaching "
                    "(f218fd3) to run the smoke test")
    if not (data_root() / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST under {data_root()}")
    pytest.importorskip("torchvision")
    pytest.importorskip("sklearn")  # the authors' trainer imports it
    pytest.importorskip("yaml")
    before = sorted(p.name for p in Path(checkout).iterdir())
    out = tmp_path / "out"
    r = _run(str(SCRIPT), "--authors", checkout, "--data", str(data_root()), "--out", str(out),
             "--quick", "--jobs", "2", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in Path(checkout).iterdir()) == before  # the checkout is untouched
    summary = json.loads((out / "summary.json").read_text())
    runs = summary["authors"]["95873"]
    assert set(runs) == {"student", "student-nz0", "sgd", "random"}
    first = {k: v["test_acc"][0] for k, v in runs.items()}
    assert len(set(first.values())) == 1, first  # one initialisation for every arm
    assert 5.5 < summary["probe"]["student"]["ratio_mean"] < 6.5  # 1 + n_weight_update grads
    assert set(summary["ours"]) == {"ours", "matched", "matched-model"}
    assert "Student" in (out / "tables.md").read_text()
