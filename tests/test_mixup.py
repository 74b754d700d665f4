"""MixupTeacher, its pure functions, the hypergradient, state and bad inputs; the experiment."""

from __future__ import annotations

import copy
import csv
import io
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from torchdht.errors import TargetsError, TeacherError
from torchdht.mixup import (
    MixupTeacher,
    check_actions,
    mix_batch,
    sample_beta,
    sample_permutation,
    to_soft_targets,
)
from torchdht.mixup.teacher import _unroll_hypergradient

from conftest import REPO

POLICIES = ("reinforce", "unroll", "beta", "discrete")


def _teacher(policy, **kw):
    kw.setdefault("seed", 0)
    if policy in ("reinforce", "unroll"):
        kw.setdefault("total_steps", 50)
    return MixupTeacher(4, policy, **kw)


def _batch(n=10, d=6, c=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


# ------------------------------------------------------------------ functional
def test_to_soft_targets_one_hot_and_passthrough():
    y = torch.tensor([2, 0, 3])
    s = to_soft_targets(y, 4)
    assert s.dtype == torch.float32 and torch.equal(s.argmax(1), y)
    assert torch.equal(s.sum(1), torch.ones(3))
    soft = torch.full((3, 4), 0.25)
    assert to_soft_targets(soft, 4) is soft
    assert to_soft_targets(y, 4, dtype=torch.float64).dtype == torch.float64
    assert to_soft_targets(y, 4, dtype=torch.float16).dtype == torch.float32


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
def test_mix_batch_matches_definition_and_leaves_inputs(lam):
    x, y = _batch()
    perm = sample_permutation(10, torch.Generator().manual_seed(1))
    ys = to_soft_targets(y, 4)
    x0, ys0 = x.clone(), ys.clone()
    xm, ym = mix_batch(x, ys, lam, perm)
    assert torch.equal(xm, lam * x + (1 - lam) * x[perm])  # bit-identical to the definition
    assert torch.equal(ym, lam * ys + (1 - lam) * ys[perm])
    torch.testing.assert_close(ym.sum(1), torch.ones(10))
    assert torch.equal(x, x0) and torch.equal(ys, ys0)
    assert xm.data_ptr() != x.data_ptr() and ym.data_ptr() != ys.data_ptr()
    if lam == 1.0:
        assert torch.equal(xm, x) and torch.equal(ym, ys)


def test_mix_batch_is_differentiable_in_lambda():
    x, y = _batch(dtype=torch.float64)
    perm = torch.randperm(10)
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    ys = to_soft_targets(y, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: mix_batch(x, ys, t, perm), (lam,))


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_sample_beta_is_beta_distributed(alpha):
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(3)
    draws = [sample_beta(alpha, g) for _ in range(1500)]
    assert all(0.0 <= d <= 1.0 for d in draws)
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_sample_beta_tiny_alpha_does_not_nan():
    g = torch.Generator().manual_seed(0)
    draws = [sample_beta(1e-3, g) for _ in range(200)]
    assert all(math.isfinite(d) and 0.0 <= d <= 1.0 for d in draws)


# ---------------------------------------------------------------- the teacher
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [1, 7, 10])
def test_targets_sum_to_one_and_match_the_lambda_used(policy, n):
    t = _teacher(policy)
    x, y = _batch(n=n)
    x0, y0 = x.clone(), y.clone()
    for _ in range(4):
        xm, ym = t(x, y)
        lam, perm = t.last_lambda, t.last_permutation
        assert 0.0 <= lam <= 1.0
        assert sorted(perm.tolist()) == list(range(n))
        onehot = F.one_hot(y, 4).float()
        torch.testing.assert_close(ym, lam * onehot + (1 - lam) * onehot[perm])
        torch.testing.assert_close(ym.sum(1), torch.ones(n))
        torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
        if policy in ("reinforce", "discrete"):
            assert lam in (0.0, 0.5, 1.0) and lam == t.actions[t.last_action]
        t.observe(train_loss=1.0)
    assert torch.equal(x, x0) and torch.equal(y, y0)  # never modified in place


