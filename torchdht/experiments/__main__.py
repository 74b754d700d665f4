"""Command line: ``python -m torchdht.experiments NAME [options]`` (``--help`` lists them).

``torchdht NAME`` and ``python -m torchdht NAME`` run the same experiments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import EXPERIMENTS

__all__ = ["SUMMARIES", "build_parser", "listing", "main", "summary"]

SUMMARIES: dict[str, str] = {
    "omniscient": "omniscient linear teachers: SGD, IMT, DHT (Fig. 3)",
    "parameterized": "learned teachers of a linear learner (Figs. 4-10)",
    "attribution": "cause of performative teaching's gain (MNIST, CIFAR)",
    "sampler": "TeachingSampler on MNIST: greedy vs loss vs random",
    "mixup": "learned mixup teaching on CIFAR-10 (Table 1)",
}
"""One line per experiment for ``--help`` listings (short enough for 80 columns)."""


def summary(name: str) -> str:
    """The one-line summary of experiment ``name``: its :data:`SUMMARIES` entry, else the
    first sentence of its module's ``DESCRIPTION`` (importing the module).

    Example:
        >>> summary("omniscient")
        'omniscient linear teachers: SGD, IMT, DHT (Fig. 3)'
    """
    if name in SUMMARIES:
        return SUMMARIES[name]
    text = importlib.import_module(EXPERIMENTS[name]).DESCRIPTION
    return text.split(". ")[0].rstrip(".")


def listing(summaries: dict[str, str]) -> str:
    """``name  summary`` lines, aligned, one per entry (argparse would wrap long names).

    Example:
        >>> print(listing({"a": "first", "bcd": "second"}))
        a    first
        bcd  second
    """
    width = max(map(len, summaries), default=0)
    return "\n".join(f"{name.ljust(width)}  {text}" for name, text in summaries.items())


def build_parser(prog: str = "python -m torchdht.experiments") -> argparse.ArgumentParser:
    """The parser with one subcommand per entry of ``EXPERIMENTS``.

    Args:
        prog: the program name shown in usage and error messages.

    Example:
        >>> "omniscient" in build_parser().format_help()
        True
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [-h] EXPERIMENT [options]",
        description="Reproductions of the DHT paper's experiments; each writes CSV + PNG\n"
        "under --out and prints a table.",
        epilog=f"Options of one experiment: {prog} EXPERIMENT --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(prog=prog, dest="experiment", metavar="EXPERIMENT",
                                title="experiments",
                                description=listing({n: summary(n) for n in EXPERIMENTS}),
                                help=argparse.SUPPRESS)
    sub.required = True
    for name, path in EXPERIMENTS.items():
        module = importlib.import_module(path)
        p = sub.add_parser(name, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments") -> int:
    """Parse ``argv`` and run the chosen experiment; returns the exit status.

    Args:
        argv: the arguments after the program name (default: None, meaning
            ``sys.argv[1:]``), the experiment's name first.
        prog: the program name shown in usage and error messages.
    """
    args = build_parser(prog).parse_args(argv)
    args._module.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
