"""The teacher protocol and the argument checks shared by every linear teacher and the runner.

The numbers (counts, rates, seeds) go through :mod:`torchdht._checks`; what
is particular to linear teaching lives here: a learner, a pool ``(x, y)``, a
weight tensor for ``D`` features, and a teacher's own random generator. A
wrong type raises :class:`~torchdht.errors.TeacherTypeError`, a wrong value
:class:`~torchdht.errors.TeacherError`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..._checks import check_seed
from ...errors import TeacherError, TeacherTypeError
from .learners import LinearLearner

__all__ = [
    "BoxLike",
    "Pool",
    "Teacher",
    "check_learner",
    "check_pool",
    "check_weights",
    "make_generator",
]

Pool = tuple[Tensor, Tensor]
"""A pool of examples ``(x (N, D), y)``, labels in the learner's label set."""
BoxLike = tuple[Tensor, Tensor]
"""A box ``(lo, hi)``, each of shape (D,)."""


class Teacher(Protocol):
    """What every teacher answers: the next example for a learner at ``w``."""

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(x, y)`` with ``x`` of shape (1, D) and its label."""
        ...


def check_learner(learner: object) -> LinearLearner:
    """``learner`` if it is one of the linear learners (LSR, LR, Softmax(C)).

    Example:
        >>> from torchdht.linear.omniscient.learners import LR
        >>> check_learner(LR)
        Logistic()
    """
    if not isinstance(learner, LinearLearner):
        raise TeacherTypeError(
            f"learner must be a torchdht.linear learner (LSR, LR or Softmax(C)), got "
            f"{type(learner).__name__}"
        )
    return learner


def check_pool(learner: LinearLearner, pool: Pool, name: str = "pool") -> Pool:
    """``pool`` as ``(x, y)``: ``x`` floating point (N, D), N >= 1, finite; labels checked.

    Example:
        >>> from torchdht.linear.omniscient.learners import LR
        >>> x, y = check_pool(LR, (torch.zeros(2, 3), torch.tensor([1.0, -1.0])))
        >>> x.shape
        torch.Size([2, 3])
    """
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


def check_weights(learner: LinearLearner, w: Tensor, dim: int, name: str) -> Tensor:
    """``w`` if it is a finite floating-point tensor of the learner's shape for ``dim`` features.

    Example:
        >>> from torchdht.linear.omniscient.learners import Softmax
        >>> check_weights(Softmax(3), torch.zeros(3, 2), 2, "w").shape
        torch.Size([3, 2])
        >>> check_weights(Softmax(3), torch.zeros(2), 2, "w")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchdht.errors.TeacherError: w has shape (2,), but ... learner expects (3, 2)
    """
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


def make_generator(seed: int | None) -> torch.Generator:
    """A teacher's own CPU generator: seeded with ``seed``, or from entropy when None.

    Example:
        >>> torch.equal(torch.rand(2, generator=make_generator(0)),
        ...             torch.rand(2, generator=make_generator(0)))
        True
    """
    g = torch.Generator()
    seed = check_seed(seed)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g
