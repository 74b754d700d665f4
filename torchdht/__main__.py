"""Command line: ``torchdht COMMAND [options]`` or ``python -m torchdht COMMAND [options]``.

``COMMAND`` is ``demo`` or one of the paper's experiments (the names of
:data:`torchdht.experiments.EXPERIMENTS`, also run as ``python -m
torchdht.experiments NAME``); ``--help`` lists them, one line each.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _prog() -> str:
    """``torchdht`` when run as the console script, else ``python -m torchdht``."""
    return "torchdht" if Path(sys.argv[0]).stem == "torchdht" else "python -m torchdht"


def _methods(text: str) -> list[str]:
    from .demo import METHODS

    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {bad or [text]}; choose from {','.join(METHODS)}"
        )
    return names


DEMO_SUMMARY = "plain SGD vs performative teaching on a small MLP"
"""The demo's line in ``--help``."""


def _build_parser(prog: str = "python -m torchdht") -> argparse.ArgumentParser:
    from . import demo
    from .experiments import EXPERIMENTS
    from .experiments.__main__ import listing, summary

    commands = {"demo": DEMO_SUMMARY, **{name: summary(name) for name in EXPERIMENTS}}
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [-h] COMMAND [options]",
        description="torchdht: data hallucination teaching. The demo, and the paper's\n"
        "experiments (also run as python -m torchdht.experiments NAME).",
        epilog=f"Options of one command: {prog} COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(prog=prog, dest="command", metavar="COMMAND", title="commands",
                                description=listing(commands), help=argparse.SUPPRESS)
    sub.required = True
    p = sub.add_parser(
        "demo",
        description=(
            "Train a small MLP with plain SGD (sgd), a random perturbation in the teacher's "
            "cap (random), the greedy teacher (dht), the greedy teacher as in the authors' "
            "released code (dht-released) and a control, that code's extra encoder gradient "
            "with the random perturbation (random-released), on the same seeds and data "
            "order; print test accuracy and time per step, write results.csv and "
            "accuracy.png. Uses scikit-learn's digits (no download) unless an MNIST folder "
            "is given."
        ),
    )
    p.add_argument("--iters", type=int, default=demo.DEFAULT_ITERS,
                   help="training iterations per run (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=demo.DEFAULT_SEEDS,
                   help="number of seeds, 0..N-1, per method (default: %(default)s)")
    p.add_argument("--lr", type=float, default=demo.DEFAULT_LR,
                   help="SGD learning rate, also the teacher's eta (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=demo.DEFAULT_BATCH_SIZE,
                   help="examples per batch (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.1,
                   help="chord radius of the teacher's cap (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="iterations between test evaluations (default: iters // 30, at least 1)")
    p.add_argument("--hidden", type=int, default=demo.DEFAULT_HIDDEN,
                   help="hidden layer width (default: %(default)s)")
    p.add_argument("--methods", type=_methods, default=",".join(demo.METHODS),
                   help="comma-separated subset of the methods (default: %(default)s)")
    p.add_argument("--data-root", default=os.environ.get(demo.DATA_ENV_VAR) or None,
                   help=f"folder holding MNIST/raw/ to use MNIST instead of digits; "
                        f"${demo.DATA_ENV_VAR} sets the default")
    p.add_argument("--out", default="runs/demo",
                   help="output folder for results.csv and accuracy.png (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads during the demo, 0 leaves torch's setting "
                        "(default: %(default)s)")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    for name in EXPERIMENTS:  # listed above; main() hands their arguments to the experiments
        sub.add_parser(name, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (also the ``torchdht`` console script).

    Args:
        argv: the arguments after the program name (default: None, meaning
            ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the demo cannot run (for
        instance a ``--data-root`` without ``MNIST/raw/``); an experiment's
        name first hands the rest to :func:`torchdht.experiments.__main__.main`.
        Invalid arguments and ``--help`` exit through ``SystemExit`` as
        argparse does.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    from .experiments import EXPERIMENTS

    if words and words[0] in EXPERIMENTS:
        from .experiments.__main__ import main as run_experiment

        return run_experiment(words, prog=prog)
    args = _build_parser(prog).parse_args(words)
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(
                iters=args.iters,
                seeds=args.seeds,
                lr=args.lr,
                batch_size=args.batch_size,
                eps=args.eps,
                eval_every=args.eval_every,
                hidden=args.hidden,
                methods=args.methods,
                data_root=args.data_root,
                out=args.out,
                threads=args.threads if args.threads > 0 else None,
                progress=not args.quiet,
            )
        except (FileNotFoundError, ImportError, ValueError, FloatingPointError) as exc:
            print(f"{prog} demo: error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
