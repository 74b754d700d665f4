"""Where the offline data sets are: one resolver for every loader, experiment and example.

The root comes from the caller's argument, else the ``TORCHDHT_DATA``
environment variable, else ``../shared/data`` beside the repository this
package runs from (a checkout, e.g. an editable install), else
``../shared/data`` relative to the working directory. The answer does not
depend on the working directory when the repository's sibling exists.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "default_root", "resolve_root"]

DATA_ENV_VAR = "TORCHDHT_DATA"
"""The environment variable naming the data root."""


def _repository_sibling() -> Path:
    """``shared/data`` beside the repository holding this file (``<repo>/../shared/data``)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def default_root() -> Path:
    """``$TORCHDHT_DATA`` if set, else ``../shared/data`` beside the repository when it
    exists, else ``../shared/data`` relative to the working directory.

    Example:
        >>> isinstance(default_root(), Path)
        True
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    sibling = _repository_sibling()
    if sibling.is_dir():
        return sibling
    return Path("..") / "shared" / "data"


def resolve_root(root: str | os.PathLike[str] | None = None, need: str | None = None) -> Path:
    """The data root: ``root`` if given, else :func:`default_root`.

    Args:
        root: a folder given by the caller (default: None).
        need: a path inside the root that must exist, e.g. ``"MNIST/raw"``
            (default: None, no check).

    Returns:
        The root as a ``Path``.

    Raises:
        FileNotFoundError: ``need`` is missing; the one-line message says where
            the resolver looked and how to point it elsewhere.

    Example:
        >>> resolve_root("/tmp")
        PosixPath('/tmp')
    """
    path = Path(root) if root is not None else default_root()
    if need is not None and not (path / need).exists():
        how = (
            "the argument" if root is not None
            else f"${DATA_ENV_VAR}" if os.environ.get(DATA_ENV_VAR)
            else f"the default (${DATA_ENV_VAR} unset; ../shared/data beside the repository, "
            f"else beside the working directory)"
        )
        raise FileNotFoundError(
            f"{need} not found under {path} (from {how}); pass a data root holding {need} or "
            f"set {DATA_ENV_VAR}"
        )
    return path
