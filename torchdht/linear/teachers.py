"""Omniscient teachers for linear learners: SGD, IMT, greedy DHT, label synthesis, scaling.

Every teacher is built with what it needs (learner, ``w*``, the learner's
``lr``, a pool of examples, a box) and answers one protocol::

    x, y = teacher.propose(w)     # x: (1, D); y: (1,) or, softmax, (1,) / (1, C)

which is the example to feed the learner at its current weights ``w``; the
learner then takes ``w <- learner.sgd_step(w, x, y, lr)``.

* :class:`SGDTeacher` -- a uniformly random pool example (the "random teacher").
* :class:`IMTTeacher` -- the pool example minimising the greedy objective
  (eq. 4), scored for the whole pool at once [Liu et al. 2017].
* :class:`DHTTeacher` -- greedy data hallucination (section 3.2): a label
  drawn uniformly, then ``x`` minimising eq. 4 inside the data's box, by
  batched projected AMSGrad from several restarts solved at once.
* :class:`LabelSynthesis` -- on top of any teacher: with ``x`` fixed, the label
  minimising eq. 4 under ``|y| <= norm`` (scalar labels) or ``y >= 0,
  |y|_2 <= norm`` (softmax), the LAST variant [Liu et al. 2021].
* :class:`ScalingTeacher` -- Theorem 1: ``x~ = beta x`` for a random pool
  example, ``beta`` chosen so that the SGD step has length ``c1 |w - w*|``.

The pure functions behind them (:func:`imt_scores`, :func:`dht_solve`,
:func:`synthesize_label`, :func:`scaling_beta`) are batched over problems.
"""

from __future__ import annotations

import math
from typing import Protocol, Union

import torch
from torch import Tensor

from .._checks import check_float, check_int, check_seed
from ..errors import TeacherError, TeacherTypeError
from ..functional.box import (
    BoxSolveResult,
    box_from_data,
    check_box,
    projected_adam,
    sample_box,
    solve_box,
)
from .learners import (
    LeastSquares,
    LinearLearner,
    Logistic,
    Softmax,
    _check_x,
    _softmax,
    check_lr,
)

__all__ = [
    "Teacher",
    "SGDTeacher",
    "IMTTeacher",
    "DHTTeacher",
    "LabelSynthesis",
    "ScalingTeacher",
    "imt_scores",
    "dht_solve",
    "synthesize_label",
    "scaling_beta",
]

Pool = tuple[Tensor, Tensor]
BoxLike = tuple[Tensor, Tensor]


