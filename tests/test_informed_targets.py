"""Targets from beyond the batch (``torchdht.functional.informed``) and ``greedy_teach``'s
``target=`` override. Closed forms in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchdht.functional import greedy_teach, linear_lookahead
from torchdht.functional.informed import ema_target, refit_head
from torchdht.functional.objective import linear_ce_closure
from torchdht.functional.solve import solve_cap

from conftest import float64_head as _head
from conftest import taught_features as _taught

DT = torch.float64


def _data(seed: int, n: int = 80, d: int = 4, c: int = 3, soft: bool = False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=DT)
    if soft:
        y = torch.softmax(2 * torch.randn(n, c, generator=g, dtype=DT), -1)
    else:
        y = torch.randint(0, c, (n,), generator=g)
    w = 0.3 * torch.randn(c, d, generator=g, dtype=DT)
    b = 0.1 * torch.randn(c, generator=g, dtype=DT)
    return z, y, w, b


def _newton(z, y, w, b, l2, iters=50):
    """Damped Newton on the same convex objective, with the Hessian from autograd."""
    c, d = w.shape
    with_bias = b is not None
    theta = torch.cat([w.reshape(-1)] + ([b] if with_bias else [])).clone()

    def loss(t):
        wt = t[: c * d].reshape(c, d)
        logits = z @ wt.T + (t[c * d:] if with_bias else 0.0)
        return F.cross_entropy(logits, y) + 0.5 * l2 * t.pow(2).sum()

    for _ in range(iters):
        g = torch.autograd.functional.jacobian(loss, theta)
        h = torch.autograd.functional.hessian(loss, theta)
        step = torch.linalg.solve(h, g)
        t = 1.0
        while loss(theta - t * step) > loss(theta) and t > 1e-8:
            t *= 0.5
        theta = theta - t * step
    return theta[: c * d].reshape(c, d), (theta[c * d:] if with_bias else None)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [False, True])
def test_refit_reaches_the_regularised_optimum(bias, soft):
    z, y, w, b = _data(1, soft=soft)
    b = b if bias else None
    l2 = 1e-2
    w_star, b_star = refit_head(z, y, w, b, l2=l2, max_iter=500)
    w_ref, b_ref = _newton(z, y, w, b, l2)
    torch.testing.assert_close(w_star, w_ref, rtol=0, atol=1e-6)
    if bias:
        torch.testing.assert_close(b_star, b_ref, rtol=0, atol=1e-6)
    # the gradient vanishes there
    p = [w_star.clone().requires_grad_()] + ([b_star.clone().requires_grad_()] if bias else [])
    logits = z @ p[0].T + (p[1] if bias else 0.0)
    loss = F.cross_entropy(logits, y) + 0.5 * l2 * sum(q.pow(2).sum() for q in p)
    grads = torch.autograd.grad(loss, p)
    assert max(gr.abs().max().item() for gr in grads) < 1e-6
    assert not w_star.requires_grad  # detached results


def test_refit_does_not_touch_its_inputs_and_checks_arguments():
    z, y, w, b = _data(2)
    w0, b0 = w.clone(), b.clone()
    refit_head(z, y, w, b)
    assert torch.equal(w, w0) and torch.equal(b, b0)
    for kw in ({"l2": 0.0}, {"l2": -1.0}, {"max_iter": 0}, {"tol": 0.0}):
        with pytest.raises(ValueError):
            refit_head(z, y, w, b, **kw)


def test_ema_equals_the_hand_computation():
    g = torch.Generator().manual_seed(3)
    targets = [(torch.randn(3, 4, generator=g, dtype=DT), torch.randn(3, generator=g, dtype=DT))
               for _ in range(5)]
    state = None
    for t in targets:
        state = ema_target(state, t, 0.8)
    # by hand: the first target, then w <- 0.8 w + 0.2 new
    w, b = targets[0]
    for wn, bn in targets[1:]:
        w, b = 0.8 * w + 0.2 * wn, 0.8 * b + 0.2 * bn
    torch.testing.assert_close(state[0], w, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(state[1], b, rtol=1e-14, atol=1e-14)
    assert ema_target(None, targets[0], 0.8) is targets[0]
    for decay in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="decay"):
            ema_target(state, targets[0], decay)


def test_greedy_teach_with_a_given_target_solves_toward_it():
    z, y, w, b = _data(4, n=16)
    z = z.relu() + 0.1
    w_star, b_star = refit_head(z, y, w, b, l2=1e-2)
    out = greedy_teach(z, y, w, b, 0.5, eps=0.2, target=(w_star, b_star), subspace=False)
    fn = linear_ce_closure(y, w, b, w_star, b_star, 0.5)
    ref = solve_cap(fn, z, 0.2, 15)
    torch.testing.assert_close(out.z, ref.z, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.lookahead.weight, w_star)
    dist = torch.sqrt((w - w_star).pow(2).sum() + (b - b_star).pow(2).sum())
    torch.testing.assert_close(out.theta_dist, dist)
    # the lookahead still runs for the released-code gradient, unchanged by the target
    fg = greedy_teach(z, y, w, b, 0.5, target=(w_star, b_star), feature_grad=True)
    la = linear_lookahead(z, y, w, b, 0.5, 5, feature_grad=True)
    torch.testing.assert_close(fg.lookahead.feature_grad, la.feature_grad)
    # and differs from teaching toward the lookahead's target
    plain = greedy_teach(z, y, w, b, 0.5, eps=0.2, subspace=False)
    assert (out.z - plain.z).abs().max() > 1e-4


def test_greedy_teach_refuses_a_target_of_the_wrong_shape():
    z, y, w, b = _data(5, n=8)
    with pytest.raises(ValueError, match="target"):
        greedy_teach(z, y, w, b, 0.5, target=(w[:, :2], b))
    with pytest.raises(ValueError, match="target"):
        greedy_teach(z, y, w, b, 0.5, target=(w, None))


# ===================================================================== the teacher's target=


def _batches(n_batches: int, seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(12, 4, generator=g, dtype=DT).relu() + 0.1,
             torch.randint(0, 3, (12,), generator=g)) for _ in range(n_batches)]


def test_teacher_ema_target_equals_greedy_teach_toward_the_hand_made_average():
    from torchdht import PerformativeTeacher

    _, _, w, b = _data(8)
    head = _head(w, b)
    teacher = PerformativeTeacher(head, lr=0.5, eps=0.2, target="ema", target_decay=0.6,
                                  solve_tol=None)
    state = None
    for z, y in _batches(3):
        got = _taught(teacher, head, z, y)
        la = linear_lookahead(z, y, w, b, 0.5, 5)
        state = (la.weight, la.bias) if state is None else (
            0.6 * state[0] + 0.4 * la.weight, 0.6 * state[1] + 0.4 * la.bias)
        want = greedy_teach(z, y, w, b, 0.5, eps=0.2, target=state)
        torch.testing.assert_close(got, want.z, rtol=1e-10, atol=1e-12)
    assert teacher.state_dict()["target"]["steps"] == 3
    teacher.remove()


def test_teacher_buffer_target_refits_on_the_ring_buffer_every_refit_every_steps():
    from torchdht import PerformativeTeacher

    _, _, w, b = _data(9)
    head = _head(w, b)
    teacher = PerformativeTeacher(head, lr=0.5, eps=0.2, target="buffer", buffer_batches=2,
                                  refit_every=2, refit_l2=1e-2, solve_tol=None)
    batches = _batches(4)
    target = None
    for i, (z, y) in enumerate(batches):
        got = _taught(teacher, head, z, y)
        if i % 2 == 0:  # refit on the last two batches (one at the first step)
            keep = batches[max(0, i - 1): i + 1]
            zb = torch.cat([bz for bz, _ in keep])
            yb = torch.cat([F.one_hot(by, 3).to(DT) for _, by in keep])
            target = refit_head(zb, yb, w, b, l2=1e-2, max_iter=500)
        want = greedy_teach(z, y, w, b, 0.5, eps=0.2, target=target)
        torch.testing.assert_close(got, want.z, rtol=1e-6, atol=1e-6)
    assert len(teacher.state_dict()["target"]["buffer"]) == 2
    teacher.remove()


def test_teacher_informed_target_state_round_trip():
    from torchdht import PerformativeTeacher

    _, _, w, b = _data(10)
    batches = _batches(4, seed=11)
    outs = []
    for resume in (False, True):
        head = _head(w, b)
        t = PerformativeTeacher(head, lr=0.5, target="ema", solve_tol=None, seed=0)
        for z, y in batches[:2]:
            _taught(t, head, z, y)
        if resume:
            saved = t.state_dict()
            t.remove()
            t = PerformativeTeacher(head, lr=0.5, target="ema", solve_tol=None, seed=0)
            t.load_state_dict(saved)
        outs.append([_taught(t, head, z, y) for z, y in batches[2:]])
        t.remove()
    for a, r in zip(*outs):
        assert torch.equal(a, r)


def test_teacher_target_bad_inputs():
    from torch import nn

    from torchdht import PerformativeTeacher

    for kw, match in [
        ({"target": "oracle"}, "target"),
        ({"target": "ema", "policy": "random"}, "greedy"),
        ({"target": "ema", "compile": True}, "compile"),
        ({"target": "ema", "target_decay": 1.0}, "target_decay"),
        ({"target": "buffer", "refit_every": 0}, "refit_every"),
        ({"target": "buffer", "buffer_batches": 0}, "buffer_batches"),
        ({"target": "buffer", "refit_l2": 0.0}, "refit_l2"),
    ]:
        with pytest.raises(ValueError, match=match):
            PerformativeTeacher(nn.Linear(4, 3), lr=0.1, **kw)
    t = PerformativeTeacher(nn.Linear(4, 3), lr=0.1, target="ema")
    plain = PerformativeTeacher(nn.Linear(4, 3), lr=0.1).state_dict()
    with pytest.raises(ValueError, match="target"):
        t.load_state_dict(plain)  # a state without the target's
    t.remove()


# ===================================================================== target="heldout"
def _heldout_setup(seed: int = 12, n: int = 10):
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Dropout(0.5)).to(DT)
    with torch.no_grad():
        encoder[2].running_mean.normal_(generator=g)
        encoder[2].running_var.uniform_(0.5, 2.0, generator=g)
    x = torch.randn(n, 6, generator=g, dtype=DT)
    y = torch.randint(0, 3, (n,), generator=g)
    return encoder, x, y


def test_heldout_target_is_the_lookahead_on_the_heldout_batch_and_never_reads_the_training_batch():
    from torchdht import PerformativeTeacher

    encoder, xh, yh = _heldout_setup()
    encoder.train()
    bn_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    _, _, w, b = _data(13)
    w = w[:, :4].contiguous()
    head = _head(w, b)
    teacher = PerformativeTeacher(head, lr=0.5, eps=0.2, target="heldout", heldout=(xh, yh),
                                  heldout_encoder=encoder, heldout_batch=4, solve_tol=None)
    batches = _batches(3)
    with torch.no_grad():
        ref_enc = encoder.eval()
        zh = ref_enc(xh)
    encoder.train()
    for i, (z, y) in enumerate(batches):
        got = _taught(teacher, head, z, y)
        idx = (4 * i + torch.arange(4)) % 10  # in order, cycled
        la = linear_lookahead(zh[idx], yh[idx], w, b, 0.5, 5)
        want = greedy_teach(z, y, w, b, 0.5, eps=0.2, target=(la.weight, la.bias))
        torch.testing.assert_close(got, want.z, rtol=1e-10, atol=1e-12)
    # the model is left as it was: modes restored, BatchNorm statistics untouched
    assert encoder.training and all(m.training for m in encoder.modules())
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, bn_state[k]), k
    assert teacher.state_dict()["target"] == {"kind": "heldout", "cursor": 2}
    teacher.remove()
    # the target does not depend on the training batch: the callable, given poisoned
    # training arguments, returns the same theta* (and reads none of them)
    from torchdht.performative.informed import HeldoutTarget

    target = HeldoutTarget(encoder, (xh, yh), 4, 5)
    target.lr = 0.5
    a = target(None, None, None, None, w, b)
    target.cursor = 0
    nan = torch.full((12, 4), float("nan"), dtype=DT)
    bad_y = torch.full((12,), 99)
    c = target(None, nan, bad_y, torch.zeros(12, dtype=torch.bool), w, b)
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert torch.isfinite(a[0]).all()


def test_heldout_target_takes_a_loader_and_restarts_it():
    from torch.utils.data import DataLoader, TensorDataset

    from torchdht.performative.informed import HeldoutTarget

    encoder, xh, yh = _heldout_setup(n=6)
    _, _, w, b = _data(14)
    w = w[:, :4].contiguous()
    loader = DataLoader(TensorDataset(xh, yh), batch_size=4)  # batches of 4 and 2
    target = HeldoutTarget(encoder, loader, 99, 3)
    target.lr = 0.3
    zh = encoder.eval()(xh).detach()
    for rows in ([0, 1, 2, 3], [4, 5], [0, 1, 2, 3]):
        got = target(None, None, None, None, w, b)
        la = linear_lookahead(zh[rows], yh[rows], w, b, 0.3, 3)
        torch.testing.assert_close(got[0], la.weight, rtol=1e-12, atol=1e-12)


def test_heldout_target_bad_inputs():
    from torch import nn

    from torchdht import PerformativeTeacher

    encoder, xh, yh = _heldout_setup()
    enc32 = encoder.float()
    head = nn.Linear(4, 3)
    for kw, exc, match in [
        ({"target": "heldout"}, ValueError, "heldout"),
        ({"target": "heldout", "heldout": (xh, yh)}, ValueError, "heldout_encoder"),
        ({"target": "ema", "heldout": (xh, yh)}, ValueError, "heldout"),
        ({"heldout_encoder": enc32}, ValueError, "heldout"),
        ({"target": "heldout", "heldout": (xh, yh), "heldout_encoder": lambda x: x},
         TypeError, "heldout_encoder"),
        ({"target": "heldout", "heldout": (xh, yh[:3]), "heldout_encoder": enc32},
         ValueError, "rows"),
        ({"target": "heldout", "heldout": 3, "heldout_encoder": enc32}, TypeError, "heldout"),
        ({"target": "heldout", "heldout": (xh, yh), "heldout_encoder": enc32,
          "heldout_batch": 0}, ValueError, "heldout_batch"),
        ({"target": "heldout", "heldout": (xh, yh), "heldout_encoder": enc32,
          "policy": "random"}, ValueError, "greedy"),
    ]:
        with pytest.raises(exc, match=match):
            PerformativeTeacher(head, lr=0.1, **kw)
    # an encoder giving the wrong width is caught at the first taught step
    t = PerformativeTeacher(nn.Linear(5, 3), lr=0.1, target="heldout",
                            heldout=(xh.float(), yh), heldout_encoder=enc32)
    t.set_targets(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="features"):
        t.head(torch.randn(2, 5))
    t.remove()