def test_soft_targets_in_are_mixed_too():
    t = _teacher("discrete", actions=(0.25,))
    x, _ = _batch(n=6)
    soft = torch.softmax(torch.randn(6, 4), 1)
    _, ym = t(x, soft)
    perm = t.last_permutation
    torch.testing.assert_close(ym, 0.25 * soft + 0.75 * soft[perm])


@pytest.mark.parametrize("policy", POLICIES)
def test_eval_is_identity_and_consumes_nothing(policy):
    t = _teacher(policy).eval()
    x, y = _batch()
    rng = t._gen.get_state()
    xm, ym = t(x, y)
    assert xm is x
    assert torch.equal(ym, F.one_hot(y, 4).float())
    assert t.step == 0 and torch.equal(t._gen.get_state(), rng)
    t.train()
    t(x, y)
    assert t.step == 1


@pytest.mark.parametrize("policy", POLICIES)
def test_global_rng_is_never_used(policy):
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 4))
    state = torch.get_rng_state()
    t = _teacher(policy)
    x, y = _batch()
    for _ in range(3):
        t(x, y)
        t.observe(train_loss=1.0)
        if policy == "unroll":
            t.hypergradient_step(model, F.cross_entropy, _batch(seed=5), lr=0.1)
    t.reward(val_loss=0.9, val_acc=0.5)
    assert torch.equal(torch.get_rng_state(), state)


def test_same_seed_same_lambdas_and_permutations():
    a, b = _teacher("beta", seed=7), _teacher("beta", seed=7)
    x, y = _batch()
    for _ in range(5):
        a(x, y)
        b(x, y)
        assert a.last_lambda == b.last_lambda
        assert torch.equal(a.last_permutation, b.last_permutation)
    c = _teacher("beta", seed=8)
    c(x, y)
    assert c.last_lambda != a.last_lambda or not torch.equal(c.last_permutation,
                                                            a.last_permutation)


def test_state_features():
    t = _teacher("reinforce", total_steps=4)
    x, y = _batch()
    assert t.state_features() == [0.0, 1.0, 1.0]
    t(x, y)
    t.observe(train_loss=2.0)
    t(x, y)
    t.observe(train_loss=1.0, val_loss=4.0)
    t.reward(val_loss=2.0, val_acc=0.5)
    s = t.state_features()
    assert s[0] == 0.5
    assert s[1] == pytest.approx((0.9 * 2.0 + 0.1 * 1.0) / 2.0)
    assert s[2] == 0.5
    for _ in range(10):
        t(x, y)
    assert t.state_features()[0] == 1.0  # clipped


# ----------------------------------------------------------------- REINFORCE
def test_reinforce_moves_the_policy_to_the_best_arm():
    """A bandit: reward = the fraction of steps whose action was the best arm (lambda = 1)."""
    t = MixupTeacher(3, "reinforce", total_steps=10**6, seed=0, lr=0.05)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    noise = torch.Generator().manual_seed(1)
    p0 = t.action_probs()
    assert max(p0) - min(p0) < 1e-12  # starts uniform
    for _ in range(50):
        hits = 0
        for _ in range(4):
            t(x, y)
            hits += t.last_lambda == 1.0
            t.observe(train_loss=1.0)
        r = hits / 4 + 0.05 * float(torch.rand((), generator=noise))
        stats = t.reward(val_acc=min(r, 1.0))
        assert stats["episode_steps"] == 4
    probs = t.action_probs()
    assert probs[2] > 0.9, probs


def test_reinforce_update_uses_the_sampled_dropout_masks():
    t = _teacher("reinforce")
    x, y = _batch()
    for _ in range(3):
        t(x, y)
        t.observe(train_loss=1.0)
    assert len(t._ep_keeps) == 3
    keep_frac = torch.stack(t._ep_keeps).float().mean()
    assert 0.2 < float(keep_frac) < 0.6  # dropout 0.6
    t.reward(val_acc=0.2)
    assert t._ep_keeps == [] and t.episodes == 1