class Teacher(Protocol):
    """What every teacher answers: the next example for a learner at ``w``."""

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(x, y)`` with ``x`` of shape (1, D) and its label."""
        ...


# ------------------------------------------------------------------ checks
def _check_learner(learner: object) -> LinearLearner:
    if not isinstance(learner, LinearLearner):
        raise TeacherTypeError(
            f"learner must be a torchdht.linear learner (LSR, LR or Softmax(C)), got "
            f"{type(learner).__name__}"
        )
    return learner


def _check_pool(learner: LinearLearner, pool: Pool, name: str = "pool") -> Pool:
    if not isinstance(pool, (tuple, list)) or len(pool) != 2:
        raise TeacherTypeError(f"{name} must be a pair (x, y) of tensors")
    x, y = pool
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2:
        raise TeacherTypeError(f"{name}: x must be a floating-point tensor of shape (N, D)")
    if x.shape[0] == 0:
        raise TeacherError(f"{name} is empty: a teacher needs at least one example to draw from")
    if not bool(torch.isfinite(x).all()):
        raise TeacherError(f"{name}: x contains NaN or inf")
    y = learner.check_labels(y, x.shape[0], name=f"{name} labels")
    return x, y


def _check_weights(learner: LinearLearner, w: Tensor, dim: int, name: str) -> Tensor:
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TeacherTypeError(f"{name} must be a floating-point tensor")
    if tuple(w.shape) != learner.weight_shape(dim):
        raise TeacherError(
            f"{name} has shape {tuple(w.shape)}, but the data has D={dim} features and the "
            f"{learner.name} learner expects {learner.weight_shape(dim)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise TeacherError(f"{name} contains NaN or inf")
    return w


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    seed = check_seed(seed)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


# ----------------------------------------------------------------- functions
def imt_scores(
    learner: LinearLearner, w: Tensor, w_star: Tensor, x: Tensor, y: Tensor, lr: float
) -> Tensor:
    """Eq. 4 for every pool example at once (IMT's selection score), shape (N,).

    Example:
        >>> from torchdht.linear.learners import LR
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); y = torch.tensor([1.0, -1.0])
        >>> imt_scores(LR, torch.zeros(2), torch.tensor([1.0, 0.0]), x, y, 0.1).argmin().item()
        0
    """
    return learner.objective(w, w_star, x, y, lr)


def dht_solve(
    learner: LinearLearner,
    w: Tensor,
    w_star: Tensor,
    y: Tensor,
    lr: float,
    box: BoxLike,
    x0: Tensor,
    steps: int = 100,
    solver_lr: float = 0.02,
    betas: tuple[float, float] = (0.8, 0.999),
    amsgrad: bool = True,
) -> BoxSolveResult:
    """Greedy DHT's inner problem for many problems at once: ``min_x f(x, y_j)`` in the box.

    Row ``j`` is one problem: ``x0[j]`` its start and ``y[j]`` its label;
    ``w`` and ``w_star`` are shared, or carry a leading N (one learner per
    row). Restarts of one problem are rows with the same ``w`` and ``y``.

    Args:
        learner: the learner.
        w: weights, ``weight_shape(D)`` or (N, *weight_shape(D)).
        w_star: target, same convention.
        y: labels (N,) (or soft (N, C) for softmax).
        lr: the learner's learning rate (eq. 4's ``eta``).
        box: ``(lo, hi)`` of shape (D,).
        x0: starting points (N, D).
        steps: solver steps (default: 100).
        solver_lr: step as a fraction of each box width (default: 0.02).
        betas: AMSGrad's betas (default: (0.8, 0.999), the paper's).
        amsgrad: AMSGrad, else Adam (default: True).

    Returns:
        A :class:`~torchdht.functional.box.BoxSolveResult`: per-row best
        ``x`` in the box and eq. 4 before and after.

    Example:
        >>> from torchdht.linear.learners import LR
        >>> box = (-torch.ones(2), torch.ones(2))
        >>> out = dht_solve(LR, torch.zeros(2), torch.tensor([1.0, 1.0]), torch.tensor([1.0]),
        ...                 0.1, box, torch.zeros(1, 2))
        >>> out.x
        tensor([[1., 1.]])
    """
    lr = check_lr(lr)
    lo, hi = check_box(*box)
    x0 = _check_x(x0, "x0")
    if x0.shape[-1] != lo.shape[0]:
        raise TeacherError(f"x0 has D={x0.shape[-1]} but the box has D={lo.shape[0]}")

    def fg(x: Tensor) -> tuple[Tensor, Tensor]:
        return learner.objective_and_grad(w, w_star, x, y, lr)

    return solve_box(fg, x0, lo, hi, steps=steps, lr=solver_lr, betas=betas, amsgrad=amsgrad)


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
    p = _softmax(learner.logits(w, x))
    n = x.pow(2).sum(-1, keepdim=True)
    lip = 2.0 * lr * lr * n * (p.norm(dim=-1, keepdim=True) * math.sqrt(c) + 1.0) ** 2
    step = 1.0 / lip.clamp_min(1e-300)
    wm, dm = learner._matrix(w), learner._matrix(w - w_star)
    y = learner.project_label(y0, norm)
    z, t = y, 1.0
    best_y = y
    best_f = learner._label_fg(wm, dm, x, y, lr)[0]
    for _ in range(steps):
        _, g = learner._label_fg(wm, dm, x, z, lr)  # z may leave the orthant: unchecked
        y_new = learner.project_label(z - step * g, norm)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = y_new + ((t - 1.0) / t_new) * (y_new - y)
        y, t = y_new, t_new
        f = learner._label_fg(wm, dm, x, y, lr)[0]
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
        >>> from torchdht.linear.learners import LSR
        >>> y = synthesize_label(LSR, torch.zeros(2), torch.ones(2), torch.eye(2), 0.1, norm=2.0)
        >>> y   # the unconstrained optimum is 10: clipped to the bound
        tensor([2., 2.])
    """
    _check_learner(learner)
    lr = check_lr(lr)
    norm = check_float(norm, "norm", 0.0, low_open=True, finite=False)
    x = _check_x(x)
    n_rows = x.shape[0]
    soft = isinstance(learner, Softmax)
    if y0 is None:
        y0 = torch.zeros((n_rows, learner.num_outputs) if soft else (n_rows,), dtype=x.dtype)
    else:
        learner._check_y(y0, n_rows, name="y0")
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


