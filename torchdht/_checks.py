"""Argument checks and the learner's learning rate, shared by the teachers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Callable, cast

import torch
from torch import Tensor

__all__ = [
    "check_positive",
    "check_int",
    "check_ignore_index",
    "check_seed",
    "LearnerRate",
]


def check_positive(value: Any, name: str, integer: bool = False) -> Any:
    """Return ``value`` if it is a positive (finite) number, else raise naming ``name``.

    Any real number type is accepted (Python, NumPy; not a tensor): an
    integral one for ``integer=True``, returned as ``int``; else returned as
    ``float``. Booleans are refused.

    Example:
        >>> import numpy as np
        >>> check_positive(np.float32(0.5), "lr"), check_positive(np.int64(3), "steps", True)
        (0.5, 3)
    """
    kind = "int" if integer else "float"
    ok_type = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, Tensor)) or not isinstance(value, ok_type):
        raise TypeError(f"{name} must be a positive {kind}, got {type(value).__name__}")
    value = int(cast(Any, value)) if integer else float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive {kind}, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int``: any integral type (Python, NumPy), not a bool.

    Example:
        >>> import numpy as np
        >>> check_int(np.int16(-1), "ignore_index")
        -1
    """
    what = "an int" if minimum is None else f"an int >= {minimum}"
    if isinstance(value, (bool, Tensor)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_ignore_index(value: Any) -> int:
    """The label that marks rows to leave out, as in ``F.cross_entropy``."""
    if isinstance(value, (bool, Tensor)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"ignore_index must be an int (a class index, as in F.cross_entropy), got "
            f"{type(value).__name__}"
        )
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as an ``int`` (any integral type), or None; refuses bools and floats."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(seed).__name__}")
    return int(seed)


class LearnerRate:
    """The learner's learning rate ``eta``, read afresh at every call.

    Either the ``lr`` of the optimizer's param group holding ``param`` (or,
    given several, the first group holding any of them; so LR schedulers are
    followed), or a positive float, or a zero-argument
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
        param: Tensor | Sequence[Tensor],
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
            wanted = [param] if isinstance(param, Tensor) else list(param)
            for i, group in enumerate(optimizer.param_groups):
                if any(p is q for p in group["params"] for q in wanted):
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
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not float(eta) >= 0:
            raise ValueError(f"the learner's lr (eta) must be a non-negative float, got {eta!r}")
        if not math.isfinite(float(eta)):
            raise ValueError(f"the learner's lr (eta) must be finite, got {eta!r}")
        return float(eta)
