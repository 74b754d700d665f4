"""Teachers for linear learners: IMT scoring, the DHT box solve, label synthesis, scaling, run."""

from __future__ import annotations

import math

import pytest
import torch

from torchdht.functional.box import box_from_data, in_box, project_box, sample_box, solve_box
from torchdht.linear import (
    LR,
    LSR,
    DHTTeacher,
    IMTTeacher,
    LabelSynthesis,
    ScalingTeacher,
    SGDTeacher,
    Softmax,
    dht_solve,
    imt_scores,
    run,
    scaling_beta,
    synthesize_label,
)

DT = torch.float64
SM = Softmax(3)


def _pool(learner, n=60, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    shape = learner.weight_shape(d)
    w_true = torch.randn(shape, generator=g, dtype=DT)
    if isinstance(learner, Softmax):
        y = (x @ w_true.T).argmax(-1)
    else:
        y = torch.sign(x @ w_true)
        y[y == 0] = 1
    w = 0.5 * torch.randn(shape, generator=g, dtype=DT)
    return x, y, w, w_true


@pytest.mark.parametrize("learner", [LSR, LR, SM])
def test_imt_batched_scores_equal_per_example_loop(learner):
    x, y, w, ws = _pool(learner)
    lr = 0.05
    scores = imt_scores(learner, w, ws, x, y, lr)
    d0 = (w - ws).pow(2).sum()
    loop = torch.stack([
        (learner.sgd_step(w, x[i], y[i : i + 1], lr) - ws).pow(2).sum() - d0
        for i in range(x.shape[0])
    ])
    torch.testing.assert_close(scores, loop, rtol=1e-10, atol=1e-14)
    xi, yi = IMTTeacher(learner, ws, lr, (x, y)).propose(w)
    i = int(loop.argmin())
    assert torch.equal(xi, x[i : i + 1]) and torch.equal(yi, y[i : i + 1])


@pytest.mark.parametrize("learner", [LSR, LR, SM])
def test_dht_respects_box_and_beats_best_pool_example(learner):
    x, y, w, ws = _pool(learner, seed=1)
    lr = 1e-3
    lo, hi = box_from_data(x)
    t = DHTTeacher(learner, ws, lr, pool=(x, y), restarts=4, steps=40, seed=0)
    for _ in range(3):
        xd, yd = t.propose(w)
        assert xd.shape == (1, 4) and bool(in_box(xd, lo, hi).all())
        assert bool(in_box(t.last.x, lo, hi).all())
        # the last start is the best pool example with that label; the answer is no worse
        same = y == yd[0]
        best_pool = imt_scores(learner, w, ws, x[same], y[same], lr).min()
        f = learner.objective(w, ws, xd, yd, lr)
        assert float(t.last.before[-1]) == pytest.approx(float(best_pool), rel=1e-12)
        assert float(f) <= float(best_pool) + 1e-15
        assert bool((t.last.after <= t.last.before).all())
        w = learner.sgd_step(w, xd, yd, 0.5)


def test_dht_finds_grid_optimum_in_2d():
    x, y, w, ws = _pool(LR, d=2, seed=2)
    lr = 1e-2
    lo, hi = box_from_data(x)
    g = torch.linspace(0, 1, 301, dtype=DT)
    grid = torch.stack(torch.meshgrid(lo[0] + g * (hi[0] - lo[0]), lo[1] + g * (hi[1] - lo[1]),
                                      indexing="ij"), -1).reshape(-1, 2)
    for label in (1.0, -1.0):
        yy = torch.full((grid.shape[0],), label, dtype=DT)
        best_grid = LR.objective(w, ws, grid, yy, lr).min()
        x0 = sample_box(8, lo, hi, torch.Generator().manual_seed(0))
        out = dht_solve(LR, w, ws, yy[:8], lr, (lo, hi), x0, steps=150)
        assert float(out.after.min()) <= float(best_grid) + 1e-9


def test_dht_batched_problems_equal_loop():
    x, y, _, ws = _pool(LR, d=5, seed=3)
    lo, hi = box_from_data(x)
    n = 6
    g = torch.Generator().manual_seed(1)
    wb = torch.randn(n, 5, generator=g, dtype=DT)
    yb = LR.sample_labels(n, g, dtype=DT)
    x0 = sample_box(n, lo, hi, g)
    out = dht_solve(LR, wb, ws, yb, 1e-3, (lo, hi), x0, steps=30)
    for j in range(n):
        one = dht_solve(LR, wb[j], ws, yb[j : j + 1], 1e-3, (lo, hi), x0[j : j + 1], steps=30)
        torch.testing.assert_close(out.x[j : j + 1], one.x, rtol=1e-12, atol=1e-12)


def test_dht_without_random_restarts_starts_from_pool_or_centre():
    x, y, w, ws = _pool(LR, seed=4)
    only_pos = (x[y > 0], y[y > 0])
    t = DHTTeacher(LR, ws, 1e-3, pool=only_pos, restarts=0, steps=5, labels="all", seed=0)
    xd, _ = t.propose(w)
    assert xd.shape == (1, 4) and t.last.x.shape == (2, 4)  # pool start (+1), centre (-1)


def test_dht_all_labels_no_worse_than_each_label():
    x, y, w, ws = _pool(LR, seed=4)
    t = DHTTeacher(LR, ws, 1e-3, pool=(x, y), restarts=4, steps=40, labels="all", seed=0)
    xd, yd = t.propose(w)
    f = LR.objective(w, ws, xd, yd, 1e-3)
    for label in (-1.0, 1.0):
        same = y == label
        assert float(f) <= float(imt_scores(LR, w, ws, x[same], y[same], 1e-3).min()) + 1e-15


@pytest.mark.parametrize("learner", [LSR, LR, SM])
@pytest.mark.parametrize("lr", [1e-3, 0.3])
def test_label_synthesis_constraints_and_optimality(learner, lr):
    x, y, w, ws = _pool(learner, n=12, seed=5)
    x = 2.0 * x
    y_auto = synthesize_label(learner, w, ws, x, lr, norm=2.0, y0=y)
    if isinstance(learner, Softmax):
        assert y_auto.shape == (12, 3)
        assert bool((y_auto >= 0).all()) and bool((y_auto.norm(dim=-1) <= 2 + 1e-12).all())
    else:
        assert y_auto.shape == (12,) and bool((y_auto.abs() <= 2 + 1e-12).all())
    f_auto = learner.objective(w, ws, x, y_auto, lr)
    f_orig = learner.objective(w, ws, x, y, lr)
    assert bool((f_auto <= f_orig + 1e-15).all())
    # the closed form / line search / FISTA against the generic projected AMSGrad solver
    # (the paper's): never worse; for LSR/LR also as good as its best of several starts (for LR
    # eq. 4 is not convex in y, so one start can stall in a local minimum)
    scale = f_orig.abs().max()
    if isinstance(learner, Softmax):
        y_it = synthesize_label(learner, w, ws, x, lr, norm=2.0, y0=y, method="iterative",
                                steps=500, solver_lr=0.01)
        assert bool((f_auto <= learner.objective(w, ws, x, y_it, lr) + 1e-9 * scale).all())
        # and no worse than any of many random feasible labels
        g = torch.Generator().manual_seed(0)
        u = torch.rand(4000, 3, generator=g, dtype=DT)
        r = torch.rand(4000, 1, generator=g, dtype=DT) ** (1 / 3)
        u = 2 * r * u / u.norm(dim=1, keepdim=True)
        for i in range(x.shape[0]):
            f_rand = learner.objective(w, ws, x[i].expand(4000, -1), u, lr).min()
            assert float(f_auto[i]) <= float(f_rand) + 1e-9 * float(scale)
        return
    f_it = torch.stack([
        learner.objective(w, ws, x, synthesize_label(
            learner, w, ws, x, lr, norm=2.0, y0=torch.full_like(y, v), method="iterative",
            steps=600, solver_lr=0.02), lr)
        for v in (-2.0, -0.5, 0.5, 2.0)
    ]).min(0).values
    assert bool((f_auto <= f_it + 1e-9 * scale).all())
    assert bool((f_it <= f_auto + 1e-3 * scale).all())


def test_label_synthesis_teacher_wraps_any_teacher():
    x, y, w, ws = _pool(LR, seed=6)
    for base in (SGDTeacher(LR, (x, y), seed=0), IMTTeacher(LR, ws, 0.1, (x, y)),
                 DHTTeacher(LR, ws, 0.1, pool=(x, y), restarts=2, steps=10, seed=0)):
        xs, ys = LabelSynthesis(base, LR, ws, 0.1, norm=1.5).propose(w)
        assert xs.shape == (1, 4) and ys.shape == (1,) and float(ys.abs()) <= 1.5


def test_scaling_teacher_step_length():
    x, y, w, ws = _pool(LR, seed=7)
    beta, ok = scaling_beta(LR, w, ws, x, y, 0.01, 0.3)
    assert bool(ok.any())
    target = 0.3 * float((w - ws).norm())
    for i in ok.nonzero().flatten()[:10].tolist():
        step = LR.sgd_step(w, beta[i] * x[i], y[i : i + 1], 0.01) - w
        assert float(step.norm()) == pytest.approx(target, rel=1e-8)
        # the step points along -grad l(x_i, y_i | w)
        g = LR.grad(w, x[i], y[i : i + 1])[0]
        assert float(torch.nn.functional.cosine_similarity(-g, step, dim=0)) == pytest.approx(1.0)


@pytest.mark.parametrize("pick", ["random", "greedy"])
def test_scaling_teacher_exponential_teachability_lsr(pick):
    """Theorem 1 on LSR: realizable, well-conditioned; log|w_t - w*| falls at a steady rate.

    lr = 0.5 keeps the needed scale beta O(1), so a beta exists for most examples; with
    lr = 1e-3 the teacher can stall (see the README's notes on the scaling teacher).
    """
    g = torch.Generator().manual_seed(0)
    d = 5
    x = torch.randn(50, d, generator=g, dtype=DT)
    ws = torch.randn(d, generator=g, dtype=DT)
    y = x @ ws  # interpolation: w* fits every example
    lr, c1, iters = 0.5, 0.3, 150
    h = run(ScalingTeacher(LSR, ws, lr, (x, y), c1=c1, pick=pick, seed=0), LSR,
            torch.zeros(d, dtype=DT), ws, iters, lr)
    logd = h.distance.log()
    rates = (logd[30::30] - logd[:-30:30]) / 30  # per-iteration slope over windows of 30
    assert bool((rates < -0.02).all()), rates
    assert float(logd[-1] - logd[0]) < -8.0


def test_sgd_teacher_uniform_and_seeded():
    x, y, w, _ = _pool(LR, n=5)
    a = SGDTeacher(LR, (x, y), seed=3)
    b = SGDTeacher(LR, (x, y), seed=3)
    seen = set()
    for _ in range(60):
        xa, ya = a.propose(w)
        xb, _ = b.propose(w)
        assert torch.equal(xa, xb)
        seen.add(int((x == xa).all(-1).nonzero()))
    assert seen == set(range(5))


def test_run_history_shapes():
    x, y, w, ws = _pool(SM, seed=8)
    t = LabelSynthesis(IMTTeacher(SM, ws, 0.1, (x, y)), SM, ws, 0.1)
    h = run(t, SM, w, ws, 7, 0.1, test=(x, y))
    assert h.distance.shape == (8,) and h.accuracy.shape == (8,)
    assert h.weights.shape == (8, 3, 4) and h.xs.shape == (7, 4) and h.ys.shape == (7, 3)
    torch.testing.assert_close(h.distance[0], (w - ws).norm())
    h0 = run(t, SM, w, ws, 0, 0.1)
    assert h0.accuracy is None and h0.xs.shape == (0, 4)


def test_box_helpers():
    lo, hi = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])  # lo == hi is a fixed coordinate
    x = project_box(torch.tensor([[3.0, -2.0]]), lo, hi)
    assert x.tolist() == [[1.0, 1.0]]
    fg = lambda v: ((v - 5).pow(2).sum(-1), 2 * (v - 5))  # noqa: E731
    out = solve_box(fg, torch.zeros(3, 2), lo, hi, steps=100)
    assert bool(in_box(out.x, lo, hi).all()) and bool((out.x[:, 1] == 1).all())
    assert bool((out.after <= out.before).all())