_Z_PEAK = 1.2784645427610737  # z sigmoid(z) = 1: the peak of beta * sigmoid(-u beta) is at u beta


def scaling_beta(
    learner: LinearLearner, w: Tensor, w_star: Tensor, x: Tensor, y: Tensor, lr: float, c1: float
) -> tuple[Tensor, Tensor]:
    """Theorem 1's scale ``beta``: ``grad l(beta x) = k grad l(x)``, step ``c1 |w - w*|`` long.

    For each row, ``beta`` is chosen so that feeding ``beta * x`` makes the
    SGD step point along ``-grad l(x, y | w)`` (factor ``k > 0``) with length
    ``c1 |w - w*|``. LSR: a root of ``<w,x> beta^2 - y beta - q = 0``, in
    closed form (the smaller in magnitude). LR: the root on the rising branch
    of ``beta sigmoid(-y beta <w, x>) = q``, by bisection.

    Args:
        learner: ``LSR`` or ``LR``.
        w, w_star: weights (D,).
        x: examples (N, D); y: their labels (N,).
        lr: the learner's learning rate.
        c1: the step-length factor (> 0).

    Returns:
        ``(beta, feasible)``, both (N,): ``feasible`` is False where no scale
        achieves the step (zero gradient, or the target is out of reach).

    Example:
        >>> from torchdht.linear.learners import LSR
        >>> w, ws = torch.zeros(2), torch.tensor([1.0, 0.0])
        >>> x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([1.0])
        >>> beta, ok = scaling_beta(LSR, w, ws, x, y, 0.1, 0.5)
        >>> step = LSR.sgd_step(w, beta[:, None] * x, y, 0.1)
        >>> round(float(step.norm()), 6), bool(ok)
        (0.5, True)
    """
    lr = check_lr(lr)
    if not (c1 > 0):
        raise TeacherError(f"c1 must be > 0, got {c1!r}")
    x = _check_x(x)
    dist = (w - w_star).norm()
    m = learner.logits(w, x).squeeze(-1)
    xn = x.norm(dim=-1)
    y = y.to(x.dtype)
    if isinstance(learner, LeastSquares):
        r = m - y
        ok = (r != 0) & (xn > 0)
        q = c1 * dist * torch.sign(r) / (lr * xn.clamp_min(1e-300))
        disc = y * y + 4.0 * m * q
        ok = ok & (disc >= 0)
        sq = disc.clamp_min(0).sqrt()
        # smaller-magnitude root of m b^2 - y b - q = 0, written to avoid cancellation
        den = y + torch.where(y >= 0, sq, -sq)
        ok = ok & (den != 0)
        beta = -2.0 * q / den.where(den != 0, torch.ones_like(den))
    elif isinstance(learner, Logistic):
        u = y * m
        ok = (y != 0) & (xn > 0)
        q = c1 * dist / (lr * y.abs().clamp_min(1e-300) * xn.clamp_min(1e-300))
        hi = torch.where(u > 0, _Z_PEAK / u.clamp_min(1e-300), 2.0 * q)
        phi_max = torch.where(u > 0, hi * torch.sigmoid(-u * hi), torch.full_like(u, math.inf))
        ok = ok & (q <= phi_max)
        lo = torch.zeros_like(q)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            up = mid * torch.sigmoid(-u * mid) < q
            lo = torch.where(up, mid, lo)
            hi = torch.where(up, hi, mid)
        beta = 0.5 * (lo + hi)
    else:
        raise TeacherTypeError(
            f"the scaling teacher supports the LSR and LR learners, not {learner!r}"
        )
    if float(dist) == 0.0:
        ok = torch.zeros_like(ok)
    return beta, ok


