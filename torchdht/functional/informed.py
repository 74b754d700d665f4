"""Teaching targets ``theta*`` that carry information from beyond the batch.

The paper's neural teacher estimates ``theta*`` by a few SGD steps of the head
on the very batch it teaches (:func:`~torchdht.functional.linear_lookahead`).
The functions here build targets from more than that batch, to be handed to
:func:`~torchdht.functional.greedy_teach` as ``target=(W*, b*)``:

* :func:`refit_head`: the head refit to the optimum of its L2-regularised mean
  cross-entropy on a set of stored features (e.g. a ring buffer of recent
  batches), by L-BFGS; convex, so the optimum is unique;
* :func:`ema_target`: an exponential moving average of successive targets.

Pure functions of tensors; nothing here touches a module or an optimizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_float, check_int
from ..typing import Targets
from .objective import check_linear_args

__all__ = ["ema_target", "refit_head"]


def refit_head(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    l2: float = 1e-4,
    max_iter: int = 200,
    tol: float = 1e-9,
) -> tuple[Tensor, Tensor | None]:
    """The head minimising ``mean CE(z W^T + b, y) + l2/2 (|W|^2 + |b|^2)``, from ``(W, b)``.

    Args:
        z: features (N, D), treated as constants.
        targets: class indices (N,) or soft targets (N, C).
        weight: starting ``W`` (C, D); not modified.
        bias: starting ``b`` (C,) or None for a head without bias.
        l2: the ridge coefficient, > 0 (it makes the optimum unique).
        max_iter: L-BFGS iterations at most.
        tol: stop when the gradient's largest entry is below this.

    Returns:
        ``(W*, b*)``, new tensors in ``weight``'s dtype.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(64, 3, generator=g, dtype=torch.float64)
        >>> y = (z[:, 0] > 0).long()
        >>> w, b = refit_head(z, y, torch.zeros(2, 3, dtype=torch.float64),
        ...                   torch.zeros(2, dtype=torch.float64), l2=1e-2)
        >>> bool(w[1, 0] > w[0, 0])
        True
    """
    check_linear_args(z, targets, weight, bias)
    l2 = check_float(l2, "l2", 0.0, low_open=True)
    max_iter = check_int(max_iter, "max_iter", 1)
    tol = check_float(tol, "tol", 0.0, low_open=True)
    z = z.detach()
    y = targets if targets.is_floating_point() else targets.long()
    params = [weight.detach().clone().requires_grad_(True)]
    if bias is not None:
        params.append(bias.detach().clone().requires_grad_(True))
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=0.0, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z @ params[0].T
        if bias is not None:
            logits = logits + params[1]
        loss = F.cross_entropy(logits, y) + 0.5 * l2 * sum(p.pow(2).sum() for p in params)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_star = params[0].detach()
    b_star = params[1].detach() if bias is not None else None
    return w_star, b_star


def ema_target(
    previous: tuple[Tensor, Tensor | None] | None,
    new: tuple[Tensor, Tensor | None],
    decay: float,
) -> tuple[Tensor, Tensor | None]:
    """``decay * previous + (1 - decay) * new`` for weight and bias; ``new`` when there is
    no previous target yet.

    Example:
        >>> w, b = ema_target((torch.ones(2, 2), None), (torch.zeros(2, 2), None), 0.75)
        >>> w[0, 0].item(), b
        (0.75, None)
    """
    decay = check_float(decay, "decay", 0.0, 1.0, high_open=True)
    if previous is None:
        return new
    (w0, b0), (w1, b1) = previous, new
    w = torch.lerp(w1, w0, decay)
    b = None if b1 is None or b0 is None else torch.lerp(b1, b0, decay)
    return w, b
