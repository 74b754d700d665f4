"""Exception types raised by torchdht.

Every error subclasses ``ValueError`` or ``TypeError`` so that code catching
the built-in types keeps working.
"""

from __future__ import annotations

__all__ = [
    "TeacherError",
    "TargetsError",
    "MissingTargetsError",
    "HeadTypeError",
    "TorchScriptError",
]


class TeacherError(ValueError):
    """A teacher was configured or used in a way it does not support."""


class TargetsError(TeacherError):
    """Targets passed to ``set_targets`` do not match the features or the head."""


class MissingTargetsError(TeacherError):
    """A training forward reached the head without ``set_targets`` before it."""


class HeadTypeError(TypeError):
    """The module given as the head is not one the teacher can work with."""


class TorchScriptError(TeacherError, AttributeError):
    """``torch.jit.script`` met a torchdht hook, which TorchScript cannot compile.

    Also an ``AttributeError``, because TorchScript meets the hook by reading
    its ``__name__``; code that probes with ``getattr(hook, "__name__", None)``
    sees no name, as for any callable object.
    """
