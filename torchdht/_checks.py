"""Argument checks and the learner's learning rate, shared by every teacher.

One home for the checks: counts (:func:`check_int`), numbers in a range
(:func:`check_float`, :func:`check_positive`), seeds, the head and targets.
A wrong type raises :class:`~torchdht.errors.TeacherTypeError` (a
``TypeError``), a wrong value :class:`~torchdht.errors.TeacherError` (a
``ValueError``), so the same mistake gets the same type in every module.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from .errors import HeadTypeError, TargetsError, TeacherError, TeacherTypeError
from .typing import LearningRate

__all__ = [
    "check_saved_state",
    "check_positive",
    "check_int",
    "check_float",
    "check_ignore_index",
    "check_seed",
    "check_head",
    "check_targets",
    "LearnerRate",
]


def _is_int(value: Any) -> bool:
    """An integer of any type (Python, NumPy); not a bool, not a tensor."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, Tensor))


def _is_real(value: Any) -> bool:
    """A real number of any type (Python, NumPy); not a bool, not a tensor."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, Tensor))


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
    if not (_is_int(value) if integer else _is_real(value)):
        raise TeacherTypeError(f"{name} must be a positive {kind}, got {type(value).__name__}")
    value = int(cast(Any, value)) if integer else float(value)
    if not math.isfinite(value):
        raise TeacherError(f"{name} must be a finite positive {kind}, got {value!r}")
    if not value > 0:
        raise TeacherError(f"{name} must be a positive {kind}, got {value!r}")
    return value


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The interval as words: `` in [0, 1)``, `` >= 1``, `` < 2`` or nothing."""

    def num(v: float) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{num(low)}, {num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {num(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {num(high)}"
    return ""


def _within(
    v: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if low is not None and not (v > low if low_open else v >= low):
        return False
    return high is None or (v < high if high_open else v <= high)


def check_int(
    value: Any, name: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``: any integral type (Python, NumPy),
    not a bool.

    Example:
        >>> import numpy as np
        >>> check_int(np.int16(-1), "ignore_index")
        -1
        >>> check_int(3, "truncate", 1, 2)
        Traceback (most recent call last):
        ...
        torchdht.errors.TeacherError: truncate must be an int in [1, 2], got 3
    """
    what = "an int" + _bounds(minimum, maximum, False, False)
    if not _is_int(value):
        raise TeacherTypeError(f"{name} must be {what}, got {type(value).__name__}")
    value = int(value)
    if not _within(value, minimum, maximum, False, False):
        raise TeacherError(f"{name} must be {what}, got {value!r}")
    return value


def check_float(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float`` in the interval from ``low`` to ``high`` (open ends as asked).

    Any real number type is accepted (Python, NumPy; not a bool, not a
    tensor). NaN is always refused; infinities unless ``finite=False``.

    Example:
        >>> check_float(0.5, "dropout", 0.0, 1.0, high_open=True)
        0.5
        >>> check_float(0.0, "eps", 0.0, low_open=True)
        Traceback (most recent call last):
        ...
        torchdht.errors.TeacherError: eps must be a finite float > 0, got 0.0
    """
    what = ("a finite float" if finite else "a float") + _bounds(low, high, low_open, high_open)
    if not _is_real(value):
        raise TeacherTypeError(f"{name} must be {what}, got {type(value).__name__}")
    v = float(value)
    ok = not math.isnan(v) and (math.isfinite(v) or not finite)
    if not (ok and _within(v, low, high, low_open, high_open)):
        raise TeacherError(f"{name} must be {what}, got {value!r}")
    return v


def check_ignore_index(value: Any) -> int:
    """The label that marks rows to leave out, as in ``F.cross_entropy``."""
    if not _is_int(value):
        raise TeacherTypeError(
            f"ignore_index must be an int (a class index, as in F.cross_entropy), got "
            f"{type(value).__name__}"
        )
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as an ``int`` (any integral type), or None; refuses bools and floats."""
    if seed is None:
        return None
    if not _is_int(seed):
        raise TeacherTypeError(f"{name} must be an int or None, got {type(seed).__name__}")
    return int(seed)


def check_head(head: Any) -> nn.Linear:
    """``head`` if it is an ``nn.Linear``, else :class:`~torchdht.errors.HeadTypeError`."""
    if not isinstance(head, nn.Linear):
        raise HeadTypeError(
            f"head must be an nn.Linear (the network's final linear layer), got "
            f"{type(head).__module__}.{type(head).__qualname__}. Pass the last nn.Linear, "
            f"e.g. model.fc, model.head or, for timm models, model.get_classifier()."
        )
    return head


def check_targets(
    y: Any,
    num_classes: int,
    *,
    rows: int | None = None,
    ignore_index: int | None = None,
    host_check: bool = True,
    name: str = "y",
) -> Tensor:
    """Class indices ``(N,)``, widened to int64, or soft targets ``(N, C)``, as they are.

    With ``rows``, ``N`` must equal it. Indices must lie in ``[0, C)`` or equal
    ``ignore_index``; soft targets must be finite and non-negative. Values are
    checked on the host when ``host_check`` (a device sync on CUDA), else
    indices by an asynchronous device assert (soft values not at all).

    Example:
        >>> check_targets(torch.tensor([2, -100], dtype=torch.int16), 3, ignore_index=-100)
        tensor([   2, -100])
        >>> check_targets(torch.tensor([2, 156], dtype=torch.uint8), 3, ignore_index=-100)
        Traceback (most recent call last):
        ...
        torchdht.errors.TargetsError: y: class indices must lie in [0, 2] (or equal ignore_index=-100) for num_classes=3, got values in [156, 156]
    """  # noqa: E501
    if not isinstance(y, Tensor):
        raise TeacherTypeError(f"{name} must be a torch.Tensor of targets, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_complex():
        raise TeacherTypeError(
            f"{name} must hold class indices or probabilities, got dtype {y.dtype}"
        )
    lead = "(B,)" if rows is None else f"({rows},)"
    lead_soft = f"(B, {num_classes})" if rows is None else f"({rows}, {num_classes})"
    if y.is_floating_point():
        if y.dim() != 2 or y.shape[1] != num_classes or (rows is not None and y.shape[0] != rows):
            raise TargetsError(
                f"{name}: soft targets must have shape {lead_soft} for num_classes={num_classes}, "
                f"got {tuple(y.shape)}"
            )
        if host_check and y.numel():
            if not bool(torch.isfinite(y).all()) or bool((y < 0).any()):
                raise TargetsError(f"{name}: soft targets must be finite and non-negative")
        return y
    if y.dim() != 1 or (rows is not None and y.shape[0] != rows):
        raise TargetsError(
            f"{name}: class indices must have shape {lead} (or soft targets {lead_soft}), "
            f"got {tuple(y.shape)}"
        )
    # Widen first: a uint8 156 would compare equal to -100 (and to -356) otherwise.
    y = y.long()
    bad = (y < 0) | (y >= num_classes)
    if ignore_index is not None:
        bad = bad & (y != ignore_index)
    if not host_check:
        torch._assert_async(~bad.any())
    elif y.numel() and bool(bad.any()):
        wrong = y[bad]
        also = "" if ignore_index is None else f" (or equal ignore_index={ignore_index})"
        raise TargetsError(
            f"{name}: class indices must lie in [0, {num_classes - 1}]{also} for "
            f"num_classes={num_classes}, got values in [{int(wrong.min())}, {int(wrong.max())}]"
        )
    return y


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
        lr: LearningRate | None,
        param: Tensor | Sequence[Tensor],
        param_name: str,
    ) -> None:
        if optimizer is not None and lr is not None:
            raise TeacherError("give optimizer= (eta read from it) or lr=, not both")
        if optimizer is None and lr is None:
            raise TeacherError("give exactly one of optimizer= (eta read from it) and lr=")
        self.optimizer = optimizer
        self.lr = lr
        self._group: int | None = None
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TeacherTypeError(
                    f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
                )
            wanted = [param] if isinstance(param, Tensor) else list(param)
            for i, group in enumerate(optimizer.param_groups):
                if any(p is q for p in group["params"] for q in wanted):
                    self._group = i
                    break
            else:
                raise TeacherError(
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
        if not _is_real(eta) or not float(eta) >= 0:
            raise TeacherError(f"the learner's lr (eta) must be a non-negative float, got {eta!r}")
        if not math.isfinite(float(eta)):
            raise TeacherError(f"the learner's lr (eta) must be finite, got {eta!r}")
        return float(eta)


def check_saved_state(state: Any, keys: set[str], version: int) -> dict[str, Any]:
    """``state`` if it is a dict with ``keys`` saved at ``version``, else a clear error.

    The one check of every ``load_state_dict``: a :class:`TeacherTypeError`
    for a non-dict, a :class:`TeacherError` for missing keys or another version.

    Example:
        >>> check_saved_state({"version": 1, "seed": 0}, {"version", "seed"}, 1)["seed"]
        0
    """
    if not isinstance(state, dict):
        raise TeacherTypeError(f"state must be a dict, got {type(state).__name__}")
    missing = keys - set(state)
    if missing:
        raise TeacherError(f"state is missing keys {sorted(missing)}")
    if state["version"] != version:
        raise TeacherError(f"unsupported state version {state['version']!r}")
    return state
