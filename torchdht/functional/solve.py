"""Batched projected solvers for the greedy teaching problem.

:func:`solve_cap` minimises a per-sample objective ``f_j(z'_j)`` over
``z'_j`` with ``|z'_j| = |z_j|`` and ``chord(z'_j/|z'_j|, z_j/|z_j|) <= eps``,
for all rows at once. It takes Riemannian gradient steps on the sphere: the
gradient is projected onto the tangent space, the iterate moves along the
geodesic by an angular step, and the result is projected back into the cap,
so every iterate is feasible. Each row keeps its own step: a step that does
not lower that row's objective is rejected and the row's step is halved, so
the objective never rises and the returned iterate is the best one seen.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_int
from ..errors import TeacherError
from ..typing import ObjectiveAndGrad
from .sphere import _fallback_tangent, chord_to_angle, normalize

__all__ = ["SolveResult", "solve_cap", "default_solve_lr"]


class SolveResult(NamedTuple):
    """Result of :func:`solve_cap`."""

    z: Tensor
    """The solution, shape (N, D)."""
    before: Tensor
    """Per-sample objective at the starting point, shape (N,)."""
    after: Tensor
    """Per-sample objective at the solution, shape (N,); never above ``before``."""


def default_solve_lr(eps: float, steps: int) -> float:
    """Default angular step: four accepted steps reach the cap's rim.

    Example:
        >>> default_solve_lr(0.1, 15) == 4 * chord_to_angle(0.1) / 15
        True
    """
    alpha = chord_to_angle(eps)
    return alpha * min(1.0, 4.0 / max(steps, 1))


def solve_cap(
    objective_and_grad: ObjectiveAndGrad,
    z: Tensor,
    eps: float,
    steps: int,
    lr: float | None = None,
    tol: float | None = None,
    rows: Tensor | None = None,
) -> SolveResult:
    """Minimise a per-sample objective over the cap around each row of ``z``.

    Args:
        objective_and_grad: ``fn(z) -> (f, df_dz)``; row ``j`` of ``f`` must
            depend on row ``j`` of ``z`` only.
        z: starting features of shape (N, D), finite and with non-zero rows.
        eps: chord radius of the cap, in ``(0, 2]``.
        steps: number of objective evaluations after the first (>= 0).
        lr: initial angular step in radians (default:
            :func:`default_solve_lr`).
        tol: stop before ``steps`` once two consecutive steps each lowered
            ``f.sum()`` by at most ``tol`` times ``(before - f).sum()``
            (default: None, meaning always take ``steps`` steps). Each step
            then reads one number back to the host, so leave it None under
            ``torch.compile`` or CUDA graphs.
        rows: optional boolean (N,): the rows whose objective the early
            exit watches (default: all); e.g. leave out stand-ins for
            masked rows, so that they cannot change when the solver stops.

    Returns:
        A :class:`SolveResult`. Every row of ``z`` keeps its norm and stays
        within chord ``eps`` of its start; a row no step improved is returned
        unchanged, bit for bit.

    Example:
        >>> target = torch.tensor([[0.0, 1.0]])
        >>> fg = lambda z: (((z - target) ** 2).sum(-1), 2 * (z - target))
        >>> out = solve_cap(fg, torch.tensor([[1.0, 0.0]]), eps=0.5, steps=20)
        >>> bool(out.after < out.before)
        True
    """
    if z.dim() != 2 or z.shape[-1] < 2:
        raise TeacherError(f"z must have shape (N, D) with D >= 2, got {tuple(z.shape)}")
    steps = check_int(steps, "steps", 0)
    if lr is None:
        lr = default_solve_lr(eps, steps)
    elif not lr > 0:
        raise TeacherError(f"lr must be a positive angular step in radians, got {lr!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise TeacherError(f"tol must be None or a number in [0, 1), got {tol!r}")
    alpha = chord_to_angle(eps)
    radius = z.norm(dim=-1, keepdim=True)
    center = z / radius
    u = center
    f, g = objective_and_grad(z)
    before = f
    step = torch.full_like(radius, float(lr))
    cap = alpha < math.pi  # else the cap is the whole sphere: no projection
    if cap:
        fallback = _fallback_tangent(center)
        cos_a, sin_a = math.cos(alpha), math.sin(alpha)
        rim_center = cos_a * center
        # Candidates lie within alpha + lr of the centre (steps only shrink): only beyond
        # about a radian can one come near the antipode, where the rim direction needs a
        # second orthogonalisation.
        far = alpha + float(lr) >= 1.0
    small = 0  # consecutive steps that lowered the batch objective by at most tol of the total
    for _ in range(steps):
        # Riemannian step: the tangent part of the gradient (radius only scales it), then
        # along the geodesic from u by each row's angular step.
        tangent = g - (g * u).sum(-1, keepdim=True) * u
        cand = normalize(torch.cos(step) * u - torch.sin(step) * normalize(tangent))
        if cap:
            cand = _into_cap(cand, center, rim_center, cos_a, sin_a, fallback, far)
        f_new, g_new = objective_and_grad(radius * cand)
        accept = f_new < f
        keep = accept.unsqueeze(-1)
        u = torch.where(keep, cand, u)
        g = torch.where(keep, g_new, g)
        if tol is not None:
            # accepted (watched) rows only: the decrease of this step, against the total so far
            counted = accept if rows is None else accept & rows
            gain = torch.where(counted, f - f_new, 0.0).sum()
            f_next = torch.where(accept, f_new, f)
            total = (before - f_next).sum() if rows is None else torch.where(
                rows, before - f_next, 0.0).sum()
            small = small + 1 if bool((gain <= tol * total) & (total > 0)) else 0
        f = torch.where(accept, f_new, f)
        step = torch.where(keep, step, 0.5 * step)
        if small >= 2:
            break
    # f falls strictly at every accepted step, so the rows that moved are those with f < before;
    # the others come back bit-identical, not as radius * (z / radius).
    moved = (f < before).unsqueeze(-1)
    return SolveResult(torch.where(moved, radius * u, z), before, f)


def _into_cap(
    v: Tensor,
    center: Tensor,
    rim_center: Tensor,
    cos_a: float,
    sin_a: float,
    fallback: Tensor,
    far: bool = True,
) -> Tensor:
    """Geodesic projection of unit rows ``v`` into the caps (``alpha < pi``), in few kernels.

    The same point as :func:`~torchdht.functional.sphere.project_cap`: ``v``
    when its angle to the centre is at most ``alpha``, else the rim point on
    the great circle through ``v``; ``rim_center`` is ``cos(alpha) * center``,
    precomputed. The test compares ``sin`` and ``cos`` of both angles (a
    cross-multiplied ``atan2``), which keeps its resolution for tiny caps: a
    test of ``cos(theta) >= cos(alpha)`` alone cannot tell angles below about
    ``sqrt(2 * machine eps)`` apart (3e-4 rad in float32).
    """
    cos_t = (v * center).sum(-1, keepdim=True)
    tang = v - cos_t * center
    tang_norm = tang.norm(dim=-1, keepdim=True)
    # theta <= alpha  <=>  sin(theta) cos(alpha) <= cos(theta) sin(alpha), for theta, alpha
    # in [0, pi] (both sides are sin(alpha - theta) scaled by the positive |v|).
    inside = tang_norm * cos_a <= cos_t * sin_a
    direction = torch.where(tang_norm > 1e-30, tang / tang_norm.clamp_min(1e-30), fallback)
    if far:
        # For ``v`` near the antipode ``tang`` is a small difference of large numbers:
        # orthogonalise once more, so the rim point's angle is alpha to rounding and not to
        # ~ulp / |tang| (``far=False`` when no candidate can come near the antipode).
        direction = normalize(direction - (direction * center).sum(-1, keepdim=True) * center)
    return torch.where(inside, v, rim_center + sin_a * direction)
