"""Argument checks and the learner's learning rate, shared by the teachers."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["check_positive", "LearnerRate"]


def check_positive(value: Any, name: str, integer: bool = False) -> Any:
    """Return ``value`` if it is a positive (finite) number, else raise naming ``name``."""
    kind = "int" if integer else "float"
    ok_types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise TypeError(f"{name} must be a positive {kind}, got {type(value).__name__}")
    if not (value > 0) or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")
    return value


class LearnerRate:
    """The learner's learning rate ``eta``, read afresh at every call.

    Either the ``lr`` of the optimizer's param group holding ``param`` (so LR
    schedulers are followed), or a positive float, or a zero-argument
    callable returning one. Exactly one of ``optimizer`` and ``lr``.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([w], lr=0.3)
        >>> rate = LearnerRate(opt, None, w, "head.weight")
        >>> opt.param_groups[0]["lr"] = 0.1
        >>> rate()
        0.1
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None,
        lr: float | Callable[[], float] | None,
        param: Tensor,
        param_name: str,
    ) -> None:
        if optimizer is not None and lr is not None:
            raise ValueError("give optimizer= (eta read from it) or lr=, not both")
        if optimizer is None and lr is None:
            raise ValueError("give exactly one of optimizer= (eta read from it) and lr=")
        self.optimizer = optimizer
        self.lr = lr
        self._group: int | None = None
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(
                    f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
                )
            for i, group in enumerate(optimizer.param_groups):
                if any(p is param for p in group["params"]):
                    self._group = i
                    break
            else:
                raise ValueError(
                    f"optimizer has no param group holding {param_name}; pass the optimizer "
                    f"that trains it, or lr="
                )
        elif not callable(lr):
            check_positive(lr, "lr")

    def __call__(self) -> float | Tensor:
        """``eta`` now: a float, or a detached tensor if the optimizer keeps one."""
        if self.optimizer is not None:
            assert self._group is not None
            eta = self.optimizer.param_groups[self._group]["lr"]
        elif callable(self.lr):
            eta = self.lr()
        else:
            eta = self.lr
        if isinstance(eta, Tensor):
            return eta.detach()
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
            raise ValueError(f"the learner's lr (eta) must be a non-negative float, got {eta!r}")
        return float(eta)
