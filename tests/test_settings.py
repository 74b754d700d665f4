"""Every public setting of the three teachers, and every figure of ``PerformativeTeacher.stats``.

Each setting is given a non-default valid value, and the result is compared with an
independent computation that uses that value (a direct call of ``torchdht.functional`` or
``torchdht.mixup.functional``, plain autograd, or a hand formula), and checked to differ
from the result with the default: a teacher that ignored the setting fails here. All
comparisons with closed forms run in float64. ``benchmarks/mutants.md`` lists the
mutations of the library these tests were checked against.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import Dataset, TensorDataset

from torchdht import MixupTeacher, PerformativeTeacher, TargetsError, TeachingSampler
from torchdht.functional import (
    chord_to_angle,
    greedy_teach,
    linear_ce_objective,
    linear_lookahead,
    random_teach,
)
from torchdht.functional.performative import PGD_TOL
from torchdht.mixup import mix_batch, sample_beta, sample_permutation, to_soft_targets

DT = torch.float64
N, D, C = 12, 10, 4


def _teacher_ref(*args, **kw):
    """``greedy_teach`` with the teacher's defaults: the pgd solver's early exit included."""
    if kw.get("solver", "pgd") == "pgd":
        kw.setdefault("solve_tol", PGD_TOL)
    return greedy_teach(*args, **kw)
ETA = 0.5

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("one_thread")


# =============================================================== PerformativeTeacher
def _problem(seed: int = 0, n: int = N, d: int = D, c: int = C):
    """Features (n, d), class indices and a head with fixed weights, all float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=DT).relu() + 0.1
    y = torch.randint(0, c, (n,), generator=g)
    head = nn.Linear(d, c).to(DT)
    with torch.no_grad():
        head.weight.copy_(0.5 * torch.randn(c, d, generator=g, dtype=DT))
        head.bias.copy_(0.1 * torch.randn(c, generator=g, dtype=DT))
    return z, y, head


def _wb(head: nn.Linear):
    return head.weight.detach(), head.bias.detach()


def _one_hot(y: torch.Tensor, c: int = C) -> torch.Tensor:
    """The teacher hands the functional API one-hot float targets; so does the reference."""
    return F.one_hot(y, c).to(DT)


def _run(head, z, targets, **kw):
    """One taught forward of ``head`` on ``z``: what the head saw and the teacher's stats."""
    seen = {}
    handle = head.register_forward_hook(lambda m, args, out: seen.update(z=args[0].detach()))
    try:
        with PerformativeTeacher(head, **kw) as t:
            t.set_targets(targets)
            head(z)
            stats = t.stats
    finally:
        handle.remove()
    return seen["z"], stats


def _extra_grad(head, z, y, **kw):
    """``d loss / d z`` with ``lookahead_encoder_grad=True`` minus the same without it."""
    scaler = kw.get("grad_scaler")
    grads = []
    for flag in (True, False):
        zz = z.clone().requires_grad_(True)
        with PerformativeTeacher(head, lookahead_encoder_grad=flag, **kw) as t:
            t.set_targets(y)
            loss = F.cross_entropy(head(zz), y)
            if scaler is not None:
                loss = scaler.scale(loss)
            grads.append(torch.autograd.grad(loss, zz)[0])
    return grads[0] - grads[1]


def _assert_same(got, want):
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def _max_diff(a, b) -> float:
    return float((a - b).abs().max())


def test_teacher_eps():
    z, y, head = _problem()
    W, b = _wb(head)
    got, _ = _run(head, z, y, lr=ETA, eps=0.5)
    _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, eps=0.5).z)
    moved = _angles(got, z)
    assert float(moved.max()) <= chord_to_angle(0.5) + 1e-9
    assert float(moved.max()) > chord_to_angle(0.1) + 1e-3  # beyond the default cap


@pytest.mark.parametrize("steps", [1, 2])
def test_teacher_lookahead_steps(steps):
    z, y, head = _problem()
    W, b = _wb(head)
    got, stats = _run(head, z, y, lr=ETA, lookahead_steps=steps)
    _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, lookahead_steps=steps).z)
    assert _max_diff(got, _teacher_ref(z, _one_hot(y), W, b, ETA).z) > 1e-3
    la = linear_lookahead(z, y, W, b, ETA, steps)
    assert stats["theta_dist"] == pytest.approx(_dist(W, b, la.weight, la.bias), rel=1e-10)


def test_teacher_lookahead_lr():
    z, y, head = _problem()
    W, b = _wb(head)
    got, stats = _run(head, z, y, lr=ETA, lookahead_lr=0.05)
    _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, lookahead_lr=0.05).z)
    assert _max_diff(got, _teacher_ref(z, _one_hot(y), W, b, ETA).z) > 1e-3
    la = linear_lookahead(z, y, W, b, 0.05, 5)
    assert stats["theta_dist"] == pytest.approx(_dist(W, b, la.weight, la.bias), rel=1e-10)
    assert stats["eta"] == ETA  # the objective still uses the learner's eta


@pytest.mark.parametrize(
    "solver,steps", [("pgd", 3), ("pgd", 40), ("linesearch", 1), ("linesearch", 5)]
)
def test_teacher_solve_steps(solver, steps):
    z, y, head = _problem()
    W, b = _wb(head)
    got, _ = _run(head, z, y, lr=ETA, solver=solver, solve_steps=steps)
    _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, solver=solver, solve_steps=steps).z)
    default = _teacher_ref(z, _one_hot(y), W, b, ETA, solver=solver).z
    assert _max_diff(got, default) > 1e-6


