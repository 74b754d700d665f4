"""A table of bad inputs for every public entry point that has landed.

Each row names the call, the exception type, and a fragment the message must
contain (the argument's name or what was expected). Inputs are cloned before
the call and compared after: nothing the user passed is modified.

Covered: PerformativeTeacher (constructor, set_targets, the taught forward,
load_state_dict) and torchdht.functional. MixupTeacher and TeachingSampler get
their rows when they land.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchdht.functional as tf
from torchdht import MissingTargetsError, PerformativeTeacher, TargetsError, TeacherError


def _head() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(5, 3)


def _teach(z: torch.Tensor, y: Any, **kw: Any) -> None:
    head = _head()
    with PerformativeTeacher(head, lr=0.1, **kw) as t:
        t.set_targets(y)
        head(z)


Z = torch.randn(4, 5)
Y = torch.tensor([0, 1, 2, 0])
U = tf.normalize(torch.randn(4, 5))
W = torch.randn(3, 5)

CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # constructor
    (
        "head is a Conv2d",
        lambda: PerformativeTeacher(nn.Conv2d(1, 1, 1), lr=0.1),
        TypeError,
        "Conv2d",
    ),
    ("head is None", lambda: PerformativeTeacher(None, lr=0.1), TypeError, "nn.Linear"),  # type: ignore[arg-type]
    ("no lr, no optimizer", lambda: PerformativeTeacher(_head()), ValueError, "optimizer"),
    ("lr is a string", lambda: PerformativeTeacher(_head(), lr="0.1"), TypeError, "lr"),  # type: ignore[arg-type]
    ("lr is negative", lambda: PerformativeTeacher(_head(), lr=-1.0), ValueError, "lr"),
    ("lr is nan", lambda: PerformativeTeacher(_head(), lr=float("nan")), ValueError, "lr"),
    ("eps is 0", lambda: PerformativeTeacher(_head(), lr=0.1, eps=0), ValueError, "eps"),
    ("eps above 2", lambda: PerformativeTeacher(_head(), lr=0.1, eps=3.0), ValueError, "eps"),
    (
        "eps is a tensor",
        lambda: PerformativeTeacher(_head(), lr=0.1, eps=torch.tensor(0.1)),
        TypeError,
        "eps",
    ),
    (
        "lookahead_steps 0",
        lambda: PerformativeTeacher(_head(), lr=0.1, lookahead_steps=0),
        ValueError,
        "lookahead_steps",
    ),
    (
        "solve_steps float",
        lambda: PerformativeTeacher(_head(), lr=0.1, solve_steps=1.5),
        TypeError,
        "solve_steps",
    ),
    (
        "solve_steps True",
        lambda: PerformativeTeacher(_head(), lr=0.1, solve_steps=True),
        TypeError,
        "solve_steps",
    ),
    (
        "policy unknown",
        lambda: PerformativeTeacher(_head(), lr=0.1, policy="Greedy"),
        ValueError,
        "policy",
    ),
    ("seed is a string", lambda: PerformativeTeacher(_head(), lr=0.1, seed="0"), TypeError, "seed"),  # type: ignore[arg-type]
    # set_targets and the taught forward
    ("targets a list", lambda: _teach(Z, [0, 1, 2, 0]), TypeError, "targets"),
    ("targets bool", lambda: _teach(Z, Y.bool()), TypeError, "targets"),
    ("targets 0-d", lambda: _teach(Z, torch.tensor(0)), TargetsError, "batch"),
    ("targets too short", lambda: _teach(Z, Y[:3]), TargetsError, "(4,)"),
    ("labels too large", lambda: _teach(Z, torch.tensor([0, 1, 3, 0])), TargetsError, "[0, 2]"),
    ("labels negative", lambda: _teach(Z, torch.tensor([0, -1, 2, 0])), TargetsError, "[0, 2]"),
    ("soft targets wrong C", lambda: _teach(Z, torch.full((4, 4), 0.25)), TargetsError, "(..., 3)"),
    ("soft targets 1-d", lambda: _teach(Z, torch.full((4,), 0.25)), TargetsError, "(..., 3)"),
    (
        "soft targets negative",
        lambda: _teach(Z, torch.full((4, 3), -0.1)),
        TargetsError,
        "non-negative",
    ),
    (
        "soft targets inf",
        lambda: _teach(Z, torch.full((4, 3), float("inf"))),
        TargetsError,
        "finite",
    ),
    ("soft targets wrong B", lambda: _teach(Z, torch.full((3, 3), 0.3)), TargetsError, "(4, 3)"),
    (
        "targets on another device",
        lambda: _teach(Z, torch.empty(4, dtype=torch.long, device="meta")),
        TargetsError,
        "device",
    ),
    ("features 1-d", lambda: _teach(torch.randn(5), torch.tensor([0])), ValueError, "(B, D)"),
    (
        "features 4-d",
        lambda: _teach(torch.randn(2, 2, 2, 5), torch.zeros(2, 2, 2, dtype=torch.long)),
        ValueError,
        "(B, T, D)",
    ),
    (
        "features integer",
        lambda: _teach(torch.ones(4, 5, dtype=torch.long), Y),
        TypeError,
        "floating",
    ),
    ("no targets armed", lambda: _head_without_targets(), MissingTargetsError, "set_targets"),
    ("second teacher", lambda: _second_teacher(), TeacherError, "already"),
    (
        "load_state_dict junk",
        lambda: PerformativeTeacher(_head(), lr=0.1).load_state_dict({}),
        ValueError,
        "missing",
    ),
    ("load_state_dict version", lambda: _bad_version(), ValueError, "version"),
    # functional
    ("project_cap eps", lambda: tf.project_cap(Z, U, 0.0), ValueError, "eps"),
    ("sample_cap 1-d centre", lambda: tf.sample_cap(U[0], 0.1), ValueError, "center"),
    ("sample_cap D=1", lambda: tf.sample_cap(torch.ones(3, 1), 0.1), ValueError, "center"),
    ("chord_to_angle str", lambda: tf.chord_to_angle("1"), TypeError, "eps"),  # type: ignore[arg-type]
    (
        "objective W mismatch",
        lambda: tf.linear_ce_objective(Z, Y, torch.randn(3, 4), None, torch.randn(3, 4), None, 0.1),
        ValueError,
        "weight",
    ),
    (
        "objective W* mismatch",
        lambda: tf.linear_ce_objective(Z, Y, W, None, torch.randn(2, 5), None, 0.1),
        ValueError,
        "weight_star",
    ),
    (
        "objective bias shape",
        lambda: tf.linear_ce_objective(Z, Y, W, torch.zeros(2), W, torch.zeros(2), 0.1),
        ValueError,
        "bias",
    ),
    (
        "objective targets",
        lambda: tf.linear_ce_objective(Z, Y[:2], W, None, W, None, 0.1),
        ValueError,
        "targets",
    ),
    (
        "objective z 1-d",
        lambda: tf.linear_ce_objective(Z[0], Y, W, None, W, None, 0.1),
        ValueError,
        "z must",
    ),
    ("lookahead steps", lambda: tf.linear_lookahead(Z, Y, W, None, 0.1, -1), ValueError, "steps"),
    (
        "solve z 1-d",
        lambda: tf.solve_cap(lambda v: (v.sum(-1), v), Z[0], 0.1, 3),
        ValueError,
        "z must",
    ),
    (
        "solve steps",
        lambda: tf.solve_cap(lambda v: (v.sum(-1), v), Z, 0.1, -2),
        ValueError,
        "steps",
    ),
    (
        "solve lr",
        lambda: tf.solve_cap(lambda v: (v.sum(-1), v), Z, 0.1, 3, lr=0.0),
        ValueError,
        "lr",
    ),
    # the drop-in contract's rows
    ("head 1 input wide", lambda: PerformativeTeacher(nn.Linear(1, 3), lr=0.1), TypeError,
     "in_features=1"),
    ("head 1 output wide", lambda: PerformativeTeacher(nn.Linear(5, 1), lr=0.1), TypeError,
     "out_features=1"),
    (
        "head is a tuple (timm distilled)",
        lambda: PerformativeTeacher((_head(), _head()), lr=0.1),  # type: ignore[arg-type]
        TypeError,
        "one teacher to each",
    ),
    ("lr is inf", lambda: PerformativeTeacher(_head(), lr=float("inf")), ValueError, "lr"),
    (
        "ignore_index is a float",
        lambda: PerformativeTeacher(_head(), lr=0.1, ignore_index=-100.0),  # type: ignore[arg-type]
        TypeError,
        "ignore_index",
    ),
    ("calls is 0", lambda: _arm(Y, calls=0), ValueError, "calls"),
    ("calls with a list", lambda: _arm([Y, Y], calls=2), ValueError, "calls"),
    ("targets an empty list", lambda: _arm([]), ValueError, "at least one"),
    ("targets a list of lists", lambda: _arm([[0, 1]]), TypeError, "torch.Tensor"),
    (
        "label neither a class nor ignore_index",
        lambda: _arm(torch.tensor([0, 1, -1, -100])),
        ValueError,
        "ignore_index=-100",
    ),
    ("third call armed for two", lambda: _three_calls(), MissingTargetsError, "calls=n"),
    ("state rng corrupt", lambda: _bad_state(rng=("cpu", torch.zeros(3, dtype=torch.uint8))),
     ValueError, "generator state"),
    ("state rng not a pair", lambda: _bad_state(rng="cpu"), ValueError, "rng"),
    ("state steps negative", lambda: _bad_state(steps_taught=-1), ValueError, "steps_taught"),
]


def _head_without_targets() -> None:
    head = _head()
    with PerformativeTeacher(head, lr=0.1):
        head(Z)


def _second_teacher() -> None:
    head = _head()
    with PerformativeTeacher(head, lr=0.1):
        PerformativeTeacher(head, lr=0.1)


def _arm(targets: Any, **kw: Any) -> None:
    t = PerformativeTeacher(_head(), lr=0.1)
    try:
        t.set_targets(targets, **kw)
    finally:
        t.remove()


def _three_calls() -> None:
    head = _head()
    with PerformativeTeacher(head, lr=0.1) as t:
        t.set_targets(Y, calls=2)
        head(Z)
        head(Z)
        head(Z)


def _bad_state(**changes: Any) -> None:
    t = PerformativeTeacher(_head(), lr=0.1, policy="random", seed=0)
    try:
        t.load_state_dict({**t.state_dict(), **changes})
    finally:
        t.remove()


def _bad_version() -> None:
    t = PerformativeTeacher(_head(), lr=0.1)
    try:
        t.load_state_dict({**t.state_dict(), "version": 99})
    finally:
        t.remove()


@pytest.mark.parametrize("name,call,exc,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, fragment):
    snapshot = [t.clone() for t in (Z, Y, U, W)]
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value), f"message {str(info.value)!r} lacks {fragment!r}"
    for before, now in zip(snapshot, (Z, Y, U, W)):
        assert torch.equal(before, now)


def test_empty_batch_passes_through():
    head = _head()
    with PerformativeTeacher(head, lr=0.1) as t:
        t.set_targets(torch.zeros(0, dtype=torch.long))
        out = head(torch.zeros(0, 5))
        assert out.shape == (0, 3)
        assert t.stats["n_rows"] == 0


def test_non_finite_rows_are_left_unchanged():
    head = _head()
    z = torch.randn(4, 5)
    z[0] = float("nan")
    z[2] = float("-inf")
    seen = {}
    h = head.register_forward_hook(lambda m, a, o: seen.update(z=a[0].detach()))
    with PerformativeTeacher(head, lr=0.5) as t:
        t.set_targets(Y)
        head(z)
    h.remove()
    assert torch.equal(seen["z"][[0, 2]].isnan(), z[[0, 2]].isnan())
    assert torch.equal(torch.nan_to_num(seen["z"][[0, 2]]), torch.nan_to_num(z[[0, 2]]))
    assert torch.isfinite(seen["z"][[1, 3]]).all()
