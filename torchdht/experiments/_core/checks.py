"""The checks of an experiment's config: one ``ValueError`` per setting out of range, its
message naming the command-line flag (``--solver-steps`` for ``solver_steps``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

__all__ = ["check_choice", "check_min", "check_rate", "flag"]


def flag(name: str) -> str:
    """The command-line flag of setting ``name``.

    Example:
        >>> flag("solver_steps")
        '--solver-steps'
    """
    return "--" + name.replace("_", "-")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """``value`` must be one of ``choices``.

    Example:
        >>> check_choice("dataset", "cifar", ("halfmoon", "mnist35"))
        Traceback (most recent call last):
        ...
        ValueError: --dataset must be one of ('halfmoon', 'mnist35'), got 'cifar'
    """
    if value not in choices:
        raise ValueError(f"{flag(name)} must be one of {tuple(choices)}, got {value!r}")


def check_min(config: Any, names: Iterable[str], low: int) -> None:
    """Each setting ``names`` of ``config`` that is not None must be ``>= low``.

    Example:
        >>> from types import SimpleNamespace
        >>> check_min(SimpleNamespace(seeds=2, iters=0, truncate=None), ("seeds", "iters",
        ...           "truncate"), 1)
        Traceback (most recent call last):
        ...
        ValueError: --iters must be >= 1, got 0
    """
    for name in names:
        value = getattr(config, name)
        if value is not None and value < low:
            raise ValueError(f"{flag(name)} must be >= {low}, got {value}")


def check_rate(config: Any, names: Iterable[str], *, positive: bool) -> None:
    """Each setting ``names`` of ``config`` that is not None must be finite and ``> 0``
    (``positive``) or ``>= 0``.

    Example:
        >>> from types import SimpleNamespace
        >>> check_rate(SimpleNamespace(lr=0.0), ["lr"], positive=True)
        Traceback (most recent call last):
        ...
        ValueError: --lr must be > 0 and finite, got 0.0
        >>> check_rate(SimpleNamespace(alpha=0.0, l2=None), ["alpha", "l2"], positive=False)
    """
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"{flag(name)} must be {'>' if positive else '>='} 0 and finite, "
                             f"got {value}")