def test_teacher_solver():
    z, y, head = _problem()
    W, b = _wb(head)
    results = {}
    for solver in ("linesearch", "pgd"):
        got, stats = _run(head, z, y, lr=ETA, solver=solver)
        _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, solver=solver).z)
        results[solver] = (got, stats["objective_after"])
    assert _max_diff(results["linesearch"][0], results["pgd"][0]) > 1e-4
    got, _ = _run(head, z, y, lr=ETA)  # the default is projected gradient descent
    _assert_same(got, results["pgd"][0])


@pytest.mark.parametrize("solve_lr", [0.01, 0.2])
def test_teacher_solve_lr(solve_lr):
    z, y, head = _problem()
    W, b = _wb(head)
    got, _ = _run(head, z, y, lr=ETA, solver="pgd", solve_lr=solve_lr)
    _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, solver="pgd", solve_lr=solve_lr).z)
    assert _max_diff(got, _teacher_ref(z, _one_hot(y), W, b, ETA, solver="pgd").z) > 1e-3


def test_teacher_optimizer_and_lr_give_eta():
    z, y, head = _problem()
    W, b = _wb(head)
    body = nn.Linear(3, 3)
    opt = torch.optim.SGD([{"params": body.parameters(), "lr": 9.0},
                           {"params": head.parameters(), "lr": 0.37}])  # fmt: skip
    want = _teacher_ref(z, _one_hot(y), W, b, 0.37).z
    assert _max_diff(want, _teacher_ref(z, _one_hot(y), W, b, ETA).z) > 1e-3
    for kw in ({"optimizer": opt}, {"lr": 0.37}, {"lr": lambda: 0.37}):
        got, stats = _run(head, z, y, **kw)
        _assert_same(got, want)
        assert stats["eta"] == 0.37  # in the working dtype (float64 here), not rounded