# ------------------------------------------------------------------ bad input
def test_bad_inputs_name_the_argument():
    x, y, w, ws = _pool(LR)
    with pytest.raises(ValueError, match="pool is empty"):
        SGDTeacher(LR, (x[:0], y[:0]))
    xn = x.clone()
    xn[3, 1] = math.nan
    with pytest.raises(ValueError, match="pool: x contains NaN"):
        IMTTeacher(LR, ws, 0.1, (xn, y))
    with pytest.raises(ValueError, match="must be -1 or \\+1"):
        IMTTeacher(LR, ws, 0.1, (x, (y + 1) / 2))
    for lr in (0.0, -1e-3):
        with pytest.raises(ValueError, match="lr must be"):
            IMTTeacher(LR, ws, lr, (x, y))
        with pytest.raises(ValueError, match="lr must be"):
            run(SGDTeacher(LR, (x, y)), LR, w, ws, 3, lr)
    lo, hi = box_from_data(x)
    with pytest.raises(ValueError, match="lo > hi"):
        DHTTeacher(LR, ws, 0.1, box=(hi, lo))
    with pytest.raises(ValueError, match="box"):
        DHTTeacher(LR, ws, 0.1)
    with pytest.raises(ValueError, match="w_star has shape"):
        IMTTeacher(LR, ws[:3], 0.1, (x, y))
    with pytest.raises(ValueError, match="w has shape"):
        IMTTeacher(LR, ws, 0.1, (x, y)).propose(w[:2])
    with pytest.raises(ValueError, match="w has shape"):
        DHTTeacher(LR, ws, 0.1, pool=(x, y)).propose(torch.zeros(3, 4, dtype=DT))
    with pytest.raises(TypeError, match="scaling teacher"):
        ScalingTeacher(SM, torch.zeros(3, 4, dtype=DT), 0.1, (x, torch.zeros(60, dtype=torch.long)))
    with pytest.raises(TypeError, match="learner"):
        SGDTeacher("LR", (x, y))
    with pytest.raises(ValueError, match="iters"):
        run(SGDTeacher(LR, (x, y)), LR, w, ws, -1, 0.1)
    with pytest.raises(ValueError, match="test: x contains NaN"):
        run(SGDTeacher(LR, (x, y)), LR, w, ws, 1, 0.1, test=(xn, y))
    with pytest.raises(ValueError, match="test labels"):
        run(SGDTeacher(LR, (x, y)), LR, w, ws, 1, 0.1, test=(x, torch.zeros(60, dtype=DT)))
    with pytest.raises(ValueError, match="norm"):
        LabelSynthesis(SGDTeacher(LR, (x, y)), LR, ws, 0.1, norm=0.0)


def test_readme_python_blocks_run():
    import re
    from pathlib import Path

    import torchdht.linear

    text = (Path(torchdht.linear.__file__).parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "torchdht/linear/README.md", "exec"), {})
