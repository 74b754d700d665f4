"""MixupTeacher's policy objects: the string shorthand and the object form agree bit for bit."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchdht.errors import TeacherError
from torchdht.mixup import (
    BetaPolicy,
    DiscretePolicy,
    MixupPolicy,
    MixupTeacher,
    ReinforcePolicy,
    UnrollPolicy,
)

# (string, its keyword arguments, the teacher's own ones, the object form)
FORMS = {
    "reinforce": (dict(lr=0.05, hidden=16, dropout=0.3, entropy_coef=0.02,
                       reward_metric="val_loss", baseline_momentum=0.8),
                  dict(total_steps=20, loss_momentum=0.7),
                  lambda: ReinforcePolicy(lr=0.05, hidden=16, dropout=0.3, entropy_coef=0.02,
                                          reward_metric="val_loss", baseline_momentum=0.8)),
    "unroll": (dict(lr=0.01, hidden=8, unroll_order=1, learner_lr=0.1, fd_eps=1e-3,
                    init_lambda=0.3),
               dict(total_steps=20),
               lambda: UnrollPolicy(lr=0.01, hidden=8, unroll_order=1, learner_lr=0.1,
                                    fd_eps=1e-3, init_lambda=0.3)),
    "beta": (dict(alpha=0.4), dict(), lambda: BetaPolicy(alpha=0.4)),
    "discrete": (dict(actions=(0.1, 0.6, 0.9), baseline_momentum=0.5), dict(),
                 lambda: DiscretePolicy(actions=(0.1, 0.6, 0.9), baseline_momentum=0.5)),
}
DEFAULTS = {
    "reinforce": (dict(total_steps=20), ReinforcePolicy),
    "unroll": (dict(total_steps=20), UnrollPolicy),
    "beta": (dict(), BetaPolicy),
    "discrete": (dict(), DiscretePolicy),
}


def _drive(t, steps, model=None, start=0):
    """Batches (with an ignored row), losses, hypergradient steps and rewards; what came out."""
    out = []
    for i in range(start, start + steps):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(7, 6, generator=g), torch.randint(0, 4, (7,), generator=g)
        y[0] = -100
        xm, ym = t(x, y)
        out.append((t.last_lambda, t.last_action, t.last_permutation.clone(), xm, ym))
        t.observe(train_loss=1.0 / (1 + i))
        if model is not None:
            val = (torch.randn(5, 6, generator=g), torch.randint(0, 4, (5,), generator=g))
            out.append(t.hypergradient_step(model, F.cross_entropy, val))
        if i % 3 == 2:
            out.append(t.reward(val_loss=1.0 / (1 + i), val_acc=min(1.0, 0.1 * i)))
    return out


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _model(policy):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)) if policy == "unroll" \
        else None


@pytest.mark.parametrize("policy", FORMS)
def test_string_and_object_forms_are_bit_identical(policy):
    kw, own, make = FORMS[policy]
    a = MixupTeacher(4, policy, seed=3, **kw, **own)
    b = MixupTeacher(4, policy=make(), seed=3, **own)
    assert isinstance(a.policy_object, type(b.policy_object))
    assert a.policy == b.policy == policy and repr(a) == repr(b)
    model = _model(policy)
    ra, rb = _drive(a, 8, copy.deepcopy(model)), _drive(b, 8, copy.deepcopy(model))
    assert _same(ra, rb)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert _same(sa, sb)
    for name in kw:
        assert _same(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("policy", DEFAULTS)
def test_default_objects_equal_the_default_shorthand(policy):
    own, cls = DEFAULTS[policy]
    a = MixupTeacher(4, policy, seed=5, **own)
    b = MixupTeacher(4, cls(), seed=5, **own)
    assert _same(_drive(a, 4), _drive(b, 4))
    assert _same(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("policy", FORMS)
def test_state_dicts_cross_load_between_the_forms(policy):
    kw, own, make = FORMS[policy]
    a = MixupTeacher(4, policy, seed=1, **kw, **own)
    model = _model(policy)
    _drive(a, 4, copy.deepcopy(model))  # stops mid-episode
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = MixupTeacher(4, make(), seed=99, **own)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert _same(_drive(a, 5, copy.deepcopy(model), 4), _drive(b, 5, copy.deepcopy(model), 4))


def test_methods_a_policy_lacks_raise_the_same_error():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    for pol in (BetaPolicy(), DiscretePolicy(), ReinforcePolicy()):
        t = MixupTeacher(2, pol, total_steps=10, seed=0)
        t(x, y)
        with pytest.raises(TeacherError, match="hypergradient_step\\(\\) needs policy 'unroll'"):
            t.hypergradient_step(nn.Linear(3, 2), F.cross_entropy, (x, y), lr=0.1)
        with pytest.raises(TeacherError, match="current_lambda\\(\\) needs policy 'unroll'"):
            t.current_lambda()
    for pol in (BetaPolicy(), UnrollPolicy()):
        with pytest.raises(TeacherError, match="action_probs\\(\\) needs policy"):
            MixupTeacher(2, pol, total_steps=10).action_probs()


def test_object_form_refuses_policy_arguments_on_the_teacher_and_reuse():
    with pytest.raises(TeacherError, match="alpha"):
        MixupTeacher(3, BetaPolicy(), alpha=0.5)
    with pytest.raises(TeacherError, match="lr, hidden"):
        MixupTeacher(3, ReinforcePolicy(), total_steps=5, lr=0.1, hidden=3)
    with pytest.raises(TeacherError, match="total_steps"):
        MixupTeacher(3, UnrollPolicy())
    pol = ReinforcePolicy()
    MixupTeacher(3, pol, total_steps=5)
    with pytest.raises(TeacherError, match="already serves"):
        MixupTeacher(3, pol, total_steps=5)
    with pytest.raises(ValueError, match="policy"):
        MixupTeacher(3, object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make, exc, fragment",
    [
        (lambda: BetaPolicy(alpha=0.0), ValueError, "alpha"),
        (lambda: DiscretePolicy(actions=[1.5]), ValueError, "actions"),
        (lambda: ReinforcePolicy(dropout=1.0), ValueError, "dropout"),
        (lambda: ReinforcePolicy(hidden=True), TypeError, "hidden"),
        (lambda: ReinforcePolicy(lr=float("nan")), ValueError, "lr"),
        (lambda: UnrollPolicy(unroll_order=3), ValueError, "unroll_order"),
        (lambda: UnrollPolicy(init_lambda=1.0), ValueError, "init_lambda"),
        (lambda: UnrollPolicy(learner_lr=-1.0), ValueError, "learner_lr"),
        (lambda: BetaPolicy(reward_metric="f1"), ValueError, "reward_metric"),
        (lambda: DiscretePolicy(baseline_momentum=1.0), ValueError, "baseline_momentum"),
    ],
)
def test_policies_check_their_arguments(make, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make()


def test_policy_objects_own_their_network_and_state():
    t = MixupTeacher(3, ReinforcePolicy(hidden=8), total_steps=10, seed=0)
    pol = t.policy_object
    assert isinstance(pol, MixupPolicy) and t.net is pol.net and t.optimizer is pol.optimizer
    t(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))
    t.observe(train_loss=1.0)
    assert len(pol._ep_actions) == 1 and t._ep_actions is pol._ep_actions
    t.reward(val_acc=0.5)
    assert pol._baseline == 0.5 and pol._ep_actions == []
    assert MixupTeacher(3, "beta").net is None
