"""Cost of one TeachingSampler step against one training step.

Run: python -m pytest benchmarks/test_sampler_overhead.py --benchmark-enable
(add --benchmark-json=out.json to keep the figures). Runs on CUDA when it is
available, else on the CPU with one thread (the CNN case only on CUDA).
Measures only; asserts nothing about time.

Cases, for the MNIST MLP (784-128-10, batch 128, pool_factor 4, so 512
candidates per step) on MNIST-shaped synthetic data in a TensorDataset:

- ``train_step``: forward, backward and SGD step on one batch;
- ``plain_fetch``: loading and collating one batch of 128 items, what a plain
  DataLoader does per step;
- ``sampler_step[random|loss|greedy]``: one ``next()`` of the sampler:
  for ``random`` only the indices; for the others loading and collating the
  512 candidates, the eval forward and the scoring;
- ``score_only[loss|greedy]``: the same with the candidates already loaded
  (forward and scoring only), to separate the data loading from the model.

The selection overhead per step is ``sampler_step - sampler_step[random]``;
divide by ``train_step + plain_fetch`` for the cost relative to a training step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset, default_collate

from torchdht.sampler import TeachingSampler

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH, POOL_FACTOR = 128, 4


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """One intra-op thread on the CPU: steadier figures on a shared machine."""
    if DEVICE.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def _cnn3():
    def block(cin, cout):
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(3, 64), *block(64, 128), *block(128, 256), nn.Flatten(),
        nn.Linear(256 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10),
    )  # fmt: skip


CASES = {"mlp-mnist": (_mlp, (1, 28, 28)), "cnn3-cifar": (_cnn3, (3, 32, 32))}


def _setup(case):
    if case == "cnn3-cifar" and DEVICE.type == "cpu":
        pytest.skip("CNN-3 on 512 candidates per step is minutes on the CPU; CUDA only")
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = build().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=5e-4)
    n = 4096
    ds = TensorDataset(torch.randn(n, *shape), torch.randint(0, 10, (n,)))
    return model, opt, ds


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("case", list(CASES))
def test_train_step(benchmark, case):
    model, opt, ds = _setup(case)
    x, y = ds.tensors[0][:BATCH].to(DEVICE), ds.tensors[1][:BATCH].to(DEVICE)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync()

    benchmark.pedantic(step, warmup_rounds=5, rounds=50, iterations=1)


@pytest.mark.parametrize("case", list(CASES))
def test_plain_fetch(benchmark, case):
    _, _, ds = _setup(case)
    idx = torch.randperm(len(ds))[:BATCH].tolist()

    def fetch():
        x, y = default_collate([ds[i] for i in idx])
        x.to(DEVICE), y.to(DEVICE)
        _sync()

    benchmark.pedantic(fetch, warmup_rounds=5, rounds=50, iterations=1)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("score", ["random", "loss", "greedy"])
def test_sampler_step(benchmark, case, score):
    model, opt, ds = _setup(case)
    head = model[-1]
    sampler = TeachingSampler(
        ds,
        model=model,
        head=head,
        batch_size=BATCH,
        pool_factor=POOL_FACTOR,
        score=score,
        optimizer=opt if score == "greedy" else None,
        steps_per_epoch=10**9,
    )
    it = iter(sampler)

    def step():
        next(it)
        _sync()

    benchmark.pedantic(step, warmup_rounds=3, rounds=30 if case == "mlp-mnist" else 10)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("score", ["loss", "greedy"])
def test_score_only(benchmark, case, score):
    """Forward and scoring of one pool whose candidates are already loaded."""
    model, opt, ds = _setup(case)
    sampler = TeachingSampler(
        ds,
        model=model,
        head=model[-1],
        batch_size=BATCH,
        pool_factor=POOL_FACTOR,
        score=score,
        optimizer=opt if score == "greedy" else None,
    )
    pool = sampler.candidate_pools()[0]
    loaded = default_collate([ds[i] for i in pool.tolist()])
    sampler._load = lambda indices: loaded  # measure the model and the scoring only

    def step():
        sampler._select(pool)
        _sync()

    benchmark.pedantic(step, warmup_rounds=3, rounds=30 if case == "mlp-mnist" else 10)
