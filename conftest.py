"""Doctest collection of the optional adapters only where their package is installed
(importing an adapter without it raises ImportError by design)."""

from __future__ import annotations

import importlib.util

collect_ignore = [
    f"torchdht/integrations/{name}.py"
    for name in ("lightning", "transformers")
    if importlib.util.find_spec(name) is None
]
