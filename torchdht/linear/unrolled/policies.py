"""The data-transformation policies trained by unrolling (paper section 3.3.1, 5.1, 5.2).

:class:`TransformTeacher` is the data-transformation policy
``x~ = pi_theta(x, y, w_t, w_t - w*)``: it turns a random pool example into a
teaching example with the same label. :class:`BlackBoxTeacher` is the same
policy without ``w*``: its inputs are ``(x, y, w_t)`` and it is trained on the
learners' loss on held-out validation data instead of ``|w_v - w*|^2``.
Training and teaching are :class:`~torchdht.linear.unrolled.base.UnrolledTeacher`'s:
:meth:`~UnrolledTeacher.fit` unrolls the learner's SGD, :meth:`~UnrolledTeacher.propose`
answers like every other teacher and plugs into :func:`~torchdht.linear.run`.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ...errors import TeacherError
from ..omniscient.checks import Pool, check_learner, check_pool
from ..omniscient.learners import LinearLearner
from .base import UnrolledTeacher
from .unroll import validation_loss

__all__ = ["BlackBoxTeacher", "TransformTeacher"]


class TransformTeacher(UnrolledTeacher):
    """The omniscient data-transformation policy ``x~ = pi(x, y, w_t, w_t - w*)`` (section 3.3.1).

    Trained by unrolling ``unroll`` SGD steps of ``trajectories`` learners
    and minimising ``mean |w_v - w*|^2 + alpha * sum_i l(x~_i, y_i | sg(w_i))``
    with Adam. The policy's input is ``[w, w - w*, x, onehot(y)]``; its
    output is ``x~`` (or ``x + output`` with ``residual=True``), unconstrained,
    as in the paper.

    Args:
        learner: the learner (LSR, LR or Softmax(C)).
        pool: ``(x, y)`` the random examples to transform are drawn from.
        lr: the learner's SGD step (the same as when teaching).
        w_star: the target weights.
        policy: an ``nn.Module`` mapping (N, in_features) to (N, D); default
            :func:`policy_mlp` with ``hidden`` and ``batch_norm``.
        hidden: hidden sizes of the default policy (default: (32, 16), the
            paper's half-moon policy).
        batch_norm: BatchNorm1d after each hidden layer of the default policy.
        residual: the policy outputs a correction added to ``x``.
        box: ``(lo, hi)`` of shape (D,): squash the policy's output into the
            box, ``x~ = lo + (hi - lo) * sigmoid(output)`` (default: no
            constraint, as in the paper; greedy DHT's feasible set is the data's
            box, so this makes the two comparable).
        unroll: unrolled steps per outer iteration, ``v`` (default 40).
        truncate: back-propagate through the last ``truncate`` steps only.
        alpha: weight of the auxiliary loss (default 0).
        trajectories: learners unrolled in parallel, ``K`` (default 8).
        horizon: steps after which a learner restarts from a fresh random
            initialisation (default 300, the teaching length).
        teacher_lr: Adam's step (default 2e-3, the paper's).
        betas: Adam's betas (default (0.9, 0.999), the paper's).
        grad_clip: clip the policy's gradient norm (default: no clipping).
        state_grad: exact back-propagation through the state the policy sees
            (default True); see :func:`~torchdht.linear.unrolled.unroll.unroll`.
        seed: seed of the teacher's generator (policy init, pool draws,
            learner restarts).

    Example:
        >>> import torch
        >>> from torchdht.linear.omniscient import LR
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = TransformTeacher(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]),
        ...                      unroll=5, seed=0)
        >>> h = t.fit(iters=30)
        >>> xt, yt = t.propose(torch.zeros(2))
        >>> h.loss.shape, xt.shape, yt.shape
        (torch.Size([30]), torch.Size([1, 2]), torch.Size([1]))
    """

    kind = "transform"

    def __init__(self, learner: LinearLearner, pool: Pool, lr: float, *, w_star: Tensor,
                 **kwargs: Any) -> None:
        super().__init__(learner, pool, lr, w_star=w_star, **kwargs)


class BlackBoxTeacher(UnrolledTeacher):
    """The black-box transformation policy ``x~ = pi(x, y, w_t)``, scored on validation loss.

    As :class:`TransformTeacher` without ``w*`` (section 5.2): the policy sees
    ``[w, x, onehot(y)]`` and the outer loss is the learners' mean loss on
    ``validation`` after the unrolled steps, plus the same auxiliary term.
    Keep ``validation`` disjoint from the test data you report on.

    Args:
        learner: the learner.
        pool: ``(x, y)`` the random examples are drawn from.
        lr: the learner's SGD step.
        validation: ``(x, y)`` held-out data the outer loss is measured on.
        **kwargs: as for :class:`TransformTeacher`.

    Example:
        >>> import torch
        >>> from torchdht.linear.omniscient import LR
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = BlackBoxTeacher(LR, (x[:48], y[:48]), 0.1, validation=(x[48:], y[48:]),
        ...                     unroll=5, seed=0)
        >>> t.in_features, t.fit(iters=5).final.shape
        (6, torch.Size([5]))
    """

    kind = "blackbox"
    omniscient = False

    def __init__(self, learner: LinearLearner, pool: Pool, lr: float, *,
                 validation: Pool, **kwargs: Any) -> None:
        check_learner(learner)
        x, _ = check_pool(learner, pool)
        vx, vy = check_pool(learner, validation, name="validation")
        if vx.shape[1] != x.shape[1]:
            raise TeacherError(
                f"validation has D={vx.shape[1]} features but the pool has D={x.shape[1]}"
            )
        self.validation = (vx.to(x.dtype), vy)
        super().__init__(learner, pool, lr, **kwargs)

    def final_loss(self) -> Callable[[Tensor], Tensor]:
        return validation_loss(self.learner, *self.validation)

    def extra_config(self) -> dict[str, Any]:
        return {"validation_size": self.validation[0].shape[0]}
