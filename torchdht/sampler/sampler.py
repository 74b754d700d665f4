"""TeachingSampler: IMT-style example selection as a DataLoader batch sampler.

Iterative machine teaching (IMT) picks, at every step, the pool example that
minimises the greedy objective of eq. 4 of the DHT paper: how much one SGD
step on that example moves the learner's parameters towards a target. This
module makes that a ``torch.utils.data.Sampler`` over batches of indices for
any network whose last layer is an ``nn.Linear`` (the head):

1. draw a candidate pool of ``pool_factor * batch_size`` indices from the
   epoch's permutation (the same on every rank; each rank takes its own slice,
   as ``DistributedSampler`` does);
2. run the model on the candidates in eval mode without grad, reading the
   head's input features with a temporary forward pre-hook;
3. score every candidate and yield the ``batch_size`` best.

Scores: ``"greedy"`` (eq. 4 on the head, with a target head from a few
lookahead SGD steps on the pool, or a given one), ``"loss"`` (highest
cross-entropy first) and ``"random"`` (plain shuffled batches, the baseline).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import IterableDataset, Sampler, TensorDataset, default_collate

from .._checks import (
    LearnerRate,
    check_head,
    check_ignore_index,
    check_int,
    check_positive,
    check_targets,
)
from ..errors import TeacherError, TeacherTypeError
from ..functional.lookahead import linear_lookahead
from ..functional.objective import linear_ce_objective
from ..typing import LearningRate

__all__ = ["TeachingSampler"]

_SCORES = ("greedy", "loss", "random")
_STATE_VERSION = 1
_CONFIG_KEYS = (
    "dataset_len",
    "batch_size",
    "pool_size",
    "num_replicas",
    "drop_last",
    "steps_per_epoch",
)

@contextlib.contextmanager
def _global_rngs_kept(device: torch.device) -> Iterator[None]:
    """Restore the global RNGs on exit: torch's CPU generator, the CUDA generator of
    ``device`` (when it is a CUDA device), Python's ``random`` and NumPy's legacy
    global generator (when NumPy is imported). Saving them costs a few microseconds."""
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    py_state = random.getstate()
    np_random = sys.modules.get("numpy.random")
    np_state = np_random.get_state() if np_random is not None else None
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        try:
            yield
        finally:
            random.setstate(py_state)
            if np_random is not None:
                np_random.set_state(np_state)


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _unwrap(model: nn.Module) -> nn.Module:
    """The module to run for scoring: compiled and DDP/DP wrappers are unwrapped.

    ``torch.compile`` may ignore hooks added after compilation, and a
    ``DistributedDataParallel`` forward may run collectives (buffer broadcast);
    the eager inner module computes the same features without either.
    """
    for _ in range(8):
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) and isinstance(
            getattr(model, "module", None), nn.Module
        ):
            model = model.module
            continue
        break
    return model


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _module_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _dist_default(kind: str) -> int | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() if kind == "world" else dist.get_rank()
    return None


class TeachingSampler(Sampler[list[int]]):
    """Batches chosen by a teacher from candidate pools, for ``DataLoader(batch_sampler=...)``.

    Each step draws ``pool_factor * batch_size`` candidate indices from the
    epoch's permutation, computes their head-input features with the model in
    eval mode under ``torch.no_grad()`` (a temporary forward pre-hook on
    ``head``; every module's ``training`` flag is restored exactly, so
    BatchNorm statistics and dropout are untouched), scores them and yields the
    ``batch_size`` best indices, best first. Candidates that are not picked do
    not go back into the epoch: an epoch has ``len(dataset) // (pool_factor *
    batch_size)`` steps (per replica: the replica's share of the data in place
    of ``len(dataset)``), or ``steps_per_epoch`` when given, in which case
    pools are drawn from successive fresh permutations (each example can then
    be a candidate more than once per epoch: sampling with replacement across
    passes, without replacement within a pass).

    The sampler runs in the main process, between training steps, so with
    ``num_workers=0`` every pool is scored with the model as it is at that
    step. With ``num_workers > 0`` the DataLoader asks for up to
    ``num_workers * prefetch_factor`` batches ahead, so the scores are that
    many steps stale (and :meth:`state_dict` counts batches handed to the
    DataLoader, not batches trained on). Candidates are loaded by the sampler
    itself (``dataset[i]`` or ``dataset.__getitems__``; a ``TensorDataset`` with the
    default collate is indexed in one op per tensor) in the main process, and a
    dataset with random augmentation scores a different view than the one the
    workers then load. ``num_workers=0`` is recommended for this reason.

    Loading and running the candidates happens with the global RNGs saved and
    restored afterwards (torch's CPU generator, the CUDA generator of the
    model's device, Python's ``random`` and NumPy's legacy global generator):
    a dataset whose ``__getitem__`` draws from them (random augmentation) does
    not advance them by scoring, so after each step they are as without the
    sampler's scoring pass. The candidates' augmentations then draw the same
    numbers the DataLoader's fetch of the picked batch draws next.

    Class-index targets equal to ``ignore_index`` (as in ``F.cross_entropy``)
    are accepted: such candidates take no part in the lookahead that
    estimates the target head (it runs on the other candidates only, exactly
    as if they were absent), get the objective ``+inf`` (``"greedy"``) or the
    loss ``-inf`` (``"loss"``), and so are picked only after every scored
    candidate, in index order. ``"random"`` does not look at targets.

    Distributed training follows ``DistributedSampler``: the same ``seed`` on
    every rank gives the same permutation, padded (``drop_last=False``) or
    truncated (``drop_last=True``) to a multiple of ``num_replicas``; rank
    ``r`` takes positions ``r, r + R, r + 2R, ...`` and cuts its share into
    pools, so pools are disjoint across ranks and within a pass (up to the
    ``< num_replicas`` padded repeats). Every rank has the same number of steps.

    Args:
        dataset: a map-style dataset with ``__len__`` whose items collate into
            ``(input, target)``; targets are class indices of any integer
            dtype (or soft targets of shape (C,) per item).
        model: the network, called as ``model(input)`` on the candidates;
            wrappers (``torch.compile``, ``DistributedDataParallel``,
            ``DataParallel``) are unwrapped for scoring. May be the head itself
            (a linear learner). Not needed for ``score="random"``.
        head: the final ``nn.Linear`` of ``model``, called exactly once per
            forward on features of shape (N, in_features).
        batch_size: indices per yielded batch.
        pool_factor: candidates per step are ``pool_factor * batch_size``
            (default: 4). Ignored by ``score="random"``, which draws plain
            batches.
        score: ``"greedy"`` (lowest eq. 4 objective first), ``"loss"``
            (highest cross-entropy first) or ``"random"`` (plain batches: the
            consecutive ``batch_size`` chunks of this rank's share of the
            permutation; no model is run) (default: "greedy").
        optimizer: for ``"greedy"``: the optimizer training ``head.weight``;
            the learner's ``eta`` is read each step from the ``lr`` of its group
            (so LR schedulers are followed). Give this or ``lr``.
        lr: for ``"greedy"``: ``eta`` as a positive float or a zero-argument
            callable.
        lookahead_steps: SGD steps of the head on the pool's features that
            estimate the target head ``theta*`` (default: 5).
        lookahead_lr: step size of the lookahead (default: None, meaning
            ``eta``).
        objective_eta: the step size in the objective. ``"batch"``:
            ``eta / batch_size``, the step each example actually gets from
            SGD on a mean-reduced batch loss; ``"sample"``: the raw ``eta`` of
            eq. 4 as the paper writes it for one example per step (and as
            :class:`~torchdht.PerformativeTeacher` uses it); use it for a
            sum-reduced loss (default: "batch"). With ``batch_size=1`` they agree.
        w_star: a known target ``(W*, b*)`` (``b*`` None for a head without
            bias) used in place of the lookahead, e.g. for linear learners
            (default: None).
        steps_per_epoch: steps per epoch and replica; more than one pass draws
            pools from fresh permutations (default: None, one pass).
        seed: seed of the permutations, the same on every rank; the epoch's
            generator is ``torch.Generator().manual_seed(seed + epoch)``
            (default: 0). The permutations never draw from the global RNG.
        num_replicas: number of ranks (default: None, the world size when
            ``torch.distributed`` is initialised, else 1).
        rank: this rank (default: None, from ``torch.distributed``, else 0).
        drop_last: truncate the permutation to a multiple of ``num_replicas``
            instead of padding it with its first indices (default: False).
        collate_fn: turns a list of dataset items into ``(input, target)``
            (default: None, ``torch.utils.data.default_collate``).
        score_batch_size: candidates per scoring forward, to bound memory
            (default: 1024).
        ignore_index: the class index of candidates to leave unscored, as in
            ``F.cross_entropy`` (default: -100). Any int; a value in
            ``[0, num_classes)`` makes that class's candidates ignored.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> ds = TensorDataset(torch.randn(256, 8), torch.randint(0, 3, (256,)))
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sampler = TeachingSampler(ds, model=model, head=model[-1], batch_size=16,
        ...                           pool_factor=4, optimizer=opt, seed=0)
        >>> len(sampler)  # 256 // (4 * 16)
        4
        >>> loader = DataLoader(ds, batch_sampler=sampler)
        >>> for epoch in range(2):
        ...     sampler.set_epoch(epoch)
        ...     for x, y in loader:
        ...         loss = F.cross_entropy(model(x), y)
        ...         opt.zero_grad(); loss.backward(); opt.step()
        >>> x.shape
        torch.Size([16, 8])
        >>> sampler.state_dict()["epoch"], sampler.state_dict()["step"]
        (2, 0)
    """

    def __init__(
        self,
        dataset: Any,
        *,
        model: nn.Module | None = None,
        head: nn.Module | None = None,
        batch_size: int,
        pool_factor: int = 4,
        score: str = "greedy",
        optimizer: torch.optim.Optimizer | None = None,
        lr: LearningRate | None = None,
        lookahead_steps: int = 5,
        lookahead_lr: float | None = None,
        objective_eta: str = "batch",
        w_star: tuple[Tensor, Tensor | None] | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        collate_fn: Callable[[list], Any] | None = None,
        score_batch_size: int = 1024,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        # ---- the dataset
        if isinstance(dataset, IterableDataset):
            raise TeacherTypeError(
                f"dataset must be a map-style dataset with __len__ and __getitem__, got the "
                f"IterableDataset {_qualname(dataset)}, which cannot be sampled by index"
            )
        try:
            n = len(dataset)
        except TypeError:
            raise TeacherTypeError(
                f"dataset must be a map-style dataset with __len__ and __getitem__, got "
                f"{_qualname(dataset)} without __len__ (an IterableDataset cannot be "
                f"sampled by index)"
            ) from None
        if not hasattr(dataset, "__getitem__"):
            raise TeacherTypeError(f"dataset must support indexing, got {_qualname(dataset)}")
        if n < 1:
            raise TeacherError("dataset is empty")
        self.dataset = dataset
        # ---- sizes
        batch_size = check_int(batch_size, "batch_size", 1)
        self.batch_size = batch_size
        pool_factor = check_int(pool_factor, "pool_factor", 1)
        self.pool_factor = pool_factor
        if score not in _SCORES:
            raise TeacherError(f"score must be one of {_SCORES}, got {score!r}")
        self.score = score
        if batch_size > n:
            raise TeacherError(
                f"batch_size ({batch_size}) is larger than the dataset ({n} examples)"
            )
        # ---- replicas
        if num_replicas is None:
            num_replicas = _dist_default("world") or 1
        num_replicas = check_int(num_replicas, "num_replicas", 1)
        self.num_replicas = num_replicas
        if rank is None:
            rank = _dist_default("rank")
            if rank is None:
                if num_replicas != 1:
                    raise TeacherError(
                        f"rank must be given with num_replicas={num_replicas} when "
                        f"torch.distributed is not initialised"
                    )
                rank = 0
        rank = check_int(rank, "rank", 0)
        self.rank = rank
        if rank >= num_replicas:
            raise TeacherError(
                f"rank must lie in [0, num_replicas - 1] = [0, {num_replicas - 1}], got {rank}"
            )
        self.drop_last = bool(drop_last)
        if self.drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.pool_size = batch_size if score == "random" else batch_size * pool_factor
        self.pools_per_pass = self.num_samples // self.pool_size
        if self.pools_per_pass == 0:
            what = "batch_size" if score == "random" else "pool_factor * batch_size"
            raise TeacherError(
                f"{what} = {self.pool_size} exceeds the {self.num_samples} examples per "
                f"replica ({n} examples, num_replicas={num_replicas}); lower "
                f"{'batch_size' if score == 'random' else 'pool_factor or batch_size'}"
            )
        if steps_per_epoch is not None:
            steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1)
        self.steps_per_epoch = steps_per_epoch
        self.seed = check_int(seed, "seed", None)
        # Any int, as in F.cross_entropy (a class id in [0, C) is then ignored).
        self.ignore_index = check_ignore_index(ignore_index)
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        if not callable(self.collate_fn):
            raise TeacherTypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        self.score_batch_size = check_int(score_batch_size, "score_batch_size", 1)
        # ---- model, head and the teacher's hyperparameters
        self.model = model
        self.head = head
        self.optimizer = optimizer
        if lr is not None and not callable(lr):
            lr = check_positive(lr, "lr")
        self.lr = lr
        self.lookahead_steps = check_int(lookahead_steps, "lookahead_steps", 1)
        self.lookahead_lr = (
            None if lookahead_lr is None else check_positive(lookahead_lr, "lookahead_lr")
        )
        if objective_eta not in ("batch", "sample"):
            raise TeacherError(f"objective_eta must be 'batch' or 'sample', got {objective_eta!r}")
        self.objective_eta = objective_eta
        self.w_star: tuple[Tensor, Tensor | None] | None = None
        self._rate: LearnerRate | None = None
        if score != "random":
            self._check_model_and_head(model, head)
            self._check_eta_source(optimizer, self.lr, required=score == "greedy")
            if w_star is not None:
                self.w_star = self._check_w_star(w_star)
        # score="random" runs no model: model, head, optimizer, lr and w_star are unused.
        # ---- state
        self.epoch = 0
        self._step = 0
        self._resume = False
        self._perm_cache: tuple[tuple[int, int], Tensor] | None = None
        self._stats: dict[str, float] = {}

    # ------------------------------------------------------------ validation
    def _check_model_and_head(self, model: nn.Module | None, head: nn.Module | None) -> None:
        if head is None or model is None:
            raise TeacherError(
                f"score={self.score!r} needs model= (the network) and head= (its final nn.Linear)"
            )
        check_head(head)
        if not isinstance(model, nn.Module):
            raise TeacherTypeError(f"model must be an nn.Module, got {_qualname(model)}")
        if not any(m is head for m in _unwrap(model).modules()):
            raise TeacherError(
                "head is not a submodule of model; pass head= the final nn.Linear of model "
                "(e.g. model.fc), so that its input features can be read"
            )

    def _check_eta_source(self, optimizer: Any, lr: Any, required: bool) -> None:
        if optimizer is None and lr is None:
            if required:
                raise TeacherError(
                    "score='greedy' needs the learner's learning rate eta: pass optimizer= "
                    "(the optimizer training head.weight; eta is read from it each step) "
                    "or lr="
                )
            return
        assert isinstance(self.head, nn.Linear)
        self._rate = LearnerRate(optimizer, lr, self.head.weight, "head.weight")

    def _check_w_star(self, w_star: Any) -> tuple[Tensor, Tensor | None]:
        head = self.head
        assert isinstance(head, nn.Linear)
        if isinstance(w_star, Tensor):
            w_star = (w_star, None)
        if not isinstance(w_star, (tuple, list)) or len(w_star) != 2:
            raise TeacherTypeError(
                "w_star must be a pair (W*, b*) of tensors (b* None without bias)"
            )
        weight, bias = w_star
        if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(head.weight.shape):
            got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise TeacherError(
                f"w_star's W* must be a tensor of the head's weight shape "
                f"{tuple(head.weight.shape)}, got {got}"
            )
        if (bias is None) != (head.bias is None):
            raise TeacherError(
                "w_star's b* must be a tensor when the head has a bias and None when it has not"
            )
        if bias is not None:
            if not isinstance(bias, Tensor) or tuple(bias.shape) != (head.out_features,):
                got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
                raise TeacherError(
                    f"w_star's b* must be a tensor of shape ({head.out_features},), got {got}"
                )
            bias = bias.detach()
        return weight.detach(), bias

    # ------------------------------------------------------------------ API
    def __len__(self) -> int:
        """Steps per epoch for this rank (the full epoch, also when resuming mid-epoch)."""
        return self.steps_per_epoch if self.steps_per_epoch is not None else self.pools_per_pass

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses.

        As with ``DistributedSampler``, call it with the same value on every
        rank before each epoch. Calling it is optional here: a pass that runs
        to the end advances the epoch by one by itself. Setting the epoch a
        :meth:`load_state_dict` stopped in keeps the resume point.

        Args:
            epoch: a non-negative int.
        """
        epoch = check_int(epoch, "epoch", 0)
        if epoch != self.epoch:
            self.epoch = epoch
            self._step = 0
            self._resume = False

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        start = self._step if self._resume else 0
        self._resume = False
        self._step = start
        steps = len(self)
        for step in range(start, steps):
            pool = self._pool(epoch, step)
            batch = pool.tolist() if self.score == "random" else self._select(pool)
            if self.epoch == epoch and not self._resume:
                if step + 1 < steps:
                    self._step = step + 1
                else:  # the epoch is handed out: the next one is epoch + 1
                    self.epoch, self._step = epoch + 1, 0
            yield batch
        if start >= steps and self.epoch == epoch and not self._resume:
            self.epoch, self._step = epoch + 1, 0

    def candidate_pools(self, epoch: int | None = None) -> list[Tensor]:
        """This rank's candidate pools for every step of an epoch (no model is run).

        Args:
            epoch: the epoch (default: None, the current one).

        Returns:
            A list of ``len(self)`` int64 tensors of ``pool_size`` dataset
            indices each (for ``score="random"``, the batches themselves).

        Example:
            >>> ds = torch.utils.data.TensorDataset(torch.zeros(10, 1))
            >>> [p.tolist() for p in TeachingSampler(ds, batch_size=5, score="random")
            ...  .candidate_pools()] == [torch.randperm(10, generator=torch.Generator()
            ...  .manual_seed(0))[i:i + 5].tolist() for i in (0, 5)]
            True
        """
        e = self.epoch if epoch is None else check_int(epoch, "epoch", 0)
        return [self._pool(e, s) for s in range(len(self))]

    @property
    def stats(self) -> dict[str, float]:
        """Figures of the last scored step (empty before it, and for ``"random"``).

        Keys: ``pool_score_mean`` and ``picked_score_mean`` (the greedy
        objective or the loss, over the scored candidates: NaN when all are
        ignored), ``ignored`` (candidates of the pool whose target is
        ``ignore_index``), and for ``"greedy"`` ``eta`` (the learner's),
        ``objective_eta`` (the one in the objective) and ``theta_dist``
        (``|theta - theta*|``).
        """
        return dict(self._stats)

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler stands: epoch, steps handed out in it, seed and sizes.

        Restoring it with :meth:`load_state_dict` (and the model and optimizer
        with theirs) continues exactly where it stopped. With DataLoader
        workers the step counts batches prefetched, not trained on.
        """
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "step": self._step,
            "seed": self.seed,
            "config": self._config(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration starts at its step.

        Args:
            state: what :meth:`state_dict` returned, from a sampler with the
                same dataset length, batch size, pool size, number of replicas,
                ``drop_last`` and ``steps_per_epoch``.
        """
        if not isinstance(state, dict):
            raise TeacherTypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"version", "epoch", "step", "seed", "config"} - set(state)
        if missing:
            raise TeacherError(f"state is missing keys {sorted(missing)}")
        if state["version"] != _STATE_VERSION:
            raise TeacherError(f"unsupported state version {state['version']!r}")
        mine = self._config()
        theirs = state["config"]
        diff = [k for k in _CONFIG_KEYS if theirs.get(k) != mine[k]]
        if diff:
            detail = ", ".join(f"{k}: saved {theirs.get(k)!r}, here {mine[k]!r}" for k in diff)
            raise TeacherError(
                f"state was saved by a sampler with another configuration ({detail}); "
                f"the continuation would not be the same"
            )
        step = check_int(state["step"], "state['step']", 0)
        if step > len(self):
            raise TeacherError(f"state['step'] = {step} exceeds the {len(self)} steps per epoch")
        self.epoch = check_int(state["epoch"], "state['epoch']", 0)
        self.seed = int(state["seed"])
        self._step = step
        self._resume = True
        self._perm_cache = None

    def __repr__(self) -> str:
        return (
            f"TeachingSampler(score={self.score!r}, batch_size={self.batch_size}, "
            f"pool_factor={self.pool_factor}, steps={len(self)}, seed={self.seed}, "
            f"rank={self.rank}/{self.num_replicas})"
        )

    # ------------------------------------------------------------ internals
    def _config(self) -> dict[str, Any]:
        return {
            "dataset_len": len(self.dataset),
            "batch_size": self.batch_size,
            "pool_size": self.pool_size,
            "num_replicas": self.num_replicas,
            "drop_last": self.drop_last,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def _rank_indices(self, epoch: int, pass_: int) -> Tensor:
        """This rank's share of the ``pass_``-th permutation of ``epoch``."""
        key = (epoch, pass_)
        if self._perm_cache is not None and self._perm_cache[0] == key:
            return self._perm_cache[1]
        n = len(self.dataset)
        gen = torch.Generator()
        gen.manual_seed(self.seed + epoch)
        for _ in range(pass_ + 1):
            perm = torch.randperm(n, generator=gen)
        if self.total_size <= n:
            perm = perm[: self.total_size]
        else:
            pad = self.total_size - n
            perm = torch.cat([perm, perm.repeat(math.ceil(pad / n))[:pad]])
        mine = perm[self.rank : self.total_size : self.num_replicas]
        self._perm_cache = (key, mine)
        return mine

    def _pool(self, epoch: int, step: int) -> Tensor:
        pass_, k = divmod(step, self.pools_per_pass)
        share = self._rank_indices(epoch, pass_)
        return share[k * self.pool_size : (k + 1) * self.pool_size]

    def _split(self, batch: Any) -> tuple[Any, Tensor]:
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or len(batch) != 2:
            raise TeacherTypeError(
                f"the collated candidates must be a pair (input, target), got "
                f"{type(batch).__name__}; make dataset items (x, y) pairs or pass a collate_fn "
                f"that returns one"
            )
        x, y = batch[0], batch[1]
        if not isinstance(y, Tensor):
            raise TeacherTypeError(f"targets must collate into a tensor, got {type(y).__name__}")
        return x, y

    def _load(self, indices: list[int]) -> Any:
        if isinstance(self.dataset, TensorDataset) and self.collate_fn is default_collate:
            # What default_collate makes of the items, in one indexing op per tensor.
            idx = torch.as_tensor(indices, dtype=torch.long)
            return [t[idx] for t in self.dataset.tensors]
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return self.collate_fn(items)

    def _features(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """Head-input features (N, D) and targets of the candidates, model untouched."""
        assert self.model is not None and isinstance(self.head, nn.Linear)
        model, head = _unwrap(self.model), self.head
        device = _module_device(model)
        captured: list[Any] = []

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            z = args[0] if args else kwargs.get("input")
            captured.append(z)
            # Check before the head runs, or a mismatch surfaces as a bare matmul error.
            if isinstance(z, Tensor) and z.dim() >= 1 and z.shape[-1] != head.in_features:
                raise TeacherError(
                    f"the features reaching the head have {z.shape[-1]} columns, but head has "
                    f"in_features={head.in_features}; pass the model whose final layer is head"
                )

        modes = [(m, m.training) for m in model.modules()]
        handle = head.register_forward_pre_hook(hook, with_kwargs=True)
        feats: list[Tensor] = []
        targets: list[Tensor] = []
        try:
            for m, _ in modes:
                m.training = False
            with torch.no_grad():
                for lo in range(0, len(indices), self.score_batch_size):
                    chunk = indices[lo : lo + self.score_batch_size]
                    x, y = self._split(self._load(chunk))
                    y = check_targets(
                        y, head.out_features, rows=len(chunk),
                        ignore_index=self.ignore_index, name="targets",
                    )
                    captured.clear()
                    model(_to_device(x, device))
                    feats.append(self._check_features(captured, len(chunk)))
                    targets.append(y.to(device, non_blocking=True))
        finally:
            handle.remove()
            for m, mode in modes:
                m.training = mode
        return torch.cat(feats), torch.cat(targets)

    def _check_features(self, captured: list[Any], n: int) -> Tensor:
        head = self.head
        assert isinstance(head, nn.Linear)
        if len(captured) != 1:
            hint = (
                " (is model compiled with a wrapper other than torch.compile, or is head not "
                "used in its forward?)"
                if not captured
                else ""
            )
            raise TeacherError(
                f"head was called {len(captured)} times in one forward of model; the sampler "
                f"needs exactly one call per forward{hint}"
            )
        z = captured[0]
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TeacherTypeError(
                f"the head's input must be a floating-point tensor, got "
                f"{getattr(z, 'dtype', type(z).__name__)}"
            )
        if tuple(z.shape) != (n, head.in_features):
            raise TeacherError(
                f"the features reaching the head have shape {tuple(z.shape)}, but the sampler "
                f"needs one row per candidate: ({n}, {head.in_features}) for {n} candidates "
                f"and a head with in_features={head.in_features}"
            )
        return z.detach()

    def _scores(self, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-candidate keys (lower is picked first), the reported scores, and the
        ignored candidates (a boolean mask, or None when there are none).

        Ignored candidates are left out of every computation (the lookahead and
        the scores run on the others only, as if they were absent); their key is
        ``+inf`` and their score ``+inf`` (objective) or ``-inf`` (loss).
        """
        head = self.head
        assert isinstance(head, nn.Linear)
        ignored: Tensor | None = None
        if not y.is_floating_point():
            ign = y == self.ignore_index
            if bool(ign.any()):
                ignored = ign
        dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(dtype)
            if y.is_floating_point():
                y = y.to(dtype)
            n = z.shape[0]
            rows: Tensor | None = None  # the scored candidates, when some are ignored
            if ignored is not None:
                rows = (~ignored).nonzero().squeeze(1)
                z, y = z.index_select(0, rows), y.index_select(0, rows)
            weight = head.weight.detach().to(dtype)
            bias = None if head.bias is None else head.bias.detach().to(dtype)
            if self.score == "loss":
                logp = torch.log_softmax(F.linear(z, weight, bias), dim=-1)
                if y.is_floating_point():
                    loss = -(y * logp).sum(-1)
                else:
                    loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
                loss = self._scatter(loss, rows, n, -math.inf)
                self._stats = {}
                return -loss, loss, ignored
            assert self._rate is not None
            eta = self._rate()
            if isinstance(eta, Tensor):
                eta = eta.to(device=z.device, dtype=dtype)
            if self.w_star is not None:
                w_star = self.w_star[0].to(z.device, dtype)
                b_star = None if self.w_star[1] is None else self.w_star[1].to(z.device, dtype)
            elif z.shape[0] == 0:  # every candidate ignored: nothing to look ahead on
                w_star, b_star = weight, bias
            else:
                la_lr = self.lookahead_lr if self.lookahead_lr is not None else eta
                la = linear_lookahead(z, y, weight, bias, la_lr, self.lookahead_steps)
                w_star, b_star = la.weight, la.bias
            eta_obj = eta / self.batch_size if self.objective_eta == "batch" else eta
            if z.shape[0] == 0:
                obj = z.new_empty(0)
            else:
                obj = linear_ce_objective(z, y, weight, bias, w_star, b_star, eta_obj)
            obj = self._scatter(obj, rows, n, math.inf)
            dist_sq = (weight - w_star).pow(2).sum()
            if bias is not None:
                assert b_star is not None
                dist_sq = dist_sq + (bias - b_star).pow(2).sum()
            self._stats = {
                "eta": float(eta),
                "objective_eta": float(eta_obj),
                "theta_dist": float(dist_sq.sqrt()),
            }
            return obj, obj, ignored

    @staticmethod
    def _scatter(values: Tensor, rows: Tensor | None, n: int, fill: float) -> Tensor:
        """``values`` of the scored candidates at ``rows`` and ``fill`` elsewhere, shape
        (n,); ``values`` itself when every candidate is scored (``rows`` None)."""
        if rows is None:
            return values
        return values.new_full((n,), fill).index_copy_(0, rows, values)

    def _select(self, pool: Tensor) -> list[int]:
        # Candidates in index order, then a stable sort: ties go to the lower index.
        cand = pool.sort().values
        assert self.model is not None
        # Loading may draw from the global RNGs (random augmentation): restore them.
        with _global_rngs_kept(_module_device(_unwrap(self.model))):
            z, y = self._features(cand.tolist())
        key, shown, ignored = self._scores(z, y)
        key = torch.nan_to_num(key, nan=math.inf)
        order = torch.sort(key, stable=True).indices
        if ignored is not None:  # ignored candidates after every scored one (also NaN ones)
            last = ignored.index_select(0, order).to(torch.uint8)
            order = order.index_select(0, torch.sort(last, stable=True).indices)
        order = order[: self.batch_size]
        picked = shown.index_select(0, order)
        if ignored is None:
            pool_mean, picked_mean = float(shown.mean()), float(picked.mean())
            n_ignored = 0
        else:  # means over the scored candidates only (NaN when there are none)
            scored = ~ignored
            picked_scored = scored.index_select(0, order)
            pool_mean = float(shown[scored].mean()) if bool(scored.any()) else math.nan
            picked_mean = (
                float(picked[picked_scored].mean()) if bool(picked_scored.any()) else math.nan
            )
            n_ignored = int(ignored.sum())
        self._stats.update(
            pool_score_mean=pool_mean, picked_score_mean=picked_mean, ignored=n_ignored
        )
        return cand[order.cpu()].tolist()
