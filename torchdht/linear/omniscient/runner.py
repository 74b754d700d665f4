"""The teaching loop: a teacher proposes, the learner takes one SGD step, we record.

``run(teacher, learner, w0, w_star, iters, lr, test=(x, y))`` returns a
:class:`History` with ``|w_t - w*|`` and the test accuracy for
``t = 0 .. iters`` (entry 0 is the starting point), the weights and the
examples the teacher fed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..._checks import check_int
from ...errors import TeacherError, TeacherTypeError
from .checks import Teacher, check_learner, check_weights
from .learners import LinearLearner, Softmax, check_lr

__all__ = ["History", "run"]


class History(NamedTuple):
    """What :func:`run` records."""

    distance: Tensor
    """``|w_t - w*|`` for t = 0 .. iters, shape (iters + 1,)."""
    accuracy: Tensor | None
    """Test accuracy for t = 0 .. iters, shape (iters + 1,), or None without ``test``."""
    weights: Tensor
    """``w_t`` for t = 0 .. iters, shape (iters + 1, *w.shape)."""
    xs: Tensor
    """The fed inputs, shape (iters, D)."""
    ys: Tensor
    """The fed labels as floats: (iters,) for LSR/LR, (iters, C) soft labels for softmax."""


def run(
    teacher: Teacher,
    learner: LinearLearner,
    w0: Tensor,
    w_star: Tensor,
    iters: int,
    lr: float,
    test: tuple[Tensor, Tensor] | None = None,
) -> History:
    """Teach ``learner`` from ``w0`` for ``iters`` single-example SGD steps.

    Args:
        teacher: anything with ``propose(w) -> (x, y)``.
        learner: the learner being taught.
        w0: starting weights.
        w_star: the target (only measured against; the teacher has its own).
        iters: number of steps (>= 0).
        lr: the learner's SGD learning rate (> 0).
        test: ``(x, y)`` to measure accuracy on, or None.

    Returns:
        A :class:`History`.

    Example:
        >>> from torchdht.linear.omniscient import LR, IMTTeacher
        >>> x = torch.tensor([[1.0, 0.5], [-1.0, 0.2], [0.3, -1.0]])
        >>> y = torch.tensor([1.0, -1.0, -1.0])
        >>> ws = torch.tensor([2.0, 1.0])
        >>> h = run(IMTTeacher(LR, ws, 0.1, (x, y)), LR, torch.zeros(2), ws, 20, 0.1, test=(x, y))
        >>> bool(h.distance[-1] < h.distance[0]), h.accuracy.shape
        (True, torch.Size([21]))
    """
    check_learner(learner)
    if not callable(getattr(teacher, "propose", None)):
        raise TeacherTypeError(
            f"teacher must have a propose(w) method, got {type(teacher).__name__}"
        )
    iters = check_int(iters, "iters", 0)
    lr = check_lr(lr)
    if not isinstance(w0, Tensor) or not w0.is_floating_point():
        raise TeacherTypeError("w0 must be a floating-point tensor")
    dim = w0.shape[-1]
    check_weights(learner, w0, dim, "w0")
    check_weights(learner, w_star, dim, "w_star")
    if w_star.dtype != w0.dtype:
        raise TeacherTypeError(
            f"w0 ({w0.dtype}) and w_star ({w_star.dtype}) must have the same dtype"
        )
    if test is not None:
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            raise TeacherTypeError("test must be a pair (x, y)")
        tx, ty = test
        if not isinstance(tx, Tensor) or tx.dim() != 2 or tx.shape[1] != dim:
            raise TeacherError(f"test: x must have shape (N, {dim}) to match w0")
        if not bool(torch.isfinite(tx).all()):
            raise TeacherError("test: x contains NaN or inf")
        ty = learner.check_labels(ty, tx.shape[0], name="test labels")
        tx = tx.to(w0.dtype)
    soft = isinstance(learner, Softmax)
    w = w0.detach().clone()
    weights = [w]
    acc = [learner.accuracy(w, tx, ty)] if test is not None else []
    xs, ys = [], []
    for _ in range(iters):
        x, y = teacher.propose(w)
        w = learner.sgd_step(w, x, y, lr)
        weights.append(w)
        if test is not None:
            acc.append(learner.accuracy(w, tx, ty))
        xs.append(x.reshape(1, dim).to(w0.dtype))
        if soft and not y.is_floating_point():
            y = torch.nn.functional.one_hot(y, learner.num_outputs)
        ys.append(y.to(w0.dtype).reshape((1, learner.num_outputs) if soft else (1,)))
    wt = torch.stack(weights)
    dist = (wt - w_star).flatten(1).norm(dim=1)
    empty_y = torch.zeros((0, learner.num_outputs) if soft else (0,), dtype=w0.dtype)
    return History(
        distance=dist,
        accuracy=torch.tensor(acc, dtype=torch.float64) if test is not None else None,
        weights=wt,
        xs=torch.cat(xs) if xs else torch.zeros(0, dim, dtype=w0.dtype),
        ys=torch.cat(ys) if ys else empty_y,
    )
