"""The lookahead estimate of theta*: closed form against torch.func and autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from torchdht.functional import linear_lookahead, lookahead

DT = torch.float64


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [False, True])
def test_linear_lookahead_equals_generic(bias, soft):
    head = torch.nn.Linear(5, 4, bias=bias).to(DT)
    params = {k: v.detach().clone() for k, v in head.named_parameters()}
    z = torch.randn(12, 5, dtype=DT)
    y = torch.softmax(torch.randn(12, 4, dtype=DT), -1) if soft else torch.randint(0, 4, (12,))
    out = linear_lookahead(z, y, params["weight"], params.get("bias"), lr=0.4, steps=5)
    ref = lookahead(lambda p, zz: functional_call(head, p, (zz,)), params, z, y, lr=0.4, steps=5)
    torch.testing.assert_close(out.weight, ref["weight"], rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(out.bias, ref["bias"], rtol=1e-12, atol=1e-12)
    else:
        assert out.bias is None


def test_lookahead_does_not_touch_the_module():
    head = torch.nn.Linear(3, 2)
    before = {k: v.detach().clone() for k, v in head.named_parameters()}
    params = {k: v.detach() for k, v in head.named_parameters()}
    linear_lookahead(
        torch.randn(4, 3), torch.tensor([0, 1, 1, 0]), params["weight"], params["bias"], 0.5, 3
    )
    lookahead(
        lambda p, z: functional_call(head, p, (z,)),
        params,
        torch.randn(4, 3),
        torch.tensor([0, 1, 1, 0]),
        0.5,
        3,
    )
    for k, v in head.named_parameters():
        assert torch.equal(v, before[k])
        assert v.grad is None


def test_feature_grad_is_sum_of_lookahead_loss_gradients():
    """sum_{i<k} d mean-CE(theta_i; z, y)/dz with the iterates theta_i held constant."""
    z = torch.randn(6, 4, dtype=DT)
    y = torch.randint(0, 3, (6,))
    w0, b0 = torch.randn(3, 4, dtype=DT), torch.randn(3, dtype=DT)
    out = linear_lookahead(z, y, w0, b0, lr=0.3, steps=4, feature_grad=True)
    w, b = w0.clone(), b0.clone()
    expect = torch.zeros_like(z)
    for _ in range(4):
        zz = z.clone().requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        bb = b.clone().requires_grad_(True)
        loss = F.cross_entropy(zz @ ww.T + bb, y)
        gz, gw, gb = torch.autograd.grad(loss, (zz, ww, bb))
        expect += gz
        w, b = w - 0.3 * gw, b - 0.3 * gb
    torch.testing.assert_close(out.feature_grad, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.weight, w)


def test_mask_excludes_rows():
    z = torch.randn(8, 4, dtype=DT)
    y = torch.randint(0, 3, (8,))
    w, b = torch.randn(3, 4, dtype=DT), torch.randn(3, dtype=DT)
    mask = torch.tensor([True, False, True, True, False, True, True, True])
    junk = z.clone()
    junk[~mask] = 1e6
    masked = linear_lookahead(junk, y, w, b, 0.2, 3, feature_grad=True, mask=mask)
    ref = linear_lookahead(z[mask], y[mask], w, b, 0.2, 3, feature_grad=True)
    torch.testing.assert_close(masked.weight, ref.weight)
    torch.testing.assert_close(masked.bias, ref.bias)
    torch.testing.assert_close(masked.feature_grad[mask], ref.feature_grad)
    assert torch.equal(masked.feature_grad[~mask], torch.zeros(2, 4, dtype=DT))
