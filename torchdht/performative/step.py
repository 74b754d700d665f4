"""Everything of one teaching step between the detached head input and ``z~``, as pure
functions: the casts to the working dtype, the step of :mod:`torchdht.functional`, and the
statistics. :class:`~torchdht.PerformativeTeacher` compiles :func:`teach_step` whole with
``compile=True``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional.chunks import block_rows
from ..functional.gram import GramLookahead
from ..functional.lookahead import LinearLookahead
from ..functional.objective import cross_entropy_rows
from ..functional.performative import TeachStep, greedy_teach, random_teach
from ..functional.sphere import angle

__all__ = ["step_inputs", "step_losses", "step_outputs", "teach_step", "working_dtype"]


def working_dtype(z: Tensor) -> torch.dtype:
    """The teacher computes in float64 for float64 inputs, else in float32."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def step_inputs(
    z: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    n_classes: int,
    ignore_index: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """The head's input as (N, D) rows, everything in the working dtype, and the rows
    whose label is ``ignore_index``."""
    work_dtype = working_dtype(z)
    flat = z.reshape(-1, z.shape[-1])
    if targets.is_floating_point():
        tgt = targets.reshape(-1, targets.shape[-1]).to(work_dtype)
        ignored = torch.zeros(flat.shape[0], dtype=torch.bool, device=z.device)
    else:  # any integer dtype
        idx = targets.reshape(-1).long()
        ignored = idx == ignore_index
        idx = idx.masked_fill(ignored, 0)
        # one-hot once, not in every solver iteration; a wide head keeps the indices (an
        # (N, C) one-hot would be as large as its logits)
        narrow = block_rows(flat.shape[0], n_classes) == flat.shape[0]
        tgt = F.one_hot(idx, n_classes).to(work_dtype) if narrow else idx
    b = None if bias is None else bias.to(work_dtype)
    return flat, flat.to(work_dtype), tgt, weight.to(work_dtype), b, ignored


def step_outputs(
    z: Tensor,
    flat: Tensor,
    zf: Tensor,
    tgt: Tensor,
    step: TeachStep,
    weight: Tensor,
    bias: Tensor | None,
    eta: Any,
    ignored: Tensor,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """``z~`` in the input's shape and dtype, the released-code extra gradient, the stats."""
    valid, la = step.valid, step.lookahead
    z_tilde = torch.where(valid.unsqueeze(-1), step.z.to(z.dtype), flat).reshape(z.shape)
    extra = None
    if la.feature_grad is not None:
        extra = la.feature_grad.to(z.dtype).reshape(z.shape)
    count = valid.to(zf.dtype).sum().clamp_min(1.0)
    moved = torch.where(valid, angle(step.z, zf), 0.0)
    b_mean = step.before.sum() / count
    a_mean = step.after.sum() / count
    # cross-entropy on the original features (the lookahead's first logits: free) and on the
    # taught ones (one product), means over the taught rows
    ce = step_losses(zf, step.z, tgt, weight, bias, la)
    loss_untaught, loss_taught = (torch.where(valid, x, 0.0).sum() / count for x in ce)
    stats = {
        "angle_mean": moved.sum() / count,
        "angle_max": moved.max() if moved.numel() else moved.sum(),
        "objective_before": b_mean,
        "objective_after": a_mean,
        "objective_drop": b_mean - a_mean,
        "theta_dist": step.theta_dist,
        "eta": torch.as_tensor(eta, dtype=zf.dtype, device=zf.device),
        "n_rows": torch.tensor(valid.numel()),
        "n_skipped": (~valid & ~ignored).sum(),
        "n_ignored": ignored.sum(),
        "loss_untaught": loss_untaught,
        "loss_taught": loss_taught,
    }
    return z_tilde, extra, stats


def step_losses(
    zf: Tensor,
    taught: Tensor,
    tgt: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    la: LinearLookahead | GramLookahead,
) -> tuple[Tensor, Tensor]:
    """Per-row cross-entropy on the original features (the lookahead's first logits or losses:
    free) and on the taught ones (one product; over blocks of rows for a wide head)."""

    def logits_of(x: Tensor) -> Tensor:
        return x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)

    rows = block_rows(zf.shape[0], weight.shape[0])
    if rows == zf.shape[0] and tgt.is_floating_point():
        logits = la.logits if la.logits is not None else logits_of(zf)
        return (-(tgt * torch.log_softmax(logits, -1)).sum(-1),
                -(tgt * torch.log_softmax(logits_of(taught), -1)).sum(-1))

    def blocked(x: Tensor) -> Tensor:
        return torch.cat([cross_entropy_rows(logits_of(xb), tb)
                          for xb, tb in zip(x.split(rows), tgt.split(rows))])

    if la.logits is not None:
        untaught = cross_entropy_rows(la.logits, tgt)
    elif isinstance(la, LinearLookahead) and la.loss is not None:
        untaught = la.loss
    else:
        untaught = blocked(zf)
    return untaught, blocked(taught)


def teach_step(
    z: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    eta: Any,
    *,
    n_classes: int,
    generator: torch.Generator | None = None,
    solve_steps: int | None = None,
    solve_lr: float | None = None,
    solve_tol: float | None = None,
    target: Any = None,
    solver: str = "pgd",
    ignore_index: int = -100,
    **common: Any,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Everything of one teaching step between the detached input and ``z~``.

    The greedy policy without ``generator``, the random one with it. One pure
    function, so that ``compile=True`` traces the casts, the solve and the
    statistics of the greedy step as one graph.
    """
    flat, zf, tgt, w, b, ignored = step_inputs(z, targets, weight, bias, n_classes, ignore_index)
    keep = ~ignored
    if generator is None:
        step = greedy_teach(
            zf, tgt, w, b, eta, solve_steps=solve_steps, solve_lr=solve_lr, solve_tol=solve_tol,
            target=target,
            solver=solver, mask=keep, **common,
        )
    else:
        step = random_teach(zf, tgt, w, b, eta, generator=generator, mask=keep, **common)
    return step_outputs(z, flat, zf, tgt, step, w, b, eta, ignored)
