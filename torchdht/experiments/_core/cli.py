"""One command-line convention for the demo and every experiment.

Every command has the same common flags, added by :func:`add_common_arguments`
and shown with their defaults in ``--help``:

=================  ===============================================================
``--data-root``    the data root (:func:`torchdht.data.resolve_root`)
``--out``          the output folder
``--seeds N``      the number of seeds, ``0 .. N-1`` (or from ``--first-seed``)
``--iters N``      training steps per run
``--quick``        the short, CI-sized run of the whole pipeline
``--workers N``    parallel processes (1 where the command runs in one process)
``--no-progress``  no progress output
=================  ===============================================================

Lists are comma-separated. Older spellings of a flag stay accepted as hidden
aliases. An experiment module has ``DESCRIPTION``, ``add_arguments(parser)``,
``config_from_args(args) -> Config`` (a dataclass that checks itself) and
``run(config)``; :func:`run_main` is its ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from ...data import DATA_ENV_VAR

__all__ = [
    "COMMON_FLAGS",
    "DATA_ROOT_DEFAULT",
    "HelpFormatter",
    "ListAction",
    "add_aliases",
    "add_common_arguments",
    "build_parser",
    "fill_presets",
    "parse_config",
    "preset_help",
    "run_main",
]

COMMON_FLAGS = ("--data-root", "--out", "--seeds", "--iters", "--quick", "--workers",
                "--no-progress")
"""The flags every command has."""

DATA_ROOT_DEFAULT = f"${DATA_ENV_VAR}, else ../shared/data beside the repository"
"""The default data root in words (see :func:`torchdht.data.default_root`)."""

RUN_ERRORS = (FileNotFoundError, ImportError, ValueError, FloatingPointError)
"""What :func:`run_main` reports in one line with exit status 1."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, unless its help already says ``(default...`` or it is
    an on/off flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or isinstance(
                action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        return super()._get_help_string(action) or ""


class ListAction(argparse.Action):
    """A comma-separated list; several words are also accepted (``--methods a b`` = ``a,b``).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--methods", nargs="+", action=ListAction)
        >>> p.parse_args(["--methods", "a,b", "c"]).methods
        ['a', 'b', 'c']
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        words = [values] if isinstance(values, str) else list(values)
        setattr(namespace, self.dest, [w.strip() for v in words for w in v.split(",")
                                       if w.strip()])


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_common_arguments(
    p: argparse.ArgumentParser,
    *,
    data: str,
    out: str | None,
    seeds: str,
    iters: str,
    quick: str,
    workers: str | None = None,
    first_seed: bool = False,
    data_default: str = DATA_ROOT_DEFAULT,
    out_help: str | None = None,
) -> None:
    """Add the common flags (:data:`COMMON_FLAGS`) to ``p`` in one group.

    ``--seeds`` and ``--iters`` default to None: the command fills them from its
    presets (:func:`fill_presets`), so their help says the default in words.

    Args:
        p: the command's parser.
        data: what the data root must hold, e.g. ``"folder holding MNIST/raw/"``.
        out: the default output folder.
        seeds: help of ``--seeds``, with its default.
        iters: help of ``--iters``, with its default.
        quick: what ``--quick`` runs.
        workers: help of ``--workers`` for a command that runs in parallel, whose default
            is the CPU count (default: None, a command in one process: only 1 is accepted).
        first_seed: also add ``--first-seed`` (seeds are then first .. first + N - 1).
        data_default: the default data root in words.
        out_help: the default output folder in words, where ``out`` is None (it depends
            on other options).

    Example:
        >>> p = argparse.ArgumentParser(formatter_class=HelpFormatter)
        >>> add_common_arguments(p, data="folder", out="runs/x", seeds="(default: 1)",
        ...     iters="(default: 9)", quick="a short run")
        >>> a = p.parse_args(["--iters", "3", "--quick"])
        >>> a.iters, a.quick, a.out, a.workers, a.no_progress, a.data_root
        (3, True, 'runs/x', 1, False, None)
    """
    g = p.add_argument_group("common options (every command has them)")
    g.add_argument("--data-root", default=None, metavar="DIR",
                   help=f"{data} (default: {data_default})")
    g.add_argument("--out", default=out, metavar="DIR",
                   help="output folder" + (f" {out_help}" if out_help else ""))
    g.add_argument("--seeds", type=_positive, default=None, metavar="N",
                   help=f"number of seeds, 0..N-1 {seeds}" if not first_seed
                   else f"number of seeds, --first-seed .. --first-seed + N - 1 {seeds}")
    if first_seed:
        g.add_argument("--first-seed", type=int, default=0, metavar="S", help="the first seed")
    g.add_argument("--iters", type=_positive, default=None, metavar="N",
                   help=f"training steps per run {iters}")
    g.add_argument("--quick", action="store_true", help=f"a short run: {quick}")
    if workers is None:
        g.add_argument("--workers", type=_positive, default=1, choices=(1,), metavar="N",
                       help="parallel processes: this command runs in one, so only 1")
    else:
        g.add_argument("--workers", type=_positive, default=os.cpu_count() or 1, metavar="N",
                       help=workers)
    g.add_argument("--no-progress", action="store_true", help="no progress output")


def add_aliases(p: argparse.ArgumentParser, aliases: Mapping[str, Sequence[str]]) -> None:
    """Accept older spellings of options already in ``p``, hidden from ``--help``.

    Args:
        p: the parser.
        aliases: spellings by destination, e.g. ``{"data_root": ["--root"]}``; each sets
            the same value, parsed the same way, as the option of that destination.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--iters", type=int, default=5)
        >>> _ = p.add_argument("--no-progress", action="store_true")
        >>> add_aliases(p, {"iters": ["--iterations"], "no_progress": ["--quiet"]})
        >>> p.parse_args(["--iterations", "3", "--quiet"])
        Namespace(iters=3, no_progress=True)
        >>> "--iterations" in p.format_help()
        False
    """
    for dest, spellings in aliases.items():
        action = next(a for a in p._actions if a.dest == dest)
        for spelling in spellings:
            if action.nargs == 0:  # an on/off flag
                p.add_argument(spelling, dest=dest, action="store_const", const=action.const,
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            else:
                typed: dict[str, Any] = {} if action.type is None else {"type": action.type}
                p.add_argument(spelling, dest=dest, nargs=action.nargs, action=type(action),
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS, **typed)


def fill_presets(args: argparse.Namespace, presets: Mapping[str, Any]) -> argparse.Namespace:
    """Set every option of ``args`` left at None to its value in ``presets``.

    Example:
        >>> fill_presets(argparse.Namespace(iters=None, seeds=4), {"iters": 9, "seeds": 1})
        Namespace(iters=9, seeds=4)
    """
    for key, value in presets.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def preset_help(what: str, key: str, defaults: Mapping[str, Any],
                quick: Mapping[str, Any]) -> str:
    """The help of an option whose default is a preset: ``what``, then its default and its
    ``--quick`` value.

    Example:
        >>> preset_help("DHT random starts", "restarts", {"restarts": 16}, {"restarts": 4})
        'DHT random starts (default: 16; --quick: 4)'
    """
    return f"{what} (default: {defaults[key]}; --quick: {quick[key]})"


def build_parser(module: ModuleType, prog: str) -> argparse.ArgumentParser:
    """The parser of an experiment module: its ``DESCRIPTION`` and ``add_arguments``."""
    p = argparse.ArgumentParser(prog=prog, description=module.DESCRIPTION,
                                formatter_class=HelpFormatter)
    module.add_arguments(p)
    return p


def parse_config(module: ModuleType, argv: Sequence[str] | None = None,
                 prog: str | None = None) -> Any:
    """Parse ``argv`` with the module's parser into its config; a config that does not
    check (``ValueError``) is a usage error (``SystemExit`` 2, as argparse's own)."""
    p = build_parser(module, prog or f"python -m {module.__name__}")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return module.config_from_args(args)
    except ValueError as exc:
        p.error(str(exc))


def run_main(module: ModuleType, argv: Sequence[str] | None = None,
             prog: str | None = None) -> int:
    """An experiment's ``main``: parse, run, return the exit status.

    Returns:
        0 on success; 1 when the run fails for a reason it can state in one line (missing
        data, a diverged run, a setting the data cannot meet), printed to stderr as
        ``PROG: error: ...``. Usage errors and ``--help`` exit through ``SystemExit``.
    """
    prog = prog or f"python -m {module.__name__}"
    config = parse_config(module, argv, prog)
    try:
        module.run(config)
    except RUN_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0
