"""Estimating the teaching target ``theta*`` by a few lookahead SGD steps.

Algorithm 1 of the DHT paper, steps 3-5: with the encoder fixed, run ``k``
plain SGD steps of the head on the batch-mean cross-entropy of the detached
features; the result is ``theta*``. Nothing here touches a module's
parameters, their ``.grad`` or any optimizer state: parameters come in as
tensors and new tensors come out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad

from .._checks import check_int
from ..typing import HeadFn, Params, Targets
from .chunks import block_rows
from .objective import ce_logit_grad, check_linear_args, cross_entropy_rows

__all__ = ["LinearLookahead", "linear_lookahead", "lookahead", "mean_weights"]


class LinearLookahead(NamedTuple):
    """Result of :func:`linear_lookahead`."""

    weight: Tensor
    """``W*`` of shape (C, D)."""
    bias: Tensor | None
    """``b*`` of shape (C,), or None for a head without bias."""
    feature_grad: Tensor | None
    """``sum_{i<k} d CE_mean(theta_i; z, y) / dz`` of shape (N, D) when asked for."""
    logits: Tensor | None = None
    """``z W^T + b`` (N, C), the first iterate's logits (None when ``steps`` is 0, and for
    heads too wide to keep them: see :attr:`loss`)."""
    loss: Tensor | None = None
    """Per-row cross-entropy (N,) at the first iterate, given instead of :attr:`logits`
    when the rows are processed in blocks (:func:`~torchdht.functional.chunks.block_rows`)."""


def linear_lookahead(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    lr: float | Tensor,
    steps: int,
    feature_grad: bool = False,
    mask: Tensor | None = None,
) -> LinearLookahead:
    """``k`` SGD steps of a linear head on mean softmax cross-entropy, in closed form.

    Each step uses ``G = (sum(y) softmax(W z + b) - y) / N``, ``dW = G^T z``
    and ``db = sum_j G_j``; no autograd graph is built. For a wide head
    (more than :data:`~torchdht.functional.chunks.ROW_BLOCK` numbers in
    ``N x C``) each step runs over blocks of rows and sums their ``dW``, so no
    (N, C) tensor is formed; the result then carries the first iterate's
    per-row losses instead of its logits.

    Args:
        z: features of shape (N, D), treated as constants.
        targets: class indices (N,) or soft targets (N, C).
        weight: current ``W`` of shape (C, D); not modified.
        bias: current ``b`` of shape (C,) or None; not modified.
        lr: the lookahead step size.
        steps: the number of steps ``k`` (0 returns the inputs' values).
        feature_grad: also return ``sum_{i<k} G_i W_i``, the gradient with
            respect to ``z`` of the lookahead losses at the iterates
            ``theta_0 .. theta_{k-1}`` (what the released code of the paper
            lets reach the encoder).
        mask: optional boolean tensor of shape (N,); rows where it is False
            take no part (the mean runs over the remaining rows, and their
            ``feature_grad`` rows are zero).

    Returns:
        A :class:`LinearLookahead`.

    Example:
        >>> W = torch.zeros(2, 3); z = torch.randn(8, 3); y = torch.randint(0, 2, (8,))
        >>> out = linear_lookahead(z, y, W, None, lr=0.1, steps=5)
        >>> out.weight.shape, W.abs().sum().item()
        (torch.Size([2, 3]), 0.0)
    """
    check_linear_args(z, targets, weight, bias)
    steps = check_int(steps, "steps", 0)
    scale = mean_weights(z, mask)
    w, b = weight, bias
    rows = block_rows(z.shape[0], weight.shape[0])
    if rows < z.shape[0]:
        return _blocked_lookahead(z, targets, w, b, lr, steps, feature_grad, scale, rows)
    acc = torch.zeros_like(z) if feature_grad else None
    first: Tensor | None = None
    for _ in range(steps):
        logits = z @ w.T if b is None else torch.addmm(b, z, w.T)
        if first is None:
            first = logits
        g, _ = ce_logit_grad(logits, targets)
        g = g * scale
        if acc is not None:
            acc = acc + g @ w
        w = w - lr * (g.T @ z)
        if b is not None:
            b = b - lr * g.sum(0)
    return LinearLookahead(w, b, acc, first)


def mean_weights(z: Tensor, mask: Tensor | None) -> Tensor:
    """Each row's weight (N, 1) in the batch mean of a loss: ``1/N``, or under a boolean
    ``mask`` ``1/count`` on the rows kept and 0 elsewhere.

    Example:
        >>> mean_weights(torch.zeros(4, 2), torch.tensor([True, False, True, True])).squeeze(-1)
        tensor([0.3333, 0.0000, 0.3333, 0.3333])
    """
    if mask is None:
        n = z.shape[0]
        return torch.full((n, 1), 1.0 / max(n, 1), dtype=z.dtype, device=z.device)
    m = mask.to(z.dtype).unsqueeze(-1)
    return m / m.sum().clamp_min(1.0)


def _blocked_lookahead(
    z: Tensor,
    targets: Targets,
    w: Tensor,
    b: Tensor | None,
    lr: float | Tensor,
    steps: int,
    feature_grad: bool,
    scale: Tensor,
    rows: int,
) -> LinearLookahead:
    """:func:`linear_lookahead`'s steps over blocks of ``rows`` rows (wide heads)."""
    blocks = list(zip(z.split(rows), targets.split(rows), scale.split(rows)))
    grads: list[Tensor] = []
    losses: list[Tensor] = []
    for i in range(steps):
        d_w = torch.zeros_like(w)
        d_b = None if b is None else torch.zeros_like(b)
        for j, (zj, yj, sj) in enumerate(blocks):
            logits = zj @ w.T if b is None else torch.addmm(b, zj, w.T)
            g, p = ce_logit_grad(logits, yj)
            if i == 0:
                losses.append(cross_entropy_rows(logits, yj))
            del logits, p
            g = g * sj
            if feature_grad:
                gw = g @ w
                if i == 0:
                    grads.append(gw)
                else:
                    grads[j] = grads[j] + gw
            d_w = d_w.addmm_(g.T, zj)
            if d_b is not None:
                d_b = d_b + g.sum(0)
        w = w - lr * d_w
        if b is not None and d_b is not None:
            b = b - lr * d_b
    acc = None
    if feature_grad:
        acc = torch.cat(grads) if grads else torch.zeros_like(z)
    loss = torch.cat(losses) if losses else None
    return LinearLookahead(w, b, acc, None, loss)


def lookahead(
    head_fn: HeadFn, params: Params, z: Tensor, targets: Targets, lr: float, steps: int
) -> dict:
    """``k`` SGD steps of any head on mean softmax cross-entropy, via ``torch.func``.

    The generic counterpart of :func:`linear_lookahead` (used to test it, and
    for heads that are not a single ``nn.Linear``).

    Args:
        head_fn: ``fn(params, z) -> logits``.
        params: the head's parameters; not modified.
        z: features of shape (N, D), treated as constants.
        targets: class indices (N,) or soft targets (N, C).
        lr: the lookahead step size.
        steps: the number of steps.

    Returns:
        A dict with the same keys as ``params``: ``theta*``.

    Example:
        >>> head = torch.nn.Linear(3, 2)
        >>> fn = lambda p, z: torch.func.functional_call(head, p, (z,))
        >>> p = {k: v.detach() for k, v in head.named_parameters()}
        >>> sorted(lookahead(fn, p, torch.randn(4, 3), torch.tensor([0, 1, 1, 0]), 0.1, 2))
        ['bias', 'weight']
    """
    z = z.detach()

    def mean_loss(p: Params) -> Tensor:
        return F.cross_entropy(head_fn(p, z), targets)

    step = grad(mean_loss)
    theta = {k: v.detach() for k, v in params.items()}
    for _ in range(steps):
        g = step(theta)
        theta = {k: theta[k] - lr * g[k] for k in theta}
    return theta
