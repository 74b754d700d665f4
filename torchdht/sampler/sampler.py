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

The class is here; its parts live beside it: :mod:`.features` (loading the
candidates and reading the head's input), :mod:`.scoring` (scores and the
pick), :mod:`.state` (permutations, ranks, checkpoints) and :mod:`.checks`
(the arguments).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler, default_collate

from .._checks import (
    LearnerRate,
    check_ignore_index,
    check_int,
    check_positive,
)
from ..errors import TeacherError, TeacherTypeError
from ..typing import LearningRate
from .checks import check_dataset, check_model_and_head, check_w_star, learner_rate
from .features import global_rngs_kept, head_features, load_candidates, module_device, unwrap_model
from .scoring import SCORES, candidate_scores, pick_best
from .state import STATE_VERSION, check_state, dist_default, rank_share

__all__ = ["TeachingSampler"]


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
        >>> import torch.nn.functional as F
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
        n = check_dataset(dataset)
        self.dataset = dataset
        # ---- sizes
        batch_size = check_int(batch_size, "batch_size", 1)
        self.batch_size = batch_size
        pool_factor = check_int(pool_factor, "pool_factor", 1)
        self.pool_factor = pool_factor
        if score not in SCORES:
            raise TeacherError(f"score must be one of {SCORES}, got {score!r}")
        self.score = score
        if batch_size > n:
            raise TeacherError(
                f"batch_size ({batch_size}) is larger than the dataset ({n} examples)"
            )
        # ---- replicas
        if num_replicas is None:
            num_replicas = dist_default("world") or 1
        num_replicas = check_int(num_replicas, "num_replicas", 1)
        self.num_replicas = num_replicas
        if rank is None:
            rank = dist_default("rank")
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
            check_model_and_head(model, head, score)
            assert isinstance(head, nn.Linear)
            self._rate = learner_rate(optimizer, self.lr, head, required=score == "greedy")
            if w_star is not None:
                self.w_star = check_w_star(w_star, head)
        # score="random" runs no model: model, head, optimizer, lr and w_star are unused.
        # ---- state
        self.epoch = 0
        self._step = 0
        self._resume = False
        self._perm_cache: tuple[tuple[int, int], Tensor] | None = None
        self._stats: dict[str, float] = {}

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
            "version": STATE_VERSION,
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
        step = check_state(state, self._config(), len(self))
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
        mine = rank_share(
            len(self.dataset), self.seed, epoch, pass_, self.total_size, self.rank,
            self.num_replicas,
        )
        self._perm_cache = (key, mine)
        return mine

    def _pool(self, epoch: int, step: int) -> Tensor:
        pass_, k = divmod(step, self.pools_per_pass)
        share = self._rank_indices(epoch, pass_)
        return share[k * self.pool_size : (k + 1) * self.pool_size]

    def _load(self, indices: list[int]) -> Any:
        return load_candidates(self.dataset, self.collate_fn, indices)

    def _features(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """Head-input features (N, D) and targets of the candidates, model untouched."""
        assert self.model is not None and isinstance(self.head, nn.Linear)
        return head_features(
            self.model, self.head, indices, self._load, self.score_batch_size, self.ignore_index
        )

    def _scores(self, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-candidate keys (lower is picked first), the reported scores, and the
        ignored candidates (a boolean mask, or None when there are none); the
        step's figures go to :attr:`stats`."""
        assert isinstance(self.head, nn.Linear)
        key, shown, ignored, self._stats = candidate_scores(
            z, y, self.head,
            score=self.score, rate=self._rate, target=self.w_star,
            lookahead_lr=self.lookahead_lr, lookahead_steps=self.lookahead_steps,
            objective_eta=self.objective_eta, batch_size=self.batch_size,
            ignore_index=self.ignore_index,
        )
        return key, shown, ignored

    def _select(self, pool: Tensor) -> list[int]:
        # Candidates in index order, then a stable sort: ties go to the lower index.
        cand = pool.sort().values
        assert self.model is not None
        # Loading may draw from the global RNGs (random augmentation): restore them.
        with global_rngs_kept(module_device(unwrap_model(self.model))):
            z, y = self._features(cand.tolist())
        key, shown, ignored = self._scores(z, y)
        order, picked_stats = pick_best(key, shown, ignored, self.batch_size)
        self._stats.update(picked_stats)
        return cand[order.cpu()].tolist()
