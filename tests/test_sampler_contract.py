"""TeachingSampler's drop-in contract: ignore_index, integer label dtypes, the global RNGs
around scoring, and NumPy scalars / non-finite values as arguments."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from torchdht.errors import TargetsError
from torchdht.sampler import TeachingSampler

D, C = 6, 4
IGNORED = [1, 5, 6, 12, 20, 27, 33, 38]  # 8 of 40 rows


pytestmark = pytest.mark.usefixtures("one_thread")


def _xy(n: int = 40, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g)


def _linear(seed: int = 1) -> nn.Linear:
    """A linear learner: its input is the feature, so the features are the data exactly."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(D, C)
    with torch.no_grad():
        head.weight.copy_(torch.randn(C, D, generator=g))
        head.bias.copy_(torch.randn(C, generator=g))
    return head


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(D, 8), nn.ReLU())
        self.head = nn.Linear(8, C)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _sampler(ds: Any, model: nn.Module | None = None, **kw: Any) -> TeachingSampler:
    net = _linear() if model is None else model
    head = net if isinstance(net, nn.Linear) else net.head
    kw = {"batch_size": 8, "lr": 0.5, "seed": 0, **kw}
    return TeachingSampler(ds, model=net, head=head, **kw)


# ------------------------------------------------------------------ ignore_index
@pytest.mark.parametrize("score", ["greedy", "loss"])
def test_ignored_candidates_are_as_if_absent(score):
    """One pool = the whole dataset: with 8 ignored rows it must pick, score and look
    ahead exactly as the sampler on the 32 other rows does (the same rows in the same
    order, so the same lookahead target head, bit for bit)."""
    x, y = _xy()
    y_ign = y.clone()
    y_ign[IGNORED] = -100
    kept = [i for i in range(40) if i not in IGNORED]
    full = _sampler(TensorDataset(x, y_ign), score=score, pool_factor=5)  # pool of 40
    ref = _sampler(TensorDataset(x[kept], y[kept]), score=score, pool_factor=4)  # pool of 32
    assert len(full) == len(ref) == 1
    batch, ref_batch = next(iter(full)), next(iter(ref))
    assert batch == [kept[i] for i in ref_batch]
    assert not set(batch) & set(IGNORED)
    assert full.stats["ignored"] == 8 and ref.stats["ignored"] == 0
    for k in ref.stats:
        if k != "ignored":
            assert full.stats[k] == ref.stats[k], k  # theta_dist: the same target head


def test_ignored_candidates_come_last_in_index_order():
    x, y = _xy(12)
    y[[0, 2, 3, 5, 7, 8, 9, 11]] = -100  # 4 scored: 1, 4, 6, 10
    ds = TensorDataset(x, y)
    scored = [1, 4, 6, 10]
    # objective_eta="sample": the objective's step does not depend on batch_size
    kw = {"objective_eta": "sample"}
    for score in ("greedy", "loss"):
        s = _sampler(ds, score=score, batch_size=6, pool_factor=2, **kw)
        batch = next(iter(s))
        assert sorted(batch[:4]) == scored
        assert batch[4:] == [0, 2]  # then the ignored ones, lowest index first
        assert s.stats["ignored"] == 8 and math.isfinite(s.stats["picked_score_mean"])
        # the scored ones in the order of the pool without the ignored rows
        ref = _sampler(
            TensorDataset(x[scored], y[scored]), score=score, batch_size=4, pool_factor=1, **kw
        )
        assert batch[:4] == [scored[i] for i in next(iter(ref))]


def test_all_candidates_ignored():
    x, y = _xy(8)
    s = _sampler(TensorDataset(x, torch.full((8,), -100)), batch_size=4, pool_factor=2)
    assert next(iter(s)) == [0, 1, 2, 3]
    assert s.stats["theta_dist"] == 0.0  # nothing to look ahead on: theta* = theta
    assert math.isnan(s.stats["pool_score_mean"]) and s.stats["ignored"] == 8


def test_nan_scores_come_before_ignored_candidates():
    x, y = _xy(8)
    x[3] = float("nan")  # a scored candidate with a NaN loss
    y[[0, 1]] = -100
    s = _sampler(TensorDataset(x, y), score="loss", batch_size=8, pool_factor=1)
    assert next(iter(s))[-3:] == [3, 0, 1]


