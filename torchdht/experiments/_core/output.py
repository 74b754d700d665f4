"""One writer for an experiment's files (CSV, JSON config, text, plots), and one table."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

__all__ = ["Writer", "format_table"]

Format = Union[str, Callable[[Any], Any]]
"""A cell's format: a format spec for floats (``".4f"``) or a function of the value."""


def _cell(value: Any, fmt: Format | None, list_format: str) -> Any:
    if value is None:
        return ""
    if callable(fmt):
        return fmt(value)
    if isinstance(value, (list, tuple)):
        return ";".join(format(v, list_format) for v in value)
    if fmt is not None and isinstance(value, float):
        return format(value, fmt)
    return value


class Writer:
    """Writes an experiment's files into one folder, created at the first write; with no
    folder (None or ``""``) it writes nothing.

    Attributes:
        out: the folder, or None.
        written: the files written, in order.

    Example:
        >>> import tempfile
        >>> w = Writer(Path(tempfile.mkdtemp()) / "run")
        >>> p = w.csv("r.csv", [{"a": 1.23456, "b": [1.0, 2.0], "c": None}], ["a", "b", "c"],
        ...           float_format=".2f")
        >>> p.read_text().splitlines()
        ['a,b,c', '1.23,1.00;2.00,']
        >>> w.json("config.json", {"x": 1}).read_text()
        '{\\n  "x": 1\\n}'
        >>> [f.name for f in w.written], Writer(None).text("t.txt", "x")
        (['r.csv', 'config.json'], None)
    """

    def __init__(self, out: str | os.PathLike[str] | None) -> None:
        self.out = None if out is None or str(out) == "" else Path(out)
        self.written: list[Path] = []

    def _path(self, name: str) -> Path:
        assert self.out is not None
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / name
        self.written.append(path)
        return path

    def path(self, name: str) -> Path | None:
        """The path of a file ``name`` that the caller writes itself (``torch.save``, say):
        the folder is created and the file counted in :attr:`written`; None with no folder.

        Example:
            >>> Writer(None).path("teacher.pt") is None
            True
        """
        return None if self.out is None else self._path(name)

    def csv(
        self,
        name: str,
        rows: Iterable[Mapping[str, Any]],
        fields: Sequence[str],
        *,
        float_format: str | None = None,
        formats: Mapping[str, Format] | None = None,
        list_format: str = ".2f",
    ) -> Path | None:
        """Write ``rows`` (only ``fields``, in that order) as CSV.

        A cell: None is empty; ``formats[field]`` (a float format spec or a function) if
        given; a list is joined with ``;`` (each ``list_format``); a float takes
        ``float_format``; anything else is written as is.
        """
        if self.out is None:
            return None
        path = self._path(name)
        formats = formats or {}
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(fields))
            w.writeheader()
            for r in rows:
                w.writerow({k: _cell(r[k], formats.get(k, float_format), list_format)
                            for k in fields})
        return path

    def json(self, name: str, obj: Any) -> Path | None:
        """Write ``obj`` as indented JSON (what JSON cannot hold, as ``str``)."""
        return self.text(name, json.dumps(obj, indent=2, default=str))

    def text(self, name: str, text: str) -> Path | None:
        """Write ``text`` to the file ``name``."""
        if self.out is None:
            return None
        path = self._path(name)
        path.write_text(text)
        return path

    @contextlib.contextmanager
    def figure(self, name: str, ncols: int = 1,
               figsize: tuple[float, float] = (7.0, 4.5), *, nrows: int = 1,
               dpi: int = 120) -> Iterator[list[Any]]:
        """A row of ``ncols`` matplotlib axes (Agg backend) to draw on (``nrows`` rows of
        them: the axes row after row); saved to ``name`` (``dpi``, tight layout) when the
        block ends. The figure is ``axes[0].figure``. Draw only when :attr:`out` is set."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, grid = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
        try:
            yield list(grid.flat)
            fig.tight_layout()
            if self.out is not None:
                fig.savefig(self._path(name), dpi=dpi)
        finally:
            plt.close(fig)


def format_table(header: Sequence[str], body: Iterable[Sequence[str]],
                 markdown: bool = False) -> str:
    """An aligned text table (first column left, the others right), or a Markdown one.

    Example:
        >>> print(format_table(("name", "acc"), [("sgd", "97.1"), ("dht", "9.0")]))
        name |  acc
        -----+-----
        sgd  | 97.1
        dht  |  9.0
        >>> print(format_table(("name", "acc"), [("sgd", "97.1")], markdown=True))
        | name | acc |
        |---|---|
        | sgd | 97.1 |
    """
    rows = [tuple(r) for r in body]
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join([cells[0].ljust(widths[0]),
                           *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])
