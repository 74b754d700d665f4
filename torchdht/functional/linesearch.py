"""A cap solver for a linear head whose cost is a few matrix products.

For a linear head the greedy objective of a row sees its features ``z'``
only through the logits ``W z'`` and ``h = (W - W*) z'`` (and ``|z'|``, which
the cap keeps). In exponential coordinates at the start ``u0`` (a tangent
vector ``v`` for the point ``cos|v| u0 + sin|v| v/|v|``) those are
``cos|v| W u0 + sinc|v| W v``, and ``W v`` is linear in ``v``: along a line
``v + t p`` one product ``W p`` gives the objective at *every* step size
``t``, and the cap is the ball ``|v| <= alpha``. So a line search over many
step sizes, projected onto the ball, costs one matrix product and a few
element-wise kernels.

:func:`solve_cap_linesearch` runs ``1 + refine`` such searches along the
negative gradient (three by default); each row keeps the best point seen,
so the objective never rises, and a row no search improved comes back bit
for bit. Its cost is fixed by ``grid`` and ``refine``, not by an iteration
count: ``1 + refine`` products with the stacked head and as many back
through it, against ``2 * steps`` for :func:`~torchdht.functional.solve_cap`.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .._checks import check_int
from .objective import _soft_targets
from .solve import SolveResult
from .sphere import _fallback_tangent, chord_to_angle

__all__ = [
    "LinearHeadOps",
    "dense_head_ops",
    "head_ops_closure",
    "linesearch_grid",
    "solve_cap_linesearch",
]


class LinearHeadOps(NamedTuple):
    """How a solver reaches the stacked head ``[W; 2 eta (W - W*)]`` (2C, D).

    Two forms: dense (the stacked matrix itself) or through the batch's Gram
    matrix (``W - W*`` is never formed); a solver does not care which.
    """

    forward: Callable[[Tensor], Tensor]
    """Rows ``v`` (M, D) to ``v [W; 2 eta (W - W*)]^T`` (M, 2C), without shift."""
    backward: Callable[[Tensor], Tensor]
    """Rows ``a`` (M, 2C) to ``a [W; -2 eta (W - W*)]`` (M, D)."""
    shift: Tensor | None
    """``[b; 2 eta (b - b*)]`` (2C,) or None for a head without bias."""
    classes: int
    """C."""


def dense_head_ops(
    weight: Tensor,
    bias: Tensor | None,
    weight_star: Tensor,
    bias_star: Tensor | None,
    eta: float | Tensor,
) -> LinearHeadOps:
    """:class:`LinearHeadOps` with ``W - W*`` formed: the cheap form for narrow heads.

    Example:
        >>> W = torch.randn(3, 5)
        >>> ops = dense_head_ops(W, None, 0.5 * W, None, 0.1)
        >>> ops.forward(torch.randn(2, 5)).shape
        torch.Size([2, 6])
    """
    two_eta = 2.0 * eta
    d_weight = weight - weight_star
    stacked_t = torch.cat([weight, two_eta * d_weight]).T
    back = torch.cat([weight, -two_eta * d_weight])
    shift = None
    if bias is not None:
        assert bias_star is not None
        shift = torch.cat([bias, two_eta * (bias - bias_star)])
    return LinearHeadOps(lambda v: v @ stacked_t, lambda a: a @ back, shift, weight.shape[0])


def head_ops_closure(
    targets: Tensor, ops: LinearHeadOps, eta: float | Tensor, dtype: torch.dtype
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``z -> (f, df/dz)`` of the linear-CE greedy objective through :class:`LinearHeadOps`.

    The same function as :func:`~torchdht.functional.objective.linear_ce_closure`
    (equal to rounding), for a head given as ops: the dense form built once and
    shared by many blocks of rows, or the Gram form of a wide head, in which
    ``W - W*`` is never formed. ``targets`` are those of the rows ``z`` the
    closure will be called on, ``dtype`` theirs.

    Example:
        >>> from torchdht.functional.objective import linear_ce_closure
        >>> W = torch.randn(3, 5, dtype=torch.float64); y = torch.tensor([0, 2])
        >>> z = torch.randn(2, 5, dtype=torch.float64)
        >>> f, g = head_ops_closure(y, dense_head_ops(W, None, 0.5 * W, None, 0.1), 0.1,
        ...                         torch.float64)(z)
        >>> f_ref, g_ref = linear_ce_closure(y, W, None, 0.5 * W, None, 0.1)(z)
        >>> torch.allclose(f, f_ref) and torch.allclose(g, g_ref)
        True
    """
    c = ops.classes
    two_eta_sq = 2.0 * eta * eta
    eta_sq = eta * eta
    y = _soft_targets(targets, c, dtype)
    mass = None if not targets.is_floating_point() else y.sum(-1, keepdim=True)
    shift = ops.shift

    def fn(z: Tensor) -> tuple[Tensor, Tensor]:
        zw = ops.forward(z)
        if shift is not None:
            zw = zw + shift
        logits, h2 = zw[:, :c], zw[:, c:]
        sq_norm = (z * z).sum(-1)
        if shift is not None:
            sq_norm = sq_norm + 1.0
        p = torch.softmax(logits, dim=-1)
        g = p - y if mass is None else p * mass - y
        g_sq = (g * g).sum(-1)
        f = eta_sq * g_sq * sq_norm - (g * h2).sum(-1)
        v = (two_eta_sq * sq_norm).unsqueeze(-1) * g - h2
        pv = p * v
        jv = pv - p * pv.sum(-1, keepdim=True)
        if mass is not None:
            jv = mass * jv
        dz = ops.backward(torch.cat([jv, g], -1)) + (two_eta_sq * g_sq).unsqueeze(-1) * z
        return f, dz

    return fn


