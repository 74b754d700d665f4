"""Theorem 1's scaling teacher: ``x~ = beta x`` so that the SGD step is ``c1 |w - w*|`` long.

* :func:`scaling_beta` -- the scale for every pool row at once (LSR: closed
  form; LR: bisection), with a feasibility mask.
* :class:`ScalingTeacher` -- a random (or the best) feasible pool example, scaled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..._checks import check_float
from ...errors import TeacherError, TeacherTypeError
from .checks import Pool, check_learner, check_pool, check_weights, make_generator
from .learners import LeastSquares, LinearLearner, Logistic, check_lr, check_x

__all__ = ["ScalingTeacher", "scaling_beta"]


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
        >>> from torchdht.linear.omniscient.learners import LSR
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
    x = check_x(x)
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
        >>> from torchdht.linear.omniscient.learners import LSR
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
        self.learner = check_learner(learner)
        if pick not in ("random", "greedy"):
            raise TeacherError(f"pick must be 'random' or 'greedy', got {pick!r}")
        self.pick = pick
        if not isinstance(learner, (LeastSquares, Logistic)):
            raise TeacherTypeError(
                f"the scaling teacher supports the LSR and LR learners, not {learner!r}"
            )
        self.x, self.y = check_pool(learner, pool)
        self.w_star = check_weights(learner, w_star, self.x.shape[1], "w_star")
        self.lr = check_lr(lr)
        self.c1 = check_float(c1, "c1", 0.0, low_open=True, finite=False)
        self.generator = make_generator(seed)

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A random feasible pool example, scaled; the zero input when ``w == w*``."""
        check_weights(self.learner, w, self.x.shape[1], "w")
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
