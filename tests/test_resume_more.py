"""Resume in a fresh process for MixupTeacher and TeachingSampler (issue 10).

A first process trains without interruption, and again up to a checkpoint
(``torch.save`` of the ``state_dict()``s); a second Python process loads the
checkpoint with ``torch.load(weights_only=True)`` and continues. The result
must be bit-identical to the uninterrupted run. One pair of processes serves
all the parameters of a test (starting Python with torch takes seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, worker_env

WORKERS = REPO / "tests" / "workers"
POLICIES = ["reinforce", "beta"]
STOPS = [3, 11]  # mid-epoch in epoch 0 and in epoch 1 (8 steps per epoch)


def _workers(*calls: tuple[str, ...]) -> None:
    """Run the worker scripts side by side (each call: script, args...); all must succeed."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKERS / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=worker_env(),
        )
        for script, *args in calls
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """DIR with the results of both workers: first processes, then fresh resuming ones."""
    d = tmp_path_factory.mktemp("resume")
    for mode in ("first", "resume"):
        _workers(
            ("resume_mixup_worker.py", mode, str(d), *POLICIES),
            ("resume_sampler_worker.py", mode, str(d), *map(str, STOPS)),
        )
    return d


@pytest.mark.parametrize("policy", POLICIES)
def test_mixup_resume_in_a_fresh_process_is_bit_identical(runs, policy):
    full = _load(runs / f"full_{policy}.pt")
    half = _load(runs / f"half_{policy}.pt")
    part = _load(runs / f"part_{policy}.pt")
    assert torch.equal(torch.cat([half["lambdas"], part["lambdas"]]), full["lambdas"])
    assert full.keys() == part.keys()
    for k in full:
        if k != "lambdas":
            assert torch.equal(full[k], part[k]), k
    assert full["counts"].tolist() == [20, 5]
    # the second half did something: the model moved, the lambdas vary
    assert not torch.equal(half["model.2.weight"], full["model.2.weight"])
    assert len(set(part["lambdas"].tolist())) > 1
    if policy == "reinforce":  # and the policy learned after the checkpoint
        assert not torch.equal(half["policy.fc2.weight"], full["policy.fc2.weight"])


@pytest.mark.parametrize("stop_after", STOPS)
def test_sampler_resume_mid_epoch_in_a_fresh_process_is_bit_identical(runs, stop_after):
    full = _load(runs / "full.pt")
    first = _load(runs / f"first_{stop_after}.pt")
    rest = _load(runs / f"rest_{stop_after}.pt")
    steps = full["steps_per_epoch"]
    assert steps == 8 and len(full["batches"]) == 2 * steps
    assert (first["sampler"]["epoch"], first["sampler"]["step"]) == divmod(stop_after, steps)
    assert stop_after % steps != 0  # the checkpoint falls mid-epoch
    assert len(first["batches"]) == stop_after
    assert torch.equal(torch.cat([first["batches"], rest["batches"]]), full["batches"])
    for k in full["params"]:
        assert torch.equal(full["params"][k], rest["params"][k]), k
