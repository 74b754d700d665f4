"""Command line: ``python -m torchdht.experiments NAME [options]`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import EXPERIMENTS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser with one subcommand per entry of ``EXPERIMENTS``.

    Example:
        >>> "omniscient" in build_parser().format_help()
        True
    """
    parser = argparse.ArgumentParser(
        prog="python -m torchdht.experiments",
        description="Reproductions of the DHT paper's experiments; each writes CSV + PNG "
        "under --out and prints a table.",
    )
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    sub.required = True
    for name, path in EXPERIMENTS.items():
        module = importlib.import_module(path)
        p = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen experiment; returns the exit status."""
    args = build_parser().parse_args(argv)
    args._module.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
