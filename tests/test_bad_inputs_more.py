"""Bad inputs for MixupTeacher and TeachingSampler, in the style of test_bad_inputs.py.

Each row names the call, the exception type, and a fragment the message must
contain (the argument's name or what was expected). Inputs are cloned before
the call and compared after: nothing the user passed is modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from torchdht import HeadTypeError, MixupTeacher, TargetsError, TeacherError, TeachingSampler

X = torch.randn(8, 5)
Y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
YS = torch.rand(8, 3)
DX = torch.randn(40, 6)
DY = torch.randint(0, 4, (40,))
DS = TensorDataset(DX, DY)
INPUTS = (X, Y, YS, DX, DY)


def _mix(**kw: Any) -> MixupTeacher:
    return MixupTeacher(3, "beta", seed=0, **kw)


def _mixed(x: Any, y: Any) -> Any:
    return _mix()(x, y)


class _Net(nn.Module):
    def __init__(self, d: int = 10, head_in: int = 10, unsqueeze: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(6, d)
        self.head = nn.Linear(head_in, 4)
        self.unsqueeze = unsqueeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        return self.head(z.unsqueeze(1) if self.unsqueeze else z)


def _sampler(dataset: Any = DS, model: nn.Module | None = None, **kw: Any) -> TeachingSampler:
    net = _Net() if model is None else model
    head = kw.pop("head", getattr(net, "head", None))
    kw = {"batch_size": 5, "lr": 0.1, **kw}
    return TeachingSampler(dataset, model=net, head=head, **kw)


def _first_batch(**kw: Any) -> list[int]:
    return next(iter(_sampler(**kw)))


class _NoLen(Dataset):
    def __getitem__(self, i: int) -> Any:
        return DX[i], DY[i]


def _reward_before_observe() -> None:
    m = MixupTeacher(3, "reinforce", total_steps=10, seed=0)
    m(X, Y)
    m.reward(val_acc=0.5)


def _hypergradient_on(policy: str) -> None:
    kw = {"total_steps": 10} if policy == "reinforce" else {}
    m = MixupTeacher(3, policy, seed=0, learner_lr=0.1, **kw)
    m(X, Y)
    m.hypergradient_step(nn.Linear(5, 3), nn.functional.cross_entropy, (X, Y))


Case = tuple[str, Callable[[], Any], type[BaseException], str]
MIXUP: list[Case] = [
    # constructor
    ("num_classes 0", lambda: MixupTeacher(0, "beta"), ValueError, "num_classes"),
    ("num_classes float", lambda: MixupTeacher(3.0, "beta"), TypeError, "num_classes"),
    ("num_classes str", lambda: MixupTeacher("3", "beta"), TypeError, "num_classes"),
    ("num_classes True", lambda: MixupTeacher(True, "beta"), TypeError, "num_classes"),
    ("alpha 0", lambda: _mix(alpha=0.0), ValueError, "alpha"),
    ("alpha negative", lambda: _mix(alpha=-1.0), ValueError, "alpha"),
    ("alpha nan", lambda: _mix(alpha=float("nan")), ValueError, "alpha"),
    ("alpha str", lambda: _mix(alpha="1"), TypeError, "alpha"),
    ("actions empty", lambda: MixupTeacher(3, "discrete", actions=[]), ValueError, "actions"),
    (
        "actions above 1",
        lambda: MixupTeacher(3, "discrete", actions=[0.5, 1.5]),
        ValueError,
        "actions",
    ),
    (
        "actions below 0",
        lambda: MixupTeacher(3, "discrete", actions=[-0.1, 0.5]),
        ValueError,
        "actions",
    ),
    ("actions a str", lambda: MixupTeacher(3, "discrete", actions="01"), TypeError, "actions"),
    ("actions a float", lambda: MixupTeacher(3, "discrete", actions=0.5), TypeError, "actions"),
    ("unknown policy", lambda: MixupTeacher(3, "cutmix"), ValueError, "policy"),
    ("reinforce without total_steps", lambda: MixupTeacher(3), ValueError, "total_steps"),
    ("total_steps 0", lambda: MixupTeacher(3, total_steps=0), ValueError, "total_steps"),
    (
        "unknown reward_metric",
        lambda: MixupTeacher(3, total_steps=5, reward_metric="f1"),
        ValueError,
        "reward_metric",
    ),
    ("seed float", lambda: MixupTeacher(3, "beta", seed=1.5), TypeError, "seed"),
    ("lr negative", lambda: MixupTeacher(3, total_steps=5, lr=-1.0), ValueError, "lr"),
    # mixup(x, y)
    ("x a list", lambda: _mixed([[0.0] * 5] * 8, Y), TypeError, "x"),
    ("x integer", lambda: _mixed(Y.view(8, 1), Y), TypeError, "x"),
    ("x 0-d", lambda: _mixed(torch.tensor(1.0), Y), ValueError, "x"),
    ("y a list", lambda: _mixed(X, Y.tolist()), TypeError, "y"),
    ("y bool", lambda: _mixed(X, Y > 0), TypeError, "y"),
    ("y 2-d indices", lambda: _mixed(X, Y.view(8, 1)), TargetsError, "y"),
    ("y batch mismatch", lambda: _mixed(X, Y[:5]), TargetsError, "y"),
    ("y class 3 of 3", lambda: _mixed(X, Y + 1), TargetsError, "num_classes=3"),
    ("y negative class", lambda: _mixed(X, Y - 1), TargetsError, "y"),
    ("soft y wrong class count", lambda: _mixed(X, YS[:, :2]), TargetsError, "num_classes"),
    ("soft y negative", lambda: _mixed(X, -YS), TargetsError, "y"),
    ("soft y batch mismatch", lambda: _mixed(X, YS[:5]), TargetsError, "y"),
    # observe / reward / hypergradient_step
    ("observe nothing", lambda: _mix().observe(), ValueError, "train_loss"),
    ("observe a str", lambda: _mix().observe(train_loss="1"), TypeError, "train_loss"),
    ("observe nan", lambda: _mix().observe(train_loss=float("nan")), ValueError, "train_loss"),
    ("observe a vector", lambda: _mix().observe(train_loss=X[0]), ValueError, "train_loss"),
    ("reward before observe", _reward_before_observe, TeacherError, "observe"),
    (
        "hypergradient_step on reinforce",
        lambda: _hypergradient_on("reinforce"),
        TeacherError,
        "unroll",
    ),
    ("hypergradient_step on beta", lambda: _hypergradient_on("beta"), TeacherError, "unroll"),
]

SAMPLER: list[Case] = [
    ("batch_size 0", lambda: _sampler(batch_size=0), ValueError, "batch_size"),
    ("batch_size float", lambda: _sampler(batch_size=5.0), TypeError, "batch_size"),
    ("batch_size above n", lambda: _sampler(batch_size=41), ValueError, "batch_size"),
    ("pool_factor 0", lambda: _sampler(pool_factor=0), ValueError, "pool_factor"),
    ("pool too big", lambda: _sampler(batch_size=5, pool_factor=9), ValueError, "pool_factor"),
    ("unknown score", lambda: _sampler(score="best"), ValueError, "score"),
    ("rank = num_replicas", lambda: _sampler(num_replicas=2, rank=2), ValueError, "rank"),
    ("rank negative", lambda: _sampler(num_replicas=2, rank=-1), ValueError, "rank"),
    ("rank missing", lambda: _sampler(num_replicas=2), ValueError, "rank"),
    ("num_replicas 0", lambda: _sampler(num_replicas=0, rank=0), ValueError, "num_replicas"),
    ("dataset without __len__", lambda: _sampler(dataset=_NoLen()), TypeError, "__len__"),
    ("dataset an int", lambda: _sampler(dataset=5), TypeError, "dataset"),
    ("dataset empty", lambda: _sampler(dataset=TensorDataset(DX[:0], DY[:0])), ValueError, "empty"),
    ("seed float", lambda: _sampler(seed=1.0), TypeError, "seed"),
    ("collate_fn not callable", lambda: _sampler(collate_fn=3), TypeError, "collate_fn"),
    ("greedy without lr", lambda: _sampler(lr=None), ValueError, "lr="),
    ("no model", lambda: TeachingSampler(DS, batch_size=5, lr=0.1), ValueError, "model="),
    ("head a Conv1d", lambda: _sampler(head=nn.Conv1d(1, 1, 1)), HeadTypeError, "head"),
    ("head a ReLU", lambda: _sampler(head=nn.ReLU()), TypeError, "nn.Linear"),
    ("head not in model", lambda: _sampler(head=nn.Linear(10, 4)), ValueError, "submodule"),
    (
        "model not a Module",
        lambda: _sampler(model=lambda x: x, head=nn.Linear(6, 4)),
        TypeError,
        "model",
    ),
    (
        "features of the wrong shape",
        lambda: _first_batch(model=_Net(unsqueeze=True)),
        ValueError,
        "features",
    ),
    (
        "targets with a wrong class",
        lambda: _first_batch(dataset=TensorDataset(DX, DY + 4)),
        TargetsError,
        "class indices",
    ),
    (
        "targets of bool dtype",
        lambda: _first_batch(dataset=TensorDataset(DX, DY > 1)),
        TypeError,
        "targets",
    ),
    (
        "targets of wrong shape",
        lambda: _first_batch(dataset=TensorDataset(DX, DY.view(40, 1, 1))),
        TargetsError,
        "targets",
    ),
    ("load_state_dict not a dict", lambda: _sampler().load_state_dict([]), TypeError, "state"),
    ("set_epoch negative", lambda: _sampler().set_epoch(-1), ValueError, "epoch"),
]

CASES = (
    MIXUP
    + SAMPLER
    + [
        (
            "model features do not match the head",
            lambda: _first_batch(model=_Net(d=8, head_in=10)),
            ValueError,
            "in_features",
        ),
    ]
)


@pytest.mark.parametrize("name,call,exc,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, fragment):
    snapshot = [t.clone() for t in INPUTS]
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value), f"message {str(info.value)!r} lacks {fragment!r}"
    for before, now in zip(snapshot, INPUTS):
        assert torch.equal(before, now)
