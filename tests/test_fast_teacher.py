"""The teacher's cost controls: the ``"pgd"`` solver's early exit (``tol`` / ``solve_tol``)
and the row blocks of wide heads (:mod:`torchdht.functional.chunks`).

Blocks are exercised on small shapes by lowering ``ROW_BLOCK`` (the split depends on
the shapes only), and every blocked result is compared in float64 with the same call
in one block.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchdht.functional.chunks as chunks
from torchdht import PerformativeTeacher
from torchdht.functional import greedy_teach, linear_lookahead, solve_cap
from torchdht.functional.chunks import block_rows
from torchdht.functional.objective import cross_entropy_rows, linear_ce_closure
from torchdht.functional.performative import PGD_TOL

from conftest import float64_head as _head
from conftest import taught_features as _taught

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(seed: int, n: int = 24, d: int = 6, c: int = 5, soft: bool = False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=DT).relu() + 0.1
    if soft:
        y = torch.softmax(torch.randn(n, c, generator=g, dtype=DT), -1)
    else:
        y = torch.randint(0, c, (n,), generator=g)
    w = 0.5 * torch.randn(c, d, generator=g, dtype=DT)
    b = 0.1 * torch.randn(c, generator=g, dtype=DT)
    return z, y, w, b


def _closure(z, y, w, b, eta=0.5, steps=5):
    la = linear_lookahead(z, y, w, b, eta, steps)
    return linear_ce_closure(y, w, b, la.weight, la.bias, eta)


class _Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, z):
        self.calls += 1
        return self.fn(z)


# ======================================================================= early exit
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tol", [0.0, 1e-3, 3e-2])
def test_early_exit_is_a_prefix_of_the_fixed_run(seed, tol):
    """The early-exit result is bit for bit the fixed-count run stopped at the same step."""
    z, y, w, b = _problem(seed)
    fn = _Counted(_closure(z, y, w, b))
    lr = 0.02
    out = solve_cap(fn, z, 0.3, 40, lr=lr, tol=tol)
    taken = fn.calls - 1
    ref = solve_cap(_closure(z, y, w, b), z, 0.3, taken, lr=lr)
    assert torch.equal(out.z, ref.z) and torch.equal(out.after, ref.after)
    if tol > 0:
        assert taken < 40, "a tolerance this loose should stop before 40 steps"


def test_early_exit_rule():
    """It stops after the second of two consecutive small steps, not after one."""
    z, y, w, b = _problem(1)
    fg = _closure(z, y, w, b)
    lr, eps, budget, tol = 0.02, 0.3, 40, 1e-2
    # replay the fixed run step by step, reading the summed objective after each step
    totals = [solve_cap(fg, z, eps, s, lr=lr).after.sum().item() for s in range(budget + 1)]
    first = totals[0]
    small = [
        (totals[s - 1] - totals[s]) <= tol * (first - totals[s]) and first > totals[s]
        for s in range(1, budget + 1)
    ]
    expected = next(s + 1 for s in range(1, budget) if small[s - 1] and small[s])
    fn = _Counted(fg)
    solve_cap(fn, z, eps, budget, lr=lr, tol=tol)
    assert fn.calls - 1 == expected


def test_early_exit_never_stops_before_any_decrease():
    """With no decrease yet (a first step far too long is rejected) it keeps going."""
    z, y, w, b = _problem(2)
    fn = _Counted(_closure(z, y, w, b))
    out = solve_cap(fn, z, 2.0, 30, lr=3.0, tol=0.5)
    assert fn.calls - 1 > 2
    assert (out.after <= out.before).all()


@pytest.mark.parametrize("tol", [-0.1, 1.0, 2, "0.1", float("nan")])
def test_early_exit_bad_tol(tol):
    z, y, w, b = _problem(0)
    with pytest.raises(ValueError, match="tol"):
        solve_cap(_closure(z, y, w, b), z, 0.1, 5, tol=tol)


def test_greedy_teach_solve_tol_passes_through():
    z, y, w, b = _problem(3)
    out = greedy_teach(z, y, w, b, 0.5, eps=0.3, solve_steps=40, solve_tol=1e-2, subspace=False)
    la = linear_lookahead(z, y, w, b, 0.5, 5)
    fn = _Counted(linear_ce_closure(y, w, b, la.weight, la.bias, 0.5))
    from torchdht.functional import default_solve_lr

    ref = solve_cap(fn, z, 0.3, 40, lr=default_solve_lr(0.3, 40), tol=1e-2)
    assert torch.equal(out.z, ref.z)
    with pytest.raises(ValueError, match="solve_tol"):
        greedy_teach(z, y, w, b, 0.5, solver="linesearch", solve_tol=1e-2)


def test_teacher_default_is_the_early_exit():
    """The default teacher's step is greedy_teach with solve_tol=PGD_TOL, bit for bit."""
    z, y, w, b = _problem(8)
    head = _head(w, b)
    teacher = PerformativeTeacher(head, lr=0.5, eps=0.3)
    ref = greedy_teach(z, y, w, b, 0.5, eps=0.3, solve_tol=PGD_TOL)
    assert torch.equal(_taught(teacher, head, z, y), ref.z)
    teacher.remove()


