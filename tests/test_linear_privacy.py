"""Privacy-preserving teaching (section 5.3, eq. 10): the constraint always holds when teaching."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchdht.data import load_halfmoon, load_mnist35
from torchdht.linear import LR, SGDTeacher, TransformTeacher, fit_w_star, run
from torchdht.linear.unrolled import (
    PrivacyTeacher,
    VAETeacher,
    halfmoon_gan,
    pretrain_vae,
    private_transform_teacher,
    vae_phi,
)

FAST = dict(unroll=5, trajectories=4)

_S = load_halfmoon(n=300, n_train=200)
X, Y = _S.x_train, LR.targets(_S.y_train)
WS = fit_w_star(LR, X, Y)
TEST = (_S.x_test, LR.targets(_S.y_test))


def _leaky_phi() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 2, generator=g))
        lin.bias.copy_(torch.randn(3, generator=g))
    return nn.Sequential(lin, nn.LeakyReLU(0.3))


def _dist(phi, x: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
    """Independent check: min over the privacy set of the phi-space distance, per row of x."""
    with torch.no_grad():
        f, p = phi(x).double(), phi(private).double()
    return (f[:, None] - p[None]).pow(2).sum(-1).sqrt().min(1).values


class _Fixed:
    """A propose-only teacher that always proposes the same example."""

    learner = LR
    dim = 2

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def propose(self, w):
        return self.x.clone(), torch.ones(1)


@pytest.fixture(scope="module")
def vae():
    return pretrain_vae(X, _S.y_train, epochs=10, seed=0).vae


coord = st.floats(-3.0, 3.0, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(
    points=st.lists(st.tuples(coord, coord), min_size=0, max_size=8),
    pool_rows=st.lists(st.integers(0, X.shape[0] - 1), min_size=0, max_size=6),
    eps=st.floats(0.05, 2.0),
    phi_kind=st.sampled_from(["identity", "leaky"]),
    inner_kind=st.sampled_from(["transform", "sgd"]),
    seed=st.integers(0, 2**16),
)
def test_every_proposal_satisfies_the_constraint(points, pool_rows, eps, phi_kind, inner_kind,
                                                 seed):
    rows = [torch.tensor(points, dtype=torch.float32).reshape(-1, 2), X[pool_rows]]
    private = torch.cat(rows)
    if private.shape[0] == 0:
        private = X[:1].clone()
    before = private.clone()
    phi = nn.Identity() if phi_kind == "identity" else _leaky_phi()
    if inner_kind == "transform":
        inner = TransformTeacher(LR, (X, Y), 0.05, w_star=WS, seed=seed, **FAST)
    else:
        inner = SGDTeacher(LR, (X, Y), seed=seed)
    t = PrivacyTeacher(inner, private, eps, phi=phi, pool=(X, Y), seed=seed)
    g = torch.Generator().manual_seed(seed)
    xs = []
    for _ in range(12):
        w = 3.0 * torch.randn(2, generator=g)
        x, y = t.propose(w)
        assert x.shape == (1, 2) and y.shape == (1,) and bool(torch.isfinite(x).all())
        xs.append(x)
    xs = torch.cat(xs)
    assert bool((t.min_distance(xs) >= eps).all())
    assert bool((_dist(phi, xs, private) >= eps * (1 - 1e-6)).all())
    s = t.stats
    assert s["proposals"] == 12 and s["violations"] == t.repairs
    assert t.repairs == s["resampled"] + s["projected"] + s["fallback"]
    assert torch.equal(private, before)  # the caller's privacy set is not touched


def test_repairs_are_counted_and_each_path_is_used():
    # every pool example is private: every SGD proposal violates and is moved off the line
    t = PrivacyTeacher(SGDTeacher(LR, (X, Y), seed=0), X, 0.2, pool=(X, Y), seed=0, resamples=2)
    h = run(t, LR, torch.zeros(2), WS, 15, 0.05)
    assert t.repairs == 15 == t.stats["projected"] and t.stats["fallback"] == 0
    assert bool((t.min_distance(h.xs) >= 0.2).all())
    # one private point: most violations are fixed by asking again
    t = PrivacyTeacher(SGDTeacher(LR, (X, Y), seed=0), X[:1], 0.3, pool=(X, Y), seed=0)
    run(t, LR, torch.zeros(2), WS, 60, 0.05)
    assert t.stats["violations"] == t.stats["resampled"] + t.stats["projected"] + \
        t.stats["fallback"]
    # an example at the private point itself, no directions to move in, no way out by moving
    # (phi maps far points back onto the private one): the pool's safe examples are used
    def phi(x):
        return x * (x.norm(dim=1, keepdim=True) < 1.5)

    t = PrivacyTeacher(_Fixed(torch.zeros(1, 2)), torch.zeros(1, 2), 0.5, phi=phi,
                       pool=(X, Y), resamples=1, directions=0, seed=0)
    x, y = t.propose(torch.zeros(2))
    assert t.stats["fallback"] == 1 and bool(t.satisfies(x).all())
    assert bool(y == 1.0) and any(torch.equal(x[0], r) for r in X)  # a pool row, same label


def test_never_emits_a_violating_example():
    # phi is bounded below eps everywhere: no example can satisfy the constraint
    def phi(x):
        return torch.tanh(x) * 0.1

    t = PrivacyTeacher(SGDTeacher(LR, (X, Y), seed=0), X[:3], 0.5, phi=phi, pool=(X, Y),
                       directions=1)
    with pytest.raises(RuntimeError, match="no example"):
        t.propose(torch.zeros(2))


def test_hinge_training_and_wrapped_generative_teachers(vae):
    t = PrivacyTeacher(TransformTeacher(LR, (X, Y), 0.05, w_star=WS, seed=0, **FAST),
                       X[:40], 0.5, penalty=2.0, seed=0)
    h = t.fit(iters=4)
    assert h.penalty.shape == (4,) and torch.isfinite(h.penalty).all()
    assert float(h.penalty.max()) > 0 and torch.allclose(h.loss, h.final + h.penalty, atol=1e-4)
    # the hinge: penalty * relu(eps - distance), differentiable
    x = X[:1].clone().requires_grad_(True)
    t.hinge(x).sum().backward()
    assert float(t.hinge(X[:1])) == pytest.approx(1.0, abs=1e-3) and x.grad is not None
    # GAN and VAE teachers wrapped: trained with the hinge on top of their own term
    gan = PrivacyTeacher(halfmoon_gan(LR, (X, Y), 0.05, w_star=WS, seed=0, **FAST), X[:20], 0.3)
    hg = gan.fit(iters=3)
    assert torch.isfinite(hg.discriminator).all() and (hg.extra > 0).all()
    v = PrivacyTeacher(VAETeacher(LR, (X, Y), 0.05, w_star=WS, vae=vae, seed=0, **FAST),
                       X[:20], 0.3)
    assert isinstance(v.phi, nn.Module) and type(v.phi).__name__ == "_VAEPhi"  # default phi
    v.fit(iters=3)
    for teacher in (gan, v):
        r = run(teacher, LR, torch.zeros(2), WS, 10, 0.05)
        assert bool((teacher.min_distance(r.xs) >= 0.3).all())
    with pytest.raises(TypeError, match="no trainable policy"):
        PrivacyTeacher(SGDTeacher(LR, (X, Y), seed=0), X[:3], 0.1, pool=(X, Y)).fit(1)


def test_phi_module_is_copied_and_frozen():
    phi = _leaky_phi()
    before = {k: v.clone() for k, v in phi.state_dict().items()}
    t = PrivacyTeacher(TransformTeacher(LR, (X, Y), 0.05, w_star=WS, seed=0, **FAST),
                       X[:20], 0.5, phi=phi, seed=0)
    t.fit(iters=2)
    assert all(p.requires_grad and p.grad is None for p in phi.parameters())
    assert all(torch.equal(before[k], v) for k, v in phi.state_dict().items())


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_state_dict_round_trip_and_refusal():
    def make(seed, eps=0.4, private=X[:30]):
        return private_transform_teacher(LR, (X, Y), 0.05, w_star=WS, privacy_set=private,
                                         eps=eps, seed=seed, **FAST)

    a = make(0)
    a.fit(iters=3)
    for _ in range(5):
        a.propose(torch.zeros(2))
    state = _roundtrip(a.state_dict())
    b = make(1)
    b.load_state_dict(state)
    assert b.repairs == a.repairs and b.stats == a.stats
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        w = 2.0 * torch.randn(2, generator=g)
        xa, ya = a.propose(w)
        xb, yb = b.propose(w)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.stats == b.stats
    for other in (make(0, eps=0.5), make(0, private=X[:31])):
        with pytest.raises(ValueError, match="another configuration"):
            other.load_state_dict(state)
    inner = TransformTeacher(LR, (X, Y), 0.05, w_star=WS, seed=0, unroll=7, trajectories=4)
    with pytest.raises(ValueError, match="another configuration"):
        PrivacyTeacher(inner, X[:30], 0.4).load_state_dict(state)


def test_halfmoon_end_to_end():
    t = private_transform_teacher(LR, (X, Y), 0.05, w_star=WS, privacy_set=X[:50], eps=0.25,
                                  seed=0, **FAST)
    h = t.fit(iters=5)
    assert h.loss.shape == (5,)
    r = run(t, LR, LR.init(2, torch.Generator().manual_seed(0)), WS, 20, 0.05, test=TEST)
    assert torch.isfinite(r.distance).all() and r.accuracy.shape == (21,)
    assert bool((_dist(nn.Identity(), r.xs, X[:50]) >= 0.25 * (1 - 1e-6)).all())


def test_mnist_quick(mnist_root):
    d = load_mnist35(mnist_root, n_train=100, n_test=20)
    y = LR.targets(d.y_train)
    ws = fit_w_star(LR, d.x_train, y)
    private = d.x_train[:10]
    t = private_transform_teacher(LR, (d.x_train, y), 0.01, w_star=ws, privacy_set=private,
                                  eps=3.0, seed=0, unroll=4, trajectories=4,
                                  hidden=(64, 64))
    t.fit(iters=2)
    r = run(t, LR, torch.zeros(24), ws, 20, 0.01, test=(d.x_test, LR.targets(d.y_test)))
    assert r.xs.shape == (20, 24)
    assert bool((_dist(nn.Identity(), r.xs, private) >= 3.0 * (1 - 1e-6)).all())


def test_bad_inputs():
    inner = TransformTeacher(LR, (X, Y), 0.05, w_star=WS, seed=0, **FAST)
    with pytest.raises(ValueError, match=r"privacy_set must have shape \(M, 2\)"):
        PrivacyTeacher(inner, torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match=r"privacy_set must have shape"):
        PrivacyTeacher(inner, torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="privacy_set is empty"):
        PrivacyTeacher(inner, torch.zeros(0, 2), 0.1)
    with pytest.raises(TypeError, match="privacy_set must be a floating-point"):
        PrivacyTeacher(inner, torch.zeros(3, 2, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="privacy_set contains NaN"):
        PrivacyTeacher(inner, torch.full((1, 2), float("nan")), 0.1)
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite float > 0"):
            PrivacyTeacher(inner, X[:3], eps)
    with pytest.raises(ValueError, match="phi must map a batch"):
        PrivacyTeacher(inner, X[:3], 0.1, phi=lambda x: x[:1])
    with pytest.raises(ValueError, match="phi must map a batch"):
        PrivacyTeacher(inner, X[:3], 0.1, phi=lambda x: x.sum())
    with pytest.raises(TypeError, match="phi must return a floating-point tensor"):
        PrivacyTeacher(inner, X[:3], 0.1, phi=lambda x: x.tolist())
    with pytest.raises(TypeError, match="phi must be callable"):
        PrivacyTeacher(inner, X[:3], 0.1, phi=3)
    with pytest.raises(TypeError, match="propose"):
        PrivacyTeacher(object(), X[:3], 0.1)
    with pytest.raises(ValueError, match="penalty"):
        PrivacyTeacher(inner, X[:3], 0.1, penalty=-1.0)
    t = PrivacyTeacher(inner, X[:3], 0.1)
    with pytest.raises(ValueError, match="w has shape"):
        t.propose(torch.zeros(3))
    with pytest.raises(ValueError, match="state must be a dict"):
        t.load_state_dict({"policy": {}})
    with pytest.raises(TypeError, match="vae"):
        vae_phi(nn.Linear(2, 2))