@pytest.mark.parametrize("seed", [3, 11])
def test_teacher_random_policy_and_seed(seed):
    z, y, head = _problem()
    W, b = _wb(head)
    got, _ = _run(head, z, y, lr=ETA, policy="random", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    _assert_same(got, random_teach(z, _one_hot(y), W, b, ETA, generator=gen).z)
    other = random_teach(z, _one_hot(y), W, b, ETA, generator=torch.Generator().manual_seed(0))
    assert _max_diff(got, other.z) > 1e-3
    assert _max_diff(got, _teacher_ref(z, _one_hot(y), W, b, ETA).z) > 1e-3


def test_teacher_policy_none_passes_features_through():
    z, y, head = _problem()
    got, stats = _run(head, z, y, lr=ETA, policy="none")
    assert torch.equal(got, z)
    assert stats == {"angle_mean": 0.0, "angle_max": 0.0, "n_rows": N, "n_skipped": 0,
                     "n_ignored": 0}


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_teacher_lookahead_encoder_grad(policy):
    z, y, head = _problem()
    W, b = _wb(head)
    extra = _extra_grad(head, z, y, lr=ETA, policy=policy, seed=1, lookahead_steps=3)
    want = linear_lookahead(z, _one_hot(y), W, b, ETA, 3, feature_grad=True).feature_grad
    assert float(want.abs().max()) > 1e-3
    _assert_same(extra, want)


def test_teacher_grad_scaler():
    z, y, head = _problem()
    W, b = _wb(head)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    extra = _extra_grad(head, z, y, lr=ETA, grad_scaler=scaler)
    want = linear_lookahead(z, _one_hot(y), W, b, ETA, 5, feature_grad=True).feature_grad
    assert float(want.abs().max()) > 1e-3
    _assert_same(extra, 4.0 * want)


def test_teacher_compile_runs_the_step_through_torch_compile():
    z, y, head = _problem()
    W, b = _wb(head)
    graphs = []

    def backend(gm, example_inputs):  # a torch.compile backend that records what it gets
        graphs.append(gm)
        return gm.forward

    torch.compiler.reset()  # no cached graph of the step from another test
    kw = dict(lr=ETA, lookahead_steps=1, solve_steps=2)
    got, _ = _run(head, z, y, compile={"backend": backend}, **kw)
    assert len(graphs) >= 1
    _assert_same(got, _teacher_ref(z, _one_hot(y), W, b, ETA, lookahead_steps=1, solve_steps=2).z)


def test_teacher_head_is_the_layer_taught():
    z, y, head = _problem()
    other = copy.deepcopy(head)
    W, b = _wb(head)
    seen = {}
    handle = other.register_forward_hook(lambda m, args, out: seen.update(z=args[0]))
    with PerformativeTeacher(head, lr=ETA) as t:
        t.set_targets(y)
        other(z)  # not the taught head: untouched, and the targets stay armed
        assert seen["z"] is z
        out = head(z)
    handle.remove()
    _assert_same(out, F.linear(_teacher_ref(z, _one_hot(y), W, b, ETA).z, W, b))


def test_teacher_ignore_index():
    """Rows labelled ``ignore_index`` pass through and the others are taught as if alone."""
    z, y, head = _problem(seed=6)
    W, b = _wb(head)
    y[[1, 5, 6]] = 2
    keep = y != 2
    got, stats = _run(head, z, y, lr=ETA, ignore_index=2)
    assert torch.equal(got[~keep], z[~keep])
    alone = _teacher_ref(z[keep], _one_hot(y[keep]), W, b, ETA).z
    torch.testing.assert_close(got[keep], alone, rtol=1e-10, atol=1e-12)
    # with the default ignore_index, class 2 is a class like any other
    assert _max_diff(_run(head, z, y, lr=ETA)[0][~keep], z[~keep]) > 1e-3
    _check_stats(stats, z, got, y, W, b, ETA, 5, keep, ignored=~keep)
    with pytest.raises(TargetsError):  # an out-of-range label that is not ignore_index
        _run(head, z, torch.full((N,), -100), lr=ETA, ignore_index=2)


@needs_cuda
def test_teacher_validate_checks_cuda_targets_on_the_host():
    head = nn.Linear(D, C).cuda()
    with PerformativeTeacher(head, lr=ETA, validate=True) as t:
        with pytest.raises(TargetsError, match="class indices"):
            t.set_targets(torch.tensor([0, C], device="cuda"))


# ------------------------------------------------------------------------ stats
def _angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angles between matching rows by arccos, in float64."""
    a, b = a.to(DT), b.to(DT)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.arccos(cos.clamp(-1.0, 1.0))


def _dist(W, b, W_star, b_star) -> float:
    return math.sqrt(float((W - W_star).pow(2).sum() + (b - b_star).pow(2).sum()))


def _soft_ce(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy for class indices or soft targets."""
    logp = torch.log_softmax(logits, -1)
    if t.is_floating_point():
        return -(t * logp).sum(-1)
    return -logp.gather(-1, t.unsqueeze(-1)).squeeze(-1)


def _autograd_lookahead(z, t, W, b, lr, steps):
    """``steps`` SGD steps of the head on the batch-mean cross-entropy, by autograd."""
    w, bb = W.clone(), b.clone()
    for _ in range(steps):
        w.requires_grad_(True)
        bb.requires_grad_(True)
        gw, gb = torch.autograd.grad(_soft_ce(z @ w.T + bb, t).mean(), (w, bb))
        w, bb = (w - lr * gw).detach(), (bb - lr * gb).detach()
    return w, bb


def _autograd_eq9(z, t, W, b, W_star, b_star, eta):
    """Eq. 9 row by row: ``|theta - eta g_j - theta*|^2 - |theta - theta*|^2``, g_j by autograd."""
    base = float((W - W_star).pow(2).sum() + (b - b_star).pow(2).sum())
    out = []
    for j in range(z.shape[0]):
        w, bb = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        gw, gb = torch.autograd.grad(_soft_ce(z[j : j + 1] @ w.T + bb, t[j : j + 1]).sum(),
                                     (w, bb))
        after = (W - eta * gw - W_star).pow(2).sum() + (b - eta * gb - b_star).pow(2).sum()
        out.append(float(after) - base)
    return torch.tensor(out, dtype=DT)


def _check_stats(stats, z, z_tilde, t, W, b, eta, steps, valid, ignored=None):
    """Every figure of ``stats`` against an independent computation.

    ``valid`` marks the rows taught; ``ignored`` those whose label is ``ignore_index``
    (neither taught nor counted as skipped)."""
    ignored = torch.zeros_like(valid) if ignored is None else ignored
    assert set(stats) == {"angle_mean", "angle_max", "objective_before", "objective_after",
                          "objective_drop", "theta_dist", "eta", "n_rows", "n_skipped",
                          "n_ignored", "loss_untaught", "loss_taught"}
    zv, ztv, tv = z[valid], z_tilde[valid], t[valid]
    W_star, b_star = _autograd_lookahead(zv, tv, W, b, eta, steps)
    before = _autograd_eq9(zv, tv, W, b, W_star, b_star, eta).mean()
    after = _autograd_eq9(ztv, tv, W, b, W_star, b_star, eta).mean()
    moved = _angles(ztv, zv)
    assert stats["objective_before"] == pytest.approx(float(before), rel=1e-9, abs=1e-12)
    assert stats["objective_after"] == pytest.approx(float(after), rel=1e-9, abs=1e-12)
    assert stats["objective_drop"] == pytest.approx(float(before - after), rel=1e-8, abs=1e-12)
    assert stats["theta_dist"] == pytest.approx(_dist(W, b, W_star, b_star), rel=1e-10)
    assert stats["angle_mean"] == pytest.approx(float(moved.mean()), rel=1e-6, abs=1e-7)
    assert stats["angle_max"] == pytest.approx(float(moved.max()), rel=1e-6, abs=1e-7)
    assert stats["eta"] == eta  # in the working dtype
    assert stats["n_rows"] == z.shape[0]
    assert stats["n_skipped"] == int((~valid & ~ignored).sum())
    assert stats["n_ignored"] == int(ignored.sum())
    # cross-entropy of the head on the original and on the taught rows
    untaught = torch.nn.functional.cross_entropy(zv @ W.T + b, tv)
    taught = torch.nn.functional.cross_entropy(ztv @ W.T + b, tv)
    assert stats["loss_untaught"] == pytest.approx(float(untaught), rel=1e-10)
    assert stats["loss_taught"] == pytest.approx(float(taught), rel=1e-10)
    return float(before), float(after)


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_stats_against_independent_computation(policy):
    z, y, head = _problem(seed=2)
    z[4] = float("nan")  # passed through and counted
    z[7] = 0.0
    valid = torch.ones(N, dtype=torch.bool)
    valid[[4, 7]] = False
    W, b = _wb(head)
    z_tilde, stats = _run(head, z, y, lr=0.4, eps=0.3, lookahead_steps=3, policy=policy,
                          seed=0)
    before, after = _check_stats(stats, z, z_tilde, y, W, b, 0.4, 3, valid)
    assert stats["angle_max"] <= chord_to_angle(0.3) + 1e-9 and stats["angle_max"] > 1e-3
    if policy == "greedy":
        assert stats["objective_drop"] > 1e-3 and after < before  # greedy lowers eq. 9


def test_stats_count_every_row_of_a_sequence_input():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 4, D, generator=g, dtype=DT).relu() + 0.1
    z[1, 2] = 0.0
    y = torch.randint(0, C, (3, 4), generator=g)
    _, _, head = _problem()
    W, b = _wb(head)
    z_tilde, stats = _run(head, z, y, lr=ETA)
    valid = torch.ones(12, dtype=torch.bool)
    valid[1 * 4 + 2] = False
    _check_stats(stats, z.reshape(12, D), z_tilde.reshape(12, D), y.reshape(12), W, b, ETA, 5,
                 valid)
    assert stats["n_rows"] == 12 and stats["n_skipped"] == 1


