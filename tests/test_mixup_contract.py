"""MixupTeacher's drop-in contract: ignore_index, integer label dtypes, and NumPy scalars /
non-finite values as arguments."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchdht.errors import TargetsError
from torchdht.mixup import MixupTeacher, mix_batch, sample_permutation, to_soft_targets

from conftest import REPO

POLICIES = ("reinforce", "unroll", "beta", "discrete")
B, D, C = 10, 6, 4
IGN = [1, 4, 7]


def _teacher(policy: str, **kw: Any) -> MixupTeacher:
    kw.setdefault("seed", 0)
    if policy in ("reinforce", "unroll"):
        kw.setdefault("total_steps", 50)
    if policy == "discrete":
        kw.setdefault("actions", (0.3, 0.7))  # always mixes, and 0.3 x + 0.7 x != x in floats
    return MixupTeacher(C, policy, **kw)


def _batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


def _bits(t: Tensor) -> Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


def _with_ignored(y: Tensor, rows: list[int] = IGN, value: int = -100) -> Tensor:
    y = y.clone()
    y[rows] = value
    return y


# ------------------------------------------------------------------ ignore_index
@pytest.mark.parametrize("policy", POLICIES)
def test_ignored_rows_are_neither_mixed_nor_partners(policy):
    x, y = _batch()
    x[IGN[0]] = float("nan")  # an ignored row may hold anything: it must not leak
    x[IGN[1], 0] = float("inf")
    y = _with_ignored(y)
    x0, y0 = x.clone(), y.clone()
    t = _teacher(policy)
    for _ in range(5):
        xm, ym = t(x, y)
        assert torch.equal(_bits(xm[IGN]), _bits(x[IGN]))  # bit for bit, NaN included
        assert torch.equal(ym[IGN], torch.zeros(len(IGN), C))
        perm = t.last_permutation
        assert perm is not None
        assert perm[IGN].tolist() == IGN
        valid = [i for i in range(B) if i not in IGN]
        assert sorted(perm[valid].tolist()) == valid  # partners among the valid rows only
        assert torch.isfinite(xm[valid]).all()
        # the valid rows are mixed exactly as mix_batch mixes them
        ys = to_soft_targets(y, C, ignore_index=-100)
        ref_x, ref_y = mix_batch(x, ys, t.last_lambda, perm)
        assert torch.equal(xm[valid], ref_x[valid]) and torch.equal(ym[valid], ref_y[valid])
        assert torch.allclose(ym[valid].sum(1), torch.ones(len(valid)))
    assert torch.equal(_bits(x), _bits(x0)) and torch.equal(y, y0)  # inputs untouched


def test_partners_come_from_the_teachers_generator_deterministically():
    x, y = _batch()
    yi = _with_ignored(y)
    a, b, c = _teacher("beta"), _teacher("beta"), _teacher("beta")
    for _ in range(3):
        xa, ya = a(x, yi)
        xb, yb = b(x, yi)
        c(x, y)  # the same draws without ignored rows
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(a._gen.get_state(), c._gen.get_state())
        assert a.last_lambda == c.last_lambda
    state = torch.get_rng_state()
    a(x, yi)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not used


def test_partner_permutation_is_uniform_over_the_valid_rows():
    valid = torch.tensor([False, True, False, True, True, False])
    g = torch.Generator().manual_seed(0)
    counts: Counter[tuple[int, ...]] = Counter()
    for _ in range(1800):
        p = sample_permutation(6, g, valid=valid)
        assert p[~valid].tolist() == [0, 2, 5]
        counts[tuple(p[valid].tolist())] += 1
    assert set(counts) == set(itertools.permutations([1, 3, 4]))
    assert all(240 < n < 360 for n in counts.values()), counts  # 300 expected each


def test_all_valid_gives_the_plain_permutation_and_mix():
    """What an accelerator computes (the masked path, whatever the labels) equals the
    plain path bit for bit when no row is ignored."""
    x, y = _batch()
    ys = to_soft_targets(y, C)
    for seed in range(5):
        plain = sample_permutation(B, torch.Generator().manual_seed(seed))
        masked = sample_permutation(
            B, torch.Generator().manual_seed(seed), valid=torch.ones(B, dtype=torch.bool)
        )
        assert torch.equal(plain, masked)
        for lam in (0.0, 0.3, 1.0):
            a = mix_batch(x, ys, lam, plain)
            b = mix_batch(x, ys, lam, plain, keep=torch.zeros(B, dtype=torch.bool))
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("n_valid", [0, 1])
def test_fewer_than_two_valid_rows_come_back_unmixed(n_valid):
    x, y = _batch()
    y = _with_ignored(y, list(range(n_valid, B)))
    t = _teacher("discrete")
    xm, ym = t(x, y)
    assert t.last_lambda in (0.3, 0.7)  # drawn, and irrelevant
    assert torch.equal(_bits(xm), _bits(x))
    assert torch.equal(ym, to_soft_targets(y, C, ignore_index=-100))
    assert ym.sum().item() == n_valid


def test_eval_mode_and_soft_targets():
    x, y = _batch()
    t = _teacher("beta").eval()
    xm, ym = t(x, _with_ignored(y))
    assert xm is x
    assert torch.equal(ym[IGN], torch.zeros(len(IGN), C))
    assert torch.equal(ym.argmax(1)[[0, 2]], y[[0, 2]])
    soft = torch.rand(B, C)
    assert t(x, soft)[1] is soft  # soft targets have no ignored rows


def test_soft_cross_entropy_mean_matches_hard_ignore_index():
    x, y = _batch()
    y = _with_ignored(y)
    logits = torch.randn(B, C)
    t = _teacher("beta").eval()
    _, y_onehot = t(x, y)
    hard = F.cross_entropy(logits, y, ignore_index=-100)
    soft_mean = F.cross_entropy(logits, y_onehot)
    n_valid = B - len(IGN)
    assert torch.allclose(soft_mean * B / n_valid, hard)  # the factor B / B_valid
    assert torch.allclose(F.cross_entropy(logits, y_onehot, reduction="sum") / n_valid, hard)
    # the method card's snippet runs as written and asserts the same
    text = (REPO / "torchdht/mixup/README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    blocks = [b for b in blocks if "ignore_index" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], "mixup README: ignore_index", "exec"), {})


def test_ignore_index_is_configurable_and_may_be_a_class():
    x, y = _batch()
    with pytest.raises(TargetsError, match=r"\(or equal ignore_index=-100\)"):
        _teacher("beta")(x, _with_ignored(y, value=9))
    t = _teacher("beta", ignore_index=9)
    xm, ym = t(x, _with_ignored(y, value=9))
    assert torch.equal(xm[IGN], x[IGN]) and not ym[IGN].any()
    t = _teacher("beta", ignore_index=0)  # a class id: that class is ignored
    xm, ym = t(x, y)
    zero = y == 0
    assert zero.any() and torch.equal(xm[zero], x[zero]) and not ym[zero].any()
    with pytest.raises(TargetsError, match="y"):
        _teacher("beta", ignore_index=0)(x, _with_ignored(y))  # -100 is a bad class now


def test_hypergradient_step_accepts_ignored_rows_and_ignores_their_inputs():
    g = torch.Generator().manual_seed(1)
    model = nn.Linear(D, C)
    x, y = _batch()
    y = _with_ignored(y)
    xv, yv = torch.randn(8, D, generator=g), _with_ignored(torch.randint(0, C, (8,)), [0, 5])
    stats = []
    for junk in (0.0, 50.0):  # the ignored rows' inputs differ, nothing else does
        x_run = x.clone()
        x_run[IGN] += junk
        xv_run = xv.clone()
        xv_run[[0, 5]] += junk
        t = _teacher("unroll", learner_lr=0.1)
        t(x_run, y)
        stats.append(t.hypergradient_step(model, F.cross_entropy, (xv_run, yv)))
    assert stats[0]["hypergrad"] != 0.0
    assert stats[0]["hypergrad"] == pytest.approx(stats[1]["hypergrad"], rel=1e-5, abs=1e-9)
    assert stats[0]["val_loss"] == pytest.approx(stats[1]["val_loss"], rel=1e-6)
    # order 1 evaluates L_val at w: the soft mean over all 8 rows, ignored ones as zeros
    t = _teacher("unroll", learner_lr=0.1, unroll_order=1)
    t(x, y)
    val = t.hypergradient_step(model, F.cross_entropy, (xv, yv))["val_loss"]
    with torch.no_grad():
        hard = F.cross_entropy(model(xv), yv, ignore_index=-100)
    assert val == pytest.approx(float(hard) * 6 / 8, rel=1e-6)


# ------------------------------------------------------------ integer label dtypes
@pytest.mark.parametrize("policy", POLICIES)
def test_every_integer_label_dtype_gives_the_int64_outputs(policy):
    x, y = _batch()
    cases = [
        (y, (torch.uint8, torch.int8, torch.int16, torch.int32)),
        (_with_ignored(y), (torch.int8, torch.int16, torch.int32)),  # uint8 cannot hold -100
    ]
    for labels, dtypes in cases:
        ref = _teacher(policy)
        ref_out = [ref(x, labels) for _ in range(3)]
        for dtype in dtypes:
            t = _teacher(policy)
            for xr, yr in ref_out:
                xm, ym = t(x, labels.to(dtype))
                assert torch.equal(xm, xr) and torch.equal(ym, yr), dtype
            assert torch.equal(t._gen.get_state(), ref._gen.get_state())
            t.eval()
            assert torch.equal(t(x, labels.to(dtype))[1], ref.eval()(x, labels)[1])
            ref.train()


def test_uint8_labels_are_widened_before_the_ignore_check():
    y = torch.tensor([0, 156, 2], dtype=torch.uint8)  # a uint8 156 == -100 unwidened
    with pytest.raises(TargetsError, match=r"got values in \[156, 156\]"):
        to_soft_targets(y, 3, ignore_index=-100)
    with pytest.raises(TargetsError, match="num_classes=3"):
        MixupTeacher(3, "beta", seed=0)(torch.randn(3, 2), y)
    out = to_soft_targets(y, 3, ignore_index=156)
    assert out.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


# ---------------------------------------------------------- NumPy scalars, bad values
def test_numpy_scalars_are_accepted_and_give_the_same_outputs():
    x, y = _batch()
    plain = dict(
        total_steps=20,
        hidden=16,
        seed=3,
        alpha=0.5,
        lr=0.25,
        dropout=0.5,
        entropy_coef=0.125,
        baseline_momentum=0.75,
        loss_momentum=0.5,
        learner_lr=0.5,
        fd_eps=0.015625,
        init_lambda=0.25,
        ignore_index=-1,
    )
    numpy = {k: (np.float32(v) if isinstance(v, float) else np.int64(v)) for k, v in plain.items()}
    for policy in POLICIES:
        a = MixupTeacher(C, policy, **plain)
        b = MixupTeacher(np.int64(C), policy, unroll_order=np.int32(2), **numpy)
        assert type(b.num_classes) is int and type(b.total_steps) is int
        assert type(b.seed) is int and type(b.alpha) is float and type(b.ignore_index) is int
        for step in range(3):
            xa, ya = a(x, y)
            xb, yb = b(x, y)
            assert torch.equal(xa, xb) and torch.equal(ya, yb), (policy, step)
            a.observe(train_loss=1.5, val_loss=2.0)
            b.observe(train_loss=np.float32(1.5), val_loss=np.float64(2.0))
        if policy == "unroll":
            val = (torch.randn(4, D), torch.tensor([0, 1, 2, 3]))
            sa = a.hypergradient_step(nn.Linear(D, C), F.cross_entropy, val, lr=0.5)
            sb = b.hypergradient_step(nn.Linear(D, C), F.cross_entropy, val, lr=np.float32(0.5))
            assert sa.keys() == sb.keys()
        ra = a.reward(val_acc=0.5, val_loss=1.0)
        rb = b.reward(val_acc=np.float32(0.5), val_loss=np.float32(1.0))
        assert repr(ra) == repr(rb)  # entropy is NaN for the policies without one
        b.new_run(total_steps=np.int64(7))
        assert b.total_steps == 7 and type(b.total_steps) is int
    d = MixupTeacher(C, "discrete", actions=[np.float32(0.5), np.float64(1.0)], seed=0)
    assert d.actions == (0.5, 1.0)


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        ({"ignore_index": True}, TypeError, "ignore_index"),
        ({"ignore_index": -100.0}, TypeError, "ignore_index"),
        ({"ignore_index": np.float32(3)}, TypeError, "ignore_index"),
        ({"ignore_index": np.bool_(False)}, TypeError, "ignore_index"),
        ({"ignore_index": None}, TypeError, "ignore_index"),
        ({"num_classes": np.bool_(True)}, TypeError, "num_classes"),
        ({"num_classes": np.float32(3)}, TypeError, "num_classes"),
        ({"total_steps": np.float64(10)}, TypeError, "total_steps"),
        ({"hidden": True}, TypeError, "hidden"),
        ({"seed": np.bool_(True)}, TypeError, "seed"),
        ({"unroll_order": 2.0}, TypeError, "unroll_order"),
        ({"unroll_order": np.int64(3)}, ValueError, "unroll_order"),
        ({"alpha": float("inf")}, ValueError, "alpha"),
        ({"alpha": np.float32("nan")}, ValueError, "alpha"),
        ({"alpha": np.bool_(True)}, TypeError, "alpha"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"learner_lr": np.float64("inf")}, ValueError, "learner_lr"),
        ({"fd_eps": float("nan")}, ValueError, "fd_eps"),
        ({"entropy_coef": float("inf")}, ValueError, "entropy_coef"),
        ({"entropy_coef": True}, TypeError, "entropy_coef"),
        ({"dropout": float("nan")}, ValueError, "dropout"),
        ({"baseline_momentum": np.float32("nan")}, ValueError, "baseline_momentum"),
        ({"init_lambda": float("inf")}, ValueError, "init_lambda"),
        ({"actions": [0.5, float("nan")]}, ValueError, "actions"),
        ({"actions": [np.bool_(True)]}, TypeError, "actions"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_bad_arguments_name_the_argument(kwargs, exc, fragment):
    kwargs = {"num_classes": C, "policy": "unroll", "total_steps": 10, **kwargs}
    with pytest.raises(exc, match=fragment):
        MixupTeacher(**kwargs)


def test_bad_values_in_calls_name_the_argument():
    t = _teacher("unroll", learner_lr=0.1)
    t(*_batch())
    with pytest.raises(ValueError, match="train_loss"):
        t.observe(train_loss=np.float32("inf"))
    with pytest.raises(TypeError, match="val_loss"):
        t.observe(val_loss=np.bool_(True))
    with pytest.raises(ValueError, match="lr"):
        t.hypergradient_step(nn.Linear(D, C), F.cross_entropy, _batch(1), lr=float("nan"))
    with pytest.raises(TypeError, match="lr"):
        t.hypergradient_step(nn.Linear(D, C), F.cross_entropy, _batch(1), lr=True)
    with pytest.raises(TypeError, match="total_steps"):
        t.new_run(total_steps=5.0)
