"""How many rows of a wide head's (rows, C) blocks the teacher works on at once.

A taught step must not need much more memory than the plain step it
teaches. For a head with many classes (a 32,000-way token head on 1,024 rows)
every (N, C) temporary of the lookahead, the solver and the statistics is as
large as the head's own logits, and the solver keeps a dozen of them. The
functions here split the rows into blocks of at most :data:`ROW_BLOCK`
numbers per (rows, C) tensor; each block is solved on its own (rows do not
interact in the solve) and the lookahead's weight gradient is summed over
blocks. The split depends on the shapes only: no host sync, and a narrow head
(up to ``ROW_BLOCK / N`` classes, 2,048 classes on 128 rows) runs in one
block, exactly as without it.
"""

from __future__ import annotations

__all__ = ["ROW_BLOCK", "block_rows"]

ROW_BLOCK = 1 << 18
"""Numbers in one (rows, C) block (1 MiB in float32)."""


def block_rows(n: int, c: int) -> int:
    """Rows per block for ``n`` rows of ``c`` classes: ``n`` when one block holds them all.

    Example:
        >>> block_rows(128, 10), block_rows(1024, 32_000), block_rows(128, 10_000)
        (128, 8, 26)
    """
    if n * c <= ROW_BLOCK:
        return n
    return max(1, ROW_BLOCK // max(c, 1))
