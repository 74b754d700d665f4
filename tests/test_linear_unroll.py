"""Differentiable unrolling and the parameterized (transformation, black-box) teachers."""

from __future__ import annotations

import gc
import io

import pytest
import torch
from torch import nn

from torchdht.linear import LR, LSR, BlackBoxTeacher, Softmax, TransformTeacher, policy_mlp, run
from torchdht.linear.unrolled.unroll import (
    distance_loss,
    learner_loss,
    sgd_steps,
    unroll,
    validation_loss,
)

D64 = torch.float64


def _pool(n: int = 40, d: int = 3, seed: int = 0, dtype: torch.dtype = D64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.where(x[:, 0] + 0.3 * x[:, 1] > 0, 1.0, -1.0).to(dtype)
    return x, y


# ------------------------------------------------------------ the pure steps
@pytest.mark.parametrize("learner", [LSR, LR, Softmax(3)], ids=["LSR", "LR", "softmax"])
def test_sgd_steps_equals_one_learner_at_a_time(learner):
    g = torch.Generator().manual_seed(1)
    k, d = 5, 4
    w = torch.randn(k, *learner.weight_shape(d), generator=g, dtype=D64)
    x = torch.randn(k, d, generator=g, dtype=D64)
    if isinstance(learner, Softmax):
        y = torch.randint(0, 3, (k,), generator=g)
    else:
        y = torch.where(torch.rand(k, generator=g) > 0.5, 1.0, -1.0).to(D64)
    batched = sgd_steps(learner, w, x, y, 0.3)
    losses = learner_loss(learner, w, x, y)
    for i in range(k):
        ref = learner.sgd_step(w[i], x[i : i + 1], y[i : i + 1], 0.3)
        torch.testing.assert_close(batched[i], ref)
        torch.testing.assert_close(losses[i], learner.loss(w[i], x[i : i + 1], y[i : i + 1])[0])


def test_validation_loss_is_mean_learner_loss():
    x, y = _pool()
    w = torch.randn(4, 3, dtype=D64)
    ref = torch.stack([LR.loss(wi, x, y).mean() for wi in w]).mean()
    torch.testing.assert_close(validation_loss(LR, x, y)(w), ref)


# ------------------------------------------------------- gradient correctness
def _tiny_unroll(theta: torch.Tensor, alpha: float = 0.0, truncate: int | None = None,
                 state_grad: bool = True):
    """A 2-parameter-matrix policy x~ = tanh([w, x] @ A) + b on LR, 6 steps of 3 learners."""
    x, y = _pool(n=18, d=2, seed=3)
    xs, ys = x.reshape(6, 3, 2), y.reshape(6, 3)
    a, b = theta[:8].reshape(4, 2), theta[8:]

    def generate(w, i):
        return torch.tanh(torch.cat([w, xs[i]], 1) @ a) * 3.0 + b, None

    w0 = torch.tensor([[0.5, -0.2], [0.0, 0.3], [-0.4, 0.1]], dtype=D64)
    return unroll(generate, LR, w0, ys, 0.7, distance_loss(torch.tensor([2.0, -1.0], dtype=D64)),
                  alpha=alpha, truncate=truncate, state_grad=state_grad)


def test_unrolled_gradient_matches_finite_differences():
    theta = torch.randn(10, dtype=D64, generator=torch.Generator().manual_seed(0))
    theta.requires_grad_(True)
    (g,) = torch.autograd.grad(_tiny_unroll(theta).loss, theta)
    eps = 1e-6
    fd = torch.zeros_like(theta)
    with torch.no_grad():
        for j in range(theta.numel()):
            e = torch.zeros_like(theta)
            e[j] = eps
            fd[j] = (_tiny_unroll(theta + e).loss - _tiny_unroll(theta - e).loss) / (2 * eps)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)
    assert g.abs().max() > 1e-3  # the check is not vacuous


def test_unroll_passes_gradcheck():
    theta = torch.randn(10, dtype=D64, generator=torch.Generator().manual_seed(1))
    theta.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: _tiny_unroll(t).loss, (theta,))


