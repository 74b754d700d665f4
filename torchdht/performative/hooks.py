"""The hooks a :class:`~torchdht.PerformativeTeacher` puts on a model, and what they need
to know about the autograd, ``torch.func`` and ``torch.compile`` context they run in.

The hooks hold their teacher weakly and copy (``copy.deepcopy``, EMA copies,
``torch.save(model)``) as an :class:`InertHook`, which carries neither the
teacher nor its optimizer and passes features through.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import TorchScriptError

if TYPE_CHECKING:
    from .teacher import PerformativeTeacher

# Heads that carry a teacher; a weak map so that a dropped model frees its entry.
ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.ref] = weakref.WeakKeyDictionary()

__all__ = [
    "ATTACHED",
    "ArmHook",
    "InertHook",
    "StraightThrough",
    "TaughtCall",
    "TeacherHook",
    "compiling",
    "in_backward",
    "remove_inert_hooks",
    "suspend_teachers",
    "under_functorch",
]


class StraightThrough(torch.autograd.Function):
    """Forward: ``z~``. Backward: the incoming gradient goes to ``z`` unchanged,
    plus ``scale() * extra`` when the released-code behaviour is on. ``scale``
    is read at backward time, when a GradScaler has set its current scale.

    Written with ``setup_context`` and a generated vmap rule, so that
    ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``vmap``) of a
    taught model work."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z: Tensor, z_tilde: Tensor, extra: Tensor | None, scale: Callable[[], Any]
    ) -> Tensor:
        return z_tilde.view_as(z_tilde)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.extra = inputs[2]
        ctx.scale = inputs[3]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        grad = grad_out
        if ctx.extra is not None:
            grad = grad_out + (ctx.extra * ctx.scale()).to(grad_out.dtype)
        return grad, None, None, None


class TeacherHook:
    """The forward pre-hook on the head. It holds its teacher weakly, so the
    teacher's lifetime owns the hook, and a copy of it (``copy.deepcopy``,
    EMA copies, pickling by ``torch.save(model)``) is an inert hook that
    carries neither the teacher nor its optimizer."""

    __slots__ = ("_ref", "__weakref__")

    def __init__(self, teacher: PerformativeTeacher) -> None:
        self._ref = weakref.ref(teacher)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        teacher = self._ref()
        if teacher is None or module is not teacher.head:  # a shallow copy of the head
            return None
        return teacher._hook(module, args, kwargs)

    def __deepcopy__(self, memo: dict) -> InertHook:
        return InertHook()

    def __reduce__(self) -> tuple[type, tuple]:
        return (InertHook, ())

    @property
    def __name__(self) -> str:  # what torch.jit.script reads first of a hook
        raise TorchScriptError(
            "torch.jit.script cannot compile a PerformativeTeacher's hook; call "
            "teacher.remove() before scripting (torch.compile handles the teacher)"
        )


class InertHook:
    """What a copy of a taught head carries in place of the teacher's hook: it
    passes the features through. A new teacher can attach beside it."""

    __slots__ = ()

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        return None

    def __repr__(self) -> str:
        return "torchdht inert hook (a copy of a taught head; passes features through)"

    @property
    def __name__(self) -> str:  # what torch.jit.script reads first of a hook
        raise TorchScriptError(
            "torch.jit.script cannot compile the inert torchdht hook that a copy of a taught "
            "model carries; call torchdht.performative.remove_inert_hooks(model) before "
            "scripting"
        )


class ArmHook:
    """A forward pre-hook on the model that arms its teacher from the model's own
    arguments; holds the teacher weakly and copies as an inert hook, like :class:`TeacherHook`."""

    __slots__ = ("_ref", "key", "calls", "__weakref__")

    def __init__(self, teacher: PerformativeTeacher, key: str | int, calls: int) -> None:
        self._ref = weakref.ref(teacher)
        self.key, self.calls = key, calls

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        teacher = self._ref()
        if teacher is None or not (teacher.enabled and teacher.head.training):
            return None
        if isinstance(self.key, str):
            targets = kwargs.get(self.key)
        else:
            targets = args[self.key] if len(args) > self.key else None
        if targets is not None:  # a forward without labels arms nothing
            teacher.set_targets(targets, calls=self.calls)
        return None

    def __deepcopy__(self, memo: dict) -> InertHook:
        return InertHook()

    def __reduce__(self) -> tuple[type, tuple]:
        return (InertHook, ())

    @property
    def __name__(self) -> str:
        raise TorchScriptError(
            "torch.jit.script cannot compile a PerformativeTeacher's arming hook; call "
            "teacher.remove() before scripting"
        )


def remove_inert_hooks(module: nn.Module) -> int:
    """Remove the inert hooks that copies of taught heads carry (from ``copy.deepcopy``,
    EMA copies or ``torch.save(model)``), e.g. before ``torch.jit.script``.

    Returns:
        How many were removed.

    Example:
        >>> import copy
        >>> from torchdht import PerformativeTeacher
        >>> model = nn.Sequential(nn.Linear(4, 3))
        >>> teacher = PerformativeTeacher(model[0], lr=0.1)
        >>> ema = copy.deepcopy(model)
        >>> remove_inert_hooks(ema), len(ema[0]._forward_pre_hooks)
        (1, 0)
        >>> teacher.remove()
    """
    removed = 0
    for m in module.modules():
        for key, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, InertHook):
                del m._forward_pre_hooks[key]
                m._forward_pre_hooks_with_kwargs.pop(key, None)
                removed += 1
    return removed


class TaughtCall(NamedTuple):
    """One taught call of this step, kept so that a recomputation (activation
    checkpointing) hands the head the very same features."""

    shape: tuple[int, ...]
    fingerprint: Tensor
    z_tilde: Tensor | None
    extra: Tensor | None


def in_backward() -> bool:
    """Whether this thread is running an autograd backward (where activation
    checkpointing recomputes its forward)."""
    return torch._C._current_graph_task_id() != -1


def compiling() -> bool:
    """Whether dynamo is tracing (a user's ``torch.compile`` around the model)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


def under_functorch() -> bool:
    """Whether a ``torch.func`` transform is running."""
    return torch._C._functorch.peek_interpreter_stack() is not None


@contextlib.contextmanager
def suspend_teachers(module: nn.Module) -> Iterator[list[PerformativeTeacher]]:
    """Within the block every :class:`PerformativeTeacher` on a submodule of
    ``module`` passes features through (each teacher's ``enabled`` is restored
    afterwards); yields the teachers found.

    For forwards that are not training steps of the learner, e.g. the virtual
    step of :meth:`torchdht.MixupTeacher.hypergradient_step`.

    Example:
        >>> from torchdht import PerformativeTeacher
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> teacher = PerformativeTeacher(model[-1], lr=0.1)
        >>> with suspend_teachers(model) as found:
        ...     out = model(torch.randn(2, 4))  # no targets needed
        >>> len(found), teacher.enabled
        (1, True)
        >>> teacher.remove()
    """
    with contextlib.ExitStack() as stack:
        teachers = []
        for m in module.modules():
            ref = ATTACHED.get(m)
            teacher = ref() if ref is not None else None
            if teacher is not None:
                teachers.append(stack.enter_context(teacher.suspended()))
        yield teachers
