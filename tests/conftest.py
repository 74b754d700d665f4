"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def worker_env() -> dict[str, str]:
    """The environment for worker subprocesses: they import torchdht from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def data_root() -> Path:
    """Where the offline data sets live: $TORCHDHT_DATA, else ../shared/data."""
    return Path(os.environ.get("TORCHDHT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def mnist_root() -> Path:
    root = data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(
            f"MNIST not found under {root} (set TORCHDHT_DATA to a folder holding MNIST/raw)"
        )
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
