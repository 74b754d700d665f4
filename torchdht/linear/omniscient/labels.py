"""Label synthesis (the paper's "+Label", LAST): the label minimising eq. 4 for a fixed ``x``.

* :func:`synthesize_label` -- batched over rows: the exact minimiser for LSR,
  a line search for LR, FISTA for softmax soft labels, or the paper's
  projected AMSGrad (``method="iterative"``).
* :class:`LabelSynthesis` -- on top of any teacher: with ``x`` fixed, the label
  minimising eq. 4 under ``|y| <= norm`` (scalar labels) or ``y >= 0,
  |y|_2 <= norm`` (softmax) [Liu et al. 2021].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..._checks import check_float
from ...errors import TeacherError, TeacherTypeError
from ...functional.box import projected_adam
from .checks import Teacher, check_learner
from .learners import (
    LeastSquares,
    LinearLearner,
    Logistic,
    Softmax,
    check_lr,
    check_x,
    stable_softmax,
)

__all__ = ["LabelSynthesis", "synthesize_label"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _label_lsr(
    learner: LinearLearner, w: Tensor, w_star: Tensor, x: Tensor, lr: float, norm: float
) -> Tensor:
    # f(y) = lr^2 n r^2 - 2 lr r h with r = <w, x> - y: convex in y, so clip the minimiser.
    m = learner.logits(w, x).squeeze(-1)
    h = learner.logits(w - w_star, x).squeeze(-1)
    n = x.pow(2).sum(-1)
    r = torch.where(n > 0, h / (lr * n).clamp_min(1e-300), torch.zeros_like(n))
    return (m - r).clamp(-norm, norm)


def _label_lr(
    learner: LinearLearner,
    w: Tensor,
    w_star: Tensor,
    x: Tensor,
    lr: float,
    norm: float,
    grid: int = 257,
    refine: int = 40,
) -> Tensor:
    # f depends on y only through a(y) = -y sigmoid(-y m) and is a convex quadratic in a:
    # a dense grid over [-norm, norm] (all rows at once), then golden-section refinement.
    n_rows = x.shape[0]
    ys = torch.linspace(-norm, norm, grid, dtype=x.dtype)
    xr = x.repeat_interleave(grid, 0)
    wr = w if w.dim() == 1 else w.repeat_interleave(grid, 0)
    wsr = w_star if w_star.dim() == 1 else w_star.repeat_interleave(grid, 0)
    f = learner.objective(wr, wsr, xr, ys.repeat(n_rows), lr).reshape(n_rows, grid)
    k = f.argmin(-1)
    step = ys[1] - ys[0]
    a = (ys[k] - step).clamp(-norm, norm)
    b = (ys[k] + step).clamp(-norm, norm)

    def fy(v: Tensor) -> Tensor:
        return learner.objective(w, w_star, x, v, lr)

    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = fy(c), fy(d)
    for _ in range(refine):
        left = fc < fd
        b = torch.where(left, d, b)
        a = torch.where(left, a, c)
        c_new = b - _GOLDEN * (b - a)
        d_new = a + _GOLDEN * (b - a)
        c, d = c_new, d_new
        fc, fd = fy(c), fy(d)
    best = torch.where(fc < fd, c, d)
    f_best = torch.minimum(fc, fd)
    f_grid = f.gather(-1, k.unsqueeze(-1)).squeeze(-1)
    return torch.where(f_best <= f_grid, best, ys[k])


def _label_softmax(
    learner: LinearLearner,
    w: Tensor,
    w_star: Tensor,
    x: Tensor,
    lr: float,
    norm: float,
    y0: Tensor,
    steps: int = 300,
) -> Tensor:
    # f is a convex quadratic in y (a = (p 1^T - I) y): FISTA with step 1/L on the
    # orthant-ball, whose projection is exact; the best iterate is kept.
    c = learner.num_outputs
    p = stable_softmax(learner.logits(w, x))
    n = x.pow(2).sum(-1, keepdim=True)
    lip = 2.0 * lr * lr * n * (p.norm(dim=-1, keepdim=True) * math.sqrt(c) + 1.0) ** 2
    step = 1.0 / lip.clamp_min(1e-300)
    wm, dm = learner.matrix(w), learner.matrix(w - w_star)
    y = learner.project_label(y0, norm)
    z, t = y, 1.0
    best_y = y
    best_f = learner.label_fg(wm, dm, x, y, lr)[0]
    for _ in range(steps):
        _, g = learner.label_fg(wm, dm, x, z, lr)  # z may leave the orthant: unchecked
        y_new = learner.project_label(z - step * g, norm)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = y_new + ((t - 1.0) / t_new) * (y_new - y)
        y, t = y_new, t_new
        f = learner.label_fg(wm, dm, x, y, lr)[0]
        better = f < best_f
        best_f = torch.where(better, f, best_f)
        best_y = torch.where(better.unsqueeze(-1), y, best_y)
    return best_y


def synthesize_label(
    learner: LinearLearner,
    w: Tensor,
    w_star: Tensor,
    x: Tensor,
    lr: float,
    norm: float = 2.0,
    y0: Tensor | None = None,
    method: str = "auto",
    steps: int = 300,
    solver_lr: float = 0.01,
) -> Tensor:
    """Label synthesis (LAST): the label minimising eq. 4 for fixed inputs, all rows at once.

    The feasible set is ``|y| <= norm`` for LSR and LR (scalar labels) and
    ``{y >= 0, |y|_2 <= norm}`` for softmax (soft labels, the paper's
    ``y_i > 0, |y|_2 <= 2``).

    ``method="auto"`` uses what the learner allows: for LSR the exact
    minimiser (eq. 4 is a convex quadratic in ``y``; clip it to the
    interval), for LR a line search (a 257-point grid on ``[-norm, norm]``
    refined by golden section; eq. 4 depends on ``y`` only through the scalar
    ``-y sigmoid(-y <w, x>)``), for softmax accelerated projected gradient
    (FISTA with step ``1/L``; eq. 4 is a convex quadratic in ``y``).
    ``method="iterative"`` runs the generic projected AMSGrad on the label
    (what the paper does) for ``steps`` steps of ``solver_lr``.

    When ``y0`` (the labels the base teacher chose) is given, a row whose
    solution is not strictly better than ``y0`` keeps ``y0`` (projected onto
    the feasible set); so the result is never worse than ``y0``.

    Args:
        learner: the learner.
        w: weights (shared or one per row).
        w_star: target (shared or one per row).
        x: inputs (N, D), fixed.
        lr: the learner's learning rate.
        norm: the label bound (default: 2.0).
        y0: starting labels, (N,) (softmax: indices (N,) or soft (N, C));
            default: zeros.
        method: ``"auto"`` or ``"iterative"``.
        steps: iterations of the iterative solvers.
        solver_lr: AMSGrad step for ``method="iterative"``.

    Returns:
        Labels (N,) for LSR/LR, soft labels (N, C) for softmax, in x's dtype.

    Example:
        >>> from torchdht.linear.omniscient.learners import LSR
        >>> y = synthesize_label(LSR, torch.zeros(2), torch.ones(2), torch.eye(2), 0.1, norm=2.0)
        >>> y   # the unconstrained optimum is 10: clipped to the bound
        tensor([2., 2.])
    """
    check_learner(learner)
    lr = check_lr(lr)
    norm = check_float(norm, "norm", 0.0, low_open=True, finite=False)
    x = check_x(x)
    n_rows = x.shape[0]
    soft = isinstance(learner, Softmax)
    if y0 is None:
        y0 = torch.zeros((n_rows, learner.num_outputs) if soft else (n_rows,), dtype=x.dtype)
    else:
        learner.check_y(y0, n_rows, name="y0")
        if soft and not y0.is_floating_point():
            y0 = torch.nn.functional.one_hot(y0, learner.num_outputs)
        y0 = y0.to(x.dtype)
    y0 = learner.project_label(y0, norm)
    if method == "iterative":

        def fg(v: Tensor) -> tuple[Tensor, Tensor]:
            return learner.label_objective_and_grad(w, w_star, x, v, lr)

        flat = y0 if soft else y0.unsqueeze(-1)
        proj = (lambda v: learner.project_label(v, norm)) if soft else (
            lambda v: v.clamp(-norm, norm)
        )

        def fg_flat(v: Tensor) -> tuple[Tensor, Tensor]:
            f, g = fg(v if soft else v.squeeze(-1))
            return f, (g if soft else g.unsqueeze(-1))

        out = projected_adam(fg_flat, flat, proj, steps=steps, lr=solver_lr)
        y = out.x if soft else out.x.squeeze(-1)
    elif method == "auto":
        if isinstance(learner, LeastSquares):
            y = _label_lsr(learner, w, w_star, x, lr, norm)
        elif isinstance(learner, Logistic):
            y = _label_lr(learner, w, w_star, x, lr, norm)
        elif soft:
            y = _label_softmax(learner, w, w_star, x, lr, norm, y0, steps=steps)
        else:
            raise TeacherTypeError(f"no label synthesis for learner {learner!r}")
    else:
        raise TeacherError(f"method must be 'auto' or 'iterative', got {method!r}")
    f_new = learner.objective(w, w_star, x, y, lr)
    f_old = learner.objective(w, w_star, x, y0, lr)
    keep = f_new < f_old
    if soft:
        keep = keep.unsqueeze(-1)
    return torch.where(keep, y, y0)



class LabelSynthesis:
    """Label synthesis on top of any teacher (the paper's "+Label", LAST).

    The base teacher chooses ``x`` (and a label); then the label is replaced
    by the one minimising eq. 4 with ``x`` fixed, within ``|y| <= norm``
    (LSR, LR) or ``y >= 0, |y|_2 <= norm`` (softmax), unless that is not
    strictly better (see :func:`synthesize_label`).

    Args:
        teacher: the base teacher (anything with ``propose``).
        learner: the learner.
        w_star: the target weights.
        lr: the learner's learning rate.
        norm: the label bound (default: 2.0, the paper's).
        method: ``"auto"`` (exact / line search) or ``"iterative"``.

    Example:
        >>> from torchdht.linear.omniscient.greedy import IMTTeacher
        >>> from torchdht.linear.omniscient.learners import LR
        >>> pool = (torch.eye(2), torch.tensor([1.0, -1.0]))
        >>> ws = torch.tensor([1.0, 1.0])
        >>> t = LabelSynthesis(IMTTeacher(LR, ws, 0.1, pool), LR, ws, 0.1)
        >>> x, y = t.propose(torch.zeros(2))
        >>> bool(y.abs() <= 2)
        True
    """

    def __init__(
        self,
        teacher: Teacher,
        learner: LinearLearner,
        w_star: Tensor,
        lr: float,
        norm: float = 2.0,
        method: str = "auto",
    ) -> None:
        if not callable(getattr(teacher, "propose", None)):
            raise TeacherTypeError(
                f"teacher must have a propose(w) method, got {type(teacher).__name__}"
            )
        self.teacher = teacher
        self.learner = check_learner(learner)
        if not isinstance(w_star, Tensor) or not w_star.is_floating_point():
            raise TeacherTypeError("w_star must be a floating-point tensor")
        self.w_star = w_star
        self.lr = check_lr(lr)
        self.norm = check_float(norm, "norm", 0.0, low_open=True, finite=False)
        if method not in ("auto", "iterative"):
            raise TeacherError(f"method must be 'auto' or 'iterative', got {method!r}")
        self.method = method

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """The base teacher's ``x`` with the synthesised label."""
        x, y = self.teacher.propose(w)
        y = synthesize_label(
            self.learner, w, self.w_star, x, self.lr, self.norm, y0=y, method=self.method
        )
        return x, y
