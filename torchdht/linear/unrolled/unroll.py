"""Differentiable unrolling of a linear learner's SGD (section 3.3 of the paper).

A parameterized teacher makes one example per step for each of ``K``
independent learners ("trajectories"); each learner takes one SGD step on its
example; after ``v`` steps the teacher is scored on where the learners ended
up. :func:`unroll` runs those ``v`` steps as pure tensor functions, with no
in-place writes and no ``nn.Parameter`` re-wrapping of the learner's weights,
so the autograd graph reaches the teacher's parameters through every step::

    loss = final_loss(w_v) + alpha * sum_i mean_k l(x~_i, y_i | sg(w_i)) + sum_i extra_i

``final_loss`` is ``mean_k |w_v - w*|^2`` for an omniscient teacher
(:func:`distance_loss`) or the learners' mean loss on held-out data for a
black-box one (:func:`validation_loss`); ``sg`` is stop-gradient (the paper's
simplification of the auxiliary term); ``extra_i`` is whatever the generator
adds per step (zero for the transformation policy, a KL term for a VAE teacher).

With ``truncate=t`` only the last ``t`` steps keep a graph: the first
``v - t`` run under ``torch.no_grad`` and contribute neither auxiliary nor
extra terms, so memory grows with ``t``, not ``v`` (truncated back-propagation
through time).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..._checks import check_int
from ...errors import TeacherError
from ..omniscient.learners import LinearLearner, Softmax

__all__ = [
    "Generate",
    "UnrollResult",
    "distance_loss",
    "learner_loss",
    "one_hot_labels",
    "sgd_steps",
    "unroll",
    "validation_loss",
]

Generate = Callable[[Tensor, int], "tuple[Tensor, Tensor | None]"]
"""``generate(w, i) -> (x, extra)``: step ``i``'s examples (K, D) for learners ``w`` (K, *shape),
and an optional scalar added to the loss (or None)."""


class UnrollResult(NamedTuple):
    """What :func:`unroll` returns."""

    loss: Tensor
    """The outer loss, a scalar with a graph to whatever ``generate`` used."""
    final: Tensor
    """``final_loss(w_v)``, detached."""
    aux: Tensor
    """The auxiliary sum ``sum_i mean_k l(x~_i, y_i | sg(w_i))`` (without ``alpha``), detached."""
    extra: Tensor
    """The sum of ``generate``'s extra terms, detached (zero when it returns None)."""
    w: Tensor
    """``w_v``, detached, shape (K, *w.shape)."""


