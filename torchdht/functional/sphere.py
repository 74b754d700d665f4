"""The angular cap on the unit hypersphere.

The cap around a unit vector ``u0`` with chord radius ``eps`` is
``{u : |u| = 1, |u - u0| <= eps}``; its angular radius is
``alpha = 2 * asin(eps / 2)``. ``eps`` lies in ``(0, 2]``; ``eps = 2`` is the
whole sphere. All functions work on batches: one cap per row.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .._checks import check_float
from ..errors import TeacherError

__all__ = [
    "chord_to_angle",
    "angle_to_chord",
    "normalize",
    "angle",
    "chord",
    "project_cap",
    "sample_cap",
]

_TINY = 1e-30


def check_eps(eps: float, name: str = "eps") -> float:
    """Return ``eps`` as a float after checking it is a chord in ``(0, 2]``."""
    return check_float(eps, f"{name} (a chord on the unit sphere)", 0.0, 2.0, low_open=True)


def chord_to_angle(eps: float) -> float:
    """Angular radius (radians) of the cap whose chord radius is ``eps``.

    Example:
        >>> round(chord_to_angle(2.0), 6) == round(math.pi, 6)
        True
    """
    eps = check_eps(eps)
    return 2.0 * math.asin(eps / 2.0)


def angle_to_chord(alpha: float) -> float:
    """Chord length on the unit sphere for an angle ``alpha`` in ``[0, pi]``.

    Example:
        >>> angle_to_chord(math.pi)
        2.0
    """
    return 2.0 * math.sin(alpha / 2.0)


def normalize(x: Tensor) -> Tensor:
    """Rows of ``x`` scaled to unit norm (rows of zeros stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_TINY)


def angle(a: Tensor, b: Tensor) -> Tensor:
    """Angle in radians between matching rows of ``a`` and ``b`` (any norms).

    Uses ``2 * atan2(|u - v|, |u + v|)`` on the normalised rows, which stays
    accurate for tiny and for near-antipodal angles, unlike ``acos``.

    Args:
        a: Tensor of shape (..., D).
        b: Tensor of shape (..., D).

    Returns:
        Tensor of shape (...,) with values in [0, pi].

    Example:
        >>> a = torch.tensor([[1.0, 0.0]]); b = torch.tensor([[0.0, 3.0]])
        >>> torch.allclose(angle(a, b), torch.tensor([math.pi / 2]))
        True
    """
    u, v = normalize(a), normalize(b)
    return 2.0 * torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1))


def chord(a: Tensor, b: Tensor) -> Tensor:
    """Chord ``|a/|a| - b/|b||`` between matching rows, in ``[0, 2]``."""
    return (normalize(a) - normalize(b)).norm(dim=-1)


def _fallback_tangent(center: Tensor) -> Tensor:
    """A unit vector orthogonal to each row of ``center`` (unit rows)."""
    idx = center.abs().argmin(dim=-1, keepdim=True)
    e = torch.zeros_like(center).scatter_(-1, idx, 1.0)
    t = e - (e * center).sum(-1, keepdim=True) * center
    return normalize(t)


def project_cap(x: Tensor, center: Tensor, eps: float) -> Tensor:
    """Closest point of the cap around ``center`` to each row of ``x``.

    The closest point (in Euclidean distance, and equally along the sphere)
    is ``x / |x|`` when that lies in the cap; otherwise it is the point at
    angle ``alpha`` from ``center`` on the great circle towards ``x``. For a
    row exactly antipodal to its centre every rim point is closest and one is
    chosen deterministically.

    Args:
        x: Tensor of shape (N, D) with non-zero rows.
        center: Tensor of shape (N, D) with unit rows.
        eps: chord radius of the cap, in ``(0, 2]``.

    Returns:
        Tensor of shape (N, D) with unit rows, each within chord ``eps`` of
        its centre.

    Example:
        >>> c = torch.tensor([[1.0, 0.0, 0.0]])
        >>> p = project_cap(torch.tensor([[0.0, 1.0, 0.0]]), c, eps=0.5)
        >>> bool(chord(p, c) <= 0.5 + 1e-6)
        True
    """
    alpha = chord_to_angle(eps)
    if alpha >= math.pi:
        return normalize(x)
    return _project(x, center, _fallback_tangent(center), alpha)


