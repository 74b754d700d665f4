"""Batched greedy DHT solve: 128 problems in one call against the same 128 solves in a loop.

Run: python -m pytest benchmarks/test_linear_solve.py --benchmark-enable
(add --benchmark-json=out.json to keep the figures). CPU only; the problems
are MNIST-3/5-sized (logistic regression, D = 24, a box, 100 AMSGrad steps,
one start each). The loop test records ``ratio`` (loop time / batched time,
from the two benchmarks' means) in its ``extra_info`` and prints it. Asserts
only that both give the same solutions, nothing about time.
"""

from __future__ import annotations

import pytest
import torch

from torchdht.functional.box import sample_box
from torchdht.linear import LR, dht_solve

N_PROBLEMS, DIM, STEPS, LR_LEARNER = 128, 24, 100, 1e-3
_MEANS: dict[str, float] = {}


def _problems():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_PROBLEMS, DIM, generator=g, dtype=torch.float64)
    w_star = torch.randn(DIM, generator=g, dtype=torch.float64)
    y = LR.sample_labels(N_PROBLEMS, g, dtype=torch.float64)
    lo = -2.0 - torch.rand(DIM, generator=g, dtype=torch.float64)
    hi = 2.0 + torch.rand(DIM, generator=g, dtype=torch.float64)
    x0 = sample_box(N_PROBLEMS, lo, hi, g)
    return w, w_star, y, (lo, hi), x0


def _batched(w, w_star, y, box, x0):
    return dht_solve(LR, w, w_star, y, LR_LEARNER, box, x0, steps=STEPS).x


def _loop(w, w_star, y, box, x0):
    return torch.cat([
        dht_solve(LR, w[j], w_star, y[j : j + 1], LR_LEARNER, box, x0[j : j + 1], steps=STEPS).x
        for j in range(N_PROBLEMS)
    ])


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_dht_solve_batched_128(benchmark):
    benchmark.group = "greedy DHT solve, 128 problems"
    args = _problems()
    x = benchmark(_batched, *args)
    assert x.shape == (N_PROBLEMS, DIM)
    if benchmark.stats is not None:
        _MEANS["batched"] = benchmark.stats.stats.mean


def test_dht_solve_loop_128(benchmark):
    benchmark.group = "greedy DHT solve, 128 problems"
    args = _problems()
    x = benchmark.pedantic(_loop, args=args, rounds=3, iterations=1)
    torch.testing.assert_close(x, _batched(*args), rtol=1e-10, atol=1e-10)
    if benchmark.stats is not None and "batched" in _MEANS:
        ratio = benchmark.stats.stats.mean / _MEANS["batched"]
        benchmark.extra_info["ratio"] = ratio
        print(f"\nloop / batched time ratio for {N_PROBLEMS} problems: {ratio:.1f}x")
