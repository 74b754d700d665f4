"""The batched cap solver on the greedy objective."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdht.functional import (
    chord,
    chord_to_angle,
    linear_ce_objective,
    linear_ce_objective_and_grad,
    linear_lookahead,
    normalize,
    sample_cap,
    solve_cap,
)


def _problem(n, d, c, seed, dtype=torch.float32, eta=0.1):
    """A head mid-training: lookahead theta* on ReLU-like features, as the teacher builds it."""
    g = torch.Generator().manual_seed(seed)
    w = 0.3 * torch.randn(c, d, generator=g, dtype=dtype)
    b = 0.1 * torch.randn(c, generator=g, dtype=dtype)
    z = torch.randn(n, d, generator=g, dtype=dtype).relu() + 0.05
    y = torch.randint(0, c, (n,), generator=g)
    la = linear_lookahead(z, y, w, b, eta, 5)

    def fg(v):
        return linear_ce_objective_and_grad(v, y, w, b, la.weight, la.bias, eta)

    def f(v):
        return linear_ce_objective(v, y, w, b, la.weight, la.bias, eta)

    return z, y, fg, f


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 24),
    d=st.integers(2, 48),
    c=st.integers(2, 12),
    eps=st.floats(1e-3, 2.0),
    steps=st.integers(1, 20),
    seed=st.integers(0, 10_000),
)
def test_solutions_keep_norm_and_stay_in_cap(n, d, c, eps, steps, seed):
    z, _, fg, _ = _problem(n, d, c, seed, dtype=torch.float64)
    out = solve_cap(fg, z, eps, steps)
    torch.testing.assert_close(out.z.norm(dim=-1), z.norm(dim=-1), rtol=1e-10, atol=0)
    assert (chord(out.z, z) <= eps * (1 + 1e-9) + 1e-12).all()
    assert (out.after <= out.before).all()


@pytest.mark.parametrize("d,c,eps", [(16, 10, 0.1), (64, 10, 0.1), (128, 100, 0.1), (32, 5, 0.5)])
def test_greedy_beats_start_and_uniform_cap_samples(d, c, eps):
    n = 256
    z, _, fg, f = _problem(n, d, c, seed=d + c)
    out = solve_cap(fg, z, eps, steps=15)
    assert (out.after <= out.before).all()
    torch.testing.assert_close(out.after, f(out.z))
    g = torch.Generator().manual_seed(1)
    radius = z.norm(dim=-1, keepdim=True)
    best = torch.full((n,), float("inf"))
    for _ in range(256):
        best = torch.minimum(best, f(radius * sample_cap(normalize(z), eps, generator=g)))
    ok = out.after <= best + 1e-6 * best.abs()
    assert ok.float().mean() >= 0.9, (
        f"greedy no worse than 256 random draws for {ok.float().mean():.2%}"
    )


def test_batched_equals_per_sample_loop():
    z, y, _, _ = _problem(12, 20, 6, seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(6, 20, generator=g, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    ws, bs = w + 0.2, b - 0.1

    def fg(v, yy):
        return linear_ce_objective_and_grad(v, yy, w, b, ws, bs, 0.2)

    batched = solve_cap(lambda v: fg(v, y), z, 0.3, 15)
    for j in range(12):
        yj = y[j : j + 1]
        single = solve_cap(lambda v, yj=yj: fg(v, yj), z[j : j + 1], 0.3, 15)
        torch.testing.assert_close(batched.z[j], single.z[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batched.after[j], single.after[0], rtol=1e-12, atol=1e-12)


def test_default_step_reaches_the_rim():
    """A linear objective pulling far outside the cap ends on the rim, at the right point."""
    d, eps = 10, 0.2
    z = 3.0 * normalize(torch.randn(5, d, dtype=torch.float64))
    pull = torch.randn(5, d, dtype=torch.float64)

    def fg(v):
        return -(v * pull).sum(-1), -pull

    out = solve_cap(fg, z, eps, steps=15)
    torch.testing.assert_close(
        chord(out.z, z), torch.full((5,), eps, dtype=torch.float64), rtol=1e-6, atol=0
    )
    # the optimum is the projection of the pull direction onto the cap
    from torchdht.functional import project_cap

    best = 3.0 * project_cap(pull, normalize(z), eps)
    cos = (normalize(out.z) * normalize(best)).sum(-1)
    assert (cos > 1 - 1e-4).all()


def test_zero_steps_returns_start():
    z, _, fg, _ = _problem(4, 6, 3, 0)
    out = solve_cap(fg, z, 0.1, steps=0)
    assert torch.equal(out.z, z)
    assert torch.equal(out.before, out.after)


def test_cap_angle_is_respected_by_default_lr():
    z, _, fg, _ = _problem(64, 32, 10, 5)
    out = solve_cap(fg, z, 0.1, steps=15)
    from torchdht.functional import angle

    assert float(angle(out.z, z).max()) <= chord_to_angle(0.1) + 1e-5


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 16),
    d=st.integers(2, 24),
    eps=st.floats(1e-3, 1.99),
    spread=st.floats(0.0, 3.5),
    seed=st.integers(0, 10_000),
)
def test_solver_projection_equals_project_cap(n, d, eps, spread, seed):
    """The solver's few-kernel projection is the exact geodesic projection, in float64."""
    from torchdht.functional.solve import _into_cap
    from torchdht.functional.sphere import _fallback_tangent, project_cap

    g = torch.Generator().manual_seed(seed)
    center = normalize(torch.randn(n, d, generator=g, dtype=torch.float64))
    v = normalize(center + spread * torch.randn(n, d, generator=g, dtype=torch.float64))
    alpha = chord_to_angle(eps)
    cos_a, sin_a = math.cos(alpha), math.sin(alpha)
    fast = _into_cap(v, center, cos_a * center, cos_a, sin_a, _fallback_tangent(center))
    torch.testing.assert_close(fast, project_cap(v, center, eps), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [0.02, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("shape", [(1, 2, 2), (7, 5, 3), (32, 64, 10)])
def test_fast_teacher_path_equals_the_generic_torch_func_path(shape, eps, bias):
    """greedy_teach (closed form, precomputed) against the solver driven by torch.func autograd."""
    from torch.func import functional_call, grad

    from torchdht.functional import LinearLookahead, greedy_objective, greedy_teach

    n, d, c = shape
    g = torch.Generator().manual_seed(n * 1000 + d)
    w = 0.3 * torch.randn(c, d, generator=g, dtype=torch.float64)
    b = 0.1 * torch.randn(c, generator=g, dtype=torch.float64) if bias else None
    z = torch.randn(n, d, generator=g, dtype=torch.float64).relu() + 0.05
    y = torch.randint(0, c, (n,), generator=g)
    fast = greedy_teach(z, y, w, b, 0.2, eps=eps, solve_steps=12, solver="pgd")
    head = torch.nn.Linear(d, c, bias=bias).double()
    params = {"weight": w} | ({"bias": b} if bias else {})
    la = fast.lookahead  # the dense form, or the Gram form that tiny shapes choose
    w_star = la.weight if isinstance(la, LinearLookahead) else w - la.coef.T @ z
    star = {"weight": w_star} | ({"bias": la.bias} if bias else {})

    def fn(p, v):
        return functional_call(head, p, (v,))

    def f(v):
        return greedy_objective(fn, params, star, v, y, 0.2)

    def fg(v):
        return f(v), grad(lambda u: f(u).sum())(v)

    generic = solve_cap(fg, z, eps, 12)
    torch.testing.assert_close(fast.z, generic.z, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(fast.after, generic.after, rtol=1e-9, atol=1e-10)


def _head_problem(n, d, c, seed, bias=True, soft=False, zero_head=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(c, d, dtype=torch.float64) if zero_head else (
        0.3 * torch.randn(c, d, generator=g, dtype=torch.float64))
    b = 0.1 * torch.randn(c, generator=g, dtype=torch.float64) if bias else None
    z = torch.randn(n, d, generator=g, dtype=torch.float64).relu() + 0.05
    if soft:
        y = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), -1)
    else:
        y = torch.randint(0, c, (n,), generator=g)
    return z, y, w, b


@pytest.mark.parametrize("eps", [0.02, 0.1, 0.5, 2.0])
@pytest.mark.parametrize(
    "shape,kind",
    [
        ((32, 64, 10), "plain"),
        ((16, 128, 10), "no-bias"),
        ((9, 40, 3), "soft"),
        ((12, 48, 4), "zero-head"),  # W = 0: the basis is rank-deficient
        ((8, 6, 4), "plain"),  # D < 1 + 2C: the subspace is the whole space
    ],
)
def test_subspace_solve_equals_the_direct_solve(shape, kind, eps):
    """Solving in coordinates of span(z, W, W - W*) gives the direct solver's iterates."""
    from torchdht.functional import greedy_teach

    n, d, c = shape
    z, y, w, b = _head_problem(
        n, d, c, seed=n + d + c, bias=kind != "no-bias", soft=kind == "soft",
        zero_head=kind == "zero-head",
    )
    direct = greedy_teach(z, y, w, b, 0.3, eps=eps, subspace=False, solver="pgd")
    sub = greedy_teach(z, y, w, b, 0.3, eps=eps, subspace=True, solver="pgd")
    assert bool((direct.after < direct.before).any())  # the solver did move rows
    torch.testing.assert_close(sub.z, direct.z, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(sub.after, direct.after, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(sub.before, direct.before, rtol=1e-12, atol=1e-12)


def test_subspace_solve_passes_invalid_and_unmoved_rows_through_bit_for_bit():
    from torchdht.functional import greedy_teach

    z, y, w, b = _head_problem(10, 64, 5, seed=3)
    z[2] = float("nan")
    z[5] = 0.0
    out = greedy_teach(z, y, w, b, 0.3, subspace=True, solve_steps=0, solver="pgd")  # no move
    assert torch.equal(out.z.nan_to_num(), z.nan_to_num())
    out = greedy_teach(z, y, w, b, 0.3, subspace=True, solver="pgd")
    assert out.valid.tolist() == [i not in (2, 5) for i in range(10)]
    assert torch.equal(out.z[[2, 5]].nan_to_num(), z[[2, 5]].nan_to_num())
    moved = out.after < out.before
    assert bool(moved[out.valid].all())
    stay = ~moved
    assert torch.equal(out.z[stay].nan_to_num(), z[stay].nan_to_num())
    ok = out.valid
    torch.testing.assert_close(out.z[ok].norm(dim=-1), z[ok].norm(dim=-1), rtol=1e-12, atol=0)
    assert bool((chord(out.z[ok], z[ok]) <= 0.1 + 1e-12).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_subspace_solve_runs_in_half_precision(dtype):
    """The QR runs in float32 (there is none in half precision on the CPU).

    Half precision is coarse on either path (the teacher itself works in
    float32): the check is that the subspace path runs, keeps the dtype,
    never raises the objective and reaches what the direct path reaches.
    """
    from torchdht.functional import greedy_teach

    z, y, w, b = _head_problem(16, 64, 4, seed=5)
    out = greedy_teach(z.to(dtype), y, w.to(dtype), b.to(dtype), 0.3, subspace=True)
    ref = greedy_teach(z.to(dtype), y, w.to(dtype), b.to(dtype), 0.3, subspace=False)
    assert out.z.dtype == dtype
    assert bool((out.after <= out.before).all())
    assert bool((out.after < out.before).any())
    torch.testing.assert_close(
        out.after.double().mean(), ref.after.double().mean(), rtol=0.1, atol=0.0
    )


def _rows_in_span(dtype):
    """Rows lying inside span(W, W - W*): no direction of their own outside it."""
    d, c = 32, 2
    w = torch.zeros(c, d, dtype=dtype)
    w[0, 0], w[1, 1] = 0.5, -0.3
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(6, d, dtype=dtype)
    z[:, :2] = (torch.rand(6, 2, generator=g) + 0.2).to(dtype)
    return z, torch.tensor([0, 1, 0, 1, 0, 1]), w


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_subspace_solve_handles_rows_inside_the_span(dtype):
    from torchdht.functional import greedy_teach

    z, y, w = _rows_in_span(dtype)
    out = greedy_teach(z, y, w, None, 0.3, subspace=True)
    assert bool(torch.isfinite(out.z).all())
    if dtype == torch.float64:
        ref = greedy_teach(z, y, w, None, 0.3, subspace=False)
        torch.testing.assert_close(out.z, ref.z, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("inside", [True, False])
def test_subspace_fallback_direction_maps_back_to_a_feasible_point(inside):
    """A huge first step can land on the antipode, where the solver falls back to a fixed
    tangent direction; in the span's coordinates that direction must still map back to a
    point of the right norm inside the cap (it may differ from the direct path's choice)."""
    from torchdht.functional import greedy_teach

    if inside:
        z, y, w = _rows_in_span(torch.float64)
    else:
        z, y, w, _ = _head_problem(6, 32, 2, seed=1)
    eps = 1.99
    out = greedy_teach(z, y, w, None, 0.3, eps=eps, solve_lr=math.pi, subspace=True,
                       solver="pgd")
    torch.testing.assert_close(out.z.norm(dim=-1), z.norm(dim=-1), rtol=1e-12, atol=0)
    assert bool((chord(out.z, z) <= eps + 1e-12).all())
    la = out.lookahead
    again = linear_ce_objective(out.z, y, w, None, la.weight, None, 0.3)
    torch.testing.assert_close(out.after, again, rtol=1e-9, atol=1e-12)
    assert bool((out.after <= out.before).all())