def test_ignore_index_is_configurable_and_may_be_a_class():
    x, y = _xy()
    y[IGNORED] = 7
    s = _sampler(TensorDataset(x, y), ignore_index=7, pool_factor=5)
    with pytest.raises(TargetsError, match=r"class indices must lie in \[0, 3\]"):
        next(iter(_sampler(TensorDataset(x, y), pool_factor=5)))  # 7 is not -100
    batch = next(iter(s))
    assert not set(batch) & set(IGNORED) and s.stats["ignored"] == 8
    # a valid class id as ignore_index: that class's candidates are ignored
    x, y = _xy()
    s = _sampler(TensorDataset(x, y), ignore_index=0, pool_factor=10, batch_size=4)
    batch = next(iter(s))
    assert 0 not in y[batch].tolist() and s.stats["ignored"] == int((y == 0).sum()) > 0


def test_random_score_ignores_labels():
    x, y = _xy()
    y[IGNORED] = -100
    plain = TeachingSampler(TensorDataset(x, y), batch_size=8, score="random")
    assert list(plain) == [p.tolist() for p in plain.candidate_pools(0)]


# ------------------------------------------------------------ integer label dtypes
class _ItemDataset(Dataset):
    """Items collated by default_collate (not the TensorDataset fast path)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


@pytest.mark.parametrize("wrap", [TensorDataset, _ItemDataset])
@pytest.mark.parametrize("score", ["greedy", "loss"])
def test_every_integer_label_dtype_gives_the_int64_batches(score, wrap):
    x, y = _xy(64)
    y_ign = y.clone()
    y_ign[::5] = -100
    net = _Net()
    for labels, dtypes in (
        (y, (torch.uint8, torch.int8, torch.int16, torch.int32)),
        (y_ign, (torch.int8, torch.int16, torch.int32)),  # uint8 cannot hold -100
    ):
        ref = _sampler(wrap(x, labels), model=net, score=score, pool_factor=2)
        ref_batches = list(ref)
        for dtype in dtypes:
            s = _sampler(wrap(x, labels.to(dtype)), model=net, score=score, pool_factor=2)
            assert list(s) == ref_batches, dtype
            assert s.stats == ref.stats, dtype


def test_uint8_labels_are_widened_before_the_ignore_check():
    x, y = _xy()
    y = y.to(torch.uint8)
    y[3] = 156  # equals -100 as a uint8 compared with -100 without widening
    with pytest.raises(TargetsError, match=r"got values in \[156, 156\]"):
        next(iter(_sampler(TensorDataset(x, y), pool_factor=5)))
    s = _sampler(TensorDataset(x, y), pool_factor=5, ignore_index=156)
    assert 3 not in next(iter(s)) and s.stats["ignored"] == 1


# ------------------------------------------------------- the global RNGs around scoring
class _Augmented(Dataset):
    """Random augmentation from torch's, Python's and NumPy's global RNGs."""

    def __init__(self, n: int = 48) -> None:
        self.x, self.y = _xy(n)
        self.loads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        self.loads += 1
        noise = 0.1 * torch.randn(D) + random.random() + float(np.random.rand())
        return self.x[i] + noise, self.y[i]


