"""What a :class:`~torchdht.PerformativeTeacher` reads of its head and checks about it:
the head module, its (possibly parametrized or sharded) weights, and the saved RNG state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .._checks import check_head
from ..errors import HeadTypeError, TargetsError, TeacherError

__all__ = [
    "check_armed_targets",
    "check_optimizer_holds_head",
    "check_target_shapes",
    "check_rng_state",
    "check_teacher_head",
    "is_dtensor",
    "old_style_hooks",
    "read_head",
    "read_param",
    "row_sums",
    "uses_cuda_graphs",
    "weight_params",
]


def uses_cuda_graphs(options: dict[str, Any]) -> bool:
    """Whether ``torch.compile(**options)`` may run the graph as a CUDA graph."""
    if options.get("mode") in ("reduce-overhead", "max-autotune"):
        return True
    return bool((options.get("options") or {}).get("triton.cudagraphs", False))


def is_dtensor(t: Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a build without torch.distributed
        return False
    return isinstance(t, DTensor)


def row_sums(z: Tensor) -> Tensor:
    """Row sums of ``z``: enough to tell apart the calls of one step."""
    return z.detach().sum(-1)


def check_teacher_head(head: Any) -> nn.Linear:
    """Refuse, at construction, a head the teacher cannot work with."""
    if isinstance(head, (tuple, list)):
        names = ", ".join(type(h).__name__ for h in head)
        raise HeadTypeError(
            f"head must be one nn.Linear, got a {type(head).__name__} of {len(head)} modules "
            f"({names}), as timm's get_classifier() returns for distilled models (DeiT, "
            f"LeViT). Attach one teacher to each head that should be taught, e.g. "
            f"t0 = PerformativeTeacher(heads[0], optimizer=opt); t1 = "
            f"PerformativeTeacher(heads[1], optimizer=opt), and arm both each step "
            f"(t0.set_targets(y); t1.set_targets(y))"
        )
    head = check_head(head)
    if head.in_features < 2:
        raise HeadTypeError(
            f"head must take at least 2 input features (a 1-wide feature has no sphere to move "
            f"on), got in_features={head.in_features}"
        )
    if head.out_features < 2:
        raise HeadTypeError(
            f"head must have at least 2 outputs (softmax cross-entropy over one class is "
            f"constant), got out_features={head.out_features}"
        )
    return head


def old_style_hooks(head: nn.Module) -> list[Any]:
    """The hooks of ``torch.nn.utils.weight_norm`` / ``spectral_norm`` (the old API) on ``head``."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return [
        h for h in head._forward_pre_hooks.values() if isinstance(h, (WeightNorm, SpectralNorm))
    ]


def weight_params(head: nn.Module) -> list[Tensor]:
    """The parameters an optimizer holds for the head's weight: ``weight`` itself, or the
    originals of a parametrization (``weight_norm``, ``spectral_norm``, old and new API)."""
    params: list[Tensor] = [p for name, p in head.named_parameters() if "bias" not in name]
    weight = head._parameters.get("weight")
    if weight is not None:  # the plain case first
        params.remove(weight)
        params.insert(0, weight)
    return params


def read_param(head: nn.Module, name: str) -> Tensor | None:
    """``head.<name>`` as the head's next forward will use it, with no side effect: a
    parametrization (e.g. spectral norm's power iteration) is evaluated in eval mode, so
    its buffers are exactly as without the teacher."""
    if parametrize.is_parametrized(head, name):
        plist: nn.Module = head.parametrizations[name]  # type: ignore[index,assignment]
        modes = [(m, m.training) for m in plist.modules()]
        plist.train(False)
        try:
            return getattr(head, name)
        finally:
            for m, mode in modes:
                m.training = mode
    for hook in old_style_hooks(head):
        if hook.name == name:
            from torch.nn.utils.spectral_norm import SpectralNorm

            if isinstance(hook, SpectralNorm):
                return hook.compute_weight(head, do_power_iteration=False)
            return hook.compute_weight(head)
    return getattr(head, name)


def read_head(head: nn.Linear) -> tuple[Tensor, Tensor | None]:
    return read_param(head, "weight"), read_param(head, "bias")  # type: ignore[return-value]