def test_reward_metric_val_loss():
    t = _teacher("reinforce", reward_metric="val_loss")
    x, y = _batch()
    t(x, y)
    t.observe(train_loss=1.0)
    assert t.reward(val_loss=0.7)["reward"] == -0.7
    with pytest.raises(ValueError, match="val_loss"):
        t.reward(val_acc=0.5)


def test_reward_without_update_freezes_the_policy():
    t = _teacher("reinforce")
    x, y = _batch()
    theta = {n: p.detach().clone() for n, p in t.named_parameters()}
    for r in (0.2, 0.5):
        t(x, y)
        t.observe(train_loss=1.0)
        stats = t.reward(val_acc=r, update=False)
        assert not stats["updated"] and stats["episode_steps"] == 1
    assert all(torch.equal(p, theta[n]) for n, p in t.named_parameters())
    assert t._ep_actions == [] and t.episodes == 2
    t(x, y)
    t.observe(train_loss=1.0)
    assert t.reward(val_acc=0.9)["updated"]
    assert any(not torch.equal(p, theta[n]) for n, p in t.named_parameters())


def test_new_run_keeps_the_policy_and_restarts_the_state():
    t = _teacher("reinforce", total_steps=10)
    x, y = _batch()
    for _ in range(3):
        t(x, y)
        t.observe(train_loss=2.0, val_loss=3.0)
    t.reward(val_acc=0.5)
    t(x, y)  # an unrewarded step of the next episode
    theta = {n: p.detach().clone() for n, p in t.named_parameters()}
    baseline, episodes = t._baseline, t.episodes
    t.new_run(total_steps=40)
    assert t.step == 0 and t.total_steps == 40 and t.state_features() == [0.0, 1.0, 1.0]
    assert t._ep_actions == [] and t.episodes == episodes and t._baseline == baseline
    assert all(torch.equal(p, theta[n]) for n, p in t.named_parameters())
    with pytest.raises(TeacherError, match="observe"):
        t.reward(val_acc=0.5)  # the new run has no observation yet
    with pytest.raises(ValueError, match="total_steps"):
        t.new_run(total_steps=0)