def test_float64_soft_targets_match_the_functional_api_and_the_stats():
    z, y, head = _problem(seed=3)
    g = torch.Generator().manual_seed(8)
    soft = torch.rand(N, C, generator=g, dtype=DT) * 0.3 + 0.7 * _one_hot(y)  # mass != 1
    W, b = _wb(head)
    z_tilde, stats = _run(head, z, soft, lr=ETA, eps=0.4)
    assert z_tilde.dtype == DT
    want = _teacher_ref(z, soft, W, b, ETA, eps=0.4).z
    _assert_same(z_tilde, want)
    # the soft targets matter: the one-hot (argmax) targets give another point
    assert _max_diff(want, _teacher_ref(z, _one_hot(y), W, b, ETA, eps=0.4).z) > 1e-3
    _check_stats(stats, z, z_tilde, soft, W, b, ETA, 5, torch.ones(N, dtype=torch.bool))
    assert stats["objective_drop"] > 1e-3


# ================================================================== TeachingSampler
S_IN, S_D, S_C, S_N = 6, 10, 4, 96


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(S_IN, S_D), nn.BatchNorm1d(S_D), nn.ReLU(),
                                  nn.Dropout(0.5))
        self.head = nn.Linear(S_D, S_C)

    def forward(self, x):
        return self.head(self.body(x))


def _sampler_data(n=S_N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, S_IN, generator=g, dtype=DT),
                         torch.randint(0, S_C, (n,), generator=g))


