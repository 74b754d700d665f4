"""The line-search cap solver: feasibility, exact objective values, and what it attains."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchdht.functional as tf
from torchdht.functional import (
    dense_head_ops,
    linear_ce_objective,
    linear_lookahead,
    solve_cap,
    solve_cap_linesearch,
)
from torchdht.functional.objective import linear_ce_closure

DT = torch.float64


def _problem(n, d, c, seed, bias=True, soft=False, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    w = 0.3 * torch.randn(c, d, generator=g, dtype=dtype)
    b = 0.1 * torch.randn(c, generator=g, dtype=dtype) if bias else None
    z = torch.randn(n, d, generator=g, dtype=dtype).relu() + 0.05
    if soft:
        y = torch.softmax(torch.randn(n, c, generator=g, dtype=dtype), -1)
    else:
        y = torch.randint(0, c, (n,), generator=g)
    la = linear_lookahead(z, y, w, b, 0.5, 5)
    return z, y, w, b, la


@pytest.mark.parametrize("eps", [1e-3, 0.02, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("kind", ["plain", "no-bias", "soft"])
@pytest.mark.parametrize("refine", [0, 1, 3])
def test_feasible_monotone_and_exact_objective(eps, kind, refine):
    z, y, w, b, la = _problem(40, 24, 5, seed=7, bias=kind != "no-bias", soft=kind == "soft")
    out = solve_cap_linesearch(z, y, dense_head_ops(w, b, la.weight, la.bias, 0.5), 0.5, eps,
                               refine=refine)
    # the objective the solver reports is the closed form at the point it returns
    f = linear_ce_objective(out.z, y, w, b, la.weight, la.bias, 0.5)
    torch.testing.assert_close(out.after, f, rtol=1e-10, atol=1e-12)
    f0 = linear_ce_objective(z, y, w, b, la.weight, la.bias, 0.5)
    torch.testing.assert_close(out.before, f0, rtol=1e-12, atol=1e-12)
    assert bool((out.after <= out.before).all())
    assert float(tf.chord(out.z, z).max()) <= eps + 1e-12
    torch.testing.assert_close(out.z.norm(dim=-1), z.norm(dim=-1), rtol=1e-12, atol=0)
    stay = out.after == out.before
    assert torch.equal(out.z[stay], z[stay])  # unmoved rows bit for bit
    assert bool((out.after < out.before).any())


@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_attains_nearly_the_fifteen_step_decrease(eps):
    """Regression guard of the solver's quality on a random problem (the measured
    figures on real features are in benchmarks/RESULTS.md)."""
    z, y, w, b, la = _problem(128, 64, 10, seed=3)
    pgd = solve_cap(linear_ce_closure(y, w, b, la.weight, la.bias, 0.5), z, eps, 15)
    ls = solve_cap_linesearch(z, y, dense_head_ops(w, b, la.weight, la.bias, 0.5), 0.5, eps,
                              refine=2)
    attained = float((ls.before - ls.after).sum() / (pgd.before - pgd.after).sum())
    assert attained >= 0.99


def test_more_refinement_never_does_worse():
    z, y, w, b, la = _problem(64, 32, 6, seed=11)
    ops = dense_head_ops(w, b, la.weight, la.bias, 0.5)
    totals = [float(solve_cap_linesearch(z, y, ops, 0.5, 0.3, refine=r).after.sum())
              for r in range(4)]
    assert all(a >= b_ - 1e-12 for a, b_ in zip(totals, totals[1:]))
    assert totals[-1] < totals[0]


def test_float32_cap_at_tiny_eps():
    z, y, w, b, la = _problem(256, 16, 10, seed=5, dtype=torch.float32)
    for eps in (1e-4, 1e-3):
        out = solve_cap_linesearch(z, y, dense_head_ops(w, b, la.weight, la.bias, 0.5), 0.5,
                                   eps)
        chord = tf.chord(out.z.double(), z.double())
        assert float(chord.max()) <= eps + 2 * torch.finfo(torch.float32).eps
        assert float(chord.max()) >= 0.5 * eps


def test_wide_rows_take_the_blockwise_path():
    """A (K, N, 2C) block over the budget is evaluated one step size at a time, on one
    step size per halving, with the result of that grid evaluated at once."""
    from torchdht.functional import linesearch

    z, y, w, b, la = _problem(16, 12, 4, seed=2)
    ops = dense_head_ops(w, b, la.weight, la.bias, 0.5)
    whole = solve_cap_linesearch(z, y, ops, 0.5, 0.2, grid=1)  # what a wide head gets
    budget = linesearch._BLOCK
    try:
        linesearch._BLOCK = 1
        blocks = solve_cap_linesearch(z, y, ops, 0.5, 0.2)
    finally:
        linesearch._BLOCK = budget
    torch.testing.assert_close(blocks.z, whole.z, rtol=0, atol=1e-14)
    torch.testing.assert_close(blocks.after, whole.after, rtol=0, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 20), d=st.integers(2, 30), c=st.integers(2, 8),
    eps=st.floats(1e-3, 2.0), seed=st.integers(0, 2**31 - 1), refine=st.integers(0, 2),
)
def test_property_feasible_and_monotone(n, d, c, eps, seed, refine):
    z, y, w, b, la = _problem(n, d, c, seed)
    out = solve_cap_linesearch(z, y, dense_head_ops(w, b, la.weight, la.bias, 0.5), 0.5, eps,
                               refine=refine)
    assert bool((out.after <= out.before).all())
    assert float(tf.chord(out.z, z).max()) <= eps + 1e-12
    torch.testing.assert_close(out.z.norm(dim=-1), z.norm(dim=-1), rtol=1e-12, atol=0)


def test_bad_arguments():
    z, y, w, b, la = _problem(4, 5, 3, seed=0)
    ops = dense_head_ops(w, b, la.weight, la.bias, 0.5)
    with pytest.raises(ValueError, match="grid"):
        solve_cap_linesearch(z, y, ops, 0.5, 0.1, grid=0)
    with pytest.raises(ValueError, match="refine"):
        solve_cap_linesearch(z, y, ops, 0.5, 0.1, refine=-1)
    with pytest.raises(ValueError, match="z must"):
        solve_cap_linesearch(z[:, :1], y, ops, 0.5, 0.1)
    with pytest.raises(ValueError, match="solve_steps"):
        tf.greedy_teach(z, y, w, b, 0.5, solver="linesearch", solve_steps=0)
    with pytest.raises(ValueError, match="solver"):
        tf.greedy_teach(z, y, w, b, 0.5, solver="adam")


@pytest.mark.parametrize("solver", ["linesearch", "pgd"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("feature_grad", [True, False])
def test_gram_form_equals_the_dense_form(solver, bias, soft, feature_grad):
    """The whole greedy step through the Gram matrix equals the dense one (float64)."""
    z, y, w, b, _ = _problem(12, 9, 30, seed=4, bias=bias, soft=soft)
    mask = torch.ones(12, dtype=torch.bool)
    mask[3] = False
    kw = dict(eps=0.2, feature_grad=feature_grad, mask=mask, solver=solver)
    dense = tf.greedy_teach(z, y, w, b, 0.5, gram=False, **kw)
    gram = tf.greedy_teach(z, y, w, b, 0.5, gram=True, **kw)
    assert isinstance(gram.lookahead, tf.gram.GramLookahead)
    assert isinstance(dense.lookahead, tf.LinearLookahead)
    # pgd accepts a step when the objective falls: where it is flat to rounding (late,
    # halved steps of ~1e-8 rad) the two forms can decide differently, which moves the point
    # by about that step while the objective stays equal to rounding
    z_tol = 1e-12 if solver == "linesearch" else 1e-7
    torch.testing.assert_close(gram.z, dense.z, rtol=1e-10, atol=z_tol)
    torch.testing.assert_close(gram.after, dense.after, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gram.theta_dist, dense.theta_dist, rtol=1e-10, atol=1e-12)
    if feature_grad:
        torch.testing.assert_close(gram.lookahead.feature_grad, dense.lookahead.feature_grad,
                                   rtol=1e-10, atol=1e-12)
    assert bool((gram.after < gram.before).any())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("form", ["dense", "gram"])
def test_head_ops_closure_equals_linear_ce_closure(bias, soft, form):
    """The pgd solver's closure through ops (shared by blocks, or in the Gram form)."""
    from torchdht.functional.gram import gram_head_ops, gram_lookahead
    from torchdht.functional.linesearch import head_ops_closure
    from torchdht.functional.objective import linear_ce_closure

    z, y, w, b, _ = _problem(12, 9, 30, seed=5, bias=bias, soft=soft)
    la = gram_lookahead(z, y, w, b, 0.4, 4)
    w_star = w - la.coef.T @ z
    if form == "gram":
        ops = gram_head_ops(w, b, z, la, 0.5)
    else:
        ops = tf.dense_head_ops(w, b, w_star, la.bias, 0.5)
    v = z + 0.3 * torch.randn_like(z)
    f, g = head_ops_closure(y, ops, 0.5, z.dtype)(v)
    f_ref, g_ref = linear_ce_closure(y, w, b, w_star, la.bias, 0.5)(v)
    torch.testing.assert_close(f, f_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_the_gram_form_is_chosen_for_wide_heads():
    z, y, w, b, _ = _problem(16, 24, 400, seed=1, dtype=torch.float32)
    out = tf.greedy_teach(z, y, w, b, 0.5, solver="linesearch")
    assert isinstance(out.lookahead, tf.gram.GramLookahead)
    out = tf.greedy_teach(z, y, w, b, 0.5)
    assert isinstance(out.lookahead, tf.gram.GramLookahead)
    z, y, w, b, _ = _problem(64, 24, 4, seed=1, dtype=torch.float32)
    out = tf.greedy_teach(z, y, w, b, 0.5, solver="linesearch")
    assert isinstance(out.lookahead, tf.LinearLookahead)
    assert isinstance(tf.greedy_teach(z, y, w, b, 0.5).lookahead, tf.LinearLookahead)  # pgd