def test_auxiliary_term_stops_gradient_at_the_learner_state():
    """alpha > 0 adds exactly alpha * d/dtheta sum_i l(pi(sg w_i), y_i | sg w_i)."""
    theta = torch.randn(10, dtype=D64, generator=torch.Generator().manual_seed(2))
    theta.requires_grad_(True)
    r0, r1 = _tiny_unroll(theta), _tiny_unroll(theta, alpha=0.25)
    torch.testing.assert_close(r0.final, r1.final)
    (g0,) = torch.autograd.grad(r0.loss, theta)
    (g1,) = torch.autograd.grad(r1.loss, theta)
    # reference: replay the states without a graph, then differentiate the aux sum alone
    x, y = _pool(n=18, d=2, seed=3)
    xs, ys = x.reshape(6, 3, 2), y.reshape(6, 3)
    a, b = theta[:8].reshape(4, 2), theta[8:]
    w = torch.tensor([[0.5, -0.2], [0.0, 0.3], [-0.4, 0.1]], dtype=D64)
    aux = 0.0
    for i in range(6):
        xt = torch.tanh(torch.cat([w, xs[i]], 1) @ a) * 3.0 + b
        aux = aux + learner_loss(LR, w, xt, ys[i]).mean()
        w = sgd_steps(LR, w, xt.detach(), ys[i], 0.7)
    (ga,) = torch.autograd.grad(aux, theta)
    torch.testing.assert_close(g1, g0 + 0.25 * ga)
    torch.testing.assert_close(r1.aux, aux.detach())


def test_truncated_unroll_is_the_full_unroll_of_the_last_steps():
    theta = torch.randn(10, dtype=D64, generator=torch.Generator().manual_seed(4))
    theta.requires_grad_(True)
    full = _tiny_unroll(theta, alpha=0.1)
    same = _tiny_unroll(theta, alpha=0.1, truncate=6)
    torch.testing.assert_close(full.loss, same.loss)
    trunc = _tiny_unroll(theta, alpha=0.1, truncate=2)
    torch.testing.assert_close(trunc.final, full.final)  # same forward trajectory
    (gt,) = torch.autograd.grad(trunc.loss, theta)
    # reference: start a fresh 2-step unroll from w_4 (computed without a graph)
    x, y = _pool(n=18, d=2, seed=3)
    xs, ys = x.reshape(6, 3, 2), y.reshape(6, 3)
    a, b = theta[:8].reshape(4, 2), theta[8:]

    def generate(w, i):
        return torch.tanh(torch.cat([w, xs[i + 4]], 1) @ a) * 3.0 + b, None

    with torch.no_grad():
        w = torch.tensor([[0.5, -0.2], [0.0, 0.3], [-0.4, 0.1]], dtype=D64)
        for i in range(4):
            xt = torch.tanh(torch.cat([w, xs[i]], 1) @ a) * 3.0 + b
            w = sgd_steps(LR, w, xt, ys[i], 0.7)
    ref = unroll(generate, LR, w, ys[4:], 0.7, distance_loss(torch.tensor([2.0, -1.0], dtype=D64)),
                 alpha=0.1)
    (gr,) = torch.autograd.grad(ref.loss, theta)
    torch.testing.assert_close(gt, gr)
    (gf,) = torch.autograd.grad(full.loss, theta)
    assert not torch.allclose(gt, gf)  # truncation changes the gradient


def test_state_grad_false_drops_only_the_state_path():
    theta = torch.randn(10, dtype=D64, generator=torch.Generator().manual_seed(5))
    theta.requires_grad_(True)
    exact, cheap = _tiny_unroll(theta), _tiny_unroll(theta, state_grad=False)
    torch.testing.assert_close(exact.loss, cheap.loss)
    (ge,) = torch.autograd.grad(exact.loss, theta)
    (gc_,) = torch.autograd.grad(cheap.loss, theta)
    assert not torch.allclose(ge, gc_)


def test_unroll_bad_arguments():
    gen = lambda w, i: (torch.zeros(w.shape[0], 2), None)  # noqa: E731
    fl = distance_loss(torch.zeros(2))
    with pytest.raises(ValueError, match="truncate"):
        unroll(gen, LR, torch.zeros(3, 2), torch.ones(4, 3), 0.1, fl, truncate=5)
    with pytest.raises(ValueError, match="truncate"):
        unroll(gen, LR, torch.zeros(3, 2), torch.ones(4, 3), 0.1, fl, truncate=0)
    with pytest.raises(ValueError, match="at least one step"):
        unroll(gen, LR, torch.zeros(3, 2), torch.ones(0, 3), 0.1, fl)
    with pytest.raises(ValueError, match="learners"):
        unroll(gen, LR, torch.zeros(2, 2), torch.ones(4, 3), 0.1, fl)


