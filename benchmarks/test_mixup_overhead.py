"""Cost of one training step with MixupTeacher against plain training (ERM).

Run: python -m pytest benchmarks/test_mixup_overhead.py --benchmark-enable
(add --benchmark-json=out.json to keep the figures). The learner is the
experiment's simple CNN on a CIFAR-shaped batch of 128 with Adam, on CUDA
when available, else on the CPU with one torch thread (as the experiment).
A step is: teacher call, forward, backward, the hypergradient step for
"unroll", optimizer step, ``observe``. ``reinforce-episode`` times one
``reward()`` (the policy update) after an episode of 313 steps (two epochs of
the default 20k subset). ``test_relative_cost_interleaved`` times rounds of
one step of each policy in turn, so that a shared machine's changing load hits them
alike, and stores each policy's median step time over ERM's in
``extra_info["ratio_vs_erm"]`` (also printed with ``-s``). Measures only;
asserts nothing about time.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from torchdht.experiments.mixup import simple_cnn
from torchdht.mixup import MixupTeacher

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POLICIES = ("erm", "beta", "discrete", "reinforce", "unroll-order1", "unroll-order2")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    if DEVICE.type == "cpu":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _teacher(policy: str) -> MixupTeacher | None:
    if policy == "erm":
        return None
    if policy.startswith("unroll"):
        return MixupTeacher(10, "unroll", total_steps=10**6, seed=0, learner_lr=1e-3,
                            unroll_order=int(policy[-1]))
    return MixupTeacher(10, policy, total_steps=10**6, seed=0)


def _make_step(policy: str):
    torch.manual_seed(0)
    model = simple_cnn().to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(128, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (128,), device=DEVICE)
    val = (torch.randn(128, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (128,),
                                                                     device=DEVICE))
    teacher = _teacher(policy)

    def step():
        xm, ym = teacher(x, y) if teacher is not None else (x, y)
        loss = F.cross_entropy(model(xm), ym)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if policy.startswith("unroll"):
            teacher.hypergradient_step(model, F.cross_entropy, val)
        opt.step()
        lv = loss.item()
        if teacher is not None:
            teacher.observe(train_loss=lv)
        _sync()

    return step


@pytest.mark.parametrize("policy", POLICIES)
def test_train_step(benchmark, policy):
    step = _make_step(policy)
    for _ in range(3):
        step()
    benchmark.extra_info.update(device=str(DEVICE), policy=policy,
                                threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=20 if DEVICE.type == "cpu" else 100, iterations=1)


def test_reinforce_episode_update(benchmark):
    teacher = MixupTeacher(10, "reinforce", total_steps=10**6, seed=0)
    x, y = torch.randn(2, 3), torch.tensor([0, 1])

    def setup():
        for _ in range(313):
            teacher(x, y)
            teacher.observe(train_loss=1.0)
        return (), {}

    benchmark.extra_info.update(policy="reinforce-episode", episode_steps=313)
    benchmark.pedantic(lambda: teacher.reward(val_acc=0.5), setup=setup, rounds=10,
                       iterations=1)


def test_relative_cost_interleaved(benchmark):
    steps = {p: _make_step(p) for p in POLICIES}
    times: dict[str, list[float]] = {p: [] for p in POLICIES}
    for _ in range(3):
        for step in steps.values():
            step()

    order = list(POLICIES)

    def one_round():  # every policy once, in turn; the order rotates between rounds so
        for p in order:  # that no policy always follows the memory-hungry unroll steps
            t0 = time.perf_counter()
            steps[p]()
            times[p].append(time.perf_counter() - t0)
        order.append(order.pop(0))

    benchmark.pedantic(one_round, rounds=18 if DEVICE.type == "cpu" else 60, iterations=1)
    med = {p: statistics.median(t) for p, t in times.items()}
    ratios = {p: med[p] / med["erm"] for p in POLICIES}
    benchmark.extra_info.update(device=str(DEVICE), threads=torch.get_num_threads(),
                                median_ms={p: 1000 * m for p, m in med.items()},
                                ratio_vs_erm=ratios)
    print("\n" + "\n".join(f"{p:15s} {1000 * med[p]:8.2f} ms  {ratios[p]:5.2f}x ERM"
                            for p in POLICIES))