def test_teacher_solve_tol():
    z, y, w, b = _problem(4)
    head = _head(w, b)
    teacher = PerformativeTeacher(head, lr=0.5, eps=0.3, solve_steps=40, solve_tol=1e-2)
    ref = greedy_teach(z, y, w, b, 0.5, eps=0.3, solve_steps=40, solve_tol=1e-2)
    assert torch.equal(_taught(teacher, head, z, y), ref.z)
    untol = greedy_teach(z, y, w, b, 0.5, eps=0.3, solve_steps=40)
    assert not torch.equal(ref.z, untol.z), "the tolerance made no difference here"
    assert "solve_tol=0.01" in repr(teacher)
    assert teacher._solve_tol(torch.device("cuda"), True) == 0.01  # given: used everywhere
    teacher.remove()
    for bad, match in [
        (dict(solver="linesearch"), "solve_tol"),
        (dict(compile=True), "solve_tol"),
        (dict(compile={"backend": "eager"}), "solve_tol"),
    ]:
        with pytest.raises(ValueError, match=match):
            PerformativeTeacher(nn.Linear(6, 5), lr=0.5, solve_tol=1e-2, **bad)
    cpu = torch.device("cpu")
    t = PerformativeTeacher(nn.Linear(6, 5), lr=0.5)
    assert t.solve_tol == "auto" and t._solve_tol(cpu, True) == PGD_TOL == 1e-3
    assert t._solve_tol(torch.device("cuda"), True) is None  # no read-back on an accelerator
    assert t._solve_tol(cpu, False) is None  # inside a torch.func transform
    t.remove()
    for kw in ({"compile": True}, {"compile": {}}, {"solver": "linesearch"}, {"solve_tol": None}):
        t = PerformativeTeacher(nn.Linear(6, 5), lr=0.5, **kw)
        assert t._solve_tol(cpu, True) is None, kw
        t.remove()
    for tol in (-1.0, 1.0, True, "x", "Auto"):
        with pytest.raises((ValueError, TypeError), match="solve_tol"):
            PerformativeTeacher(nn.Linear(6, 5), lr=0.5, solve_tol=tol)


# ======================================================================= row blocks
def test_block_rows():
    assert block_rows(128, 10) == 128
    assert block_rows(1024, 32_000) == chunks.ROW_BLOCK // 32_000
    assert block_rows(3, 10 * chunks.ROW_BLOCK) == 1
    n, c = 1000, 3000
    assert block_rows(n, c) * c <= chunks.ROW_BLOCK


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows on the small test shapes."""
    monkeypatch.setattr(chunks, "ROW_BLOCK", 7 * 5)  # 7 rows of 5 classes
    return 7


def _unblocked(monkeypatch, fn):
    monkeypatch.setattr(chunks, "ROW_BLOCK", 1 << 40)
    try:
        return fn()
    finally:
        monkeypatch.setattr(chunks, "ROW_BLOCK", 7 * 5)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("feature_grad", [False, True])
def test_blocked_lookahead_equals_one_block(small_blocks, monkeypatch, soft, bias, feature_grad):
    z, y, w, b = _problem(5, soft=soft)
    b = b if bias else None
    mask = torch.arange(24) % 5 != 0
    out = linear_lookahead(z, y, w, b, 0.3, 4, feature_grad=feature_grad, mask=mask)
    ref = _unblocked(monkeypatch, lambda: linear_lookahead(
        z, y, w, b, 0.3, 4, feature_grad=feature_grad, mask=mask))
    assert out.logits is None and ref.logits is not None and ref.loss is None
    torch.testing.assert_close(out.weight, ref.weight, rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(out.bias, ref.bias, rtol=1e-12, atol=1e-12)
    if feature_grad:
        torch.testing.assert_close(out.feature_grad, ref.feature_grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss, cross_entropy_rows(ref.logits, y), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("solver", ["pgd", "linesearch"])
@pytest.mark.parametrize("soft", [False, True])
def test_blocked_greedy_teach_equals_one_block(small_blocks, monkeypatch, solver, soft):
    z, y, w, b = _problem(6, soft=soft)
    mask = torch.arange(24) % 7 != 3
    kw = dict(eps=0.2, solver=solver, mask=mask)
    out = greedy_teach(z, y, w, b, 0.5, **kw)
    ref = _unblocked(monkeypatch, lambda: greedy_teach(z, y, w, b, 0.5, **kw))
    for a, r in [(out.z, ref.z), (out.before, ref.before), (out.after, ref.after)]:
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    assert torch.equal(out.valid, ref.valid)
    assert not torch.equal(out.z, z), "nothing was taught"


def test_blocked_teacher_equals_one_block(small_blocks, monkeypatch):
    """A wide head's step (index targets kept, losses over blocks) equals the one-block step,
    ignored rows included."""
    z, y, w, b = _problem(7)
    y = y.clone()
    y[::5] = -100

    def run():
        head = _head(w, b)
        # fixed steps: with the early exit each block stops on its own
        teacher = PerformativeTeacher(head, lr=0.5, eps=0.2, solve_tol=None)
        teacher.set_targets(y)
        out = head(z)
        loss = F.cross_entropy(out, y)
        loss.backward()
        stats = dict(teacher.stats_tensors)
        teacher.remove()
        return out.detach(), head.weight.grad.clone(), stats

    out, grad, stats = run()
    ref_out, ref_grad, ref_stats = _unblocked(monkeypatch, run)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert stats.keys() == ref_stats.keys()
    for k in stats:
        torch.testing.assert_close(stats[k].double(), ref_stats[k].double(), rtol=1e-9,
                                   atol=1e-12, msg=k)
    assert stats["n_ignored"] == 5 and stats["loss_taught"] > 0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), c=st.integers(2, 5000), block=st.integers(1, 1 << 16))
def test_block_rows_property(n, c, block):
    old = chunks.ROW_BLOCK
    chunks.ROW_BLOCK = block
    try:
        rows = block_rows(n, c)
    finally:
        chunks.ROW_BLOCK = old
    assert 1 <= rows <= n
    if n * c <= block:
        assert rows == n
    else:  # the most rows whose (rows, C) block fits, and never none
        assert rows * c <= block or rows == 1
        assert (rows + 1) * c > block
