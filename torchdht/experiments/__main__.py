"""Command line: ``python -m torchdht.experiments NAME [options]`` (``--help`` lists them).

``torchdht NAME`` and ``python -m torchdht NAME`` run the same experiments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence

from . import EXPERIMENTS

__all__ = ["SUMMARIES", "build_parser", "command_parser", "listing", "main", "run_command",
           "summary"]

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


def command_parser(prog: str, commands: Mapping[str, str], *, metavar: str, title: str,
                   description: str) -> argparse.ArgumentParser:
    """The parser that lists ``commands`` (name -> one-line summary), one line each, for
    ``--help`` and for the usage error of an unknown name; each command parses its own
    options (:func:`run_command`)."""
    parser = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} [-h] {metavar} [options]", description=description,
        epilog=f"Options of one {metavar.lower()}: {prog} {metavar} --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(prog=prog, dest="command", metavar=metavar, title=title,
                                description=listing(dict(commands)), help=argparse.SUPPRESS)
    sub.required = True
    for name in commands:
        sub.add_parser(name, add_help=False)
    return parser


def build_parser(prog: str = "python -m torchdht.experiments") -> argparse.ArgumentParser:
    """The parser listing the experiments of ``EXPERIMENTS``.

    Args:
        prog: the program name shown in usage and error messages.

    Example:
        >>> "omniscient" in build_parser().format_help()
        True
    """
    return command_parser(
        prog, {n: summary(n) for n in EXPERIMENTS}, metavar="EXPERIMENT", title="experiments",
        description="Reproductions of the DHT paper's experiments; each writes CSV + PNG\n"
        "under --out and prints a table.",
    )


def run_command(module_path: str, argv: Sequence[str], prog: str) -> int:
    """Run the command of module ``module_path`` on ``argv`` with its ``main(argv,
    prog=...)``; returns the exit status."""
    return int(importlib.import_module(module_path).main(list(argv), prog=prog))


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments") -> int:
    """Run the experiment named first in ``argv``; returns the exit status.

    Args:
        argv: the arguments after the program name (default: None, meaning
            ``sys.argv[1:]``), the experiment's name first.
        prog: the program name shown in usage and error messages.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    if not (words and words[0] in EXPERIMENTS):
        args, rest = build_parser(prog).parse_known_args(words)  # --help, or a usage error
        words = [args.command, *rest]
    return run_command(EXPERIMENTS[words[0]], words[1:], f"{prog} {words[0]}")


if __name__ == "__main__":
    sys.exit(main())