# ----------------------------------------------------------------- unrolling
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _objective(model, x, ys, perm, xv, yvs, xi, order):
    """The defined quantities, by plain autograd: F2 = L_val(w - xi grad_w L_train(w, lam));
    F1 = L_val(w) - xi <grad L_val(w), grad_w L_train(w, lam)>."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def grads(inp, tgt):
        w = {n: p.clone().requires_grad_() for n, p in params.items()}
        loss = F.cross_entropy(functional_call(model, w, (inp,)), tgt)
        return loss, torch.autograd.grad(loss, list(w.values()))

    def f(lam):
        xm, ym = mix_batch(x, ys, lam, perm)
        _, g = grads(xm, ym)
        if order == 2:
            w2 = {n: params[n] - xi * gi for n, gi in zip(params, g)}
            return float(F.cross_entropy(functional_call(model, w2, (xv,)), yvs))
        lv, v = grads(xv, yvs)
        return float(lv.detach()) - xi * sum(float((a * b).sum()) for a, b in zip(v, g))

    return f


@pytest.mark.parametrize("order", [1, 2])
def test_hypergradient_matches_finite_differences(order):
    torch.manual_seed(0)
    model = Tiny().double()
    x, y = _batch(n=6, d=4, c=3, seed=1, dtype=torch.float64)
    xv, yv = _batch(n=5, d=4, c=3, seed=2, dtype=torch.float64)
    ys, yvs = to_soft_targets(y, 3, dtype=x.dtype), to_soft_targets(yv, 3, dtype=x.dtype)
    t = MixupTeacher(3, "unroll", total_steps=10, unroll_order=order, fd_eps=1e-4, seed=0,
                     init_lambda=0.37, lr=1e-3).double()
    t(x, y)
    f = _objective(model, x, ys, t.last_permutation, xv, yvs, xi=0.5, order=order)
    lam = t.current_lambda()
    h = 1e-5
    num = (f(lam + h) - f(lam - h)) / (2 * h)
    g, _ = _unroll_hypergradient(model, F.cross_entropy, x, ys, t.last_permutation, xv, yvs,
                                 lam=lam, xi=0.5, order=order, fd_eps=1e-4)
    assert g == pytest.approx(num, rel=1e-6, abs=1e-10)
    # Through h_theta: the gradient the teacher's optimizer sees on the output bias.
    stats = t.hypergradient_step(model, F.cross_entropy, (xv, yv), lr=0.5)
    assert stats["lambda"] == pytest.approx(lam, rel=1e-12)
    # d lam / d (output bias) = lam (1 - lam): the teacher's optimizer saw dF/dlam times that.
    grad_b = float(t.net.fc2.bias.grad[0])
    assert grad_b == pytest.approx(num * lam * (1 - lam), rel=1e-6)


def test_hypergradient_step_leaves_the_model_and_its_optimizer_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _batch()
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    F.cross_entropy(model(x), y).backward()
    snap = copy.deepcopy(model.state_dict())  # parameters and BatchNorm buffers
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt_state = copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    t = _teacher("unroll")
    theta = {n: p.detach().clone() for n, p in t.named_parameters()}
    t(x, y)
    for order in (2, 1):
        t.unroll_order = order
        t.hypergradient_step(model, F.cross_entropy, _batch(seed=3), lr=0.1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    after = opt.state_dict()
    for i, s in opt_state["state"].items():
        assert torch.equal(after["state"][i]["momentum_buffer"], s["momentum_buffer"])
    assert after["param_groups"] == opt_state["param_groups"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert any(not torch.equal(p, theta[n]) for n, p in t.named_parameters())  # it learned


def test_hypergradient_step_under_no_grad_and_with_soft_val_targets():
    model = Tiny()
    t = MixupTeacher(3, "unroll", total_steps=10, learner_lr=0.1, seed=0)
    x, y = _batch(n=6, d=4, c=3)
    t(x, y)
    with torch.no_grad():
        stats = t.hypergradient_step(model, F.cross_entropy,
                                     (torch.randn(5, 4), torch.softmax(torch.randn(5, 3), 1)))
    assert math.isfinite(stats["hypergrad"])


# ------------------------------------------------------------------ state dict
def _drive(t, steps, model=None, start=0):
    """Feed a fixed sequence of batches, losses and rewards; record what the teacher did."""
    out = []
    for i in range(start, start + steps):
        x, y = _batch(n=7, d=6, seed=i)
        xm, ym = t(x, y)
        out.append((t.last_lambda, t.last_permutation.clone(), xm, ym))
        t.observe(train_loss=1.0 / (1 + i))
        if model is not None:
            t.hypergradient_step(model, F.cross_entropy, _batch(n=5, seed=100 + i), lr=0.1)
        if i % 3 == 2:
            t.reward(val_loss=1.0 / (1 + i), val_acc=min(1.0, 0.1 * i))
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_state_dict_round_trip_gives_bit_identical_continuation(policy):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)) if policy == "unroll" \
        else None
    a = _teacher(policy, seed=1)
    _drive(a, 5, model)  # stops mid-episode (rewards at steps 2, 5, ...)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = _teacher(policy, seed=99)
    b.load_state_dict(state)
    model_b = copy.deepcopy(model)
    ra = _drive(a, 7, model, start=5)
    rb = _drive(b, 7, model_b, start=5)
    for (la, pa, xa, ya), (lb, pb, xb, yb) in zip(ra, rb):
        assert la == lb
        assert torch.equal(pa, pb) and torch.equal(xa, xb) and torch.equal(ya, yb)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert a.state_features() == b.state_features() and a.episodes == b.episodes


def test_state_dict_keys_and_policy_mismatch():
    t = _teacher("reinforce")
    keys = set(t.state_dict())
    assert keys == {"net.fc1.weight", "net.fc1.bias", "net.fc2.weight", "net.fc2.bias",
                    "_extra_state"}
    assert set(_teacher("beta").state_dict()) == {"_extra_state"}
    with pytest.raises(ValueError, match="policy"):
        _teacher("discrete").load_state_dict(_teacher("beta").state_dict())


def test_teacher_as_a_submodule_does_not_touch_the_model_state_dict():
    model = nn.Linear(6, 4)
    keys = set(model.state_dict())
    _teacher("reinforce")(*_batch())
    assert set(model.state_dict()) == keys


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"policy": "cutmix"}, ValueError, "policy"),
        ({"policy": "beta", "alpha": 0.0}, ValueError, "alpha"),
        ({"policy": "beta", "alpha": -1.0}, ValueError, "alpha"),
        ({"policy": "discrete", "actions": ()}, ValueError, "actions"),
        ({"policy": "discrete", "actions": (0.0, 1.5)}, ValueError, "actions"),
        ({"policy": "discrete", "actions": (-0.1,)}, ValueError, "actions"),
        ({"policy": "discrete", "actions": (0.5, 0.5)}, ValueError, "actions"),
        ({"policy": "discrete", "actions": "0.5"}, TypeError, "actions"),
        ({"policy": "reinforce", "total_steps": None}, ValueError, "total_steps"),
        ({"policy": "unroll", "total_steps": 0}, ValueError, "total_steps"),
        ({"policy": "reinforce", "reward_metric": "acc"}, ValueError, "reward_metric"),
        ({"policy": "unroll", "unroll_order": 3}, ValueError, "unroll_order"),
        ({"policy": "unroll", "init_lambda": 1.0}, ValueError, "init_lambda"),
        ({"policy": "reinforce", "dropout": 1.0}, ValueError, "dropout"),
        ({"policy": "beta", "seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    kwargs = dict(kwargs)
    policy = kwargs.pop("policy")
    kwargs.setdefault("total_steps", 10)
    with pytest.raises(exc, match=match):
        MixupTeacher(4, policy, **kwargs)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        MixupTeacher(0, "beta")
    with pytest.raises(TypeError, match="num_classes"):
        MixupTeacher(2.0, "beta")


@pytest.mark.parametrize(
    "y, match",
    [
        (torch.randint(0, 4, (9,)), r"shape \(10,\)"),
        (torch.randint(0, 4, (10, 1)), r"shape \(10,\)"),
        (torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 0]), r"\[0, 3\]"),
        (torch.tensor([-1] * 10), r"\[0, 3\]"),
        (torch.rand(10, 5), r"\(10, 4\)"),
        (torch.rand(9, 4), r"\(10, 4\)"),
        (-torch.rand(10, 4), "non-negative"),
    ],
)
def test_bad_targets_name_the_argument(y, match):
    t = _teacher("beta")
    x, _ = _batch()
    with pytest.raises(TargetsError, match=match) as info:
        t(x, y)
    assert str(info.value).startswith("y")
    assert t.step == 0


def test_bad_inputs_types():
    t = _teacher("beta")
    with pytest.raises(TypeError, match="floating"):
        t(torch.randint(0, 255, (10, 6), dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match="y must"):
        t(torch.randn(10, 6), [0] * 10)
    with pytest.raises(TypeError, match="dtype"):
        t(torch.randn(10, 6), torch.zeros(10, dtype=torch.bool))


def test_reward_before_observe_and_bad_rewards():
    t = _teacher("reinforce")
    x, y = _batch()
    t(x, y)
    with pytest.raises(TeacherError, match="observe"):
        t.reward(val_acc=0.5)
    t.observe(train_loss=torch.tensor(1.2))
    with pytest.raises(ValueError, match="val_acc"):
        t.reward(val_loss=0.5)  # the metric is val_acc
    with pytest.raises(ValueError, match=r"val_acc must be a fraction"):
        t.reward(val_acc=55.0)
    with pytest.raises(ValueError, match="train_loss"):
        t.observe(train_loss=float("nan"))
    with pytest.raises(ValueError, match="observe needs"):
        t.observe()
    assert t.reward(val_acc=0.5)["episodes"] == 1


@pytest.mark.parametrize("policy", ["reinforce", "beta", "discrete"])
def test_hypergradient_step_needs_the_unroll_policy(policy):
    t = _teacher(policy)
    t(*_batch())
    with pytest.raises(TeacherError, match="unroll"):
        t.hypergradient_step(nn.Linear(6, 4), F.cross_entropy, _batch(), lr=0.1)


def test_hypergradient_step_bad_calls():
    t = _teacher("unroll")
    model = nn.Linear(6, 4)
    with pytest.raises(TeacherError, match="before any training batch"):
        t.hypergradient_step(model, F.cross_entropy, _batch(), lr=0.1)
    t(*_batch())
    with pytest.raises(ValueError, match="lr"):
        t.hypergradient_step(model, F.cross_entropy, _batch())
    with pytest.raises(TypeError, match="val_batch"):
        t.hypergradient_step(model, F.cross_entropy, _batch()[0], lr=0.1)
    with pytest.raises(TargetsError, match="y"):
        t.hypergradient_step(model, F.cross_entropy, (torch.randn(5, 6), torch.zeros(4).long()),
                             lr=0.1)


def test_check_actions_accepts_tensors_and_lists():
    assert check_actions(torch.tensor([0.0, 1.0])) == (0.0, 1.0)
    assert check_actions([1]) == (1.0,)


# --------------------------------------------------- a timm-style training loop
def test_drop_in_training_loop_with_soft_target_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mixup = MixupTeacher(num_classes=4, policy="reinforce", total_steps=20, seed=0)
    x, y = _batch(n=33)  # odd batch
    for step in range(20):
        xm, ym = mixup(x, y)
        loss = F.cross_entropy(model(xm), ym)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mixup.observe(train_loss=loss.item())
        if step % 5 == 4:
            mixup.eval()
            with torch.no_grad():
                xv, yv = mixup(x, y)  # identity in eval
                val_loss = F.cross_entropy(model(xv), yv)
            mixup.train()
            mixup.reward(val_loss=val_loss, val_acc=0.5)
    assert mixup.episodes == 4 and mixup.step == 20


def test_readme_python_blocks_run():
    text = (REPO / "torchdht" / "mixup" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        data = [(torch.randn(9, 12), torch.randint(0, 10, (9,))) for _ in range(3)]
        ns = {"model": model, "opt": opt, "loader": data, "val_loader": data, "epochs": 2}
        exec(compile(block, "mixup/README.md:python-block", "exec"), ns)


# ------------------------------------------------------------------ experiment
def test_experiment_smoke_on_fake_data(tmp_path, capsys):
    from torchdht.experiments import mixup as exp
    from torchdht.experiments._core import parse_config

    methods = exp.METHODS + exp.EXTRA_METHODS
    rows = exp.run(parse_config(exp, [
        "--fake-data", "--train-size", "96", "--val-size", "32", "--test-size", "32", "--epochs",
        "2", "--batch-size", "32", "--out", str(tmp_path), "--no-progress", "--methods",
        ",".join(methods), "--pg-restarts", "2", "--episode-epochs", "1"]))
    assert [r["method"] for r in rows] == list(methods)
    assert {"results.csv", "curves.csv", "accuracy.png", "config.json"} <= {
        p.name for p in tmp_path.iterdir()}
    printed = capsys.readouterr().out
    assert "Policy gradient" in printed and "67.64" in printed
    episodes = {r["method"]: r["episodes"] for r in rows}
    assert episodes["reinforce"] == 2 and episodes["reinforce-restarts"] == 2 + 2
    with (tmp_path / "curves.csv").open() as fh:
        phases = [(r["method"], r["phase"]) for r in csv.DictReader(fh)]
    assert phases.count(("reinforce-restarts", "search-2")) == 1
    assert phases.count(("reinforce-restarts", "train")) == 2
    assert all(0.0 <= r["test_acc_mean"] <= 100.0 for r in rows)


def test_experiment_bad_options():
    from torchdht.experiments import mixup as exp

    with pytest.raises(SystemExit):
        exp.main(["--methods", "erm,cutmix", "--fake-data"])
    with pytest.raises(ValueError, match="train_size"):
        exp.load_cifar10(train_size=45000, val_size=10000)