def _project(x: Tensor, center: Tensor, fallback: Tensor, alpha: float) -> Tensor:
    """:func:`project_cap` with the fallback tangents precomputed (``alpha < pi``)."""
    v = normalize(x)
    cos_t = (v * center).sum(-1, keepdim=True)
    tang = v - cos_t * center
    tang_norm = tang.norm(dim=-1, keepdim=True)
    theta = torch.atan2(tang_norm, cos_t)
    degenerate = tang_norm <= 1e-12 * (1.0 + cos_t.abs())
    direction = torch.where(degenerate, fallback, tang / tang_norm.clamp_min(_TINY))
    rim = math.cos(alpha) * center + math.sin(alpha) * direction
    inside = (theta <= alpha) & ~(degenerate & (cos_t < 0))
    return torch.where(inside, v, rim)


_GRID = 8192


@functools.lru_cache(maxsize=32)
def _polar_table(dim: int, alpha: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Grid of polar angles on ``[0, alpha]`` and the CDF of the cap's angle law there."""
    theta = torch.linspace(0.0, alpha, _GRID + 1, dtype=torch.float64, device=device)
    if dim > 2:
        log_dens = (dim - 2) * torch.log(torch.sin(theta).clamp_min(1e-300))
        dens = torch.exp(log_dens - log_dens.max())
    else:
        dens = torch.ones_like(theta)
    cell = 0.5 * (dens[1:] + dens[:-1]) * (alpha / _GRID)
    cdf = torch.cat([cell.new_zeros(1), torch.cumsum(cell, 0)])
    return theta, cdf / cdf[-1]


def _sample_polar_angle(
    n: int, dim: int, alpha: float, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Polar angles in ``[0, alpha]`` with density proportional to sin^(dim-2).

    That is the law of the angle from the centre of a point drawn uniformly
    (surface measure) from the cap on the sphere in R^dim. The inverse CDF is
    tabulated on a fine grid in float64 and interpolated linearly.
    """
    theta, cdf = _polar_table(dim, alpha, like.device)
    q = torch.rand(n, generator=generator, device=like.device, dtype=torch.float64)
    hi = torch.searchsorted(cdf, q).clamp(1, cdf.numel() - 1)
    lo = hi - 1
    span = (cdf[hi] - cdf[lo]).clamp_min(1e-300)
    frac = ((q - cdf[lo]) / span).clamp(0.0, 1.0)
    out = theta[lo] + frac * (theta[hi] - theta[lo])
    return out.to(like.dtype)


def sample_cap(center: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """Draw one point per row uniformly (surface measure) from the cap.

    In high dimension most of a cap's surface lies near its rim, so most
    draws land close to angle ``alpha``; that is the uniform law, not a bug.

    Args:
        center: Tensor of shape (N, D), D >= 2, with unit rows.
        eps: chord radius of the cap, in ``(0, 2]``.
        generator: random source (default: the global one). It must live on
            ``center``'s device.

    Returns:
        Tensor of shape (N, D) with unit rows.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = normalize(torch.randn(4, 16, generator=g))
        >>> u = sample_cap(c, 0.2, generator=g)
        >>> bool((chord(u, c) <= 0.2 + 1e-6).all())
        True
    """
    alpha = chord_to_angle(eps)
    if center.dim() != 2 or center.shape[-1] < 2:
        raise TeacherError(
            f"center must have shape (N, D) with D >= 2, got {tuple(center.shape)}"
        )
    n, dim = center.shape
    theta = _sample_polar_angle(n, dim, alpha, generator, center).unsqueeze(-1)
    g = torch.randn(center.shape, generator=generator, device=center.device, dtype=center.dtype)
    tang = g - (g * center).sum(-1, keepdim=True) * center
    tang = normalize(tang)
    return torch.cos(theta) * center + torch.sin(theta) * tang
