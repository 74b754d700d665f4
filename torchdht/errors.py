"""Exception types raised by torchdht.

Every error subclasses ``ValueError`` or ``TypeError`` so that code catching
the built-in types keeps working. The same mistake gets the same type
everywhere: a wrong value or shape is a :class:`TeacherError` (a
``ValueError``), a wrong type a :class:`TeacherTypeError` (a ``TypeError``).
"""

from __future__ import annotations

__all__ = [
    "TeacherError",
    "TeacherTypeError",
    "TargetsError",
    "MissingTargetsError",
    "HeadTypeError",
    "TorchScriptError",
]


class TeacherError(ValueError):
    """A teacher (or one of its functions) was given a value it does not support."""


class TeacherTypeError(TeacherError, TypeError):
    """An argument has the wrong type (a bool or a float for a count, a string for a rate).

    A ``TypeError``; also a :class:`TeacherError`, hence a ``ValueError``,
    because some entry points raised ``ValueError`` for these before the
    checks were shared, and ``except ValueError`` around them keeps working.
    """


class TargetsError(TeacherError):
    """Targets (labels) do not match the features, the head or the learner."""


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
