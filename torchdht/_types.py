"""Type aliases shared across torchdht."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Union

from torch import Tensor

Params = Mapping[str, Tensor]
"""Named parameters of a head, as ``torch.func.functional_call`` takes them."""

HeadFn = Callable[[Params, Tensor], Tensor]
"""``fn(params, z) -> logits`` with ``z`` of shape (B, D) and logits (B, C)."""

LrLike = Union[float, Callable[[], float]]
"""A learning rate: a positive float or a zero-argument callable returning one."""