def solve_cap_linesearch(
    z: Tensor,
    targets: Tensor,
    ops: LinearHeadOps,
    eta: float | Tensor,
    eps: float,
    *,
    grid: int = 4,
    refine: int = 2,
) -> SolveResult:
    """Minimise the linear-CE greedy objective (eq. 9) over the cap around each row.

    The solver works in exponential coordinates at the start ``u0 = z/|z|``:
    a tangent vector ``v`` (orthogonal to ``u0``) stands for the point
    ``cos|v| u0 + sin|v| v/|v|``, and the cap is the ball ``|v| <= alpha``
    (``alpha = 2 asin(eps/2)``), so the constraint is a plain norm bound and
    tiny caps keep full precision. Each of the ``1 + refine`` line searches
    moves ``v`` along the negative gradient, radially projected onto the ball
    where it leaves it, over a geometric grid of step sizes (``2 alpha``,
    ``2^(3/4) alpha``, ..., eight halvings). Since the
    head is linear, the pre-activations along that path are
    ``cos|v| W z + sinc|v| s (W v + t W p)`` with per-row scalars ``|v|`` and
    ``s``: one product ``W p`` gives every step size.

    Args:
        z: starting features (N, D), finite with non-zero rows, D >= 2.
        targets: class indices (N,) or soft targets (N, C).
        ops: the head, from :func:`dense_head_ops` (or the Gram form).
        eta: the learner's learning rate.
        eps: chord radius of the cap, in ``(0, 2]``.
        grid: step sizes per halving of the step: each line search tries
            ``8 * grid`` of them, from ``2 alpha`` down by factors of
            ``2^(-1/grid)`` (default: 4). Wide heads, whose grid would not fit
            a block of ``2^21`` numbers, get one per halving.
        refine: line searches after the first (default: 2).

    Returns:
        A :class:`~torchdht.functional.SolveResult`: every row keeps its norm
        and stays within chord ``eps`` of its start (up to rounding of the
        returned vector); the objective never rises; unmoved rows come back
        bit for bit.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z, W = torch.randn(6, 8, generator=g), torch.randn(3, 8, generator=g)
        >>> ops = dense_head_ops(W, None, W - 0.1 * torch.randn(3, 8, generator=g), None, 0.5)
        >>> out = solve_cap_linesearch(z, torch.tensor([0, 1, 2, 0, 1, 2]), ops, 0.5, 0.1)
        >>> bool((out.after <= out.before).all())
        True
    """
    if z.dim() != 2 or z.shape[-1] < 2:
        raise ValueError(f"z must have shape (N, D) with D >= 2, got {tuple(z.shape)}")
    grid = check_int(grid, "grid", 1)
    refine = check_int(refine, "refine", 0)
    alpha = chord_to_angle(eps)
    c = ops.classes
    y = _soft_targets(targets, c, z.dtype)
    mass = None if not targets.is_floating_point() else y.sum(-1, keepdim=True)
    radius = z.norm(dim=-1, keepdim=True)
    u0 = z / radius
    sq_norm = radius.square()
    if ops.shift is not None:
        sq_norm = sq_norm + 1.0
    k1 = (eta * eta) * sq_norm.squeeze(-1)  # f = k1 |g|^2 - g . h2
    k2 = 2.0 * (eta * eta) * sq_norm  # (N, 1), for the gradient
    k3 = 2.0 * (eta * eta) * radius  # (N, 1)
    evaluate = functools.partial(_evaluate, y, mass, ops.shift, k1, c)

    # The point of v is cos|v| u0 + sinc|v| v; its pre-activations cos|v| a_c + sinc|v| a_v
    # with a_c = forward(z) and a_v = forward(radius * v).
    a_c = ops.forward(z)
    f0, p_cur, g_cur, h_cur = evaluate(a_c)
    f_cur = f0
    v = torch.zeros_like(z)
    a_v = torch.zeros_like(a_c)
    nv = torch.zeros_like(radius)  # |v|
    cos_v, sinc_v = torch.ones_like(radius), torch.ones_like(radius)
    fallback = _fallback_tangent(u0)
    # one geometric grid of 8 * grid step sizes: 2 alpha (projected onto the rim), then down
    # by factors 2^(-1/grid) to 2^(1 - 8) alpha. Where the grid's (K, N, 2C) block does not
    # fit the budget (wide heads) every evaluation is a pass over (N, C): one step size per
    # halving then.
    grid = min(grid, linesearch_grid(z.shape[0], c, grid))
    ts = (2.0 * alpha) * torch.pow(
        torch.tensor(2.0 ** (-1.0 / grid), dtype=z.dtype, device=z.device),
        torch.arange(8 * grid, dtype=z.dtype, device=z.device),
    ).view(-1, 1, 1)
    for _ in range(1 + refine):
        # df/du at the point (u = cos|v| u0 + sinc|v| v, the feature radius * u)
        w = k2 * g_cur - h_cur
        pw = p_cur * w
        jw = pw - p_cur * pw.sum(-1, keepdim=True)
        if mass is not None:
            jw = mass * jw
        point = cos_v * u0 + sinc_v * v
        gz = radius * ops.backward(torch.cat([jw, g_cur], -1)) + (
            k3 * radius * (g_cur * g_cur).sum(-1, keepdim=True)
        ) * point
        # through the exponential map: du/dv = sinc (I - vh vh^T) + cos vh vh^T - sin u0 vh^T
        vh = v / nv.clamp_min(1e-30)
        coef = (cos_v - sinc_v) * (vh * gz).sum(-1, keepdim=True) - torch.sin(nv) * (
            u0 * gz
        ).sum(-1, keepdim=True)
        gv = sinc_v * gz + coef * vh
        gv = gv - (gv * u0).sum(-1, keepdim=True) * u0  # the tangent space at u0
        gv_norm = gv.norm(dim=-1, keepdim=True)
        p = torch.where(gv_norm > 0, gv / -gv_norm.clamp_min(1e-30), fallback)
        a_p = ops.forward(radius * p)
        vp = (v * p).sum(-1, keepdim=True)
        # every step size of the grid at once (or one at a time for wide heads)
        best = _search(evaluate, nv.square(), vp, a_c, a_v, a_p, alpha, ts, f_cur, c)
        f_new, t, length, scale, p_new, g_new, h_new = best
        take = (f_new < f_cur).unsqueeze(-1)
        f_cur = torch.where(take.squeeze(-1), f_new, f_cur)
        t = torch.where(take, t, 0.0)
        scale = torch.where(take, scale, 1.0)
        v = scale * (v + t * p)
        a_v = scale * (a_v + t * a_p)
        nv = torch.where(take, length, nv)
        cos_v, sinc_v = torch.cos(nv), torch.sinc(nv / math.pi)
        p_cur = torch.where(take, p_new, p_cur)
        g_cur = torch.where(take, g_new, g_cur)
        h_cur = torch.where(take, h_new, h_cur)
    moved = f_cur < f0
    out = torch.where(moved.unsqueeze(-1), radius * (cos_v * u0 + sinc_v * v), z)
    return SolveResult(out, f0, torch.where(moved, f_cur, f0))


