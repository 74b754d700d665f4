"""Reproductions of the paper's experiments: ``python -m torchdht.experiments NAME [options]``.

Each experiment is a module in this package with ``DESCRIPTION``,
``add_arguments(parser)``, ``config_from_args(args)`` (a dataclass config),
``run(config)`` and ``main(argv) -> int``, built on the common core
(:mod:`torchdht.experiments._core`: data, training loop, output, and the common
flags ``--data-root``, ``--out``, ``--seeds``, ``--iters``, ``--quick``,
``--workers``, ``--no-progress``). :data:`EXPERIMENTS` maps the subcommand name
to the module, so a new experiment is one new module and one line here. Every
experiment writes a CSV and a PNG under ``--out`` (default ``runs/<name>``) and
prints its table. Modules whose names start with ``_`` are the experiments'
shared parts (``_core``, ``_linear`` for the two linear experiments) or pieces of
one experiment (``_attribution_report``, ``_parameterized_*``).
"""

from __future__ import annotations

__all__ = ["EXPERIMENTS"]

EXPERIMENTS: dict[str, str] = {
    "omniscient": "torchdht.experiments.omniscient",
    "attribution": "torchdht.experiments.attribution",
    "sampler": "torchdht.experiments.sampler",
    "mixup": "torchdht.experiments.mixup",
    "parameterized": "torchdht.experiments.parameterized",
}
"""Subcommand name -> module path."""
