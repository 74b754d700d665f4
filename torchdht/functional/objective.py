"""The greedy teaching objective (eq. 4 and eq. 9 of the DHT paper).

For a head with parameters ``theta``, a target ``theta*``, the learner's
learning rate ``eta`` and one example ``(z, y)`` with loss ``l``::

    f(z) = eta^2 * |d l / d theta|^2 - 2 * eta * <theta - theta*, d l / d theta>

which is ``|theta - eta * grad - theta*|^2 - |theta - theta*|^2``: how much one
SGD step on that single example moves ``theta`` towards ``theta*`` (negative
is closer). Two implementations live here: a generic one through
``torch.func`` for any head function, and an exact closed form for a linear
head (weight and optional bias) under softmax cross-entropy, together with
its gradient with respect to the features.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad, vmap

from ..errors import TeacherError
from ..typing import HeadFn, Params, StepSize, Targets

__all__ = [
    "cross_entropy_rows",
    "greedy_objective",
    "linear_ce_objective",
    "linear_ce_objective_and_grad",
    "linear_ce_closure",
    "ce_logit_grad",
]


def _soft_targets(targets: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    if targets.is_floating_point():
        return targets.to(dtype)
    return F.one_hot(targets.long(), num_classes).to(dtype)


def check_linear_args(z: Tensor, targets: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Raise a clear error unless z (N, D), weight (C, D), bias (C,) and targets fit together."""
    if z.dim() != 2:
        raise TeacherError(f"z must have shape (N, D), got {tuple(z.shape)}")
    if weight.dim() != 2 or weight.shape[1] != z.shape[1]:
        raise TeacherError(
            f"weight must have shape (C, {z.shape[1]}) to match z of shape {tuple(z.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise TeacherError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    n, c = z.shape[0], weight.shape[0]
    want = (n, c) if targets.is_floating_point() else (n,)
    if tuple(targets.shape) != want:
        raise TeacherError(
            f"targets must have shape {want} (class indices (N,) or soft targets (N, C)), "
            f"got {tuple(targets.shape)}"
        )


def ce_logit_grad(logits: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """Gradient of softmax cross-entropy with respect to the logits.

    Args:
        logits: Tensor of shape (N, C).
        targets: class indices of shape (N,) or class weights of shape (N, C)
            (soft targets; rows need not sum to one).

    Returns:
        ``(g, p)``: the gradient ``sum(y) * softmax(logits) - y`` of shape
        (N, C) and the probabilities ``softmax(logits)``.

    Example:
        >>> g, p = ce_logit_grad(torch.zeros(1, 2), torch.tensor([0]))
        >>> g
        tensor([[-0.5000,  0.5000]])
    """
    p = torch.softmax(logits, dim=-1)
    y = _soft_targets(targets, logits.shape[-1], logits.dtype)
    return p * y.sum(-1, keepdim=True) - y, p


def cross_entropy_rows(logits: Tensor, targets: Targets) -> Tensor:
    """Per-row softmax cross-entropy against class indices (N,) or soft targets (N, C).

    Example:
        >>> cross_entropy_rows(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor([1.3863, 1.3863])
    """
    if targets.is_floating_point():
        return -(targets * torch.log_softmax(logits, -1)).sum(-1)
    return F.cross_entropy(logits, targets.long(), reduction="none")


def greedy_objective(
    head_fn: HeadFn,
    params: Params,
    params_star: Params,
    z: Tensor,
    targets: Targets,
    eta: StepSize,
) -> Tensor:
    """Per-sample greedy objective for any head, through ``torch.func``.

    Each sample's loss is the softmax cross-entropy of ``head_fn(params,
    z[j:j+1])`` against ``targets[j]``; its gradient with respect to every
    tensor in ``params`` is taken with ``torch.func.grad`` under ``vmap``.

    Args:
        head_fn: ``fn(params, z) -> logits`` for a batch ``z`` of shape (N, D).
        params: the head's current parameters ``theta``.
        params_star: the target ``theta*``, same keys and shapes.
        z: features of shape (N, D).
        targets: class indices (N,) or soft targets (N, C).
        eta: the learner's learning rate.

    Returns:
        Tensor of shape (N,), differentiable with respect to ``z``.

    Example:
        >>> head = torch.nn.Linear(3, 2)
        >>> fn = lambda p, z: torch.func.functional_call(head, p, (z,))
        >>> p = {k: v.detach() for k, v in head.named_parameters()}
        >>> greedy_objective(fn, p, p, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 0.1).shape
        torch.Size([4])
    """
    params = dict(params)
    delta = {k: params[k] - params_star[k] for k in params}

    def sample_loss(p: Params, zj: Tensor, yj: Tensor) -> Tensor:
        return F.cross_entropy(head_fn(p, zj.unsqueeze(0)), yj.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, z, targets)
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    inner = sum((grads[k] * delta[k]).flatten(1).sum(1) for k in grads)
    return eta * eta * sq - 2.0 * eta * inner


def linear_ce_objective(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    weight_star: Tensor,
    bias_star: Tensor | None,
    eta: StepSize,
) -> Tensor:
    """Closed-form greedy objective for a linear head with softmax cross-entropy.

    With ``a = W z + b``, ``g = sum(y) softmax(a) - y`` the per-sample
    gradients are ``dl/dW = g z^T`` and ``dl/db = g``, so::

        f(z) = eta^2 |g|^2 (|z|^2 + [bias]) - 2 eta g . ((W - W*) z + (b - b*))

    Args:
        z: features of shape (N, D).
        targets: class indices (N,) or soft targets (N, C).
        weight: ``W`` of shape (C, D).
        bias: ``b`` of shape (C,), or None for a head without bias.
        weight_star: ``W*`` of shape (C, D).
        bias_star: ``b*`` of shape (C,), or None (must match ``bias``).
        eta: the learner's learning rate.

    Returns:
        Tensor of shape (N,).

    Example:
        >>> W = torch.randn(3, 5); z = torch.randn(2, 5); y = torch.tensor([0, 2])
        >>> linear_ce_objective(z, y, W, None, W, None, 0.1).shape
        torch.Size([2])
    """
    return _linear_ce(z, targets, weight, bias, weight_star, bias_star, eta, False)[0]


def linear_ce_objective_and_grad(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    weight_star: Tensor,
    bias_star: Tensor | None,
    eta: StepSize,
) -> tuple[Tensor, Tensor]:
    """The closed-form objective and its exact gradient with respect to ``z``.

    With ``J = sum(y) (diag(p) - p p^T)``, ``n = |z|^2 + [bias]`` and
    ``h = (W - W*) z + (b - b*)``::

        df/dz = W^T J (2 eta^2 n g - 2 eta h) + 2 eta^2 |g|^2 z - 2 eta (W - W*)^T g

    No autograd is involved, so it runs under ``torch.no_grad()``.

    Args:
        See :func:`linear_ce_objective`.

    Returns:
        ``(f, df_dz)`` of shapes (N,) and (N, D).

    Example:
        >>> W = torch.randn(3, 5); z = torch.randn(2, 5); y = torch.tensor([0, 2])
        >>> f, g = linear_ce_objective_and_grad(z, y, W, None, W * 0, None, 0.1)
        >>> g.shape
        torch.Size([2, 5])
    """
    f, dz = _linear_ce(z, targets, weight, bias, weight_star, bias_star, eta, True)
    assert dz is not None
    return f, dz


def _linear_ce(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    weight_star: Tensor,
    bias_star: Tensor | None,
    eta: StepSize,
    with_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    check_linear_args(z, targets, weight, bias)
    fn = linear_ce_closure(targets, weight, bias, weight_star, bias_star, eta, with_grad)
    return fn(z)


def linear_ce_closure(
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    weight_star: Tensor,
    bias_star: Tensor | None,
    eta: StepSize,
    with_grad: bool = True,
) -> Callable[[Tensor], tuple[Tensor, Tensor | None]]:
    """``z -> (f, df/dz)`` of :func:`linear_ce_objective_and_grad` with everything else fixed.

    What does not depend on ``z`` is computed once: the stacked matrix
    ``[W; W - W*]`` (one matrix product gives the logits and ``h``), the soft
    targets and their mass, and ``[W; -2 eta (W - W*)]`` for the gradient (one
    more product). An iterative solver calls the result many times; it does
    no argument checks (``z`` must be (N, D) like the targets' N).

    Args:
        See :func:`linear_ce_objective`; ``with_grad=False`` returns ``(f, None)``.

    Example:
        >>> W = torch.randn(3, 5); z = torch.randn(2, 5); y = torch.tensor([0, 2])
        >>> fn = linear_ce_closure(y, W, None, 0.5 * W, None, 0.1)
        >>> f, g = fn(z)
        >>> torch.allclose(f, linear_ce_objective(z, y, W, None, 0.5 * W, None, 0.1))
        True
    """
    if (bias is None) != (bias_star is None):
        raise TeacherError("bias and bias_star must both be tensors or both be None")
    if weight_star.shape != weight.shape:
        raise TeacherError(
            f"weight_star must have the shape of weight {tuple(weight.shape)}, "
            f"got {tuple(weight_star.shape)}"
        )
    c = weight.shape[0]
    two_eta_sq = 2.0 * eta * eta
    two_eta = 2.0 * eta
    d_weight = weight - weight_star
    # One product gives the logits and h2 = 2 eta ((W - W*) z + (b - b*)).
    stacked_t = torch.cat([weight, two_eta * d_weight]).T
    shift = None
    if bias is not None:
        assert bias_star is not None
        shift = torch.cat([bias, two_eta * (bias - bias_star)])
    hard = not targets.is_floating_point()  # one-hot targets: mass 1, g = p - y
    y = _soft_targets(targets, c, weight.dtype)
    mass = None if hard else y.sum(-1, keepdim=True)
    back = torch.cat([weight, -two_eta * d_weight]) if with_grad else None  # (2C, D)
    eta_sq = 0.5 * two_eta_sq
    with_bias = bias is not None

    def fn(z: Tensor) -> tuple[Tensor, Tensor | None]:
        zw = z @ stacked_t if shift is None else torch.addmm(shift, z, stacked_t)
        logits, h2 = zw[:, :c], zw[:, c:]
        sq_norm = (z * z).sum(-1)
        if with_bias:
            sq_norm = sq_norm + 1.0
        p = torch.softmax(logits, dim=-1)
        g = p - y if mass is None else p * mass - y
        g_sq = (g * g).sum(-1)
        f = eta_sq * g_sq * sq_norm - (g * h2).sum(-1)
        if back is None:
            return f, None
        v = (two_eta_sq * sq_norm).unsqueeze(-1) * g - h2
        pv = p * v
        jv = pv - p * pv.sum(-1, keepdim=True)
        if mass is not None:
            jv = mass * jv
        dz = torch.cat([jv, g], -1) @ back + (two_eta_sq * g_sq).unsqueeze(-1) * z
        return f, dz

    return fn
