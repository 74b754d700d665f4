"""One home for argument checks: the same mistake gets the same error type in every module."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import torchdht
import torchdht.functional as tf
from torchdht import MixupTeacher, PerformativeTeacher, TeachingSampler
from torchdht._checks import check_float, check_int, check_seed, check_targets
from torchdht.errors import TargetsError, TeacherError, TeacherTypeError
from torchdht.linear import LR, DHTTeacher, SGDTeacher, Softmax, run
from torchdht.linear.unrolled import pretrain_vae
from torchdht.mixup.functional import to_soft_targets


def _pool() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g)
    return x, torch.where(x[:, 0] > 0, 1.0, -1.0)


def _sampler(**kw: Any) -> TeachingSampler:
    ds = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
    return TeachingSampler(ds, batch_size=2, score="random", **kw)


def test_a_wrong_type_is_a_type_error_and_a_value_error():
    assert issubclass(TeacherTypeError, TypeError) and issubclass(TeacherTypeError, TeacherError)
    assert issubclass(TeacherError, ValueError) and issubclass(TargetsError, TeacherError)
    assert torchdht.TeacherTypeError is TeacherTypeError


# A bool where a count belongs: one type in every module (some raised ValueError before).
COUNT_IS_A_BOOL: list[tuple[str, Callable[[], Any]]] = [
    ("linear DHTTeacher steps", lambda: DHTTeacher(LR, torch.zeros(3), 0.1, pool=_pool(),
                                                   steps=True)),
    ("linear run iters", lambda: run(SGDTeacher(LR, _pool()), LR, torch.zeros(3),
                                     torch.zeros(3), True, 0.1)),
    ("linear init dim", lambda: LR.init(True)),
    ("linear Softmax classes", lambda: Softmax(True)),
    ("mixup unroll_order", lambda: MixupTeacher(3, "beta", unroll_order=True)),
    ("sampler batch_size", lambda: _sampler(pool_factor=True)),
    ("functional steps", lambda: tf.linear_lookahead(torch.randn(4, 3), torch.zeros(4).long(),
                                                     torch.zeros(2, 3), None, 0.1, True)),
    ("performative steps", lambda: PerformativeTeacher(nn.Linear(3, 2), lr=0.1, solve_steps=True)),
]


@pytest.mark.parametrize("name,call", COUNT_IS_A_BOOL, ids=[c[0] for c in COUNT_IS_A_BOOL])
def test_a_bool_for_a_count_is_the_same_error_everywhere(name, call):
    with pytest.raises(TeacherTypeError):
        call()


# A float seed: one type everywhere (pretrain_vae raised ValueError, MixupTeacher TypeError).
SEED_IS_A_FLOAT: list[tuple[str, Callable[[], Any]]] = [
    ("linear SGDTeacher", lambda: SGDTeacher(LR, _pool(), seed=1.5)),
    ("linear pretrain_vae", lambda: pretrain_vae(torch.randn(4, 2), torch.zeros(4).long(),
                                                 dataset="halfmoon", seed=1.5)),
    ("mixup", lambda: MixupTeacher(3, "beta", seed=1.5)),
    ("sampler", lambda: _sampler(seed=1.5)),
    ("performative", lambda: PerformativeTeacher(nn.Linear(3, 2), lr=0.1, seed=1.5)),
]


@pytest.mark.parametrize("name,call", SEED_IS_A_FLOAT, ids=[c[0] for c in SEED_IS_A_FLOAT])
def test_a_float_seed_is_the_same_error_everywhere(name, call):
    with pytest.raises(TeacherTypeError, match="seed"):
        call()


def test_linear_raises_the_errors_of_torchdht_errors():
    with pytest.raises(TeacherError, match="lr"):
        DHTTeacher(LR, torch.zeros(3), -1.0, pool=_pool())
    with pytest.raises(TargetsError, match="-1 or \\+1"):
        SGDTeacher(LR, (torch.randn(3, 3), torch.tensor([0.0, 1.0, 1.0])))
    with pytest.raises(TeacherTypeError, match="learner"):
        SGDTeacher("LR", _pool())  # type: ignore[arg-type]


def test_check_int_and_check_float():
    assert check_int(np.int64(3), "n", 1, 3) == 3 and type(check_int(np.int64(3), "n")) is int
    with pytest.raises(TeacherError, match=r"n must be an int in \[1, 2\], got 3"):
        check_int(3, "n", 1, 2)
    with pytest.raises(TeacherTypeError, match="n must be an int >= 1, got float"):
        check_int(1.0, "n", 1)
    assert check_float(np.float32(0.5), "p", 0.0, 1.0, high_open=True) == 0.5
    assert check_float(math.inf, "norm", 0.0, low_open=True, finite=False) == math.inf
    for bad in (math.inf, math.nan, 0.0):
        with pytest.raises(TeacherError, match="eps must be a finite float > 0"):
            check_float(bad, "eps", 0.0, low_open=True)
    with pytest.raises(TeacherError):
        check_float(math.nan, "x", finite=False)
    for bad in (True, torch.tensor(0.5), "0.5"):
        with pytest.raises(TeacherTypeError):
            check_float(bad, "x")
    assert check_seed(None) is None and check_seed(np.int8(3)) == 3


def test_one_targets_check_for_mixup_and_the_sampler():
    y = torch.tensor([0, 156, 1], dtype=torch.uint8)
    with pytest.raises(TargetsError, match=r"targets: class indices must lie in \[0, 1\]"):
        check_targets(y, 2, rows=3, ignore_index=-100, name="targets")
    with pytest.raises(TargetsError, match=r"y: class indices must lie in \[0, 1\]"):
        to_soft_targets(y, 2, ignore_index=-100)
    soft = torch.rand(3, 2)
    assert check_targets(soft, 2, rows=3) is soft
    with pytest.raises(TargetsError, match="finite and non-negative"):
        check_targets(-soft, 2)


def test_typing_aliases():
    from torchdht import typing as tt

    assert set(tt.__all__) >= {"Params", "HeadFn", "LearningRate", "ObjectiveAndGrad", "Targets"}


def test_saved_state_checks_are_one_check_everywhere():
    """The teacher and the sampler refuse the same broken state with the same types."""
    from torch import nn

    from torchdht import PerformativeTeacher, TeachingSampler
    from torchdht._checks import check_saved_state
    from torchdht.errors import TeacherError, TeacherTypeError

    with pytest.raises(TeacherTypeError, match="state must be a dict"):
        check_saved_state([1], {"version"}, 1)
    with pytest.raises(TeacherError, match=r"missing keys \['seed'\]"):
        check_saved_state({"version": 1}, {"version", "seed"}, 1)
    with pytest.raises(TeacherError, match="unsupported state version 2"):
        check_saved_state({"version": 2}, {"version"}, 1)
    teacher = PerformativeTeacher(nn.Linear(4, 3), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    sampler = TeachingSampler(data, model=model, head=model[-1], lr=0.1, batch_size=4)
    for obj in (teacher, sampler):
        with pytest.raises(TeacherTypeError):
            obj.load_state_dict("not a dict")
        with pytest.raises(TeacherError, match="missing keys"):
            obj.load_state_dict({"version": 1})
    teacher.remove()
