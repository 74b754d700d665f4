"""The sampler's epochs and checkpoints: permutations, ranks, and the saved state.

* :func:`rank_share` -- a rank's share of one permutation of an epoch, as
  ``DistributedSampler`` cuts it (padded or truncated to a multiple of the
  number of replicas).
* :func:`check_state` -- a saved state checked against this sampler's
  configuration (:data:`CONFIG_KEYS`, format :data:`STATE_VERSION`).
* :func:`dist_default` -- the world size or rank from ``torch.distributed``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int, check_saved_state
from ..errors import TeacherError

__all__ = ["CONFIG_KEYS", "STATE_VERSION", "check_state", "dist_default", "rank_share"]

STATE_VERSION = 1
CONFIG_KEYS = (
    "dataset_len",
    "batch_size",
    "pool_size",
    "num_replicas",
    "drop_last",
    "steps_per_epoch",
)


def dist_default(kind: str) -> int | None:
    """The world size (``kind="world"``) or the rank from ``torch.distributed``, or
    None when it is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() if kind == "world" else dist.get_rank()
    return None


def rank_share(
    n: int, seed: int, epoch: int, pass_: int, total_size: int, rank: int, num_replicas: int
) -> Tensor:
    """Rank ``rank``'s share of the ``pass_``-th permutation of ``range(n)`` drawn from
    ``torch.Generator().manual_seed(seed + epoch)``, cut to ``total_size`` positions."""
    gen = torch.Generator()
    gen.manual_seed(seed + epoch)
    for _ in range(pass_ + 1):
        perm = torch.randperm(n, generator=gen)
    if total_size <= n:
        perm = perm[:total_size]
    else:
        pad = total_size - n
        perm = torch.cat([perm, perm.repeat(math.ceil(pad / n))[:pad]])
    return perm[rank:total_size:num_replicas]


def check_state(state: Any, mine: dict[str, Any], steps: int) -> int:
    """The step to resume at from ``state``, saved by a sampler whose configuration
    matches ``mine`` and that has ``steps`` steps per epoch."""
    state = check_saved_state(state, {"version", "epoch", "step", "seed", "config"}, STATE_VERSION)
    theirs = state["config"]
    diff = [k for k in CONFIG_KEYS if theirs.get(k) != mine[k]]
    if diff:
        detail = ", ".join(f"{k}: saved {theirs.get(k)!r}, here {mine[k]!r}" for k in diff)
        raise TeacherError(
            f"state was saved by a sampler with another configuration ({detail}); "
            f"the continuation would not be the same"
        )
    step = check_int(state["step"], "state['step']", 0)
    if step > steps:
        raise TeacherError(f"state['step'] = {step} exceeds the {steps} steps per epoch")
    return step
