"""Checks of the sampler's arguments: the dataset, the model and head, eta's source, w*.

Counts, rates, the head and targets are checked by the shared validators of
:mod:`torchdht._checks`; what is particular to the sampler is here.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.data import IterableDataset

from .._checks import LearnerRate, check_head
from ..errors import TeacherError, TeacherTypeError
from .features import unwrap_model

__all__ = ["check_dataset", "check_model_and_head", "check_w_star", "learner_rate", "qualname"]


def qualname(obj: Any) -> str:
    """The qualified name of the type of ``obj``, with its module."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_dataset(dataset: Any) -> int:
    """The length of ``dataset``, a non-empty map-style dataset."""
    if isinstance(dataset, IterableDataset):
        raise TeacherTypeError(
            f"dataset must be a map-style dataset with __len__ and __getitem__, got the "
            f"IterableDataset {qualname(dataset)}, which cannot be sampled by index"
        )
    try:
        n = len(dataset)
    except TypeError:
        raise TeacherTypeError(
            f"dataset must be a map-style dataset with __len__ and __getitem__, got "
            f"{qualname(dataset)} without __len__ (an IterableDataset cannot be "
            f"sampled by index)"
        ) from None
    if not hasattr(dataset, "__getitem__"):
        raise TeacherTypeError(f"dataset must support indexing, got {qualname(dataset)}")
    if n < 1:
        raise TeacherError("dataset is empty")
    return n


def check_model_and_head(model: nn.Module | None, head: nn.Module | None, score: str) -> None:
    """``model`` is a module and ``head`` an ``nn.Linear`` inside it (for ``score``)."""
    if head is None or model is None:
        raise TeacherError(
            f"score={score!r} needs model= (the network) and head= (its final nn.Linear)"
        )
    check_head(head)
    if not isinstance(model, nn.Module):
        raise TeacherTypeError(f"model must be an nn.Module, got {qualname(model)}")
    if not any(m is head for m in unwrap_model(model).modules()):
        raise TeacherError(
            "head is not a submodule of model; pass head= the final nn.Linear of model "
            "(e.g. model.fc), so that its input features can be read"
        )


def learner_rate(optimizer: Any, lr: Any, head: nn.Linear, required: bool) -> LearnerRate | None:
    """The learner's eta, read from ``optimizer`` or ``lr``; None when neither is given
    and it is not ``required``."""
    if optimizer is None and lr is None:
        if required:
            raise TeacherError(
                "score='greedy' needs the learner's learning rate eta: pass optimizer= "
                "(the optimizer training head.weight; eta is read from it each step) "
                "or lr="
            )
        return None
    return LearnerRate(optimizer, lr, head.weight, "head.weight")


def check_w_star(w_star: Any, head: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """A known target ``(W*, b*)`` of the head's shapes, detached."""
    if isinstance(w_star, Tensor):
        w_star = (w_star, None)
    if not isinstance(w_star, (tuple, list)) or len(w_star) != 2:
        raise TeacherTypeError(
            "w_star must be a pair (W*, b*) of tensors (b* None without bias)"
        )
    weight, bias = w_star
    if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(head.weight.shape):
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise TeacherError(
            f"w_star's W* must be a tensor of the head's weight shape "
            f"{tuple(head.weight.shape)}, got {got}"
        )
    if (bias is None) != (head.bias is None):
        raise TeacherError(
            "w_star's b* must be a tensor when the head has a bias and None when it has not"
        )
    if bias is not None:
        if not isinstance(bias, Tensor) or tuple(bias.shape) != (head.out_features,):
            got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
            raise TeacherError(
                f"w_star's b* must be a tensor of shape ({head.out_features},), got {got}"
            )
        bias = bias.detach()
    return weight.detach(), bias
