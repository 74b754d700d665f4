"""The lookahead of a linear head in the Gram (``z z^T``) form, for wide heads.

Every lookahead step of :func:`~torchdht.functional.linear_lookahead` changes
``W`` by ``-lr * G_i^T z`` with ``G_i`` of shape (N, C), so after ``k`` steps::

    W* = W - coef^T z,    b* = b - 1^T coef,    coef = lr * sum_{i<k} G_i   (N, C)

and the logits of iterate ``i`` are
``z W_i^T + b_i = z W^T + b - (z z^T [+ 1]) (lr * sum_{j<i} G_j)``. After one
``z W^T`` (the head's own forward, O(N C D)) and one Gram matrix ``K = z z^T``
(O(N^2 D)), each step costs O(N^2 C) instead of O(N C D), and no (C, D) matrix
besides ``W`` itself is ever formed: ``W - W*`` is kept as ``coef`` and applied
through ``z`` (:func:`weight_star_apply`, :func:`weight_star_dist`).

That pays when the batch is smaller than the features (``N`` below about
``D``), e.g. a 10,000-class head on 128 rows of 512 features; it costs more
when ``N`` is well above ``D`` (a 32,000-way token head on 1024 rows of 128
features spends ``N^2 C = 8 N C D`` per step on the Gram form against
``2 N C D`` directly). :func:`gram_is_cheaper` decides from the shapes.

Everything here is a pure function of tensors: no module state, no host-device
synchronisation and no Python branch on tensor values, so it runs under
``torch.func.vmap`` and traces with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_int
from .linesearch import LinearHeadOps
from .lookahead import mean_weights
from .objective import check_linear_args

__all__ = [
    "gram_head_ops",
    "GramLookahead",
    "gram_lookahead",
    "weight_star_apply",
    "weight_star_dist",
    "gram_is_cheaper",
]


class GramLookahead(NamedTuple):
    """Result of :func:`gram_lookahead`."""

    coef: Tensor
    """(N, C): ``lr * sum_{i<k} G_i``; ``W* = W - coef^T z`` and ``b* = b - coef.sum(0)``."""
    bias: Tensor | None
    """``b*`` of shape (C,), or None for a head without bias."""
    feature_grad: Tensor | None
    """``sum_{i<k} G_i W_i`` of shape (N, D) when asked for (as :func:`linear_lookahead`)."""
    logits: Tensor
    """(N, C): ``z W^T + b``, the logits of the first iterate (the untaught loss is free)."""


def gram_lookahead(
    z: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lr: float | Tensor,
    steps: int,
    feature_grad: bool = False,
    mask: Tensor | None = None,
    logits: Tensor | None = None,
) -> GramLookahead:
    """``k`` SGD steps of a linear head on mean softmax cross-entropy, in the Gram form.

    The same steps as :func:`~torchdht.functional.linear_lookahead` (the same
    ``G = (sum(y) softmax(z W^T + b) - y) * scale`` with ``scale = 1/N``, or
    ``mask / mask.sum()`` under a mask), but carried out on the (N, C)
    coefficients of ``W - W*`` in the span of the rows of ``z``: with
    ``S_i = sum_{j<i} G_j`` and ``K = z z^T`` (plus 1 with a bias),
    the logits of iterate ``i`` are ``logits - lr * K S_i``.
    ``feature_grad`` uses ``sum_i G_i W_i = S_k W - lr * (sum_i G_i S_i^T) z``.

    Cost: ``N^2 D`` for ``K`` (and ``N C D`` for the logits unless given),
    then ``N^2 C`` per step (twice that with ``feature_grad``, plus
    ``N^2 D + N C D`` once at the end). Memory: a few (N, C) and (N, N)
    tensors; no (C, D) tensor is formed.

    Args:
        z: features of shape (N, D), treated as constants.
        targets: class indices (N,) or soft targets (N, C).
        weight: current ``W`` of shape (C, D); not modified.
        bias: current ``b`` of shape (C,) or None; not modified.
        lr: the lookahead step size, a float or a 0-d tensor.
        steps: the number of steps ``k`` (0 returns zero coefficients).
        feature_grad: also return ``sum_{i<k} G_i W_i`` (N, D), exactly what
            :func:`~torchdht.functional.linear_lookahead` returns for it.
        mask: optional boolean tensor of shape (N,); rows where it is False
            take no part (the mean runs over the remaining rows; their
            ``coef`` and ``feature_grad`` rows are zero).
        logits: optional precomputed ``z W^T + b`` of shape (N, C), e.g. from
            the head's own forward (it saves ``N C D``).

    Returns:
        A :class:`GramLookahead`; ``W* = weight - coef.T @ z``.

    Raises:
        ValueError: on mismatched shapes or a ``steps`` that is not an int >= 0.

    Example:
        >>> from torchdht.functional import linear_lookahead
        >>> z = torch.randn(8, 3, dtype=torch.float64); y = torch.randint(0, 4, (8,))
        >>> W = torch.randn(4, 3, dtype=torch.float64); b = torch.zeros(4, dtype=torch.float64)
        >>> out = gram_lookahead(z, y, W, b, lr=0.5, steps=5)
        >>> ref = linear_lookahead(z, y, W, b, lr=0.5, steps=5)
        >>> out.coef.shape, torch.allclose(W - out.coef.T @ z, ref.weight)
        (torch.Size([8, 4]), True)
    """
    check_linear_args(z, targets, weight, bias)
    steps = check_int(steps, "steps", 0)
    n, c = z.shape[0], weight.shape[0]
    if logits is None:
        logits = z @ weight.T if bias is None else torch.addmm(bias, z, weight.T)
    elif tuple(logits.shape) != (n, c):
        raise ValueError(f"logits must have shape ({n}, {c}), got {tuple(logits.shape)}")
    scale = mean_weights(z, mask)
    # G = p * mass_scaled - y_scaled, with y_scaled formed once (no int64 one-hot for indices)
    if targets.is_floating_point():
        y = targets.to(logits.dtype)
        mass_scaled = y.sum(-1, keepdim=True) * scale
        neg_y_scaled = -(y * scale)
    else:
        mass_scaled = scale
        neg_y_scaled = torch.zeros_like(logits).scatter(-1, targets.long().unsqueeze(-1), -scale)
    gram = z @ z.T
    if bias is not None:
        gram = gram + 1.0  # the bias is a feature that is always 1
    lr_gram = lr * gram
    s = torch.zeros_like(logits)  # S_i = sum_{j<i} G_j
    cross = torch.zeros_like(gram) if feature_grad else None  # sum_i G_i S_i^T
    for i in range(steps):
        # the logits of iterate i, softmax and G in one expression: no (N, C) temporary is kept
        p = torch.softmax(logits if i == 0 else torch.addmm(logits, lr_gram, s, alpha=-1.0), -1)
        g = torch.addcmul(neg_y_scaled, p, mass_scaled)
        del p
        if cross is not None and i > 0:
            cross = cross + g @ s.T
        s = s + g
    coef = lr * s
    b_star = None if bias is None else bias - coef.sum(0)
    fg = None
    if cross is not None:
        fg = s @ weight - (lr * cross) @ z
    return GramLookahead(coef, b_star, fg, logits)


def weight_star_apply(coef: Tensor, z: Tensor, v: Tensor) -> Tensor:
    """``v @ (W - W*)^T`` for rows ``v``, without forming ``W*``.

    Since ``W - W* = coef^T z``, this is ``(v @ z^T) @ coef`` at a cost of
    ``M N (D + C)`` (against ``M C D`` with ``W - W*`` formed). The bias part
    ``b - b*`` is ``coef.sum(0)``.

    Args:
        coef: (N, C), :attr:`GramLookahead.coef`.
        z: the features (N, D) the lookahead ran on.
        v: rows (M, D).

    Returns:
        Tensor of shape (M, C).

    Example:
        >>> z, coef = torch.randn(5, 3).double(), torch.randn(5, 4).double()
        >>> v = torch.randn(2, 3).double()
        >>> torch.allclose(weight_star_apply(coef, z, v), v @ (coef.T @ z).T)
        True
    """
    return (v @ z.T) @ coef


def weight_star_dist(coef: Tensor, z: Tensor, gram: Tensor | None = None) -> Tensor:
    """``|W - W*|_F`` from the Gram form: ``sqrt(sum(coef * (K @ coef)))``, ``K = z z^T``.

    The sum is that of the squares of ``coef^T z`` computed through ``K``, so
    its rounding error is about ``eps * |coef|_F^2 |z|_2^2`` rather than
    ``eps * |W - W*|_F^2``: it is clamped at 0 before the square root, and a
    distance far below ``|coef|_F |z|_2`` keeps only about half the digits.

    Args:
        coef: (N, C), :attr:`GramLookahead.coef`.
        z: the features (N, D) the lookahead ran on.
        gram: optional precomputed ``z @ z.T`` (N, N) (without the bias's 1).

    Returns:
        A 0-d tensor.

    Example:
        >>> z, coef = torch.randn(5, 3).double(), torch.randn(5, 4).double()
        >>> torch.allclose(weight_star_dist(coef, z), torch.linalg.norm(coef.T @ z))
        True
    """
    k = z @ z.T if gram is None else gram
    return (coef * (k @ coef)).sum().clamp_min(0.0).sqrt()


def gram_is_cheaper(
    n: int, c: int, d: int, *, steps: int = 5, evals: int = 16, feature_grad: bool = False
) -> bool:
    """Whether the Gram form does fewer multiply-adds than the direct form, from the shapes.

    Counts (multiply-adds of the matrix products; the O(N C) softmax work is
    the same in both and left out) for a lookahead of ``k = steps`` steps on
    ``N = n`` rows followed by ``E = evals`` evaluations of the greedy
    objective with its gradient on ``N`` rows (the teacher's defaults: 5
    lookahead steps, 1 + 15 solver evaluations)::

        direct = k (2 N C D  [+ N C D with feature_grad])   # z W_i^T, G_i^T z [, G_i W_i]
               + E 4 N C D          # [W; W - W*] forward and backward, 2C x D each way
        gram   = N C D + N^2 D      # the first logits, K = z z^T
               + k N^2 C  [+ k N^2 C + N^2 D + N C D with feature_grad]
               + E (2 N C D + 2 N^2 (C + D))   # W forward/backward, and W - W*
                                               # through z: (v z^T) coef, (g coef^T) z

    Per lookahead step that is ``N^2 C`` against ``2 N C D``, and per
    evaluation ``N^2 (C + D)`` against ``N C D``: the Gram form wins roughly
    when ``N < C D / (C + D)``, i.e. ``N < D`` for a wide head.

    Args:
        n: rows ``N`` of the batch.
        c: classes ``C``.
        d: features ``D``.
        steps: lookahead steps ``k``.
        evals: objective evaluations ``E`` that use ``W - W*``.
        feature_grad: whether the lookahead also returns the feature gradient.

    Returns:
        True when the Gram count is strictly lower.

    Example:
        >>> gram_is_cheaper(128, 10_000, 512), gram_is_cheaper(1024, 32_000, 128)
        (True, False)
    """
    fg = 1 if feature_grad else 0
    ncd = n * c * d
    direct = steps * (2 + fg) * ncd + evals * 4 * ncd
    gram = (
        ncd
        + n * n * d
        + steps * n * n * c
        + fg * (steps * n * n * c + n * n * d + ncd)
        + evals * (2 * ncd + 2 * n * n * (c + d))
    )
    return gram < direct


def gram_head_ops(
    weight: Tensor,
    bias: Tensor | None,
    z: Tensor,
    lookahead: GramLookahead,
    eta: float | Tensor,
) -> LinearHeadOps:
    """:class:`~torchdht.functional.LinearHeadOps` with ``W - W* = coef^T z`` applied through
    the batch, never formed: the form for heads much wider than the batch.

    ``v [W; 2 eta (W - W*)]^T = [v W^T, 2 eta (v z^T) coef]`` and
    ``a [W; -2 eta (W - W*)] = a_1 W - 2 eta (a_2 coef^T) z``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z, W = torch.randn(4, 6, generator=g), torch.randn(3, 6, generator=g)
        >>> la = gram_lookahead(z, torch.tensor([0, 1, 2, 0]), W, None, 0.1, 2)
        >>> from torchdht.functional import dense_head_ops
        >>> dense = dense_head_ops(W, None, W - la.coef.T @ z, None, 0.5)
        >>> v = torch.randn(2, 6, generator=g)
        >>> torch.allclose(gram_head_ops(W, None, z, la, 0.5).forward(v), dense.forward(v))
        True
    """
    c = weight.shape[0]
    two_eta = 2.0 * eta
    coef = lookahead.coef

    def forward(v: Tensor) -> Tensor:
        return torch.cat([v @ weight.T, two_eta * ((v @ z.T) @ coef)], -1)

    def backward(a: Tensor) -> Tensor:
        return a[:, :c] @ weight - two_eta * ((a[:, c:] @ coef.T) @ z)

    shift = None
    if bias is not None:
        assert lookahead.bias is not None
        shift = torch.cat([bias, two_eta * (bias - lookahead.bias)])
    return LinearHeadOps(forward, backward, shift, c)
