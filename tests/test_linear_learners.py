"""Linear learners: losses, gradients and the greedy objective against autograd (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchdht.functional.objective import linear_ce_objective
from torchdht.linear import LR, LSR, Softmax, fit_w_star
from torchdht.linear.omniscient import check_lr

DT = torch.float64
LEARNERS = {"LSR": LSR, "LR": LR, "softmax3": Softmax(3)}


def _problem(learner, n=7, d=5, seed=0, soft=False):
    g = torch.Generator().manual_seed(seed)
    shape = learner.weight_shape(d)
    w = torch.randn(shape, generator=g, dtype=DT)
    ws = w + 0.7 * torch.randn(shape, generator=g, dtype=DT)
    x = torch.randn(n, d, generator=g, dtype=DT)
    if isinstance(learner, Softmax):
        c = learner.num_outputs
        y = torch.rand(n, c, generator=g, dtype=DT) * 2 if soft else torch.randint(0, c, (n,),
                                                                                   generator=g)
    elif soft:  # real-valued labels, as label synthesis produces
        y = 4 * torch.rand(n, generator=g, dtype=DT) - 2
    else:
        y = torch.randint(0, 2, (n,), generator=g).to(DT) * 2 - 1
    return w, ws, x, y


def _autograd_grads(learner, w, x, y):
    rows = []
    for j in range(x.shape[0]):
        wj = w.clone().requires_grad_(True)
        (gj,) = torch.autograd.grad(learner.loss(wj, x[j : j + 1], y[j : j + 1]).sum(), wj)
        rows.append(gj)
    return torch.stack(rows)


@pytest.mark.parametrize("name", list(LEARNERS))
@pytest.mark.parametrize("soft", [False, True])
def test_grad_matches_autograd(name, soft):
    learner = LEARNERS[name]
    w, _, x, y = _problem(learner, soft=soft)
    torch.testing.assert_close(learner.grad(w, x, y), _autograd_grads(learner, w, x, y),
                               rtol=1e-12, atol=1e-12)


def test_losses_match_reference_formulas():
    w, _, x, y = _problem(LSR)
    m = x @ w
    torch.testing.assert_close(LSR.loss(w, x, y), 0.5 * (m - y) ** 2)
    torch.testing.assert_close(LR.loss(w, x, y), torch.log1p(torch.exp(-y * m)))
    sm = Softmax(3)
    w3, _, x3, y3 = _problem(sm)
    ref = F.cross_entropy(x3 @ w3.T, y3, reduction="none")
    torch.testing.assert_close(sm.loss(w3, x3, y3), ref)
    # soft labels that are one-hot give the same loss as indices
    torch.testing.assert_close(sm.loss(w3, x3, F.one_hot(y3, 3).to(DT)), sm.loss(w3, x3, y3))


@pytest.mark.parametrize("name", list(LEARNERS))
def test_sgd_step_is_mean_gradient_step(name):
    learner = LEARNERS[name]
    w, _, x, y = _problem(learner)
    ref = w - 0.3 * learner.grad(w, x, y).mean(0)
    torch.testing.assert_close(learner.sgd_step(w, x, y, 0.3), ref)
    single = learner.sgd_step(w, x[0], y[:1], 0.3)  # a single (D,) row is one example
    torch.testing.assert_close(single, w - 0.3 * learner.grad(w, x[:1], y[:1])[0])


@pytest.mark.parametrize("name", list(LEARNERS))
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("lr", [1e-3, 0.5])
def test_objective_is_one_step_distance_change(name, soft, lr):
    learner = LEARNERS[name]
    w, ws, x, y = _problem(learner, soft=soft)
    f = learner.objective(w, ws, x, y, lr)
    d0 = (w - ws).pow(2).sum()
    ref = torch.stack([
        (learner.sgd_step(w, x[j : j + 1], y[j : j + 1], lr) - ws).pow(2).sum() - d0
        for j in range(x.shape[0])
    ])
    torch.testing.assert_close(f, ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", list(LEARNERS))
@pytest.mark.parametrize("soft", [False, True])
def test_objective_x_and_label_gradients_match_autograd(name, soft):
    learner = LEARNERS[name]
    w, ws, x, y = _problem(learner, soft=soft)
    lr = 0.2
    f, dx = learner.objective_and_grad(w, ws, x, y, lr)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(learner.objective(w, ws, xr, y, lr).sum(), xr)
    torch.testing.assert_close(dx, ref, rtol=1e-10, atol=1e-12)
    yf = y if y.is_floating_point() else F.one_hot(y, learner.num_outputs).to(DT)
    f2, dy = learner.label_objective_and_grad(w, ws, x, yf, lr)
    yr = yf.clone().requires_grad_(True)
    (ref_y,) = torch.autograd.grad(learner.objective(w, ws, x, yr, lr).sum(), yr)
    torch.testing.assert_close(dy, ref_y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f2, learner.objective(w, ws, x, yf, lr))


def test_objective_gradient_gradcheck():
    w, ws, x, y = _problem(LR, n=3, d=3)
    torch.autograd.gradcheck(lambda v: LR.objective(w, ws, v, y, 0.7),
                             (x.clone().requires_grad_(True),))


@pytest.mark.parametrize("name", list(LEARNERS))
def test_batched_weights_equal_loop(name):
    learner = LEARNERS[name]
    n, d = 6, 4
    g = torch.Generator().manual_seed(3)
    wb = torch.randn((n, *learner.weight_shape(d)), generator=g, dtype=DT)
    _, ws, x, y = _problem(learner, n=n, d=d)
    f, dx = learner.objective_and_grad(wb, ws, x, y, 0.1)
    for j in range(n):
        fj, dxj = learner.objective_and_grad(wb[j], ws, x[j : j + 1], y[j : j + 1], 0.1)
        torch.testing.assert_close(f[j : j + 1], fj)
        torch.testing.assert_close(dx[j : j + 1], dxj)


def test_softmax_objective_equals_functional_closed_form():
    sm = Softmax(4)
    w, ws, x, y = _problem(sm, n=9, d=6)
    for lr in (1e-3, 0.3):
        torch.testing.assert_close(sm.objective(w, ws, x, y, lr),
                                   linear_ce_objective(x, y, w, None, ws, None, lr))


def test_predict_accuracy_targets_init():
    w = torch.tensor([1.0, -1.0], dtype=DT)
    x = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0]], dtype=DT)
    assert LR.predict(w, x).tolist() == [1.0, -1.0, 1.0]
    assert LR.accuracy(w, x, torch.tensor([1.0, 1.0, 1.0], dtype=DT)) == pytest.approx(2 / 3)
    assert LSR.targets(torch.tensor([0, 1, 1])).tolist() == [-1.0, 1.0, 1.0]
    sm = Softmax(3)
    assert sm.init(5, torch.Generator().manual_seed(0)).shape == (3, 5)
    assert LR.init(5, torch.Generator().manual_seed(0)).abs().max() <= (6 / 6) ** 0.5
    y = sm.sample_labels(1000, torch.Generator().manual_seed(0))
    assert set(y.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("learner", [LSR, LR, Softmax(3)])
def test_fit_w_star_is_stationary_and_independent_of_init(learner):
    w, _, x, y = _problem(learner, n=40, d=4, seed=5)
    l2 = 1e-2
    a = fit_w_star(learner, x, y, l2=l2)
    b = fit_w_star(learner, x, y, l2=l2, w0=torch.randn(learner.weight_shape(4), dtype=DT))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    gr = learner.grad(a, x, y).mean(0) + l2 * a
    assert gr.abs().max() < 1e-8


def test_fit_w_star_lsr_closed_form():
    _, _, x, y = _problem(LSR, n=30, d=4)
    l2 = 0.1
    ref = torch.linalg.solve(x.T @ x / 30 + l2 * torch.eye(4, dtype=DT), x.T @ y / 30)
    torch.testing.assert_close(fit_w_star(LSR, x, y, l2=l2), ref, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ bad input
def test_shape_mismatch_names_argument():
    x = torch.randn(3, 4, dtype=DT)
    with pytest.raises(ValueError, match=r"w has shape \(5,\).*D=4"):
        LR.loss(torch.zeros(5, dtype=DT), x, torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        LR.grad(torch.zeros(4, dtype=DT), x, torch.ones(2, dtype=DT))
    with pytest.raises(ValueError, match="w has shape"):
        Softmax(2).loss(torch.zeros(3, 4, dtype=DT), x, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="w_star"):
        LR.objective(torch.zeros(4, dtype=DT), torch.zeros(3, dtype=DT), x, torch.ones(3, dtype=DT),
                     0.1)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        LR.loss(torch.zeros(4), torch.ones(3, 4, dtype=torch.long), torch.ones(3))


def test_labels_outside_label_set():
    x = torch.randn(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="must be -1 or \\+1"):
        LR.check_labels(torch.tensor([0.0, 1.0], dtype=DT))
    with pytest.raises(ValueError, match="must be -1 or \\+1"):
        LR.loss(torch.zeros(3, dtype=DT), x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        Softmax(2).loss(torch.zeros(2, 3, dtype=DT), x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        Softmax(2).loss(torch.zeros(2, 3, dtype=DT), x, torch.tensor([[1.0, -1.0]] * 2, dtype=DT))
    with pytest.raises(ValueError, match="0 or 1"):
        LR.targets(torch.tensor([0, 2]))


def test_bad_lr_and_nan():
    x = torch.randn(2, 3, dtype=DT)
    y = torch.ones(2, dtype=DT)
    for lr in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="lr must be"):
            LR.sgd_step(torch.zeros(3, dtype=DT), x, y, lr)
    with pytest.raises(TypeError, match="lr"):
        check_lr("0.1")
    with pytest.raises(ValueError, match="NaN"):
        LR.loss(torch.zeros(3, dtype=DT), x, torch.tensor([1.0, float("nan")], dtype=DT))
    xn = x.clone()
    xn[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        fit_w_star(LR, xn, y)
    with pytest.raises(ValueError, match="empty"):
        fit_w_star(LR, x[:0], y[:0])
    with pytest.raises(ValueError, match="num_classes"):
        Softmax(1)
