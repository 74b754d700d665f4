"""One data-root resolver: the argument, else $TORCHDHT_DATA, else ../shared/data beside
the repository, whatever the working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from torchdht.data import DATA_ENV_VAR, default_root, resolve_root

from conftest import REPO, worker_env

SIBLING = REPO.parent / "shared" / "data"


def _root_from(cwd: Path, env_value: str | None) -> str:
    env = worker_env()
    env.pop(DATA_ENV_VAR, None)
    if env_value is not None:
        env[DATA_ENV_VAR] = env_value
    out = subprocess.run(
        [sys.executable, "-c", "from torchdht.data import default_root; print(default_root())"],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(not SIBLING.is_dir(), reason=f"no {SIBLING} beside this checkout")
def test_the_default_is_the_repositorys_sibling_from_any_working_directory(tmp_path):
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    assert _root_from(elsewhere, None) == _root_from(REPO, None) == str(SIBLING.resolve())


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    assert _root_from(tmp_path, str(tmp_path)) == str(tmp_path)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert default_root() == tmp_path
    assert resolve_root() == tmp_path
    assert resolve_root(REPO) == REPO  # and the argument wins over both


def test_a_missing_data_set_fails_with_one_line_saying_where(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        resolve_root(need="MNIST/raw")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and f"${DATA_ENV_VAR}" in message
    with pytest.raises(FileNotFoundError, match="the argument"):
        resolve_root(tmp_path / "nowhere", need="MNIST/raw")
    monkeypatch.delenv(DATA_ENV_VAR)
    if not SIBLING.is_dir():
        assert default_root() == Path("..") / "shared" / "data"
    else:
        assert default_root() == SIBLING.resolve()