# ----------------------------------------------------------------- teachers
def _teacher(kind: str = "transform", dtype: torch.dtype = torch.float32, **kw):
    x, y = _pool(n=64, d=2, seed=7, dtype=dtype)
    base = dict(unroll=6, trajectories=4, horizon=30, seed=11)
    base.update(kw)
    if kind == "transform":
        return TransformTeacher(LR, (x, y), 0.1, w_star=torch.tensor([2.0, 1.0], dtype=dtype),
                                **base)
    return BlackBoxTeacher(LR, (x[:48], y[:48]), 0.1, validation=(x[48:], y[48:]), **base)


def test_teacher_gradient_matches_finite_differences_through_functional_call():
    t = _teacher(dtype=D64, alpha=0.0)
    params = {k: v.detach().clone().requires_grad_(True)
              for k, v in t.policy.named_parameters()}
    w0 = LR.init(2, torch.Generator().manual_seed(0), D64).expand(4, 2).clone()
    index = torch.randint(0, 64, (6, 4), generator=torch.Generator().manual_seed(1))
    loss = t.unrolled_loss(params, w0, index).loss
    grads = torch.autograd.grad(loss, list(params.values()))
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    analytic = sum((g * direction[k]).sum() for (k, _), g in zip(params.items(), grads))
    eps = 1e-6
    with torch.no_grad():
        up = {k: v + eps * direction[k] for k, v in params.items()}
        dn = {k: v - eps * direction[k] for k, v in params.items()}
        fd = (t.unrolled_loss(up, w0, index).loss - t.unrolled_loss(dn, w0, index).loss) / (2 * eps)
    torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-9)
    assert abs(float(fd)) > 1e-6


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.mark.parametrize("kind", ["transform", "blackbox"])
def test_memory_is_flat_across_outer_iterations(kind):
    t = _teacher(kind, hidden=(16,), batch_norm=True)
    t.fit(2)  # optimizer state and carried learners exist from here on
    after_two = _live_tensors()
    t.fit(25)
    # no growth (tensors other tests left behind for a cache may be freed meanwhile)
    assert _live_tensors() <= after_two
    assert t._w is not None and t._w.grad_fn is None and not t._w.requires_grad


def test_fit_improves_the_outer_loss_and_teaching_beats_random():
    """On an easy separable problem the trained policy brings w closer to w* than SGD."""
    x, y = _pool(n=200, d=2, seed=8, dtype=torch.float32)
    ws = torch.tensor([3.0, 1.0])
    t = TransformTeacher(LR, (x, y), 0.05, w_star=ws, unroll=10, trajectories=8, horizon=40,
                         seed=0)
    h = t.fit(150)
    assert h.final[-20:].mean() < h.final[:20].mean()
    w0 = torch.zeros(2)
    taught = run(t, LR, w0, ws, 40, 0.05).distance[-1]
    from torchdht.linear import SGDTeacher

    random = run(SGDTeacher(LR, (x, y), seed=0), LR, w0, ws, 40, 0.05).distance[-1]
    assert taught < random


@pytest.mark.parametrize("kind", ["transform", "blackbox"])
def test_state_dict_round_trip_proposes_the_same_examples(kind):
    t = _teacher(kind, hidden=(8,), batch_norm=True)
    t.fit(5)
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    u = _teacher(kind, hidden=(8,), batch_norm=True, seed=999)  # other init and generator
    u.load_state_dict(torch.load(buf, weights_only=False))
    w = torch.tensor([0.3, -0.2])
    for _ in range(5):
        xa, ya = t.propose(w)
        xb, yb = u.propose(w)
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    ha, hb = t.fit(3), u.fit(3)  # training continues identically too
    torch.testing.assert_close(ha.loss, hb.loss, rtol=0, atol=0)


