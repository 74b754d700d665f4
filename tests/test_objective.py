"""The greedy objective: closed form against torch.func, gradients against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from torchdht.functional import (
    ce_logit_grad,
    greedy_objective,
    linear_ce_objective,
    linear_ce_objective_and_grad,
)

DT = torch.float64


def _setup(n: int, d: int, c: int, bias: bool, soft: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(d, c, bias=bias).to(DT)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    params = {k: v.detach().clone() for k, v in head.named_parameters()}
    star = {k: v + 0.5 * torch.randn(v.shape, generator=g, dtype=DT) for k, v in params.items()}
    z = torch.randn(n, d, generator=g, dtype=DT)
    if soft:
        y = torch.rand(n, c, generator=g, dtype=DT)
        y = y / y.sum(-1, keepdim=True)
    else:
        y = torch.randint(0, c, (n,), generator=g)
    return head, params, star, z, y


def _closed(z, y, params, star, eta):
    return linear_ce_objective(
        z, y, params["weight"], params.get("bias"), star["weight"], star.get("bias"), eta
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("eta", [1e-3, 0.1, 2.0])
def test_closed_form_equals_torch_func(bias, soft, eta):
    head, params, star, z, y = _setup(9, 6, 4, bias, soft)

    def fn(p, zz):
        return functional_call(head, p, (zz,))

    generic = greedy_objective(fn, params, star, z, y, eta)
    closed = _closed(z, y, params, star, eta)
    torch.testing.assert_close(closed, generic, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_equals_one_sgd_step_distance(bias):
    """f(z) = |theta - eta*grad - theta*|^2 - |theta - theta*|^2, per sample, by autograd."""
    head, params, star, z, y = _setup(5, 4, 3, bias, soft=False)
    eta = 0.3
    closed = _closed(z, y, params, star, eta)
    for j in range(z.shape[0]):
        p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        loss = F.cross_entropy(functional_call(head, p, (z[j : j + 1],)), y[j : j + 1])
        grads = torch.autograd.grad(loss, list(p.values()))
        after = sum(((v - eta * g - star[k]) ** 2).sum() for (k, v), g in zip(p.items(), grads))
        now = sum(((v - star[k]) ** 2).sum() for k, v in p.items())
        torch.testing.assert_close(closed[j], (after - now).detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [False, True])
def test_closed_form_gradient_matches_autograd_and_gradcheck(bias, soft):
    _, params, star, z, y = _setup(6, 5, 3, bias, soft)
    eta = 0.7
    z = z.requires_grad_(True)
    f, dz = linear_ce_objective_and_grad(
        z.detach(), y, params["weight"], params.get("bias"), star["weight"], star.get("bias"), eta
    )
    auto = torch.autograd.grad(_closed(z, y, params, star, eta).sum(), z)[0]
    torch.testing.assert_close(dz, auto, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f, _closed(z, y, params, star, eta).detach())
    assert torch.autograd.gradcheck(lambda zz: _closed(zz, y, params, star, eta), (z,))
    assert torch.autograd.gradgradcheck(lambda zz: _closed(zz, y, params, star, eta), (z,))


def test_batched_equals_per_sample_loop():
    _, params, star, z, y = _setup(16, 7, 5, True, False)
    batched = _closed(z, y, params, star, 0.2)
    loop = torch.stack(
        [_closed(z[j : j + 1], y[j : j + 1], params, star, 0.2)[0] for j in range(16)]
    )
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-14)


def test_generic_objective_on_a_nonlinear_head():
    """The torch.func path works for heads that are not a single Linear."""
    head = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).to(DT)
    params = {k: v.detach() for k, v in head.named_parameters()}
    star = {k: v + 0.1 for k, v in params.items()}
    z = torch.randn(5, 4, dtype=DT)
    y = torch.randint(0, 3, (5,))
    out = greedy_objective(lambda p, zz: functional_call(head, p, (zz,)), params, star, z, y, 0.1)
    for j in range(5):
        p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        loss = F.cross_entropy(functional_call(head, p, (z[j : j + 1],)), y[j : j + 1])
        grads = torch.autograd.grad(loss, list(p.values()))
        sq = sum((g**2).sum() for g in grads)
        inner = sum(((p[k] - star[k]) * g).sum() for k, g in zip(p, grads))
        torch.testing.assert_close(out[j], (0.01 * sq - 0.2 * inner).detach())


def test_ce_logit_grad_matches_autograd_for_soft_targets():
    logits = torch.randn(4, 3, dtype=DT, requires_grad=True)
    y = torch.rand(4, 3, dtype=DT)  # rows not normalised on purpose
    g, _ = ce_logit_grad(logits.detach(), y)
    loss = F.cross_entropy(logits, y, reduction="sum")
    torch.testing.assert_close(g, torch.autograd.grad(loss, logits)[0])


def test_bias_mismatch_is_rejected():
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match="bias"):
        linear_ce_objective(
            torch.randn(2, 4), torch.tensor([0, 1]), w, torch.zeros(3), w, None, 0.1
        )
