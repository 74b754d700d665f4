"""The Gram form of the linear lookahead against the direct closed form (linear_lookahead)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdht.functional import linear_lookahead
from torchdht.functional.gram import (
    GramLookahead,
    gram_is_cheaper,
    gram_lookahead,
    weight_star_apply,
    weight_star_dist,
)

DT = torch.float64
TOL = 1e-12
MASKS = ["none", "random", "all-false", "one-true"]


def _mask(kind: str, n: int, gen: torch.Generator) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "random":
        return torch.rand(n, generator=gen) < 0.6
    mask = torch.zeros(n, dtype=torch.bool)
    if kind == "one-true":
        mask[int(torch.randint(0, n, (1,), generator=gen))] = True
    return mask


def _problem(n, c, d, bias, soft, gen):
    z = torch.randn(n, d, generator=gen, dtype=DT)
    if soft:  # soft targets need not sum to one
        y = torch.rand(n, c, generator=gen, dtype=DT) * 2.0 / c
    else:
        y = torch.randint(0, c, (n,), generator=gen)
    w = torch.randn(c, d, generator=gen, dtype=DT)
    b = torch.randn(c, generator=gen, dtype=DT) if bias else None
    return z, y, w, b


def _close(got, want, what):
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = 1.0 + (want.abs().max().item() if want.numel() else 0.0)
    assert err <= TOL * scale, f"{what}: max abs error {err:.3g} at scale {scale:.3g}"


def _check(z, y, w, b, lr, steps, mask, gen, where):
    ref = linear_lookahead(z, y, w, b, lr, steps, feature_grad=True, mask=mask)
    out = gram_lookahead(z, y, w, b, lr, steps, feature_grad=True, mask=mask)
    assert isinstance(out, GramLookahead)
    assert out.coef.shape == (z.shape[0], w.shape[0])
    _close(w - out.coef.T @ z, ref.weight, f"W* {where}")
    if b is None:
        assert out.bias is None
    else:
        _close(out.bias, ref.bias, f"b* {where}")
    _close(out.feature_grad, ref.feature_grad, f"feature_grad {where}")
    _close(out.logits, z @ w.T + (0.0 if b is None else b), f"logits {where}")
    delta = w - ref.weight
    v = torch.randn(3, z.shape[1], generator=gen, dtype=DT)
    _close(weight_star_apply(out.coef, z, v), v @ delta.T, f"weight_star_apply {where}")
    dist = weight_star_dist(out.coef, z)
    assert dist.dim() == 0
    _close(dist, torch.linalg.norm(delta), f"weight_star_dist {where}")
    _close(weight_star_dist(out.coef, z, gram=z @ z.T), dist, f"dist with gram {where}")


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("soft", [False, True], ids=["index", "soft"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_equals_linear_lookahead_on_grid(bias, soft, mask_kind):
    gen = torch.Generator().manual_seed(1234)
    lrs = [0.7, torch.tensor(0.3, dtype=DT)]
    for n, c, d in itertools.product([1, 3, 17, 64], [2, 5, 40], [2, 7, 33]):
        z, y, w, b = _problem(n, c, d, bias, soft, gen)
        mask = _mask(mask_kind, n, gen)
        for steps, lr in itertools.product([0, 1, 5], lrs):
            where = f"N={n} C={c} D={d} steps={steps} lr={float(lr)}"
            _check(z, y, w, b, lr, steps, mask, gen, where)


@settings(deadline=None, max_examples=30)
@given(
    n=st.integers(1, 24),
    c=st.integers(1, 12),
    d=st.integers(1, 12),
    steps=st.integers(0, 6),
    lr=st.floats(0.0, 3.0),
    bias=st.booleans(),
    soft=st.booleans(),
    mask_kind=st.sampled_from(MASKS),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_random_shapes(n, c, d, steps, lr, bias, soft, mask_kind, seed):
    gen = torch.Generator().manual_seed(seed)
    z, y, w, b = _problem(n, c, d, bias, soft, gen)
    _check(z, y, w, b, lr, steps, _mask(mask_kind, n, gen), gen, f"N={n} C={c} D={d}")


def test_zero_steps_and_options():
    gen = torch.Generator().manual_seed(0)
    z, y, w, b = _problem(5, 3, 4, True, False, gen)
    out = gram_lookahead(z, y, w, b, 0.5, 0)
    assert torch.equal(out.coef, torch.zeros(5, 3, dtype=DT))
    assert torch.equal(out.bias, b) and out.feature_grad is None
    out = gram_lookahead(z, y, w, None, 0.5, 2, feature_grad=True)
    assert out.bias is None and out.feature_grad.shape == (5, 4)


def test_precomputed_logits_are_used_and_returned():
    gen = torch.Generator().manual_seed(1)
    z, y, w, b = _problem(7, 4, 3, True, True, gen)
    logits = torch.addmm(b, z, w.T)
    out = gram_lookahead(z, y, w, b, 0.4, 3, feature_grad=True, logits=logits)
    ref = gram_lookahead(z, y, w, b, 0.4, 3, feature_grad=True)
    assert out.logits is logits
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    # the logits really are taken from the argument
    shifted = gram_lookahead(z, y, w, b, 0.4, 3, logits=logits + 1.0)  # softmax ignores a shift
    torch.testing.assert_close(shifted.coef, ref.coef, rtol=0, atol=1e-13)
    other = gram_lookahead(z, y, w, b, 0.4, 3, logits=torch.zeros_like(logits))
    assert not torch.allclose(other.coef, ref.coef)


def test_bad_arguments():
    z, y, w = torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.randn(3, 3)
    for steps in (-1, 1.0, True):
        with pytest.raises(ValueError, match="steps"):
            gram_lookahead(z, y, w, None, 0.1, steps)
    with pytest.raises(ValueError, match="logits"):
        gram_lookahead(z, y, w, None, 0.1, 1, logits=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="weight"):
        gram_lookahead(z, y, torch.randn(3, 2), None, 0.1, 1)
    for bad in ([0, 3, 1, 0], [0, -1, 1, 0]):  # class indices outside [0, C), as F.one_hot
        with pytest.raises(RuntimeError, match="out of bounds"):
            gram_lookahead(z, torch.tensor(bad), w, None, 0.1, 1)


def test_inputs_are_not_modified():
    gen = torch.Generator().manual_seed(2)
    z, y, w, b = _problem(6, 3, 4, True, False, gen)
    copies = [t.clone() for t in (z, y, w, b)]
    gram_lookahead(z, y, w, b, 0.5, 3, feature_grad=True)
    for t, c in zip((z, y, w, b), copies):
        assert torch.equal(t, c)


def test_vmap_over_heads():
    gen = torch.Generator().manual_seed(3)
    z, y, _, _ = _problem(9, 4, 5, False, False, gen)
    ws = torch.randn(3, 4, 5, generator=gen, dtype=DT)
    bs = torch.randn(3, 4, generator=gen, dtype=DT)
    mask = torch.tensor([True, True, False, True, True, True, False, True, True])

    def one(w, b):
        return gram_lookahead(z, y, w, b, 0.6, 4, feature_grad=True, mask=mask)

    out = torch.func.vmap(one)(ws, bs)
    assert out.coef.shape == (3, 9, 4) and out.feature_grad.shape == (3, 9, 5)
    dists = torch.func.vmap(weight_star_dist, in_dims=(0, None))(out.coef, z)
    for h in range(3):
        ref = linear_lookahead(z, y, ws[h], bs[h], 0.6, 4, feature_grad=True, mask=mask)
        _close(ws[h] - out.coef[h].T @ z, ref.weight, f"W* head {h}")
        _close(out.bias[h], ref.bias, f"b* head {h}")
        _close(out.feature_grad[h], ref.feature_grad, f"feature_grad head {h}")
        _close(dists[h], torch.linalg.norm(ws[h] - ref.weight), f"dist head {h}")


def test_traces_with_torch_compile_fullgraph():
    # aot_eager traces through dynamo and AOTAutograd's fake tensors (a graph break or a
    # data-dependent branch fails here) without inductor's slow C++ compilation.
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(4)
    z, y, w, b = _problem(6, 3, 4, True, False, gen)
    mask = torch.tensor([True, False, True, True, True, False])
    lr = torch.tensor(0.3, dtype=DT)
    fn = torch.compile(gram_lookahead, fullgraph=True, backend="aot_eager")
    out = fn(z, y, w, b, lr, 3, True, mask)
    ref = linear_lookahead(z, y, w, b, lr, 3, feature_grad=True, mask=mask)
    _close(w - out.coef.T @ z, ref.weight, "compiled W*")
    _close(out.feature_grad, ref.feature_grad, "compiled feature_grad")


def test_gram_is_cheaper_shape_rule():
    assert gram_is_cheaper(128, 10_000, 512)  # wide classifier, batch below the width
    assert not gram_is_cheaper(1024, 32_000, 128)  # token head: N = 8 D
    assert not gram_is_cheaper(4096, 10, 64)
    assert gram_is_cheaper(16, 1000, 256, feature_grad=True)
    # more rows never makes the Gram form cheaper
    flips = [gram_is_cheaper(n, 1000, 256) for n in range(1, 1200, 7)]
    assert flips == sorted(flips, reverse=True)
    assert isinstance(gram_is_cheaper(1, 1, 1), bool)