def test_load_refuses_another_configuration():
    t = _teacher(unroll=6)
    with pytest.raises(ValueError, match="unroll"):
        _teacher(unroll=5).load_state_dict(t.state_dict())
    with pytest.raises(ValueError, match="kind"):
        _teacher("blackbox").load_state_dict(t.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        t.load_state_dict({"policy": {}})


def test_propose_is_pure():
    t = _teacher()
    w = torch.tensor([0.5, 0.5])
    w_before = w.clone()
    params = {k: v.clone() for k, v in t.policy.state_dict().items()}
    t.policy.train()
    x, y = t.propose(w)
    assert x.shape == (1, 2) and y.shape == (1,)
    assert torch.equal(w, w_before) and t.policy.training
    for k, v in t.policy.state_dict().items():
        assert torch.equal(v, params[k])


def test_construction_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _teacher()
    torch.testing.assert_close(torch.rand(3), expected)


def test_policy_mlp_paper_shapes():
    m = policy_mlp(74, 24, (128, 256, 512, 512, 1024), batch_norm=True)
    assert sum(isinstance(x, nn.BatchNorm1d) for x in m) == 5
    assert m(torch.zeros(3, 74)).shape == (3, 24)


def test_bad_inputs_name_the_argument():
    x, y = _pool(n=20, d=2, dtype=torch.float32)
    ws = torch.zeros(2)
    with pytest.raises(ValueError, match="unroll"):
        TransformTeacher(LR, (x, y), 0.1, w_star=ws, unroll=0)
    with pytest.raises(ValueError, match="truncate"):
        TransformTeacher(LR, (x, y), 0.1, w_star=ws, unroll=4, truncate=5)
    with pytest.raises(ValueError, match=r"policy must map \(N, 8\)"):
        TransformTeacher(LR, (x, y), 0.1, w_star=ws, policy=nn.Linear(7, 2))
    with pytest.raises(ValueError, match=r"policy must return \(N, 2\)"):
        TransformTeacher(LR, (x, y), 0.1, w_star=ws, policy=nn.Linear(8, 3))
    with pytest.raises(TypeError, match="policy must be an nn.Module"):
        TransformTeacher(LR, (x, y), 0.1, w_star=ws, policy=lambda z: z)
    with pytest.raises(ValueError, match="w_star"):
        TransformTeacher(LR, (x, y), 0.1, w_star=torch.zeros(3))
    with pytest.raises(ValueError, match="alpha"):
        TransformTeacher(LR, (x, y), 0.1, w_star=ws, alpha=-1.0)
    with pytest.raises(ValueError, match="validation has D=3"):
        BlackBoxTeacher(LR, (x, y), 0.1, validation=(torch.zeros(4, 3), torch.ones(4)))
    with pytest.raises(ValueError, match="validation is empty"):
        BlackBoxTeacher(LR, (x, y), 0.1, validation=(torch.zeros(0, 2), torch.ones(0)))
    with pytest.raises(ValueError, match="lr"):
        TransformTeacher(LR, (x, y), 0.0, w_star=ws)


def test_box_squashes_every_example_into_the_box_and_keeps_exact_gradients():
    lo, hi = torch.tensor([-1.0, -0.5], dtype=D64), torch.tensor([2.0, 0.5], dtype=D64)
    t = _teacher(dtype=D64, box=(lo, hi))
    t.fit(3)
    for _ in range(20):
        x, _ = t.propose(torch.randn(2, dtype=D64) * 5)
        assert bool(((x >= lo) & (x <= hi)).all())
    params = {k: v.detach().clone().requires_grad_(True) for k, v in t.policy.named_parameters()}
    w0 = torch.zeros(4, 2, dtype=D64)
    index = torch.randint(0, 64, (6, 4), generator=torch.Generator().manual_seed(2))
    loss = t.unrolled_loss(params, w0, index).loss
    grads = torch.autograd.grad(loss, list(params.values()))
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    analytic = sum((g * direction[k]).sum() for (k, _), g in zip(params.items(), grads))
    with torch.no_grad():
        up = {k: v + 1e-6 * direction[k] for k, v in params.items()}
        dn = {k: v - 1e-6 * direction[k] for k, v in params.items()}
        fd = (t.unrolled_loss(up, w0, index).loss - t.unrolled_loss(dn, w0, index).loss) / 2e-6
    torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-9)


def test_box_bad_inputs():
    with pytest.raises(ValueError, match="residual"):
        _teacher(box=(torch.zeros(2), torch.ones(2)), residual=True)
    with pytest.raises(ValueError, match=r"box: lo and hi must have shape \(2,\)"):
        _teacher(box=(torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="lo < hi"):
        _teacher(box=(torch.ones(2), torch.zeros(2)))
    with pytest.raises(ValueError, match="box"):  # a checkpoint with another box is refused
        _teacher(box=(torch.zeros(2), torch.ones(2))).load_state_dict(_teacher().state_dict())
