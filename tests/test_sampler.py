"""TeachingSampler: picks, pools, ranks, model state, resume, bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from torchdht.errors import HeadTypeError, TargetsError
from torchdht.sampler import TeachingSampler

D_IN, D, C = 6, 10, 4


pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D_IN, D), nn.BatchNorm1d(D), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(D, C)
        self.to(dtype)

    def forward(self, x):
        return self.head(self.body(x))


def _data(n=96, seed=0, dtype=torch.float32, soft=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g, dtype=dtype)
    y = torch.randint(0, C, (n,), generator=g)
    if soft:
        y = torch.rand(n, C, generator=g, dtype=dtype)
    return TensorDataset(x, y)


def _trained_net(ds, dtype=torch.float32, steps=3):
    """A net whose BN buffers and weights are not at their initial values."""
    torch.manual_seed(0)
    net = Net(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = ds.tensors
    for _ in range(steps):
        loss = F.cross_entropy(net(x[:32]), y[:32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


# ------------------------------------------------------------------ reference
def _brute_force(
    net, ds, pool, batch_size, score, eta, la_lr=None, la_steps=5, w_star=None, per="batch"
):
    """Eq. 4 by autograd, one candidate at a time, and the argmin over the pool.

    The lookahead steps with ``la_lr`` (default ``eta``); the objective's step
    is ``eta / batch_size`` (``per="batch"``) or ``eta`` (``per="sample"``)."""
    cand = sorted(pool.tolist())
    x, y = ds.tensors[0][cand], ds.tensors[1][cand]
    ref = copy.deepcopy(net).eval()
    with torch.no_grad():
        z = ref.body(x)
    w0 = ref.head.weight.detach().clone()
    b0 = ref.head.bias.detach().clone()

    def ce(w, b, zz, yy):
        logits = F.linear(zz, w, b)
        if yy.is_floating_point():
            return -(yy * torch.log_softmax(logits, -1)).sum(-1).mean()
        return F.cross_entropy(logits, yy)

    if score == "loss":
        vals = [ce(w0, b0, z[j : j + 1], y[j : j + 1]).item() for j in range(len(cand))]
        keys = [-v for v in vals]
    else:
        if w_star is None:
            w, b = w0.clone(), b0.clone()
            for _ in range(la_steps):
                w.requires_grad_(True)
                b.requires_grad_(True)
                gw, gb = torch.autograd.grad(ce(w, b, z, y), (w, b))
                lr = eta if la_lr is None else la_lr
                w, b = (w - lr * gw).detach(), (b - lr * gb).detach()
            w_star = (w, b)
        ws, bs = w_star
        step = eta / batch_size if per == "batch" else eta
        keys = []
        for j in range(len(cand)):
            w = w0.clone().requires_grad_(True)
            b = b0.clone().requires_grad_(True)
            gw, gb = torch.autograd.grad(ce(w, b, z[j : j + 1], y[j : j + 1]), (w, b))
            after = (w0 - step * gw - ws).pow(2).sum() + (b0 - step * gb - bs).pow(2).sum()
            before = (w0 - ws).pow(2).sum() + (b0 - bs).pow(2).sum()
            keys.append((after - before).item())
    order = sorted(range(len(cand)), key=lambda j: (keys[j], cand[j]))
    return [cand[j] for j in order[:batch_size]]


# ---------------------------------------------------------------- the picks
@pytest.mark.parametrize(
    "score,soft,la_lr,chunk,per",
    [
        ("greedy", False, None, 1024, "batch"),
        ("greedy", False, None, 1024, "sample"),
        ("greedy", False, 0.05, 7, "batch"),
        ("greedy", True, None, 1024, "sample"),
        ("loss", False, None, 5, "batch"),
        ("loss", True, None, 1024, "batch"),
    ],
)
def test_picks_equal_brute_force_argmin_over_the_pool(score, soft, la_lr, chunk, per):
    ds = _data(dtype=torch.float64, soft=soft)
    net = _trained_net(_data(dtype=torch.float64), dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    s = TeachingSampler(
        ds,
        model=net,
        head=net.head,
        batch_size=6,
        pool_factor=4,
        score=score,
        optimizer=opt,
        lookahead_lr=la_lr,
        objective_eta=per,
        score_batch_size=chunk,
        seed=3,
    )
    pools = s.candidate_pools()
    assert len(pools) == len(s) == 96 // 24
    for step, batch in enumerate(s):
        assert batch == _brute_force(net, ds, pools[step], 6, score, 0.5, la_lr=la_lr, per=per)
    assert set(s.stats) >= {"pool_score_mean", "picked_score_mean"}


def test_greedy_with_given_w_star_for_a_linear_learner():
    ds = _data(dtype=torch.float64)
    torch.manual_seed(1)
    head = nn.Linear(D_IN, C).double()
    w_star = (torch.randn(C, D_IN, dtype=torch.float64), torch.randn(C, dtype=torch.float64))
    s = TeachingSampler(
        ds, model=head, head=head, batch_size=5, pool_factor=3, lr=0.3, w_star=w_star
    )
    assert s.objective_eta == "batch"

    class _Id(nn.Module):  # the brute force reads features as body(x)
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Identity(), head

    pools = s.candidate_pools()
    for step, batch in enumerate(s):
        assert batch == _brute_force(_Id(), ds, pools[step], 5, "greedy", 0.3, w_star=w_star)
    assert "theta_dist" in s.stats and s.stats["eta"] == 0.3
    assert s.stats["objective_eta"] == pytest.approx(0.3 / 5)


def test_a_step_on_the_greedy_batch_moves_the_head_closer_to_w_star_than_others():
    torch.manual_seed(0)
    head = nn.Linear(D_IN, C)
    w_star = (torch.randn(C, D_IN), torch.randn(C))
    ds = _data(n=400)
    s = TeachingSampler(ds, model=head, head=head, batch_size=10, lr=0.1, w_star=w_star)

    def dist_after_step(idx):
        x, y = ds.tensors[0][idx], ds.tensors[1][idx]
        gw, gb = torch.autograd.grad(F.cross_entropy(head(x), y), (head.weight, head.bias))
        w, b = head.weight - 0.1 * gw, head.bias - 0.1 * gb
        return ((w - w_star[0]).pow(2).sum() + (b - w_star[1]).pow(2).sum()).item()

    for batch, pool in zip(s, s.candidate_pools(0)):
        others = [dist_after_step(pool[k : k + 10]) for k in range(0, 40, 10)]
        assert dist_after_step(batch) < min(others)


class _Items(Dataset):
    """A plain map-style dataset (items loaded one by one, then collated)."""

    def __init__(self, ds, as_dict=False):
        self.ds, self.as_dict = ds, as_dict

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return {"image": x, "label": y} if self.as_dict else (x, y)


def _dict_collate(items):
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


def test_any_map_style_dataset_and_collate_fn_give_the_same_picks():
    ds = _data()
    net = _trained_net(ds)
    kw = dict(model=net, head=net.head, batch_size=4, lr=0.1, seed=1)
    want = list(TeachingSampler(ds, **kw))
    assert list(TeachingSampler(_Items(ds), **kw)) == want
    items = _Items(ds, as_dict=True)
    assert list(TeachingSampler(items, collate_fn=_dict_collate, **kw)) == want


def test_eta_is_read_from_the_optimizer_each_step():
    ds = _data()
    net = Net()
    opt = torch.optim.SGD([{"params": net.body.parameters(), "lr": 9.0},
                           {"params": net.head.parameters(), "lr": 0.1}])  # fmt: skip
    s = TeachingSampler(ds, model=net, head=net.head, batch_size=4, optimizer=opt)
    it = iter(s)
    next(it)
    assert s.stats["eta"] == pytest.approx(0.1)
    opt.param_groups[1]["lr"] = 0.02  # what a scheduler does
    next(it)
    assert s.stats["eta"] == pytest.approx(0.02)


def test_random_score_is_exactly_a_seeded_permutations_batches():
    ds = _data(n=50)
    s = TeachingSampler(ds, batch_size=8, score="random", seed=7)
    assert len(s) == 50 // 8
    for epoch in range(3):
        s.set_epoch(epoch)
        perm = torch.randperm(50, generator=torch.Generator().manual_seed(7 + epoch)).tolist()
        assert list(s) == [perm[i : i + 8] for i in range(0, 48, 8)]
    loader = DataLoader(ds, batch_sampler=s)
    s.set_epoch(0)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(7))
    for k, (x, _) in enumerate(loader):
        assert torch.equal(x, ds.tensors[0][perm[8 * k : 8 * k + 8]])
    assert len(loader) == len(s)


def test_steps_per_epoch_draws_further_passes_from_the_same_generator():
    ds = _data(n=40)
    s = TeachingSampler(ds, batch_size=10, score="random", seed=2, steps_per_epoch=9)
    g = torch.Generator().manual_seed(2)
    passes = [torch.randperm(40, generator=g).tolist() for _ in range(3)]
    want = [p[i : i + 10] for p in passes for i in range(0, 40, 10)][:9]
    assert list(s) == want


def test_model_and_epoch_give_deterministic_picks_and_epochs_differ():
    ds = _data()
    net = _trained_net(ds)

    def run(epoch):
        s = TeachingSampler(
            ds, model=net, head=net.head, batch_size=4, score="greedy", lr=0.1, seed=5
        )
        s.set_epoch(epoch)
        return list(s)

    assert run(0) == run(0)
    assert run(0) != run(1)


# ------------------------------------------------------------- ranks, pools
@pytest.mark.parametrize("n,drop_last", [(96, False), (101, True)])
def test_candidate_pools_are_disjoint_across_ranks_and_within_an_epoch(n, drop_last):
    ds = _data(n=n)
    net = Net()
    R = 3
    samplers = [
        TeachingSampler(
            ds,
            model=net,
            head=net.head,
            batch_size=4,
            pool_factor=2,
            score="loss",
            num_replicas=R,
            rank=r,
            drop_last=drop_last,
            seed=11,
        )
        for r in range(R)
    ]
    assert len({len(s) for s in samplers}) == 1  # every rank has the same number of steps
    for epoch in (0, 1):
        seen = [i for s in samplers for p in s.candidate_pools(epoch) for i in p.tolist()]
        assert len(seen) == len(set(seen)) == R * len(samplers[0]) * 8
        picked = []
        for s in samplers:
            s.set_epoch(epoch)
            for batch, pool in zip(s, s.candidate_pools(epoch)):
                assert set(batch) <= set(pool.tolist()) and len(batch) == 4
                picked += batch
        assert len(picked) == len(set(picked))
    # the same seed on every rank: rank r's pools come from the one shared permutation
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(11))
    total = n // R * R if drop_last else -(-n // R) * R
    for r, s in enumerate(samplers):
        share = perm[:total][r::R]
        assert torch.equal(torch.cat(s.candidate_pools(0)), share[: len(s) * 8])


def test_uneven_dataset_without_drop_last_pads_like_distributed_sampler():
    ds = _data(n=10)
    samplers = [
        TeachingSampler(ds, batch_size=2, score="random", num_replicas=4, rank=r, seed=0)
        for r in range(4)
    ]
    assert [s.num_samples for s in samplers] == [3] * 4
    assert [len(s) for s in samplers] == [1] * 4
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([perm, perm[:2]])
    for r, s in enumerate(samplers):
        assert list(s) == [padded[r::4][:2].tolist()]


# ------------------------------------------------------ the model untouched
def test_mode_bn_buffers_params_grads_and_global_rng_are_untouched():
    ds = _data()
    net = _trained_net(ds)
    net.train()
    net.body[3].eval()  # a mixed state: dropout in eval, the rest training
    F.cross_entropy(net(ds.tensors[0][:8]), ds.tensors[1][:8]).backward()
    modes = {name: m.training for name, m in net.named_modules()}
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    grads = {k: v.grad.clone() for k, v in net.named_parameters()}
    rng = torch.get_rng_state()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    s = TeachingSampler(ds, model=net, head=net.head, batch_size=4, optimizer=opt)
    batches = list(s)
    assert len(batches) == len(s) > 1
    assert {name: m.training for name, m in net.named_modules()} == modes
    for k, v in net.named_buffers():
        assert torch.equal(v, buffers[k]), k  # running stats and num_batches_tracked
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]) and torch.equal(v.grad, grads[k]), k
    assert torch.equal(torch.get_rng_state(), rng)
    assert not net.head._forward_pre_hooks  # the temporary hook is gone


def test_mode_is_restored_when_the_forward_fails():
    ds = _data()

    class Broken(Net):
        def forward(self, x):
            raise RuntimeError("boom")

    net = Broken().train()
    s = TeachingSampler(ds, model=net, head=net.head, batch_size=4, score="loss")
    with pytest.raises(RuntimeError, match="boom"):
        next(iter(s))
    assert all(m.training for m in net.modules())
    assert not net.head._forward_pre_hooks


def test_compiled_and_wrapped_models_are_unwrapped_for_scoring():
    ds = _data()
    net = _trained_net(ds)
    ref = TeachingSampler(ds, model=net, head=net.head, batch_size=4, score="loss")
    wrapped = TeachingSampler(
        ds, model=torch.compile(nn.DataParallel(net)), head=net.head, batch_size=4, score="loss"
    )
    assert list(ref) == list(wrapped)


# ---------------------------------------------------------------- resume
def _step(net, opt, x, y, log):
    log.append(x.sum().item())
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("score", ["greedy", "loss", "random"])
def test_state_dict_round_trip_gives_the_identical_continuation(score):
    ds = _data(n=120)

    def make():
        torch.manual_seed(0)
        net = Net()
        opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
        s = TeachingSampler(
            ds,
            model=net,
            head=net.head,
            batch_size=5,
            pool_factor=3,
            score=score,
            optimizer=opt if score == "greedy" else None,
            seed=4,
        )
        return net, opt, s

    net, opt, s = make()
    # (a DataLoader without generator= draws its base seed from the global RNG per epoch)
    loader = DataLoader(ds, batch_sampler=s, generator=torch.Generator())
    it = iter(loader)
    half = len(s) // 2
    for _ in range(half):  # half an epoch, then a checkpoint
        _step(net, opt, *next(it), [])
    state = copy.deepcopy((net.state_dict(), opt.state_dict(), s.state_dict()))
    rng = torch.get_rng_state()  # the model's dropout draws from it: a full checkpoint keeps it
    assert (state[2]["epoch"], state[2]["step"]) == (0, half)

    want: list = []
    for x, y in it:  # the uninterrupted run: the rest of epoch 0, then epoch 1
        _step(net, opt, x, y, want)
    s.set_epoch(1)
    for x, y in loader:
        _step(net, opt, x, y, want)

    net2, opt2, s2 = make()  # a fresh process: restore, then the usual epoch loop
    net2.load_state_dict(state[0])
    opt2.load_state_dict(state[1])
    s2.load_state_dict(state[2])
    torch.set_rng_state(rng)
    got: list = []
    loader2 = DataLoader(ds, batch_sampler=s2, generator=torch.Generator())
    for epoch in range(state[2]["epoch"], 2):
        s2.set_epoch(epoch)
        for x, y in loader2:
            _step(net2, opt2, x, y, got)
    assert len(got) == 2 * len(s) - half
    assert got == want
    for a, b in zip(net2.parameters(), net.parameters()):
        assert torch.equal(a, b)


def test_state_dict_counts_steps_and_epochs():
    ds = _data(n=40)
    s = TeachingSampler(ds, batch_size=10, score="random")
    it = iter(s)
    next(it)
    assert (s.state_dict()["epoch"], s.state_dict()["step"]) == (0, 1)
    rest = list(it)
    assert len(rest) == 3 and (s.epoch, s.state_dict()["step"]) == (1, 0)
    assert list(s) != [next(iter(TeachingSampler(ds, batch_size=10, score="random")))] + rest
    s.load_state_dict({**s.state_dict(), "epoch": 0, "step": 2})
    s.set_epoch(0)  # the epoch stopped in: the resume point is kept
    assert list(s) == rest[1:]


def test_load_state_dict_rejects_another_configuration():
    ds = _data(n=40)
    state = TeachingSampler(ds, batch_size=10, score="random").state_dict()
    with pytest.raises(ValueError, match="batch_size: saved 10, here 5"):
        TeachingSampler(ds, batch_size=5, score="random").load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        TeachingSampler(ds, batch_size=10, score="random").load_state_dict({"epoch": 0})


# ------------------------------------------------------------- bad inputs
class _NoLen(Dataset):
    def __getitem__(self, i):
        return torch.zeros(D_IN), 0


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(D_IN), 0


class _SizedStream(_Stream):
    def __len__(self):
        return 100


def test_bad_sizes_and_ranks():
    ds = _data(n=20)
    with pytest.raises(ValueError, match=r"batch_size \(21\) is larger than the dataset"):
        TeachingSampler(ds, batch_size=21, score="random")
    with pytest.raises(ValueError, match="pool_factor must be an int >= 1, got 0"):
        TeachingSampler(ds, batch_size=4, pool_factor=0, score="random")
    with pytest.raises(TypeError, match="pool_factor must be an int"):
        TeachingSampler(ds, batch_size=4, pool_factor=1.5, score="random")
    with pytest.raises(ValueError, match=r"pool_factor \* batch_size = 24 exceeds the 20"):
        net = Net()
        TeachingSampler(ds, model=net, head=net.head, batch_size=4, pool_factor=6, lr=0.1)
    with pytest.raises(ValueError, match=r"rank must lie in \[0, num_replicas - 1\] = \[0, 1\]"):
        TeachingSampler(ds, batch_size=4, score="random", num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="rank must be given"):
        TeachingSampler(ds, batch_size=4, score="random", num_replicas=2)
    with pytest.raises(ValueError, match="score must be one of"):
        TeachingSampler(ds, batch_size=4, score="hard")


@pytest.mark.parametrize("bad", [_NoLen(), _Stream(), _SizedStream()])
def test_dataset_without_len(bad):
    with pytest.raises(TypeError, match="map-style dataset with __len__"):
        TeachingSampler(bad, batch_size=4, score="random")


def test_bad_model_head_and_eta():
    ds = _data()
    net = Net()
    with pytest.raises(HeadTypeError, match=r"head must be an nn.Linear .*Sequential"):
        TeachingSampler(ds, model=net, head=net.body, batch_size=4, lr=0.1)
    with pytest.raises(ValueError, match="head is not a submodule of model"):
        TeachingSampler(ds, model=net, head=nn.Linear(D, C), batch_size=4, lr=0.1)
    with pytest.raises(ValueError, match="needs model="):
        TeachingSampler(ds, batch_size=4, score="loss")
    with pytest.raises(ValueError, match="needs the learner's learning rate"):
        TeachingSampler(ds, model=net, head=net.head, batch_size=4)
    other = torch.optim.SGD(net.body.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no param group holding head.weight"):
        TeachingSampler(ds, model=net, head=net.head, batch_size=4, optimizer=other)
    with pytest.raises(ValueError, match="not both"):
        TeachingSampler(ds, model=net, head=net.head, batch_size=4, optimizer=other, lr=0.1)
    with pytest.raises(ValueError, match="objective_eta must be 'batch' or 'sample'"):
        TeachingSampler(ds, model=net, head=net.head, batch_size=4, lr=0.1, objective_eta="x")
    with pytest.raises(ValueError, match="lr must be a positive float"):
        TeachingSampler(ds, model=net, head=net.head, batch_size=4, lr=-1.0)
    with pytest.raises(ValueError, match=r"weight shape \(4, 10\)"):
        TeachingSampler(
            ds, model=net, head=net.head, batch_size=4, lr=0.1, w_star=(torch.zeros(3, 3), None)
        )
    with pytest.raises(ValueError, match="b\\* must be a tensor when the head has a bias"):
        TeachingSampler(
            ds, model=net, head=net.head, batch_size=4, lr=0.1, w_star=(torch.zeros(C, D), None)
        )


def test_model_whose_features_do_not_match_the_head():
    ds = _data()

    class Seq(nn.Module):  # the head sees (N, 2, D): not one row per candidate
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(D_IN, 2 * D), nn.Linear(D, C)

        def forward(self, x):
            return self.head(self.body(x).view(-1, 2, D)).mean(1)

    net = Seq()
    s = TeachingSampler(ds, model=net, head=net.head, batch_size=4, lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(16, 2, 10\).*\(16, 10\)"):
        next(iter(s))

    class Twice(Net):
        def forward(self, x):
            z = self.body(x)
            return self.head(z) + self.head(z)

    net = Twice()
    with pytest.raises(ValueError, match="head was called 2 times"):
        next(iter(TeachingSampler(ds, model=net, head=net.head, batch_size=4, score="loss")))

    class Skips(Net):
        def forward(self, x):
            return self.body(x)

    net = Skips()
    with pytest.raises(ValueError, match="head was called 0 times"):
        next(iter(TeachingSampler(ds, model=net, head=net.head, batch_size=4, score="loss")))


def test_bad_items_and_targets():
    net = Net()
    bad_y = TensorDataset(torch.randn(40, D_IN), torch.full((40,), C))
    with pytest.raises(TargetsError, match=r"class indices must lie in \[0, 3\]"):
        next(iter(TeachingSampler(bad_y, model=net, head=net.head, batch_size=4, lr=0.1)))
    only_x = TensorDataset(torch.randn(40, D_IN))
    with pytest.raises(TypeError, match=r"must be a pair \(input, target\)"):
        next(iter(TeachingSampler(only_x, model=net, head=net.head, batch_size=4, lr=0.1)))


# ------------------------------------------------------------------ MNIST
def test_mnist_mlp_batches(mnist_root):
    import torchvision

    mnist = torchvision.datasets.MNIST(mnist_root, train=False, download=False)
    x = (mnist.data[:2000].float() / 255.0).unsqueeze(1)
    ds = TensorDataset(x, mnist.targets[:2000])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = TeachingSampler(ds, model=model, head=model[-1], batch_size=32, optimizer=opt)
    loader = DataLoader(ds, batch_sampler=s)
    losses = []
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert xb.shape == (32, 1, 28, 28)
    assert len(losses) == 2000 // 128
    assert sum(losses[-3:]) < sum(losses[:3])


# ------------------------------------------------------------ method card
def test_method_card_code_runs():
    import re
    from pathlib import Path

    import torchdht.sampler

    text = (Path(torchdht.sampler.__file__).parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        ns: dict = {}
        exec(compile(block, "torchdht/sampler/README.md", "exec"), ns)
