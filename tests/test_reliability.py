"""Reliability of PerformativeTeacher: DDP, resume in a fresh process, determinism, memory."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchdht import PerformativeTeacher
from torchdht.functional import angle, chord_to_angle

from conftest import REPO, worker_env
from workers import ddp_worker

WORKERS = REPO / "tests" / "workers"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(script: str, *args: str) -> None:
    """Run ``script RANK 2 PORT *args`` as two processes of one gloo group on loopback."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKERS / script), str(r), "2", port, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=worker_env(),
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_ddp_two_processes_match_per_rank_reference(tmp_path, policy):
    out = tmp_path / "params.pt"
    _run_two_ranks("ddp_worker.py", str(out), policy)
    gathered = torch.load(out, weights_only=True)
    assert torch.equal(gathered[0], gathered[1])  # ranks stay in sync
    ref = ddp_worker.reference(2, policy)
    torch.testing.assert_close(gathered[0], ref, rtol=1e-12, atol=1e-12)


def test_teaching_sampler_shards_are_disjoint_across_real_ranks(tmp_path):
    """Two gloo ranks, world size and rank read from the process group."""
    out = tmp_path / "picks.pt"
    _run_two_ranks("sampler_worker.py", str(out))
    saved = torch.load(out, weights_only=True)
    assert saved["ranks"] == 2
    picks = saved["picks"]  # (rank, epoch, indices)
    for epoch in range(picks.shape[1]):
        a, b = set(picks[0, epoch].tolist()), set(picks[1, epoch].tolist())
        assert len(a) == picks.shape[2] and len(b) == picks.shape[2]  # no repeats within a rank
        assert not a & b  # disjoint across ranks
    assert not torch.equal(picks[0, 0], picks[0, 1])  # set_epoch reshuffles


def _worker(*args: str) -> None:
    res = subprocess.run(
        [sys.executable, str(WORKERS / "resume_worker.py"), *args], capture_output=True, text=True,
        env=worker_env(),
    )
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_resume_in_a_fresh_process_is_bit_identical(tmp_path, policy):
    full, part, ckpt = tmp_path / "full.pt", tmp_path / "part.pt", tmp_path / "ckpt.pt"
    _worker(policy, "0", "20", "--out", str(full))
    _worker(policy, "0", "10", "--save", str(ckpt), "--out", str(tmp_path / "half.pt"))
    _worker(policy, "10", "20", "--load", str(ckpt), "--out", str(part))
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _train(policy: str, steps: int = 15) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    with PerformativeTeacher(model[-1], optimizer=opt, policy=policy, seed=5) as t:
        for step in range(steps):
            g = torch.Generator().manual_seed(step)
            x, y = torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
            t.set_targets(y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_two_runs_with_a_seed_are_identical(policy):
    assert torch.equal(_train(policy), _train(policy))


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance probes some deprecated lazy attributes
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_many_steps_do_not_grow_memory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    x, y = torch.randn(32, 6), torch.randint(0, 4, (32,))
    with PerformativeTeacher(model[-1], optimizer=opt, lookahead_encoder_grad=True) as t:

        def steps(n: int) -> None:
            for _ in range(n):
                t.set_targets(y)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

        steps(10)
        before = _live_tensors()
        steps(1000)
        after = _live_tensors()
    assert after <= before, f"{after - before} tensors more after 1000 steps"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_no_host_sync_in_the_taught_forward_on_cuda(policy):
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).cuda()
    x, y = torch.randn(32, 6, device="cuda"), torch.randint(0, 4, (32,), device="cuda")
    with PerformativeTeacher(model[-1], lr=0.1, policy=policy, seed=0) as t:
        t.set_targets(y)
        model(x)  # warm-up: lazy generator and table creation may sync once
        torch.cuda.set_sync_debug_mode("error")
        try:
            t.set_targets(y)
            out = model(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert out.shape == (32, 4)


def _autocast_step(device: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)
    x = torch.randn(32, 6, device=device)
    y = torch.randint(0, 4, (32,), device=device)
    seen = {}
    h2 = model[-1].register_forward_hook(lambda m, a, o: seen.update(z=a[0].detach()))
    with PerformativeTeacher(model[-1], lr=0.5, eps=0.2) as t, torch.autocast(device, dtype=dtype):
        t.set_targets(y)
        out = model(x)
        z = model[:-1](x).detach()
    h2.remove()
    assert seen["z"].dtype == z.dtype  # the input dtype is handed back
    moved = angle(seen["z"].float(), z.float())
    tol = 4 * torch.finfo(z.dtype).eps  # rounding back to the autocast dtype
    assert float(moved.max()) <= chord_to_angle(0.2) + tol
    assert float(moved.max()) > 1e-3
    assert torch.isfinite(out.float()).all()


def test_autocast_bfloat16_cpu_keeps_dtype_and_constraint():
    _autocast_step("cpu", torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda_keeps_dtype_and_constraint(dtype):
    _autocast_step("cuda", dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grad_scaler_cuda_training_runs_and_stays_finite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.randn(32, 6, device="cuda"), torch.randint(0, 4, (32,), device="cuda")
    with PerformativeTeacher(
        model[-1], optimizer=opt, lookahead_encoder_grad=True, grad_scaler=scaler
    ) as t:
        for _ in range(5):
            t.set_targets(y)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_mode_keeps_two_forwards_before_one_backward():
    """With compile={"mode": "reduce-overhead"} the head's saved inputs of two forwards
    survive until the backward: the gradients equal the eager teacher's."""
    grads = []
    for compile in (False, {"mode": "reduce-overhead"}):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).cuda()
        x = torch.randn(2, 32, 6, device="cuda")
        y = torch.randint(0, 4, (2, 32), device="cuda")
        with PerformativeTeacher(model[-1], lr=0.1, compile=compile) as t:
            for _ in range(3):  # warm-up: cudagraph trees record after a few calls
                model.zero_grad()
                loss = 0.0
                for i in range(2):
                    t.set_targets(y[i])
                    loss = loss + F.cross_entropy(model(x[i]), y[i])
                loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for eager, graphed in zip(*grads):
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-5)
