"""Loading candidates and reading the head's input features, the model left untouched.

* :func:`head_features` -- run the model on candidates in eval mode without
  grad, in chunks, reading the head's input with a temporary forward
  pre-hook; every module's ``training`` flag is restored exactly afterwards.
* :func:`load_candidates` and :func:`split_pair` -- candidates as one collated
  ``(input, target)`` pair; :func:`check_features` -- what the hook caught.
* :func:`global_rngs_kept` -- restore the global RNGs a dataset's random
  augmentation draws from; :func:`unwrap_model`, :func:`module_device`,
  :func:`to_device` -- the eager module to run, its device, inputs moved there.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset, default_collate

from .._checks import check_targets
from ..errors import TeacherError, TeacherTypeError

__all__ = [
    "check_features",
    "global_rngs_kept",
    "head_features",
    "load_candidates",
    "module_device",
    "split_pair",
    "to_device",
    "unwrap_model",
]


@contextlib.contextmanager
def global_rngs_kept(device: torch.device) -> Iterator[None]:
    """Restore the global RNGs on exit: torch's CPU generator, the CUDA generator of
    ``device`` (when it is a CUDA device), Python's ``random`` and NumPy's legacy
    global generator (when NumPy is imported). Saving them costs a few microseconds."""
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    py_state = random.getstate()
    np_random = sys.modules.get("numpy.random")
    np_state = np_random.get_state() if np_random is not None else None
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        try:
            yield
        finally:
            random.setstate(py_state)
            if np_random is not None:
                np_random.set_state(np_state)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module to run for scoring: compiled and DDP/DP wrappers are unwrapped.

    ``torch.compile`` may ignore hooks added after compilation, and a
    ``DistributedDataParallel`` forward may run collectives (buffer broadcast);
    the eager inner module computes the same features without either.
    """
    for _ in range(8):
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) and isinstance(
            getattr(model, "module", None), nn.Module
        ):
            model = model.module
            continue
        break
    return model


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (in mappings, namedtuples, lists, tuples) on ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def module_device(model: nn.Module) -> torch.device:
    """The device of the first parameter of ``model`` (else buffer, else the CPU)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def split_pair(batch: Any) -> tuple[Any, Tensor]:
    """The collated candidates as ``(input, target)``, the target a tensor."""
    if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or len(batch) != 2:
        raise TeacherTypeError(
            f"the collated candidates must be a pair (input, target), got "
            f"{type(batch).__name__}; make dataset items (x, y) pairs or pass a collate_fn "
            f"that returns one"
        )
    x, y = batch[0], batch[1]
    if not isinstance(y, Tensor):
        raise TeacherTypeError(f"targets must collate into a tensor, got {type(y).__name__}")
    return x, y


def load_candidates(dataset: Any, collate_fn: Callable[[list], Any], indices: list[int]) -> Any:
    """The items ``indices`` of ``dataset``, collated by ``collate_fn``."""
    if isinstance(dataset, TensorDataset) and collate_fn is default_collate:
        # What default_collate makes of the items, in one indexing op per tensor.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return [t[idx] for t in dataset.tensors]
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(indices) if getitems else [dataset[i] for i in indices]
    return collate_fn(items)


def head_features(
    model: nn.Module,
    head: nn.Linear,
    indices: list[int],
    load: Callable[[list[int]], Any],
    score_batch_size: int,
    ignore_index: int,
) -> tuple[Tensor, Tensor]:
    """Head-input features (N, D) and targets of the candidates, model untouched.

    ``load`` turns a chunk of at most ``score_batch_size`` indices into the
    collated ``(input, target)`` pair; ``model`` is run unwrapped, on the
    device of its first parameter.
    """
    model = unwrap_model(model)
    device = module_device(model)
    captured: list[Any] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        z = args[0] if args else kwargs.get("input")
        captured.append(z)
        # Check before the head runs, or a mismatch surfaces as a bare matmul error.
        if isinstance(z, Tensor) and z.dim() >= 1 and z.shape[-1] != head.in_features:
            raise TeacherError(
                f"the features reaching the head have {z.shape[-1]} columns, but head has "
                f"in_features={head.in_features}; pass the model whose final layer is head"
            )

    modes = [(m, m.training) for m in model.modules()]
    handle = head.register_forward_pre_hook(hook, with_kwargs=True)
    feats: list[Tensor] = []
    targets: list[Tensor] = []
    try:
        for m, _ in modes:
            m.training = False
        with torch.no_grad():
            for lo in range(0, len(indices), score_batch_size):
                chunk = indices[lo : lo + score_batch_size]
                x, y = split_pair(load(chunk))
                y = check_targets(
                    y, head.out_features, rows=len(chunk),
                    ignore_index=ignore_index, name="targets",
                )
                captured.clear()
                model(to_device(x, device))
                feats.append(check_features(captured, len(chunk), head))
                targets.append(y.to(device, non_blocking=True))
    finally:
        handle.remove()
        for m, mode in modes:
            m.training = mode
    return torch.cat(feats), torch.cat(targets)


def check_features(captured: list[Any], n: int, head: nn.Linear) -> Tensor:
    """The one head input caught in a forward of ``n`` candidates, detached."""
    if len(captured) != 1:
        hint = (
            " (is model compiled with a wrapper other than torch.compile, or is head not "
            "used in its forward?)"
            if not captured
            else ""
        )
        raise TeacherError(
            f"head was called {len(captured)} times in one forward of model; the sampler "
            f"needs exactly one call per forward{hint}"
        )
    z = captured[0]
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TeacherTypeError(
            f"the head's input must be a floating-point tensor, got "
            f"{getattr(z, 'dtype', type(z).__name__)}"
        )
    if tuple(z.shape) != (n, head.in_features):
        raise TeacherError(
            f"the features reaching the head have shape {tuple(z.shape)}, but the sampler "
            f"needs one row per candidate: ({n}, {head.in_features}) for {n} candidates "
            f"and a head with in_features={head.in_features}"
        )
    return z.detach()
