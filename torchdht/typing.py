"""Type aliases of torchdht's public signatures, in one place.

Example:
    >>> from torchdht.typing import LearningRate
    >>> def schedule() -> float:
    ...     return 0.1
    >>> rates: list[LearningRate] = [0.1, schedule]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Union

from torch import Tensor

__all__ = [
    "Params",
    "HeadFn",
    "LearningRate",
    "StepSize",
    "ObjectiveAndGrad",
    "Targets",
]

Params = Mapping[str, Tensor]
"""Named parameters of a head, as ``torch.func.functional_call`` takes them."""

HeadFn = Callable[[Params, Tensor], Tensor]
"""``fn(params, z) -> logits`` with ``z`` of shape (B, D) and logits (B, C)."""

LearningRate = Union[float, Callable[[], float]]
"""A learning rate given by the user: a positive float or a zero-argument callable returning one
(read afresh at every step, so a schedule can drive it)."""

StepSize = Union[float, Tensor]
"""The learner's step size ``eta`` inside the objectives: a float, or a tensor (a 0-d one,
or one per row) as an optimizer keeping its ``lr`` in a tensor gives it."""

ObjectiveAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``fg(x) -> (f, df/dx)``: per-row objective values (N,) and their gradient, shaped as ``x``."""

Targets = Tensor
"""Targets of a batch of N: class indices (N,) of an integer dtype, or soft targets (N, C) of
a floating dtype (non-negative; rows need not sum to one)."""