# ------------------------------------------------------------------ teachers
class SGDTeacher:
    """The random teacher: a uniformly random pool example each step.

    Args:
        learner: the learner (used to check the pool's labels).
        pool: ``(x, y)`` with ``x`` (N, D) and labels in the learner's label set.
        seed: seed of the teacher's own generator (default: nondeterministic).

    Example:
        >>> from torchdht.linear.learners import LR
        >>> t = SGDTeacher(LR, (torch.eye(3), torch.ones(3)), seed=0)
        >>> x, y = t.propose(torch.zeros(3))
        >>> x.shape, y.shape
        (torch.Size([1, 3]), torch.Size([1]))
    """

    def __init__(self, learner: LinearLearner, pool: Pool, seed: int | None = None) -> None:
        self.learner = _check_learner(learner)
        self.x, self.y = _check_pool(learner, pool)
        self.generator = _generator(seed)

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A uniformly random pool example."""
        _check_weights(self.learner, w, self.x.shape[1], "w")
        i = int(torch.randint(0, self.x.shape[0], (1,), generator=self.generator))
        return self.x[i : i + 1], self.y[i : i + 1]


class IMTTeacher:
    """Iterative machine teaching: the pool example that minimises eq. 4.

    The whole pool is scored at once (:func:`imt_scores`); ties go to the
    first example.

    Args:
        learner: the learner.
        w_star: the target weights.
        lr: the learner's learning rate.
        pool: ``(x, y)``.

    Example:
        >>> from torchdht.linear.learners import LR
        >>> t = IMTTeacher(LR, torch.tensor([1.0, 0.0]), 0.1,
        ...                (torch.eye(2), torch.tensor([1.0, 1.0])))
        >>> t.propose(torch.zeros(2))
        (tensor([[1., 0.]]), tensor([1.]))
    """

    def __init__(self, learner: LinearLearner, w_star: Tensor, lr: float, pool: Pool) -> None:
        self.learner = _check_learner(learner)
        self.x, self.y = _check_pool(learner, pool)
        self.w_star = _check_weights(learner, w_star, self.x.shape[1], "w_star")
        self.lr = check_lr(lr)

    def scores(self, w: Tensor) -> Tensor:
        """Eq. 4 for every pool example, shape (N,)."""
        _check_weights(self.learner, w, self.x.shape[1], "w")
        return imt_scores(self.learner, w, self.w_star, self.x, self.y, self.lr)

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """The pool example with the lowest score."""
        i = int(self.scores(w).argmin())
        return self.x[i : i + 1], self.y[i : i + 1]


class DHTTeacher:
    """Greedy data hallucination teaching (eq. 4): generate ``x`` in the box for a random label.

    Each step draws a label uniformly from the learner's hard label set (the
    paper's rule; ``labels="all"`` instead solves for every label and keeps
    the best), then minimises eq. 4 over ``x`` in the box with projected
    AMSGrad from ``restarts`` uniform random starts (and, when a pool is
    given, also from the best pool example carrying that label), all solved
    in one batched call; the best solution is returned. Started from the
    best pool example, the result is never worse than IMT restricted to that
    label.

    Args:
        learner: the learner.
        w_star: the target weights.
        lr: the learner's learning rate.
        box: ``(lo, hi)`` of shape (D,); default: the pool's per-dimension
            ``[min, max]``.
        pool: ``(x, y)``, optional; gives the default box and a warm start.
        restarts: random starts per label (default: 16).
        steps: solver steps (default: 100).
        solver_lr: solver step as a fraction of each box width (default: 0.02).
        betas: AMSGrad's betas (default: (0.8, 0.999)).
        amsgrad: AMSGrad rather than Adam (default: True).
        labels: ``"uniform"`` (default, the paper's) or ``"all"``.
        seed: seed of the teacher's own generator (labels and starts).

    Example:
        >>> from torchdht.linear.learners import LR
        >>> box = (-torch.ones(2), torch.ones(2))
        >>> t = DHTTeacher(LR, torch.tensor([2.0, 1.0]), 0.1, box=box, seed=0)
        >>> x, y = t.propose(torch.zeros(2))
        >>> bool((x.abs() <= 1).all()), y.shape
        (True, torch.Size([1]))
    """

    def __init__(
        self,
        learner: LinearLearner,
        w_star: Tensor,
        lr: float,
        box: BoxLike | None = None,
        pool: Pool | None = None,
        restarts: int = 16,
        steps: int = 100,
        solver_lr: float = 0.02,
        betas: tuple[float, float] = (0.8, 0.999),
        amsgrad: bool = True,
        labels: str = "uniform",
        seed: int | None = None,
    ) -> None:
        self.learner = _check_learner(learner)
        if pool is not None:
            self.pool: Pool | None = _check_pool(learner, pool)
        else:
            self.pool = None
        if box is None:
            if self.pool is None:
                raise TeacherError("box: give a box (lo, hi) or a pool to take the box from")
            box = box_from_data(self.pool[0], name="pool x")
        if not isinstance(box, (tuple, list)) or len(box) != 2:
            raise TeacherTypeError("box must be a pair (lo, hi) of tensors of shape (D,)")
        self.lo, self.hi = check_box(box[0], box[1])
        dim = self.lo.shape[0]
        if self.pool is not None and self.pool[0].shape[1] != dim:
            raise TeacherError(
                f"pool has D={self.pool[0].shape[1]} features but the box has D={dim}"
            )
        self.w_star = _check_weights(learner, w_star, dim, "w_star")
        self.lr = check_lr(lr)
        self.restarts = check_int(restarts, "restarts", 0 if self.pool is not None else 1)
        self.steps = check_int(steps, "steps", 0)
        self.solver_lr = check_lr(solver_lr, "solver_lr")
        self.betas = betas
        self.amsgrad = amsgrad
        if labels not in ("uniform", "all"):
            raise TeacherError(f"labels must be 'uniform' or 'all', got {labels!r}")
        self.labels = labels
        self.generator = _generator(seed)
        self.last: BoxSolveResult | None = None
        """The last batched solve (all restarts), for inspection."""

    def _label_set(self) -> Tensor:
        if isinstance(self.learner, Softmax):
            return torch.arange(self.learner.num_outputs)
        return torch.tensor([-1.0, 1.0], dtype=self.lo.dtype)

    def starts(self, w: Tensor, y: Tensor) -> Tensor:
        """Starting points for label ``y`` (1,): random in the box, then the best pool example."""
        x0 = sample_box(self.restarts, self.lo, self.hi, self.generator)
        if self.pool is not None:
            px, py = self.pool
            same = (py == y[0]) if py.dim() == 1 else torch.ones_like(py[:, 0], dtype=torch.bool)
            if bool(same.any()):
                cand = px[same]
                f = self.learner.objective(w, self.w_star, cand, y.expand(cand.shape[0]), self.lr)
                x0 = torch.cat([x0, cand[int(f.argmin())].unsqueeze(0).to(x0.dtype)])
        if x0.shape[0] == 0:  # restarts=0 and no pool example with this label: the centre
            x0 = (0.5 * (self.lo + self.hi)).unsqueeze(0)
        return x0

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A label (uniform, or each in turn) and the ``x`` in the box minimising eq. 4 for it."""
        _check_weights(self.learner, w, self.lo.shape[0], "w")
        if self.labels == "uniform":
            cands = self.learner.sample_labels(1, self.generator, dtype=self.lo.dtype)
        else:
            cands = self._label_set()
        x0s, ys = [], []
        for k in range(cands.shape[0]):
            x0 = self.starts(w, cands[k : k + 1])
            x0s.append(x0)
            ys.append(cands[k : k + 1].expand(x0.shape[0]))
        x0, y = torch.cat(x0s), torch.cat(ys)
        out = dht_solve(
            self.learner, w, self.w_star, y, self.lr, (self.lo, self.hi), x0,
            steps=self.steps, solver_lr=self.solver_lr, betas=self.betas, amsgrad=self.amsgrad,
        )
        self.last = out
        i = int(out.after.argmin())
        return out.x[i : i + 1], y[i : i + 1].clone()


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
        >>> from torchdht.linear.learners import LR
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
        self.learner = _check_learner(learner)
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


class ScalingTeacher:
    """Theorem 1's teacher: ``x~ = beta x`` so that the step has length ``c1 |w - w*|``.

    Each step draws uniformly among the pool examples for which such a
    ``beta`` exists (:func:`scaling_beta`) and returns the scaled example;
    the learner's update is then ``-k grad l(x, y | w)`` with
    ``|lr k grad l(x, y | w)| = c1 |w - w*|``. Under interpolation (``w*``
    fits every example) the direction has a positive inner product with
    ``w - w*``, and ``|w - w*|`` falls geometrically in expectation for
    small enough ``c1``. The scaled ``x`` is not confined to any box.

    Args:
        learner: ``LSR`` or ``LR``.
        w_star: the target weights.
        lr: the learner's learning rate.
        pool: ``(x, y)``.
        c1: the step-length factor (default: 0.5).
        pick: ``"random"`` (default; Theorem 1's random index) draws uniformly
            among the feasible examples; ``"greedy"`` takes the feasible
            example whose scaled step lands closest to ``w*``.
        seed: seed of the teacher's own generator.

    Example:
        >>> from torchdht.linear.learners import LSR
        >>> x = torch.eye(2); ws = torch.tensor([1.0, -1.0])
        >>> t = ScalingTeacher(LSR, ws, 0.01, (x, x @ ws), c1=0.5, seed=0)
        >>> w = torch.zeros(2)
        >>> xb, yb = t.propose(w)
        >>> round(float((LSR.sgd_step(w, xb, yb, 0.01) - w).norm() / (w - ws).norm()), 6)
        0.5
    """

    def __init__(
        self,
        learner: LinearLearner,
        w_star: Tensor,
        lr: float,
        pool: Pool,
        c1: float = 0.5,
        pick: str = "random",
        seed: int | None = None,
    ) -> None:
        self.learner = _check_learner(learner)
        if pick not in ("random", "greedy"):
            raise TeacherError(f"pick must be 'random' or 'greedy', got {pick!r}")
        self.pick = pick
        if not isinstance(learner, (LeastSquares, Logistic)):
            raise TeacherTypeError(
                f"the scaling teacher supports the LSR and LR learners, not {learner!r}"
            )
        self.x, self.y = _check_pool(learner, pool)
        self.w_star = _check_weights(learner, w_star, self.x.shape[1], "w_star")
        self.lr = check_lr(lr)
        self.c1 = check_float(c1, "c1", 0.0, low_open=True, finite=False)
        self.generator = _generator(seed)

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A random feasible pool example, scaled; the zero input when ``w == w*``."""
        _check_weights(self.learner, w, self.x.shape[1], "w")
        beta, ok = scaling_beta(self.learner, w, self.w_star, self.x, self.y, self.lr, self.c1)
        idx = ok.nonzero().flatten()
        if idx.numel() == 0:  # nothing can make the step (e.g. w == w*): a zero-gradient input
            return torch.zeros_like(self.x[:1]), self.y[:1]
        if self.pick == "random":
            i = int(idx[torch.randint(0, idx.numel(), (1,), generator=self.generator)])
        else:
            xs = beta[idx].unsqueeze(-1) * self.x[idx]
            f = self.learner.objective(w, self.w_star, xs, self.y[idx], self.lr)
            i = int(idx[int(f.argmin())])
        return beta[i] * self.x[i : i + 1], self.y[i : i + 1]


TeacherLike = Union[SGDTeacher, IMTTeacher, DHTTeacher, LabelSynthesis, ScalingTeacher]
