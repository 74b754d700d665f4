"""The teaching target ``w*``: a linear learner trained to convergence (damped Newton)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_float
from ...errors import TeacherError, TeacherTypeError
from .learners import LinearLearner, check_x

__all__ = ["fit_w_star"]


def fit_w_star(
    learner: LinearLearner,
    x: Tensor,
    y: Tensor,
    l2: float = 1e-3,
    w0: Tensor | None = None,
    max_iter: int = 100,
) -> Tensor:
    """The teaching target: the learner trained to convergence on ``(x, y)``.

    Minimises ``mean_j loss(w; x_j, y_j) + (l2 / 2) |w|^2`` by damped Newton
    steps (exact Hessian, which is tiny: (K D)^2; Armijo backtracking) in
    float64, from ``w0``, until the gradient vanishes to rounding. With
    ``l2 > 0`` the problem is strictly convex, so the result is the unique
    minimiser and does not depend on ``w0``: this is our stopping rule for
    data on which unregularised logistic regression would grow its weights
    without bound (with ``l2 = 0`` on separable data it stops at ``max_iter``).

    Args:
        learner: the learner.
        x: training inputs (N, D), finite, N >= 1.
        y: training labels, checked with ``learner.check_labels``.
        l2: the L2 coefficient (default: 1e-3); 0 gives plain ERM.
        w0: initial weights (default: zeros).
        max_iter: Newton iterations at most (default: 100).

    Returns:
        ``w*`` with the dtype of ``x``.

    Example:
        >>> from torchdht.linear.omniscient.learners import LSR
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> y = x @ torch.tensor([2.0, -1.0])
        >>> fit_w_star(LSR, x, y, l2=0.0)
        tensor([ 2., -1.])
    """
    if not isinstance(learner, LinearLearner):
        raise TeacherTypeError(f"learner must be a LinearLearner, got {type(learner).__name__}")
    x = check_x(x)
    if x.shape[0] == 0:
        raise TeacherError("x is empty: fitting w* needs at least one example")
    if not bool(torch.isfinite(x).all()):
        raise TeacherError("x contains NaN or inf")
    y = learner.check_labels(y, x.shape[0])
    l2 = check_float(l2, "l2", 0.0, finite=False)
    shape = learner.weight_shape(x.shape[1])
    x64 = x.double()
    y64 = y.double() if y.is_floating_point() else y
    t64 = learner.target_rows(y64, torch.float64)
    if w0 is None:
        flat = torch.zeros(shape, dtype=torch.float64).flatten()
    else:
        learner.check_w(w0, None, x.shape[1], name="w0")
        flat = w0.detach().double().flatten().clone()
    k = learner.num_outputs
    eye_k = torch.eye(k, dtype=torch.float64)
    n = x64.shape[0]

    def value(v: Tensor) -> float:
        wm = learner.matrix(v.reshape(shape))
        loss = learner.logit_loss(learner.matrix_logits(wm, x64), t64).mean()
        return float(loss + 0.5 * l2 * v.dot(v))

    def grad_hess(v: Tensor) -> tuple[Tensor, Tensor]:
        wm = learner.matrix(v.reshape(shape))
        logits = learner.matrix_logits(wm, x64)
        a = learner.logit_grad(logits, t64)
        g = (a.unsqueeze(-1) * x64.unsqueeze(-2)).mean(0).flatten() + l2 * v
        hl = torch.stack(
            [learner.logit_hvp(logits, t64, eye_k[i].expand_as(logits)) for i in range(k)], -1
        )
        hess = torch.einsum("nab,nd,ne->adbe", hl, x64, x64).reshape(v.numel(), v.numel())
        return g, hess / n + l2 * torch.eye(v.numel(), dtype=torch.float64)

    f = value(flat)
    for _ in range(max_iter):
        g, hess = grad_hess(flat)
        if float(g.abs().max()) <= 1e-13 * max(1.0, abs(f)):
            break
        step = torch.linalg.lstsq(hess, g.unsqueeze(-1)).solution.squeeze(-1)
        slope = float(g.dot(step))
        if not slope > 0:  # not a descent direction (singular Hessian): fall back to -g
            step, slope = g, float(g.dot(g))
        t = 1.0
        cand = flat - step
        f_new = value(cand)
        while f_new > f - 1e-4 * t * slope and t > 1e-10:
            t *= 0.5
            cand = flat - t * step
            f_new = value(cand)
        if not f_new < f:  # no progress left at this precision
            break
        flat, f = cand, f_new
    return flat.reshape(shape).to(x.dtype)