def _sampler_net(ds, seed=0):
    """A float64 net whose weights and BatchNorm buffers moved away from their initial values."""
    torch.manual_seed(seed)
    net = _Net().to(DT)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = ds.tensors
    for _ in range(3):
        loss = F.cross_entropy(net(x[:32]), y[:32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def _reference(net, ds, pool, *, batch_size, eta=ETA, steps=5, la_lr=None, per="batch",
               w_star=None, score="greedy", transform=None, ignore=None):
    """The picks of one pool and the step's figures, from ``torchdht.functional``.

    Candidates labelled ``ignore`` are left out of everything and come last, in index order.
    """
    cand = sorted(pool.tolist())
    x, y = ds.tensors[0][cand], ds.tensors[1][cand]
    if transform is not None:
        x = transform(x)
    model = copy.deepcopy(net).eval()
    with torch.no_grad():
        z = model.body(x)
    scored = [j for j in range(len(cand)) if int(y[j]) != ignore]
    z, y = z[scored], y[scored]
    W, b = _wb(model.head)
    figures = {}
    if score == "loss":
        shown = _soft_ce(F.linear(z, W, b), y)
        key = -shown
    else:
        if w_star is None:
            la = linear_lookahead(z, y, W, b, eta if la_lr is None else la_lr, steps)
            w_star = (la.weight, la.bias)
        obj_eta = eta / batch_size if per == "batch" else eta
        shown = key = linear_ce_objective(z, y, W, b, w_star[0], w_star[1], obj_eta)
        figures = {"theta_dist": _dist(W, b, *w_star), "objective_eta": obj_eta, "eta": eta}
    order = sorted(range(len(scored)), key=lambda j: (float(key[j]), cand[scored[j]]))
    picks = [cand[scored[j]] for j in order]
    picks += [cand[j] for j in range(len(cand)) if j not in scored]
    figures["pool_score_mean"] = float(shown.mean())
    figures["picked_score_mean"] = float(shown[order[:batch_size]].mean())
    if ignore is not None:
        figures["ignored"] = len(cand) - len(scored)
    return picks[:batch_size], figures


def _check_epoch(sampler, net, ds, **ref_kw):
    """Every batch of one epoch equals the reference's; returns the last step's figures."""
    pools = sampler.candidate_pools()
    batches = []
    figures = {}
    for step, batch in enumerate(sampler):
        want, figures = _reference(net, ds, pools[step], batch_size=sampler.batch_size, **ref_kw)
        assert batch == want, step
        for k, v in figures.items():
            assert sampler.stats[k] == pytest.approx(v, rel=1e-9, abs=1e-14), k
        batches.append(batch)
    assert len(batches) == len(sampler)
    return batches, figures


@pytest.fixture(scope="module")
def sampler_setup():
    ds = _sampler_data()
    return ds, _sampler_net(ds)


def _sampler(ds, net, **kw):
    kw.setdefault("lr", ETA)
    kw.setdefault("batch_size", 6)
    kw.setdefault("seed", 3)
    return TeachingSampler(ds, model=net, head=net.head, **kw)


@pytest.mark.parametrize("steps", [1, 2])
def test_sampler_lookahead_steps(sampler_setup, steps):
    ds, net = sampler_setup
    _, figures = _check_epoch(_sampler(ds, net, lookahead_steps=steps), net, ds, steps=steps)
    pool = _sampler(ds, net).candidate_pools()[-1]
    _, default = _reference(net, ds, pool, batch_size=6)
    assert abs(figures["theta_dist"] - default["theta_dist"]) > 1e-3 * default["theta_dist"]


def test_sampler_lookahead_lr(sampler_setup):
    ds, net = sampler_setup
    _, figures = _check_epoch(_sampler(ds, net, lookahead_lr=0.05), net, ds, la_lr=0.05)
    pool = _sampler(ds, net).candidate_pools()[-1]
    _, default = _reference(net, ds, pool, batch_size=6)
    assert abs(figures["theta_dist"] - default["theta_dist"]) > 1e-3 * default["theta_dist"]


def test_sampler_objective_eta(sampler_setup):
    ds, net = sampler_setup
    _, figures = _check_epoch(_sampler(ds, net, objective_eta="sample"), net, ds, per="sample")
    assert figures["objective_eta"] == ETA
    _check_epoch(_sampler(ds, net), net, ds, per="batch")  # the default: eta / batch_size


def test_sampler_w_star(sampler_setup):
    ds, net = sampler_setup
    g = torch.Generator().manual_seed(4)
    w_star = (torch.randn(S_C, S_D, generator=g, dtype=DT), torch.randn(S_C, generator=g,
                                                                        dtype=DT))
    _, figures = _check_epoch(_sampler(ds, net, w_star=w_star), net, ds, w_star=w_star)
    assert figures["theta_dist"] == pytest.approx(_dist(*_wb(net.head), *w_star))


def test_sampler_batch_size_and_pool_factor(sampler_setup):
    ds, net = sampler_setup
    s = _sampler(ds, net, batch_size=5, pool_factor=3)
    assert len(s) == S_N // 15
    assert [len(p) for p in s.candidate_pools()] == [15] * len(s)
    batches, figures = _check_epoch(s, net, ds)
    assert all(len(b) == 5 for b in batches)
    assert figures["objective_eta"] == pytest.approx(ETA / 5)


def test_sampler_score_loss_and_random(sampler_setup):
    ds, net = sampler_setup
    _check_epoch(_sampler(ds, net, score="loss"), net, ds, score="loss")
    s = _sampler(ds, net, score="random", batch_size=8)
    perm = torch.randperm(S_N, generator=torch.Generator().manual_seed(3)).tolist()
    assert list(s) == [perm[i : i + 8] for i in range(0, S_N, 8)]


def test_sampler_optimizer_and_lr(sampler_setup):
    ds, net = sampler_setup
    opt = torch.optim.SGD([{"params": net.body.parameters(), "lr": 9.0},
                           {"params": net.head.parameters(), "lr": 0.37}])  # fmt: skip
    s = _sampler(ds, net, lr=None, optimizer=opt)
    it = iter(s)
    pools = s.candidate_pools()
    assert next(it) == _reference(net, ds, pools[0], batch_size=6, eta=0.37)[0]
    assert s.stats["eta"] == 0.37
    opt.param_groups[1]["lr"] = 0.02
    assert next(it) == _reference(net, ds, pools[1], batch_size=6, eta=0.02)[0]
    assert s.stats["eta"] == 0.02
    for lr in (0.37, lambda: 0.37):
        _, figures = _check_epoch(_sampler(ds, net, lr=lr), net, ds, eta=0.37)
        assert figures["eta"] == 0.37


def test_sampler_seed_and_epoch(sampler_setup):
    ds, net = sampler_setup
    s = _sampler(ds, net, seed=7)
    for epoch in (0, 2):
        s.set_epoch(epoch)
        perm = torch.randperm(S_N, generator=torch.Generator().manual_seed(7 + epoch))
        assert [p.tolist() for p in s.candidate_pools()] == [
            perm[i : i + 24].tolist() for i in range(0, S_N, 24)]  # fmt: skip
    s.set_epoch(0)
    _check_epoch(s, net, ds)


@pytest.mark.parametrize("n,drop_last,share", [(101, True, 50), (101, False, 51)])
def test_sampler_num_replicas_rank_and_drop_last(n, drop_last, share):
    ds = _sampler_data(n)
    net = _sampler_net(ds)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    full = perm[: 2 * share] if drop_last else torch.cat([perm, perm[: 2 * share - n]])
    for rank in (0, 1):
        s = _sampler(ds, net, batch_size=4, num_replicas=2, rank=rank, drop_last=drop_last)
        mine = full[rank::2]
        assert s.num_samples == share and len(mine) == share
        want = [mine[i : i + 16].tolist() for i in range(0, share - share % 16, 16)]
        assert [p.tolist() for p in s.candidate_pools()] == want
        _check_epoch(s, net, ds)


def test_sampler_steps_per_epoch(sampler_setup):
    ds, net = sampler_setup
    s = _sampler(ds, net, steps_per_epoch=6)
    assert len(s) == 6
    gen = torch.Generator().manual_seed(3)
    passes = [torch.randperm(S_N, generator=gen) for _ in range(2)]
    want = [p[i : i + 24].tolist() for p in passes for i in range(0, S_N, 24)][:6]
    assert [p.tolist() for p in s.candidate_pools()] == want
    _check_epoch(s, net, ds)


class _Items(Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def _doubling_collate(items):
    x = torch.stack([it[0] for it in items])
    return 2.0 * x, torch.stack([it[1] for it in items])


def test_sampler_collate_fn(sampler_setup):
    ds, net = sampler_setup
    s = _sampler(_Items(ds), net, collate_fn=_doubling_collate)
    pools = s.candidate_pools()
    got = list(s)
    want = [_reference(net, ds, p, batch_size=6, transform=lambda x: 2.0 * x)[0] for p in pools]
    assert got == want
    assert got != [_reference(net, ds, p, batch_size=6)[0] for p in pools]


def test_sampler_score_batch_size(sampler_setup):
    ds, net = sampler_setup
    calls = []
    s = _sampler(ds, net, score_batch_size=7)
    pools = s.candidate_pools()
    handle = net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        got = list(s)
    finally:
        handle.remove()
    assert calls == [7, 7, 7, 3] * len(s)  # pools of 24 in forwards of at most 7
    assert got == [_reference(net, ds, p, batch_size=6)[0] for p in pools]


@pytest.mark.parametrize("score", ["greedy", "loss"])
def test_sampler_ignore_index(score):
    """Candidates labelled ``ignore_index`` are left out of the scoring and picked last."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(S_N, S_IN, generator=g, dtype=DT)
    y = torch.randint(0, S_C, (S_N,), generator=g)
    y[torch.randperm(S_N, generator=g)[:70]] = 2  # most of every pool: some pools run dry
    ds = TensorDataset(x, y)
    net = _sampler_net(_sampler_data())
    s = _sampler(ds, net, score=score, ignore_index=2)
    _, figures = _check_epoch(s, net, ds, score=score, ignore=2)
    assert figures["ignored"] > 6
    default = list(_sampler(ds, net, score=score))
    assert default == [_reference(net, ds, p, batch_size=6, score=score)[0]
                       for p in s.candidate_pools(0)]
    assert default != [_reference(net, ds, p, batch_size=6, score=score, ignore=2)[0]
                       for p in s.candidate_pools(0)]


# ===================================================================== MixupTeacher
def _mix_batch_data(n=8, d=5, c=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


def test_mixup_num_classes_policy_discrete_actions_and_seed():
    x, y = _mix_batch_data(c=5)
    t = MixupTeacher(5, "discrete", actions=(0.2, 0.7), seed=9)
    xm, ym = t(x, y)
    gen = torch.Generator().manual_seed(9)
    lam = (0.2, 0.7)[int(torch.randint(2, (), generator=gen))]
    perm = sample_permutation(8, gen)
    assert t.last_lambda == lam and torch.equal(t.last_permutation, perm)
    want_x, want_y = mix_batch(x, to_soft_targets(y, 5), lam, perm)
    assert ym.shape == (8, 5)
    assert torch.equal(xm, want_x) and torch.equal(ym, want_y)
    seen = set()
    for _ in range(20):
        t(x, y)
        seen.add(t.last_lambda)
    assert seen == {0.2, 0.7}


@pytest.mark.parametrize("alpha", [0.3, 4.0])
def test_mixup_beta_alpha_and_seed(alpha):
    x, y = _mix_batch_data()
    t = MixupTeacher(4, "beta", alpha=alpha, seed=5)
    xm, ym = t(x, y)
    gen = torch.Generator().manual_seed(5)
    lam = sample_beta(alpha, gen)
    perm = sample_permutation(8, gen)
    assert t.last_lambda == lam and torch.equal(t.last_permutation, perm)
    want_x, want_y = mix_batch(x, to_soft_targets(y, 4), lam, perm)
    assert torch.equal(xm, want_x) and torch.equal(ym, want_y)
    assert lam != sample_beta(1.0, torch.Generator().manual_seed(5))  # the default alpha
    assert lam != sample_beta(alpha, torch.Generator().manual_seed(6))  # another seed


def test_mixup_total_steps():
    x, y = _mix_batch_data()
    t = MixupTeacher(4, "reinforce", total_steps=8, seed=0)
    for _ in range(3):
        t(x, y)
    assert t.state_features()[0] == 3 / 8


def test_mixup_reward_metric():
    x, y = _mix_batch_data()
    for metric, want in (("val_loss", -0.7), ("val_acc", 0.4)):
        t = MixupTeacher(4, "reinforce", total_steps=8, seed=0, reward_metric=metric)
        t(x, y)
        t.observe(train_loss=1.0)
        assert t.reward(val_loss=0.7, val_acc=0.4)["reward"] == want


def test_mixup_baseline_momentum():
    x, y = _mix_batch_data()
    m = 0.5
    t = MixupTeacher(4, "discrete", seed=0, baseline_momentum=m)
    rewards = [0.2, 0.6, 0.1]
    b, var, got = None, 0.0, []
    for r in rewards:
        t(x, y)
        t.observe(train_loss=1.0)
        stats = t.reward(val_acc=r)
        if b is None:
            want_adv, want_b, b = 0.0, r, r
        else:
            d = r - b
            var = m * var + (1 - m) * d * d
            want_adv, want_b = d / math.sqrt(var), b
            b = m * b + (1 - m) * r
        assert stats["advantage"] == pytest.approx(want_adv, rel=1e-12)
        assert stats["baseline"] == pytest.approx(want_b, rel=1e-12)
        got.append(stats["advantage"])
    # the second episode's advantage is sign(d) / sqrt(1 - m): 3.16 with the default m = 0.9
    assert got[1] == pytest.approx(1.0 / math.sqrt(1.0 - m), rel=1e-12)


def test_mixup_loss_momentum():
    t = MixupTeacher(4, "beta", seed=0, loss_momentum=0.5)
    t.observe(train_loss=2.0)
    t.observe(train_loss=1.0)
    assert t.state_features()[1] == pytest.approx((0.5 * 2.0 + 0.5 * 1.0) / 2.0, rel=1e-12)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1).mean()


def _hand_policy(state, fc1_w, fc1_b, fc2_w, fc2_b, keep=None, p=0.0):
    h = torch.as_tensor([state], dtype=fc1_w.dtype) @ fc1_w.T + fc1_b
    if keep is not None and p > 0:
        h = h * keep.to(h.dtype) / (1.0 - p)
    return h.relu() @ fc2_w.T + fc2_b


def _non_uniform(t: MixupTeacher, seed: int = 1) -> None:
    """Give the policy's zero output layer values, so its entropy has a gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t.net.fc2.weight.copy_(torch.randn(t.net.fc2.weight.shape, generator=g))
        t.net.fc2.bias.copy_(torch.randn(t.net.fc2.bias.shape, generator=g))


@pytest.mark.parametrize("coef", [0.0, 0.5])
def test_mixup_entropy_coef_lr_hidden_and_seed(coef):
    """The first episode has advantage 0: its update is the entropy bonus alone, one Adam step."""
    x, y = _mix_batch_data()
    t = MixupTeacher(4, "reinforce", total_steps=8, seed=4, lr=0.05, hidden=16, dropout=0.0,
                     entropy_coef=coef)
    # hidden and seed: the hidden layer is PyTorch's default init drawn from Generator(seed)
    gen = torch.Generator().manual_seed(4)
    bound = 1.0 / math.sqrt(3)
    assert torch.equal(t.net.fc1.weight, torch.empty(16, 3).uniform_(-bound, bound, generator=gen))
    assert torch.equal(t.net.fc1.bias, torch.empty(16).uniform_(-bound, bound, generator=gen))
    _non_uniform(t)
    ref = copy.deepcopy(t.net)
    bias_before = t.net.fc2.bias.detach().clone()
    state = t.state_features()
    t(x, y)
    t.observe(train_loss=1.0)
    stats = t.reward(val_acc=0.5)
    assert stats["advantage"] == 0.0 and stats["updated"]
    # the same update by hand: minimise -coef * H(pi(. | s)) with Adam(lr)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    params = [ref.fc1.weight, ref.fc1.bias, ref.fc2.weight, ref.fc2.bias]
    h0 = _entropy(_hand_policy(state, *params))
    assert stats["entropy"] == pytest.approx(h0.item(), rel=1e-6)
    (-coef * h0).backward()
    opt.step()
    h0 = h0.detach()
    for (name, p), q in zip(t.net.named_parameters(), params):
        torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-7, msg=name)
    h1 = float(_entropy(_hand_policy(state, *[p.detach() for p in t.net.parameters()])))
    step = float((t.net.fc2.bias.detach() - bias_before).abs().max())
    if coef == 0.0:
        assert h1 == float(h0) and step == 0.0  # no advantage, no bonus: no move
    else:
        assert h1 > float(h0) + 1e-3  # the bonus raises the policy's entropy
        assert step == pytest.approx(0.05, rel=1e-3)  # Adam's first step: about lr per entry


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_mixup_dropout(p):
    """The episode's entropy is taken under the dropout masks drawn when the actions were."""
    x, y = _mix_batch_data()
    t = MixupTeacher(4, "reinforce", total_steps=8, seed=4, hidden=16, dropout=p)
    gen = torch.Generator().manual_seed(4)
    bound = 1.0 / math.sqrt(3)
    torch.empty(16, 3).uniform_(-bound, bound, generator=gen)  # the hidden layer's init
    torch.empty(16).uniform_(-bound, bound, generator=gen)
    u = torch.rand(16, generator=gen)  # the mask's draw: kept where u >= dropout
    _non_uniform(t)
    params = [q.detach().clone() for q in t.net.parameters()]
    state = t.state_features()
    t(x, y)
    t.observe(train_loss=1.0)
    got = t.reward(val_acc=0.5)["entropy"]
    want = float(_entropy(_hand_policy(state, *params, keep=u >= p, p=p)))
    assert got == pytest.approx(want, rel=1e-6)
    default = float(_entropy(_hand_policy(state, *params, keep=u >= 0.6, p=0.6)))
    assert abs(got - default) > 1e-4


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _unroll_problem():
    torch.manual_seed(0)
    model = _Tiny().to(DT)
    x, y = _mix_batch_data(n=6, d=4, c=3, seed=1, dtype=DT)
    xv, yv = _mix_batch_data(n=5, d=4, c=3, seed=2, dtype=DT)
    return model, x, y, xv, yv


def _exact_hypergrad(model, x, y, perm, xv, yv, lam, xi, order):
    """dF/dlam by double backward: F2 = L_val(w - xi grad_w L_train(w, lam)) (order 2) and
    F1 = L_val(w) - xi <grad L_val(w), grad_w L_train(w, lam)> (order 1)."""
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    lam_t = torch.tensor(lam, dtype=DT, requires_grad=True)
    xm, ym = mix_batch(x, to_soft_targets(y, 3, dtype=DT), lam_t, perm)
    g = torch.autograd.grad(F.cross_entropy(functional_call(model, params, (xm,)), ym),
                            list(params.values()), create_graph=True)
    yvs = to_soft_targets(yv, 3, dtype=DT)
    if order == 2:
        w2 = {n: p - xi * gi for (n, p), gi in zip(params.items(), g)}
        out = F.cross_entropy(functional_call(model, w2, (xv,)), yvs)
    else:
        lv = F.cross_entropy(functional_call(model, params, (xv,)), yvs)
        v = torch.autograd.grad(lv, list(params.values()))
        out = -xi * sum((vi * gi).sum() for vi, gi in zip(v, g))
    (d,) = torch.autograd.grad(out, lam_t)
    return float(d)


def _unroll_teacher(**kw):
    kw.setdefault("fd_eps", 1e-4)
    return MixupTeacher(3, "unroll", total_steps=10, seed=0, init_lambda=0.37, **kw).to(DT)


def test_mixup_unroll_order():
    model, x, y, xv, yv = _unroll_problem()
    got = {}
    for order in (1, 2):
        t = _unroll_teacher(unroll_order=order)
        t(x, y)
        got[order] = t.hypergradient_step(model, F.cross_entropy, (xv, yv), lr=0.5)["hypergrad"]
        want = _exact_hypergrad(model, x, y, t.last_permutation, xv, yv, t.last_lambda, 0.5,
                                order)
        assert got[order] == pytest.approx(want, rel=1e-6)
    assert got[1] != pytest.approx(got[2], rel=1e-3)


def test_mixup_learner_lr():
    model, x, y, xv, yv = _unroll_problem()
    t = _unroll_teacher(learner_lr=0.3)
    t(x, y)
    got = t.hypergradient_step(model, F.cross_entropy, (xv, yv))["hypergrad"]
    args = (model, x, y, t.last_permutation, xv, yv, t.last_lambda)
    assert got == pytest.approx(_exact_hypergrad(*args, 0.3, 2), rel=1e-6)
    assert got != pytest.approx(_exact_hypergrad(*args, 0.5, 2), rel=1e-3)
    # an lr given to the step wins over learner_lr
    t(x, y)
    got = t.hypergradient_step(model, F.cross_entropy, (xv, yv), lr=0.5)["hypergrad"]
    args = (model, x, y, t.last_permutation, xv, yv, t.last_lambda)
    assert got == pytest.approx(_exact_hypergrad(*args, 0.5, 2), rel=1e-6)


def test_mixup_fd_eps():
    """The central difference of DARTS with ``e = fd_eps / |v|``, by hand."""
    model, x, y, xv, yv = _unroll_problem()
    xi, fd_eps = 0.5, 2.0
    t = _unroll_teacher(fd_eps=fd_eps)
    t(x, y)
    perm, lam = t.last_permutation, t.last_lambda
    got = t.hypergradient_step(model, F.cross_entropy, (xv, yv), lr=xi)["hypergrad"]
    w0 = {n: p.detach() for n, p in model.named_parameters()}
    ys, yvs = to_soft_targets(y, 3, dtype=DT), to_soft_targets(yv, 3, dtype=DT)

    def grads(w, inp, tgt):
        w = {n: p.clone().requires_grad_(True) for n, p in w.items()}
        loss = F.cross_entropy(functional_call(model, w, (inp,)), tgt)
        return dict(zip(w, torch.autograd.grad(loss, list(w.values()))))

    g = grads(w0, *mix_batch(x, ys, torch.tensor(lam, dtype=DT), perm))
    v = grads({n: w0[n] - xi * g[n] for n in w0}, xv, yvs)
    e = fd_eps / math.sqrt(sum(float(vi.pow(2).sum()) for vi in v.values()))

    def dl_dlam(sign):
        lam_t = torch.tensor(lam, dtype=DT, requires_grad=True)
        xm, ym = mix_batch(x, ys, lam_t, perm)
        w = {n: w0[n] + sign * e * v[n] for n in w0}
        loss = F.cross_entropy(functional_call(model, w, (xm,)), ym)
        return float(torch.autograd.grad(loss, lam_t)[0])

    want = -xi * (dl_dlam(1.0) - dl_dlam(-1.0)) / (2 * e)
    assert got == pytest.approx(want, rel=1e-9)
    exact = _exact_hypergrad(model, x, y, perm, xv, yv, lam, xi, 2)
    assert got != pytest.approx(exact, rel=1e-4)  # a large fd_eps is not the default's result


@pytest.mark.parametrize("init", [0.2, 0.85])
def test_mixup_init_lambda(init):
    x, y = _mix_batch_data()
    t = MixupTeacher(4, "unroll", total_steps=10, seed=0, init_lambda=init)
    assert t.current_lambda() == pytest.approx(init, rel=1e-6)
    xm, ym = t(x, y)
    assert t.last_lambda == pytest.approx(init, rel=1e-6)
    want_x, want_y = mix_batch(x, to_soft_targets(y, 4), t.last_lambda, t.last_permutation)
    assert torch.equal(xm, want_x) and torch.equal(ym, want_y)


def test_mixup_ignore_index():
    """Rows labelled ``ignore_index`` come back as they are, with zero targets, and are
    nobody's partner; the others are mixed among themselves."""
    x, y = _mix_batch_data(n=10)
    y[[0, 3, 4]] = 1
    keep = y != 1
    t = MixupTeacher(4, "discrete", actions=(0.25,), seed=0, ignore_index=1)
    xm, ym = t(x, y)
    perm = t.last_permutation
    assert int((~keep).sum()) >= 3
    assert torch.equal(xm[~keep], x[~keep]) and not bool(ym[~keep].any())
    assert bool(keep[perm[keep]].all())  # kept rows are paired among themselves
    soft = to_soft_targets(y, 4)
    torch.testing.assert_close(xm[keep], 0.25 * x[keep] + 0.75 * x[perm[keep]])
    torch.testing.assert_close(ym[keep], 0.25 * soft[keep] + 0.75 * soft[perm[keep]])
    # with the default ignore_index, class 1 rows are mixed like the others
    t = MixupTeacher(4, "discrete", actions=(0.25,), seed=0)
    xm, ym = t(x, y)
    assert not torch.equal(xm[~keep], x[~keep]) and float(ym[~keep].sum()) == (~keep).sum()


@needs_cuda
def test_mixup_validate_checks_cuda_targets_on_the_host():
    t = MixupTeacher(4, "beta", seed=0, validate=True)
    with pytest.raises(TargetsError, match="class indices"):
        t(torch.randn(2, 3, device="cuda"), torch.tensor([0, 4], device="cuda"))


# ======================================================== the suite's hypothesis profile
def test_hypothesis_profile_is_derandomised_under_ci(request):
    hypothesis = pytest.importorskip("hypothesis")
    from conftest import hypothesis_profile

    ci = hypothesis.settings.get_profile("ci")
    assert ci.derandomize and ci.database is None
    assert not hypothesis.settings.get_profile("dev").derandomize
    assert hypothesis_profile({"CI": "true"}) == "ci"
    assert hypothesis_profile({"CI": "1"}) == "ci"
    assert hypothesis_profile({}) == hypothesis_profile({"CI": "false"}) == "dev"
    assert hypothesis_profile({"CI": "true", "HYPOTHESIS_PROFILE": "dev"}) == "dev"
    if not request.config.getoption("hypothesis_profile", None):  # no CLI override
        want = hypothesis.settings.get_profile(hypothesis_profile())
        assert hypothesis.settings.default.derandomize == want.derandomize
