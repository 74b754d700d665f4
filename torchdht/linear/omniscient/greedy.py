"""Greedy omniscient teachers: random (SGD), IMT and greedy data hallucination (DHT).

Every teacher is built with what it needs (learner, ``w*``, the learner's
``lr``, a pool of examples, a box) and answers one protocol
(:class:`~torchdht.linear.omniscient.checks.Teacher`)::

    x, y = teacher.propose(w)     # x: (1, D); y: (1,) or, softmax, (1,) / (1, C)

which is the example to feed the learner at its current weights ``w``; the
learner then takes ``w <- learner.sgd_step(w, x, y, lr)``.

* :class:`SGDTeacher` -- a uniformly random pool example (the "random teacher").
* :class:`IMTTeacher` -- the pool example minimising the greedy objective
  (eq. 4), scored for the whole pool at once [Liu et al. 2017].
* :class:`DHTTeacher` -- greedy data hallucination (section 3.2): a label
  drawn uniformly, then ``x`` minimising eq. 4 inside the data's box, by
  batched projected AMSGrad from several restarts solved at once.

The pure functions behind them (:func:`imt_scores`, :func:`dht_solve`) are
batched over problems. Label synthesis and Theorem 1's scaling teacher are in
:mod:`~torchdht.linear.omniscient.labels` and
:mod:`~torchdht.linear.omniscient.scaling`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_int
from ...errors import TeacherError, TeacherTypeError
from ...functional.box import BoxSolveResult, box_from_data, check_box, sample_box, solve_box
from .checks import BoxLike, Pool, check_learner, check_pool, check_weights, make_generator
from .learners import LinearLearner, Softmax, check_lr, check_x

__all__ = ["DHTTeacher", "IMTTeacher", "SGDTeacher", "dht_solve", "imt_scores"]


def imt_scores(
    learner: LinearLearner, w: Tensor, w_star: Tensor, x: Tensor, y: Tensor, lr: float
) -> Tensor:
    """Eq. 4 for every pool example at once (IMT's selection score), shape (N,).

    Example:
        >>> from torchdht.linear.omniscient.learners import LR
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
        >>> from torchdht.linear.omniscient.learners import LR
        >>> box = (-torch.ones(2), torch.ones(2))
        >>> out = dht_solve(LR, torch.zeros(2), torch.tensor([1.0, 1.0]), torch.tensor([1.0]),
        ...                 0.1, box, torch.zeros(1, 2))
        >>> out.x
        tensor([[1., 1.]])
    """
    lr = check_lr(lr)
    lo, hi = check_box(*box)
    x0 = check_x(x0, "x0")
    if x0.shape[-1] != lo.shape[0]:
        raise TeacherError(f"x0 has D={x0.shape[-1]} but the box has D={lo.shape[0]}")

    def fg(x: Tensor) -> tuple[Tensor, Tensor]:
        return learner.objective_and_grad(w, w_star, x, y, lr)

    return solve_box(fg, x0, lo, hi, steps=steps, lr=solver_lr, betas=betas, amsgrad=amsgrad)


# ------------------------------------------------------------------ teachers
class SGDTeacher:
    """The random teacher: a uniformly random pool example each step.

    Args:
        learner: the learner (used to check the pool's labels).
        pool: ``(x, y)`` with ``x`` (N, D) and labels in the learner's label set.
        seed: seed of the teacher's own generator (default: nondeterministic).

    Example:
        >>> from torchdht.linear.omniscient.learners import LR
        >>> t = SGDTeacher(LR, (torch.eye(3), torch.ones(3)), seed=0)
        >>> x, y = t.propose(torch.zeros(3))
        >>> x.shape, y.shape
        (torch.Size([1, 3]), torch.Size([1]))
    """

    def __init__(self, learner: LinearLearner, pool: Pool, seed: int | None = None) -> None:
        self.learner = check_learner(learner)
        self.x, self.y = check_pool(learner, pool)
        self.generator = make_generator(seed)

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A uniformly random pool example."""
        check_weights(self.learner, w, self.x.shape[1], "w")
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
        >>> from torchdht.linear.omniscient.learners import LR
        >>> t = IMTTeacher(LR, torch.tensor([1.0, 0.0]), 0.1,
        ...                (torch.eye(2), torch.tensor([1.0, 1.0])))
        >>> t.propose(torch.zeros(2))
        (tensor([[1., 0.]]), tensor([1.]))
    """

    def __init__(self, learner: LinearLearner, w_star: Tensor, lr: float, pool: Pool) -> None:
        self.learner = check_learner(learner)
        self.x, self.y = check_pool(learner, pool)
        self.w_star = check_weights(learner, w_star, self.x.shape[1], "w_star")
        self.lr = check_lr(lr)

    def scores(self, w: Tensor) -> Tensor:
        """Eq. 4 for every pool example, shape (N,)."""
        check_weights(self.learner, w, self.x.shape[1], "w")
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
        >>> from torchdht.linear.omniscient.learners import LR
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
        self.learner = check_learner(learner)
        if pool is not None:
            self.pool: Pool | None = check_pool(learner, pool)
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
        self.w_star = check_weights(learner, w_star, dim, "w_star")
        self.lr = check_lr(lr)
        self.restarts = check_int(restarts, "restarts", 0 if self.pool is not None else 1)
        self.steps = check_int(steps, "steps", 0)
        self.solver_lr = check_lr(solver_lr, "solver_lr")
        self.betas = betas
        self.amsgrad = amsgrad
        if labels not in ("uniform", "all"):
            raise TeacherError(f"labels must be 'uniform' or 'all', got {labels!r}")
        self.labels = labels
        self.generator = make_generator(seed)
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
        check_weights(self.learner, w, self.lo.shape[0], "w")
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
