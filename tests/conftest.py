"""Shared test helpers, and the hypothesis settings profiles.

Property-based tests (hypothesis) run under one of two profiles registered here:

* ``ci``: derandomised (the same examples on every run, no example database), no deadline,
  and a reproduction blob printed with any failure.
  Loaded when the environment variable ``CI`` is set (to anything but ``""``, ``0`` or
  ``false``), as ``.ci/run`` is run in CI with ``CI=true``.
* ``dev``: hypothesis' defaults, fresh random examples each run. Loaded otherwise.

Pick one explicitly with ``HYPOTHESIS_PROFILE=ci python -m pytest ...`` (or ``dev``), or with
hypothesis' own ``python -m pytest --hypothesis-profile=ci ...``, which wins over both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def hypothesis_profile(env: Mapping[str, str] = os.environ) -> str:
    """The hypothesis profile for this environment: ``$HYPOTHESIS_PROFILE`` if set, else
    ``"ci"`` under CI (``$CI`` set and not ``""``, ``"0"`` or ``"false"``), else ``"dev"``."""
    chosen = env.get("HYPOTHESIS_PROFILE", "").strip()
    if chosen:
        return chosen
    ci = env.get("CI", "").strip().lower()
    return "ci" if ci not in ("", "0", "false") else "dev"


try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the dev extras bring it; without it the property tests cannot run anyway
    pass
else:
    _hypothesis_settings.register_profile(
        "ci", derandomize=True, database=None, deadline=None, print_blob=True
    )
    # Explicitly random: recent hypothesis versions derandomise their own defaults under CI.
    _hypothesis_settings.register_profile("dev", derandomize=False)
    _hypothesis_settings.load_profile(hypothesis_profile())


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


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny tensors and small models run faster and
    steadier on a shared machine; the previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def float64_head(w, b):
    """A float64 ``nn.Linear`` holding ``(w, b)``."""
    from torch import nn

    head = nn.Linear(w.shape[1], w.shape[0]).to(torch.float64)
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    return head


def taught_features(teacher, head, z, y):
    """The features the head receives in one armed forward (after the teacher's hook)."""
    seen = {}
    handle = head.register_forward_hook(lambda m, i, o: seen.__setitem__("z", i[0].detach()))
    teacher.set_targets(y)
    head(z)
    handle.remove()
    return seen["z"]
