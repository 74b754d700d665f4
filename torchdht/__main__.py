"""Command line: ``torchdht COMMAND [options]`` or ``python -m torchdht COMMAND [options]``.

``COMMAND`` is ``demo`` or one of the paper's experiments (the names of
:data:`torchdht.experiments.EXPERIMENTS`, also run as ``python -m
torchdht.experiments NAME``); ``--help`` lists them, one line each. Every command
has the common flags of :mod:`torchdht.experiments._core` (``--data-root``,
``--out``, ``--seeds``, ``--iters``, ``--quick``, ``--workers``, ``--no-progress``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["COMMANDS", "main"]

DEMO_SUMMARY = "plain SGD vs performative teaching on a small MLP"
"""The demo's line in ``--help``."""


def _commands() -> dict[str, str]:
    from .experiments import EXPERIMENTS

    return {"demo": "torchdht.demo", **EXPERIMENTS}


COMMANDS: dict[str, str] = _commands()
"""Command name -> module path: the demo, then the experiments."""


def _prog() -> str:
    """``torchdht`` when run as the console script, else ``python -m torchdht``."""
    return "torchdht" if Path(sys.argv[0]).stem == "torchdht" else "python -m torchdht"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (also the ``torchdht`` console script).

    Args:
        argv: the arguments after the program name (default: None, meaning
            ``sys.argv[1:]``), the command's name first.

    Returns:
        The exit status: 0 on success, 1 when the command cannot run (for instance the
        demo's ``--data-root`` without ``MNIST/raw/``). Invalid arguments and ``--help``
        exit through ``SystemExit`` as argparse does.
    """
    from .experiments.__main__ import command_parser, run_command, summary

    words = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    if not (words and words[0] in COMMANDS):
        names = {"demo": DEMO_SUMMARY, **{n: summary(n) for n in COMMANDS if n != "demo"}}
        parser = command_parser(
            prog, names, metavar="COMMAND", title="commands",
            description="torchdht: data hallucination teaching. The demo, and the paper's\n"
            "experiments (also run as python -m torchdht.experiments NAME).",
        )
        args, rest = parser.parse_known_args(words)  # --help, or a usage error
        words = [args.command, *rest]
    return run_command(COMMANDS[words[0]], words[1:], f"{prog} {words[0]}")


if __name__ == "__main__":
    sys.exit(main())