def linesearch_grid(n: int, c: int, grid: int = 4) -> int:
    """``grid``, or 1 when the (8 grid, N, 2C) block of one search would not fit ``2^21`` numbers.

    Example:
        >>> linesearch_grid(128, 10), linesearch_grid(128, 10_000)
        (4, 1)
    """
    return grid if 8 * grid * n * 2 * c <= _BLOCK else 1


def _evaluate(
    y: Tensor, mass: Tensor | None, shift: Tensor | None, k1: Tensor, c: int, a: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(f, p, g, h2)`` from pre-activation rows ``a`` (..., N, 2C) without the shift."""
    if shift is not None:
        a = a + shift
    logits, h2 = a[..., :c], a[..., c:]
    p = torch.softmax(logits, dim=-1)
    g = p - y if mass is None else p * mass - y
    f = k1 * (g * g).sum(-1) - (g * h2).sum(-1)
    return f, p, g, h2


def _search(
    evaluate: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]],
    nv_sq: Tensor,
    vp: Tensor,
    a_c: Tensor,
    a_v: Tensor,
    a_p: Tensor,
    alpha: float,
    ts: Tensor,
    f_cur: Tensor,
    classes: int,
) -> tuple[Tensor, ...]:
    """The best step size among ``ts`` (K, 1, 1) along ``v + t p``, radially projected onto
    the ball ``|v| <= alpha``: ``(f, t, |v'|, scale, p, g, h2)`` of it, per row.

    All K at once when the (K, N, 2C) block is small, else one step size at a time
    (wide heads), so memory stays that of a few (N, 2C) blocks. Rows where no step
    beats ``f_cur`` get ``f >= f_cur`` back (the caller keeps its point).
    """
    n = a_c.shape[0]

    def path(t: Tensor) -> tuple[Tensor, ...]:
        norm = (nv_sq + t * (2.0 * vp + t)).sqrt()
        scale = (alpha / norm.clamp_min(1e-30)).clamp_max(1.0)
        length = norm.clamp_max(alpha)
        a = torch.cos(length) * a_c + (torch.sinc(length / math.pi) * scale) * (a_v + t * a_p)
        return (*evaluate(a), length, scale)

    steps = ts.shape[0]
    if steps * n * 2 * classes <= _BLOCK:
        f, p, g, h2, length, scale = path(ts)  # (K, N), (K, N, C) x 3, (K, N, 1) x 2
        f_min, k = f.min(0)
        idx = k.view(1, n, 1)
        pick = [x.gather(0, idx.expand(1, n, x.shape[-1])).squeeze(0) for x in (p, g, h2)]
        t = ts.view(-1)[k].unsqueeze(-1)
        return (f_min, t, length.gather(0, idx).squeeze(0), scale.gather(0, idx).squeeze(0),
                *pick)
    # one step size at a time, keeping only the objective and where it was reached; the
    # pieces of the best point are computed once at the end
    f_best = t_best = None
    for j in range(steps):
        t = ts[j].expand(n, 1)
        f = path(t)[0]
        if f_best is None or t_best is None:
            f_best, t_best = f, t
        else:
            better = f < f_best
            f_best = torch.where(better, f, f_best)
            t_best = torch.where(better.unsqueeze(-1), t, t_best)
    assert f_best is not None and t_best is not None
    _, p, g, h2, length, scale = path(t_best)
    return f_best, t_best, length, scale, p, g, h2


_BLOCK = 1 << 21
"""Elements of a (K, N, 2C) block of the line search evaluated at once (8 MB in float32)."""
