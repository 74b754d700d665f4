"""Reproductions of the paper's experiments: ``python -m torchdht.experiments NAME [options]``.

Each experiment is a module in this package with ``DESCRIPTION``,
``add_arguments(parser)`` and ``main(args)``; :data:`EXPERIMENTS` maps the
subcommand name to the module, so a new experiment is one new module and one
line here. Every experiment writes a CSV and a PNG under ``--out`` (default
``runs/<name>``) and prints its table.
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
