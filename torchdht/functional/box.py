"""Boxes for input-space teachers, and a batched projected Adam/AMSGrad solver.

A box is a pair ``(lo, hi)`` of tensors of shape (D,) with ``lo <= hi``
elementwise; the feasible set is ``{x : lo <= x <= hi}``. The greedy DHT
teacher of the paper (section 3.2, appendix C.1-C.2) generates ``x`` inside
the box spanned by the training data's per-dimension minimum and maximum.

:func:`projected_adam` minimises a per-row objective ``f_j(x_j)`` for all rows
at once with Adam or AMSGrad steps followed by a projection, and returns the
best iterate seen per row (so the result is never worse than the start).
:func:`solve_box` is that solver with the box projection and a step given as a
fraction of each dimension's width.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .._checks import check_int
from ..errors import TeacherError, TeacherTypeError
from ..typing import ObjectiveAndGrad

__all__ = [
    "Box",
    "BoxSolveResult",
    "box_from_data",
    "check_box",
    "in_box",
    "project_box",
    "projected_adam",
    "sample_box",
    "solve_box",
]

Box = tuple[Tensor, Tensor]
"""``(lo, hi)``, both of shape (D,), with ``lo <= hi``."""


class BoxSolveResult(NamedTuple):
    """Result of :func:`projected_adam` and :func:`solve_box`."""

    x: Tensor
    """The best feasible iterate per row, shape (N, D)."""
    before: Tensor
    """Per-row objective at the (projected) start, shape (N,)."""
    after: Tensor
    """Per-row objective at ``x``, shape (N,); never above ``before``."""


def check_box(lo: Tensor, hi: Tensor, name: str = "box") -> Box:
    """Validate a box and return it.

    Args:
        lo: lower corner, shape (D,).
        hi: upper corner, shape (D,).
        name: the argument's name, for error messages.

    Returns:
        ``(lo, hi)`` unchanged.

    Raises:
        TypeError: if ``lo`` or ``hi`` is not a floating-point tensor.
        ValueError: if shapes differ or are not (D,), a bound is not finite,
            or ``lo > hi`` somewhere (``lo == hi`` is allowed: a fixed
            coordinate, e.g. a constant bias feature).

    Example:
        >>> lo, hi = check_box(torch.zeros(2), torch.ones(2))
        >>> check_box(torch.ones(2), torch.zeros(2))
        Traceback (most recent call last):
        ...
        torchdht.errors.TeacherError: box: lo > hi in dimension(s) [0, 1]; need lo <= hi elementwise
    """
    for part, t in (("lo", lo), ("hi", hi)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TeacherTypeError(
                f"{name}: {part} must be a floating-point tensor, got {type(t).__name__}"
            )
    if lo.dim() != 1 or lo.shape != hi.shape:
        raise TeacherError(
            f"{name}: lo and hi must both have shape (D,), got {tuple(lo.shape)} and "
            f"{tuple(hi.shape)}"
        )
    if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
        raise TeacherError(f"{name}: bounds must be finite (found NaN or inf)")
    bad = (lo > hi).nonzero().flatten().tolist()
    if bad:
        raise TeacherError(f"{name}: lo > hi in dimension(s) {bad[:10]}; need lo <= hi elementwise")
    return lo, hi


def box_from_data(x: Tensor, name: str = "x") -> Box:
    """The per-dimension ``[min, max]`` box of a data set.

    Args:
        x: data of shape (N, D), N >= 1, finite.
        name: the argument's name, for error messages.

    Returns:
        ``(lo, hi)`` of shape (D,).

    Example:
        >>> box_from_data(torch.tensor([[0.0, 2.0], [1.0, -1.0]]))
        (tensor([ 0., -1.]), tensor([1., 2.]))
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TeacherTypeError(f"{name} must be a floating-point tensor of shape (N, D)")
    if x.dim() != 2 or x.shape[0] == 0:
        raise TeacherError(f"{name} must have shape (N, D) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise TeacherError(f"{name} contains NaN or inf")
    return x.min(0).values, x.max(0).values


def project_box(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Euclidean projection of each row of ``x`` onto the box (a clamp).

    Example:
        >>> project_box(torch.tensor([[-2.0, 0.5, 3.0]]), torch.zeros(3), torch.ones(3))
        tensor([[0.0000, 0.5000, 1.0000]])
    """
    return torch.clamp(x, min=lo, max=hi)


def in_box(x: Tensor, lo: Tensor, hi: Tensor, atol: float = 0.0) -> Tensor:
    """Whether each row of ``x`` lies in the box (up to ``atol``), shape (N,).

    Example:
        >>> in_box(torch.tensor([[0.5, 0.5], [2.0, 0.0]]), torch.zeros(2), torch.ones(2))
        tensor([ True, False])
    """
    return ((x >= lo - atol) & (x <= hi + atol)).all(-1)


def sample_box(n: int, lo: Tensor, hi: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``n`` points drawn uniformly from the box, shape (n, D).

    Example:
        >>> x = sample_box(5, torch.zeros(3), torch.ones(3), torch.Generator().manual_seed(0))
        >>> bool(in_box(x, torch.zeros(3), torch.ones(3)).all())
        True
    """
    u = torch.rand((n, lo.shape[-1]), generator=generator, dtype=lo.dtype, device=lo.device)
    return lo + u * (hi - lo)


def projected_adam(
    objective_and_grad: ObjectiveAndGrad,
    x0: Tensor,
    project: Callable[[Tensor], Tensor],
    steps: int = 100,
    lr: float | Tensor = 0.02,
    betas: tuple[float, float] = (0.8, 0.999),
    amsgrad: bool = True,
    eps: float = 1e-12,
) -> BoxSolveResult:
    """Minimise a per-row objective with projected Adam/AMSGrad, all rows at once.

    Each step is a standard bias-corrected Adam (or AMSGrad, which keeps the
    running maximum of the second moment) update of every row, followed by
    ``project``. The returned row is the best iterate seen for that row.

    Args:
        objective_and_grad: ``fn(x) -> (f, df_dx)``; row ``j`` of ``f`` must
            depend on row ``j`` of ``x`` only.
        x0: starting points of shape (N, D); projected before the first step.
        project: maps (N, D) to the feasible set (row-wise).
        steps: number of Adam steps (>= 0); the objective is evaluated
            ``steps + 1`` times.
        lr: step size, a float or a tensor broadcastable to (N, D) (e.g. a
            per-dimension step).
        betas: Adam's ``(beta1, beta2)`` (default: (0.8, 0.999), the paper's).
        amsgrad: use AMSGrad (default: True).
        eps: added to the root of the second moment.

    Returns:
        A :class:`BoxSolveResult`.

    Example:
        >>> target = torch.tensor([[2.0, -2.0]])
        >>> fg = lambda x: (((x - target) ** 2).sum(-1), 2 * (x - target))
        >>> out = projected_adam(fg, torch.zeros(1, 2), lambda x: x.clamp(-1, 1), steps=200, lr=0.1)
        >>> out.x
        tensor([[ 1., -1.]])
    """
    steps = check_int(steps, "steps", 0)
    b1, b2 = float(betas[0]), float(betas[1])
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise TeacherError(f"betas must lie in [0, 1), got {betas!r}")
    x = project(x0)
    f, g = objective_and_grad(x)
    before = f
    best_x, best_f = x, f
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    vmax = torch.zeros_like(x)
    for t in range(1, steps + 1):
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        if amsgrad:
            vmax = torch.maximum(vmax, v)
            denom = vmax
        else:
            denom = v
        step = (m / (1.0 - b1**t)) / ((denom / (1.0 - b2**t)).sqrt() + eps)
        x = project(x - lr * step)
        f, g = objective_and_grad(x)
        better = f < best_f
        best_f = torch.where(better, f, best_f)
        best_x = torch.where(better.unsqueeze(-1), x, best_x)
    return BoxSolveResult(best_x, before, best_f)


def solve_box(
    objective_and_grad: ObjectiveAndGrad,
    x0: Tensor,
    lo: Tensor,
    hi: Tensor,
    steps: int = 100,
    lr: float = 0.02,
    betas: tuple[float, float] = (0.8, 0.999),
    amsgrad: bool = True,
) -> BoxSolveResult:
    """Minimise a per-row objective inside the box ``[lo, hi]`` with projected AMSGrad.

    The step in dimension ``k`` is ``lr * (hi[k] - lo[k])``, so the default
    ``lr = 0.02`` crosses the box in about 50 steps whatever the data's scale;
    dimensions with ``lo == hi`` never move.

    Args:
        objective_and_grad: ``fn(x) -> (f, df_dx)`` as in :func:`projected_adam`.
        x0: starting points of shape (N, D).
        lo: lower corner, shape (D,).
        hi: upper corner, shape (D,).
        steps: number of solver steps (default: 100).
        lr: step as a fraction of each dimension's width (default: 0.02).
        betas: Adam's ``(beta1, beta2)`` (default: (0.8, 0.999)).
        amsgrad: AMSGrad rather than Adam (default: True).

    Returns:
        A :class:`BoxSolveResult`; every row of ``x`` lies in the box.

    Example:
        >>> target = torch.tensor([[0.3, 5.0]])
        >>> fg = lambda x: (((x - target) ** 2).sum(-1), 2 * (x - target))
        >>> out = solve_box(fg, torch.zeros(1, 2), torch.zeros(2), torch.ones(2), steps=300)
        >>> torch.allclose(out.x, torch.tensor([[0.3, 1.0]]), atol=1e-2)
        True
    """
    lo, hi = check_box(lo, hi)
    if not (lr > 0):
        raise TeacherError(f"lr must be > 0, got {lr!r}")
    if x0.dim() != 2 or x0.shape[-1] != lo.shape[0]:
        raise TeacherError(f"x0 must have shape (N, {lo.shape[0]}), got {tuple(x0.shape)}")
    return projected_adam(
        objective_and_grad,
        x0,
        lambda x: project_box(x, lo, hi),
        steps=steps,
        lr=lr * (hi - lo),
        betas=betas,
        amsgrad=amsgrad,
    )