def check_rng_state(rng: Any) -> tuple[str, Tensor] | None:
    """A saved random-policy state, checked whole (a corrupt one is refused at load)."""
    if rng is None:
        return None
    if (
        not isinstance(rng, (tuple, list))
        or len(rng) != 2
        or not isinstance(rng[0], str)
        or not isinstance(rng[1], Tensor)
        or rng[1].dtype != torch.uint8
        or rng[1].dim() != 1
    ):
        raise ValueError(
            "state['rng'] must be None or (device type, uint8 generator state) as "
            "state_dict() returns it"
        )
    dev_type, state = rng[0], rng[1].cpu()
    if dev_type == "cpu" or (dev_type == "cuda" and torch.cuda.is_available()):
        try:  # on a scratch generator, so a bad state fails here and not at a later forward
            torch.Generator(device=dev_type).set_state(state)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"state['rng'] is not a valid {dev_type!r} generator state: {err}"
            ) from None
    return dev_type, state


def check_armed_targets(
    targets: Any, num_classes: int, ignore_index: int, validate: bool
) -> None:
    """Refuse targets that are not class indices in range (or ``ignore_index``) or
    finite non-negative soft targets for a head with ``num_classes`` outputs; on CUDA
    without ``validate`` an asynchronous device assert instead of a host check."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    # Value checks on the host where that is free (CPU) or asked for; on CUDA
    # an asynchronous device assert, so no sync is added to the step. Tensors
    # inside a torch.func transform cannot be read on the host.
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor(targets)
    host_check = (validate or targets.device.type == "cpu") and not wrapped
    if targets.is_floating_point():
        if targets.dim() < 2 or targets.shape[-1] != num_classes:
            raise TargetsError(
                f"soft targets must have shape (..., {num_classes}) for a head with "
                f"{num_classes} outputs, got {tuple(targets.shape)}"
            )
        if host_check:
            if not bool(torch.isfinite(targets).all()) or bool((targets < 0).any()):
                raise TargetsError("soft targets must be finite and non-negative")
    elif targets.dtype == torch.bool or targets.is_complex():
        raise TypeError(
            f"targets must hold class indices or probabilities, got {targets.dtype}"
        )
    else:
        if targets.dim() == 0:
            raise TargetsError("targets must have a batch dimension, got a 0-d tensor")
        ok = ((targets >= 0) & (targets < num_classes)) | (targets == ignore_index)
        if host_check:
            if targets.numel() and not bool(ok.all()):
                bad = targets[~ok]
                lo, hi = int(bad.min()), int(bad.max())
                raise TargetsError(
                    f"class indices must lie in [0, {num_classes - 1}] for a head with "
                    f"{num_classes} outputs (or equal ignore_index={ignore_index}), "
                    f"got values in [{lo}, {hi}]"
                )
        elif targets.device.type == "cuda" and not wrapped:
            torch._assert_async(ok.all())


def check_target_shapes(z: Tensor, targets: Tensor, num_classes: int) -> None:
    """Refuse targets whose shape or device does not fit the head's input ``z``."""
    lead = tuple(z.shape[:-1])
    if z.dim() not in (2, 3):
        raise ValueError(
            f"the head's input must have shape (B, D) or (B, T, D), got {tuple(z.shape)}"
        )
    if targets.device != z.device:
        raise TargetsError(
            f"targets are on {targets.device} but the features reaching the head are on "
            f"{z.device}; pass targets on the model's device (y.to(device))"
        )
    shape = tuple(targets.shape)
    want = lead + (num_classes,) if targets.is_floating_point() else lead
    if shape != want:
        raise TargetsError(
            f"targets have shape {shape} but the features reaching the head have shape "
            f"{tuple(z.shape)}; expected targets of shape {want}"
        )


def check_optimizer_holds_head(
    optimizer: torch.optim.Optimizer | None, head: nn.Module, known: Tensor | None
) -> int | None:
    """The optimizer's group that now holds ``head.weight`` when ``fully_shard`` (FSDP2)
    replaced it by a DTensor parameter since ``known`` was read; None when nothing changed.

    An optimizer built before ``fully_shard`` does not hold the new parameter: refused,
    since ``eta`` would be read from an optimizer that no longer trains the head. Checked
    between steps, where FSDP2's parameters are the sharded ones (inside its forward they
    are plain unsharded tensors no optimizer holds).
    """
    w = head._parameters.get("weight")
    if optimizer is None or w is None or w is known or not is_dtensor(w):
        return None
    for i, group in enumerate(optimizer.param_groups):
        if any(p is w for p in group["params"]):
            return i
    raise TeacherError(
        "head.weight was replaced by a sharded (DTensor) parameter, as fully_shard does, "
        "after the teacher was built, and the teacher's optimizer does not hold the new "
        "one, so eta would be read from an optimizer that no longer trains the head. "
        "Build the teacher after fully_shard and the optimizer, or pass "
        "lr=lambda: opt.param_groups[0]['lr']"
    )