def _rng_states() -> tuple[Tensor, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _same_states(a: tuple[Tensor, Any, Any], b: tuple[Tensor, Any, Any]) -> bool:
    return (
        torch.equal(a[0], b[0])
        and a[1] == b[1]
        and a[2][0] == b[2][0]
        and np.array_equal(a[2][1], b[2][1])
        and a[2][2:] == b[2][2:]
    )


@pytest.mark.parametrize("score", ["greedy", "loss"])
def test_scoring_leaves_the_global_rngs_as_they_were(score):
    ds = _Augmented()
    s = _sampler(ds, model=_Net(), score=score, batch_size=4, pool_factor=3)
    it = iter(s)
    for _ in range(len(s)):
        before = _rng_states()
        next(it)
        assert _same_states(before, _rng_states())
    assert ds.loads == 48  # every candidate was loaded (and augmented)


def test_training_views_are_those_of_a_plain_loader_on_the_same_indices():
    """The loop with the sampler draws exactly what a loop over the yielded batches
    without any scoring draws: the same augmented views, the same RNG states after."""
    ds = _Augmented()
    s = _sampler(ds, model=_Net(), batch_size=4, pool_factor=3)
    yielded: list[list[int]] = []

    class Recorded:
        def __len__(self) -> int:
            return len(s)

        def __iter__(self) -> Any:
            for batch in s:
                yielded.append(batch)
                yield batch

    def run(batch_sampler: Any) -> tuple[list[Tensor], tuple[Tensor, Any, Any]]:
        torch.manual_seed(3)
        random.seed(3)
        np.random.seed(3)
        gen = torch.Generator().manual_seed(0)
        views = [xb for xb, _ in DataLoader(ds, batch_sampler=batch_sampler, generator=gen)]
        return views, _rng_states()

    views, after = run(Recorded())
    ref_views, ref_after = run(list(yielded))  # the same indices, no scoring
    assert len(views) == len(ref_views) == len(s) > 1
    assert all(torch.equal(a, b) for a, b in zip(views, ref_views))
    assert _same_states(after, ref_after)
    # the scoring pass loaded (and augmented) every candidate: 4 pools of 12, besides
    # the 4 batches of 4 each loader fetched; without the restore those 48 loads would
    # have advanced the RNGs and changed the views
    assert ds.loads == 48 + 2 * 16


def test_rngs_are_restored_when_scoring_fails():
    class Boom(_Net):
        def forward(self, x: Tensor) -> Tensor:
            self.head(self.body(x))
            raise RuntimeError("boom")

    ds = _Augmented()
    s = _sampler(ds, model=Boom(), score="loss", batch_size=4, pool_factor=3)
    before = _rng_states()
    with pytest.raises(RuntimeError, match="boom"):
        next(iter(s))
    assert ds.loads > 0 and _same_states(before, _rng_states())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scoring_leaves_the_cuda_rng_of_the_model_device_as_it_was():
    class CudaAug(_Augmented):
        def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
            x, y = super().__getitem__(i)
            return x + torch.randn(D, device="cuda").cpu(), y

    net = _Net().cuda()
    s = _sampler(CudaAug(), model=net, batch_size=4, pool_factor=3)
    cpu, cuda = torch.get_rng_state(), torch.cuda.get_rng_state()
    next(iter(s))
    assert torch.equal(torch.get_rng_state(), cpu)
    assert torch.equal(torch.cuda.get_rng_state(), cuda)


# ---------------------------------------------------------- NumPy scalars, bad values
def test_numpy_scalars_are_accepted_and_give_the_same_batches():
    x, y = _xy(64)
    ds = TensorDataset(x, y)
    net = _Net()
    plain = dict(
        batch_size=4,
        pool_factor=2,
        lookahead_steps=2,
        steps_per_epoch=3,
        seed=5,
        num_replicas=2,
        rank=1,
        score_batch_size=7,
        lr=0.25,
        lookahead_lr=0.5,
        ignore_index=-1,
    )
    numpy = {k: (np.float32(v) if isinstance(v, float) else np.int64(v)) for k, v in plain.items()}
    a, b = _sampler(ds, model=net, **plain), _sampler(ds, model=net, **numpy)
    a.set_epoch(2)
    b.set_epoch(np.int64(2))
    assert list(a) == list(b)
    assert a.stats == b.stats
    assert b.state_dict() == a.state_dict()
    for k in ("batch_size", "pool_factor", "seed", "rank", "ignore_index", "steps_per_epoch"):
        assert type(getattr(b, k)) is int, k
    assert type(b.lookahead_lr) is float and type(b.lr) is float
    assert [p.tolist() for p in a.candidate_pools(1)] == [
        p.tolist() for p in b.candidate_pools(np.int64(1))
    ]


_DS = TensorDataset(*_xy())


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        ({"ignore_index": True}, TypeError, "ignore_index"),
        ({"ignore_index": -100.0}, TypeError, "ignore_index"),
        ({"ignore_index": np.float32(3)}, TypeError, "ignore_index"),
        ({"ignore_index": "-100"}, TypeError, "ignore_index"),
        ({"batch_size": np.bool_(True)}, TypeError, "batch_size"),
        ({"batch_size": np.float32(4)}, TypeError, "batch_size"),
        ({"pool_factor": True}, TypeError, "pool_factor"),
        ({"seed": np.bool_(False)}, TypeError, "seed"),
        ({"seed": 1.0}, TypeError, "seed"),
        ({"lookahead_steps": np.int8(0)}, ValueError, "lookahead_steps"),
        ({"lr": True}, TypeError, "lr"),
        ({"lr": np.bool_(True)}, TypeError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": np.float32("inf")}, ValueError, "lr"),
        ({"lr": -1.0}, ValueError, "lr must be a positive float"),
        ({"lookahead_lr": float("inf")}, ValueError, "lookahead_lr"),
        ({"lookahead_lr": np.float64("nan")}, ValueError, "lookahead_lr"),
        ({"lookahead_lr": False}, TypeError, "lookahead_lr"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_bad_arguments_name_the_argument(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        _sampler(_DS, **kwargs)


def test_set_epoch_refuses_bools_and_floats():
    s = _sampler(_DS)
    with pytest.raises(TypeError, match="epoch"):
        s.set_epoch(True)
    with pytest.raises(TypeError, match="epoch"):
        s.set_epoch(np.float32(1))
