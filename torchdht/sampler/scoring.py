"""Scoring a candidate pool from its head-input features, and picking the best.

* :func:`candidate_scores` -- per-candidate keys and scores from the head's
  current ``(W, b)``: the greedy teaching objective (eq. 4, with a target head
  from a lookahead on the pool or a given one) or the cross-entropy loss.
* :func:`pick_best` -- the ``batch_size`` lowest keys, ignored candidates
  last, with the pool's and the picked candidates' mean scores.
* :func:`scatter_scored` -- scores of the scored rows back at full length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import LearnerRate
from ..functional.lookahead import linear_lookahead
from ..functional.objective import linear_ce_objective

__all__ = ["SCORES", "candidate_scores", "pick_best", "scatter_scored"]

SCORES = ("greedy", "loss", "random")


def candidate_scores(
    z: Tensor,
    y: Tensor,
    head: nn.Linear,
    *,
    score: str,
    rate: LearnerRate | None,
    target: tuple[Tensor, Tensor | None] | None,
    lookahead_lr: float | None,
    lookahead_steps: int,
    objective_eta: str,
    batch_size: int,
    ignore_index: int,
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, float]]:
    """Per-candidate keys (lower is picked first), the reported scores, the
    ignored candidates (a boolean mask, or None when there are none), and the
    step's figures (for ``"greedy"``: ``eta``, ``objective_eta``, ``theta_dist``).
    ``target`` is a known target head ``(W*, b*)``, used in place of the lookahead.

    Ignored candidates are left out of every computation (the lookahead and
    the scores run on the others only, as if they were absent); their key is
    ``+inf`` and their score ``+inf`` (objective) or ``-inf`` (loss).
    """
    ignored: Tensor | None = None
    if not y.is_floating_point():
        ign = y == ignore_index
        if bool(ign.any()):
            ignored = ign
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(dtype)
        if y.is_floating_point():
            y = y.to(dtype)
        n = z.shape[0]
        rows: Tensor | None = None  # the scored candidates, when some are ignored
        if ignored is not None:
            rows = (~ignored).nonzero().squeeze(1)
            z, y = z.index_select(0, rows), y.index_select(0, rows)
        weight = head.weight.detach().to(dtype)
        bias = None if head.bias is None else head.bias.detach().to(dtype)
        if score == "loss":
            logp = torch.log_softmax(F.linear(z, weight, bias), dim=-1)
            if y.is_floating_point():
                loss = -(y * logp).sum(-1)
            else:
                loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            loss = scatter_scored(loss, rows, n, -math.inf)
            return -loss, loss, ignored, {}
        assert rate is not None
        eta = rate()
        if isinstance(eta, Tensor):
            eta = eta.to(device=z.device, dtype=dtype)
        if target is not None:
            w_star = target[0].to(z.device, dtype)
            b_star = None if target[1] is None else target[1].to(z.device, dtype)
        elif z.shape[0] == 0:  # every candidate ignored: nothing to look ahead on
            w_star, b_star = weight, bias
        else:
            la_lr = lookahead_lr if lookahead_lr is not None else eta
            la = linear_lookahead(z, y, weight, bias, la_lr, lookahead_steps)
            w_star, b_star = la.weight, la.bias
        eta_obj = eta / batch_size if objective_eta == "batch" else eta
        if z.shape[0] == 0:
            obj = z.new_empty(0)
        else:
            obj = linear_ce_objective(z, y, weight, bias, w_star, b_star, eta_obj)
        obj = scatter_scored(obj, rows, n, math.inf)
        dist_sq = (weight - w_star).pow(2).sum()
        if bias is not None:
            assert b_star is not None
            dist_sq = dist_sq + (bias - b_star).pow(2).sum()
        stats = {
            "eta": float(eta),
            "objective_eta": float(eta_obj),
            "theta_dist": float(dist_sq.sqrt()),
        }
        return obj, obj, ignored, stats


def scatter_scored(values: Tensor, rows: Tensor | None, n: int, fill: float) -> Tensor:
    """``values`` of the scored candidates at ``rows`` and ``fill`` elsewhere, shape
    (n,); ``values`` itself when every candidate is scored (``rows`` None)."""
    if rows is None:
        return values
    return values.new_full((n,), fill).index_copy_(0, rows, values)


def pick_best(
    key: Tensor, shown: Tensor, ignored: Tensor | None, batch_size: int
) -> tuple[Tensor, dict[str, float]]:
    """Positions of the ``batch_size`` lowest keys, best first (ties to the lower
    position; NaN keys and ignored candidates after every scored one), and the
    figures ``pool_score_mean``, ``picked_score_mean`` and ``ignored``."""
    key = torch.nan_to_num(key, nan=math.inf)
    order = torch.sort(key, stable=True).indices
    if ignored is not None:  # ignored candidates after every scored one (also NaN ones)
        last = ignored.index_select(0, order).to(torch.uint8)
        order = order.index_select(0, torch.sort(last, stable=True).indices)
    order = order[:batch_size]
    picked = shown.index_select(0, order)
    if ignored is None:
        pool_mean, picked_mean = float(shown.mean()), float(picked.mean())
        n_ignored = 0
    else:  # means over the scored candidates only (NaN when there are none)
        scored = ~ignored
        picked_scored = scored.index_select(0, order)
        pool_mean = float(shown[scored].mean()) if bool(scored.any()) else math.nan
        picked_mean = (
            float(picked[picked_scored].mean()) if bool(picked_scored.any()) else math.nan
        )
        n_ignored = int(ignored.sum())
    stats = {"pool_score_mean": pool_mean, "picked_score_mean": picked_mean, "ignored": n_ignored}
    return order, stats