def learner_loss(learner: LinearLearner, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Each learner's loss on its own example: ``w`` (K, *shape), ``x`` (K, D) -> (K,).

    No argument checks (the unrolling inner loop calls it every step).

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> learner_loss(LR, torch.zeros(3, 2), torch.ones(3, 2), torch.ones(3))
        tensor([0.6931, 0.6931, 0.6931])
    """
    wm = learner.matrix(w)
    logits = torch.einsum("kcd,kd->kc", wm, x)
    return learner.logit_loss(logits, learner.target_rows(y, x.dtype))


def sgd_steps(learner: LinearLearner, w: Tensor, x: Tensor, y: Tensor, lr: float) -> Tensor:
    """One SGD step for each of ``K`` learners on its own example, ``w_k - lr grad l(x_k, y_k)``.

    Args:
        learner: the learner.
        w: weights, shape (K, *learner.weight_shape(D)).
        x: one example per learner, shape (K, D).
        y: its label, shape (K,) (softmax: (K,) indices or (K, C) soft labels).
        lr: the SGD step.

    Returns:
        The new weights, same shape as ``w``; differentiable in ``w`` and ``x``.

    Example:
        >>> from torchdht.linear.omniscient import LSR
        >>> w = torch.zeros(2, 2)
        >>> x, y = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([1.0, -1.0])
        >>> sgd_steps(LSR, w, x, y, 0.1)
        tensor([[ 0.1000,  0.2000],
                [ 0.0000, -0.1000]])
    """
    wm = learner.matrix(w)
    logits = torch.einsum("kcd,kd->kc", wm, x)
    a = learner.logit_grad(logits, learner.target_rows(y, x.dtype))
    g = a.unsqueeze(-1) * x.unsqueeze(-2)
    return w - lr * g.reshape(w.shape)


def distance_loss(w_star: Tensor) -> Callable[[Tensor], Tensor]:
    """The omniscient outer loss ``mean_k |w_k - w*|^2``.

    Example:
        >>> distance_loss(torch.ones(2))(torch.zeros(3, 2))
        tensor(2.)
    """
    def final(w: Tensor) -> Tensor:
        return (w - w_star).pow(2).flatten(1).sum(1).mean()

    return final


def validation_loss(learner: LinearLearner, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    """The black-box outer loss: the learners' mean loss on held-out ``(x, y)``.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> f = validation_loss(LR, torch.ones(4, 2), torch.ones(4))
        >>> f(torch.zeros(3, 2))
        tensor(0.6931)
    """
    t = learner.target_rows(y, x.dtype)

    def final(w: Tensor) -> Tensor:
        logits = torch.einsum("kcd,nd->knc", learner.matrix(w), x)
        return learner.logit_loss(logits, t).mean()

    return final


def unroll(
    generate: Generate,
    learner: LinearLearner,
    w0: Tensor,
    labels: Tensor,
    lr: float,
    final_loss: Callable[[Tensor], Tensor],
    *,
    alpha: float = 0.0,
    truncate: int | None = None,
    state_grad: bool = True,
) -> UnrollResult:
    """Unroll ``v = len(labels)`` SGD steps of ``K`` learners on generated examples.

    Step ``i`` asks ``generate(w_i, i)`` for one example per learner, then
    ``w_{i+1} = w_i - lr grad l(x~_i, labels[i] | w_i)``. The loss is the
    module docstring's. Nothing is written in place and nothing is detached
    except where the objective says so, so ``loss.backward()`` (or
    ``torch.autograd.grad``) gives the exact gradient of the unrolled objective
    with respect to whatever ``generate`` closes over.

    Args:
        generate: ``generate(w, i) -> (x, extra)``, ``x`` of shape (K, D) and
            ``extra`` a scalar tensor or None.
        learner: the learner.
        w0: the learners' starting weights, shape (K, *shape); treated as a constant.
        labels: the learners' labels per step, shape (v, K) (softmax: (v, K) or (v, K, C)).
        lr: the learners' SGD step.
        final_loss: scalar function of ``w_v`` (see :func:`distance_loss`,
            :func:`validation_loss`).
        alpha: weight of the auxiliary loss (default 0).
        truncate: keep the graph through the last ``truncate`` steps only
            (default: all ``v``).
        state_grad: let the gradient flow through the learner state that
            ``generate`` sees (exact back-propagation through time; default).
            False feeds ``generate`` a detached ``w_i``, which is cheaper
            (one ``generate`` call per step instead of two when ``alpha > 0``).

    Returns:
        An :class:`UnrollResult`.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> theta = torch.zeros(2, requires_grad=True)
        >>> gen = lambda w, i: (theta.expand(w.shape[0], 2), None)
        >>> r = unroll(gen, LR, torch.zeros(4, 2), torch.ones(5, 4), 0.5,
        ...            distance_loss(torch.tensor([1.0, 1.0])))
        >>> r.loss.backward()
        >>> bool(theta.grad.norm() > 0), r.w.shape
        (True, torch.Size([4, 2]))
    """
    if not isinstance(labels, Tensor) or labels.dim() < 2:
        raise TeacherError("labels must be a tensor of shape (v, K, ...) with v >= 1")
    v = labels.shape[0]
    if v < 1:
        raise TeacherError("labels must hold at least one step (v >= 1)")
    if w0.shape[0] != labels.shape[1]:
        raise TeacherError(f"w0 holds {w0.shape[0]} learners but labels hold {labels.shape[1]}")
    if truncate is None:
        truncate = v
    truncate = check_int(truncate, "truncate (at most the unroll length)", 1, v)
    w = w0.detach()
    zero = w.new_zeros(())
    aux, extra = zero, zero
    with torch.no_grad():
        for i in range(v - truncate):
            x, _ = generate(w, i)
            w = sgd_steps(learner, w, x.to(w.dtype), labels[i], lr)
    for i in range(v - truncate, v):
        w_sg = w.detach()
        x, e = generate(w if state_grad else w_sg, i)
        x = x.to(w.dtype)
        if e is not None:
            extra = extra + e
        if alpha:
            x_aux = generate(w_sg, i)[0].to(w.dtype) if state_grad else x
            aux = aux + learner_loss(learner, w_sg, x_aux, labels[i]).mean()
        w = sgd_steps(learner, w, x, labels[i], lr)
    final = final_loss(w)
    loss = final + alpha * aux + extra
    return UnrollResult(loss, final.detach(), aux.detach(), extra.detach(), w.detach())


def one_hot_labels(learner: LinearLearner, y: Tensor, dtype: torch.dtype) -> Tensor:
    """Labels as one-hot rows for a policy's input: (N,) -> (N, classes).

    LSR and LR labels are read by sign (``y > 0`` is class 1); softmax labels
    are class indices (or soft labels, passed through).

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> one_hot_labels(LR, torch.tensor([-1.0, 1.0]), torch.float32)
        tensor([[1., 0.],
                [0., 1.]])
    """
    if isinstance(learner, Softmax):
        if y.is_floating_point() and y.dim() == 2:
            return y.to(dtype)
        return torch.nn.functional.one_hot(y.long(), learner.num_outputs).to(dtype)
    return torch.nn.functional.one_hot((y > 0).long(), 2).to(dtype)
