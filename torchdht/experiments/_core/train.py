"""One training loop, evaluation, and the seed and thread settings of a run."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LoopStats",
    "accuracy",
    "cross_entropy_step",
    "eval_points",
    "evaluate",
    "format_mean_std",
    "mean_std",
    "progress_bar",
    "seeded",
    "torch_threads",
    "train_loop",
]


# ----------------------------------------------------------------------------- settings


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator (``torch.manual_seed``) for the block, then restore
    its state (CPU, and CUDA where initialised), so that runs do not depend on their order.

    Example:
        >>> before = torch.get_rng_state()
        >>> with seeded(3):
        ...     a = torch.rand(2)
        >>> with seeded(3):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b), torch.equal(torch.get_rng_state(), before)
        (True, True)
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` for the block, restored afterwards; None or 0
    leaves the setting alone. Yields the number of threads in use.

    Example:
        >>> n = torch.get_num_threads()
        >>> with torch_threads(1) as used:
        ...     used == torch.get_num_threads() == 1
        True
        >>> torch.get_num_threads() == n
        True
    """
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "step", **kw: Any) -> Any:
    """A tqdm bar, only on a terminal (or in a notebook) and when ``enabled``: a log file
    or a pipe would get every carriage-return redraw."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=None if enabled else True, desc=desc, unit=unit,
                dynamic_ncols=True, **kw)


# ----------------------------------------------------------------------------- the loop


def eval_points(iters: int, every: int) -> list[int]:
    """The steps at which a run of ``iters`` steps is evaluated: 0, every ``every``
    steps, and the end.

    Example:
        >>> eval_points(10, 4), eval_points(8, 4)
        ([0, 4, 8, 10], [0, 4, 8])
    """
    return [*range(0, iters, every), iters]


@dataclass
class LoopStats:
    """What :func:`train_loop` counted so far.

    Attributes:
        steps: training steps done.
        step_seconds: time spent in ``step`` (``time.perf_counter``).
        fetch_seconds: time spent in ``fetch``.
        stopped: a callback stopped the run early.
    """

    steps: int = 0
    step_seconds: float = 0.0
    fetch_seconds: float = 0.0
    stopped: bool = False


def train_loop(
    iters: int,
    step: Callable[[Any], Any],
    *,
    fetch: Callable[[int], Any] | None = None,
    eval_at: Container[int] = (),
    evaluate: Callable[[int, LoopStats], None] | None = None,
    callbacks: Sequence[Callable[[int, Any, LoopStats], bool | None]] = (),
) -> LoopStats:
    """Run ``iters`` training steps with evaluation points and step callbacks.

    For ``it`` in ``0 .. iters``: ``evaluate(it, stats)`` when ``it`` is in ``eval_at``
    (after ``it`` steps; ``iters`` itself is the end); then, below ``iters``,
    ``batch = fetch(it)`` and ``out = step(batch)``, each timed apart, and every
    ``callback(it, out, stats)``; a callback that returns True stops the run there
    (``stats.stopped``), with no further evaluation.

    Args:
        iters: the number of training steps.
        step: one training step on a batch (only this is timed as ``step_seconds``).
        fetch: the batch of step ``it`` (default: None, ``step(None)``).
        eval_at: the steps after which to evaluate.
        evaluate: the evaluation.
        callbacks: called after every step, in order.

    Returns:
        The :class:`LoopStats`.

    Example:
        >>> seen = []
        >>> stats = train_loop(5, lambda b: b * 10, fetch=lambda it: it, eval_at={0, 4, 5},
        ...     evaluate=lambda it, s: seen.append(("eval", it, s.steps)),
        ...     callbacks=[lambda it, out, s: seen.append(("step", it, out))])
        >>> seen[:3], seen[-2:], stats.steps
        ([('eval', 0, 0), ('step', 0, 0), ('step', 1, 10)], [('step', 4, 40), ('eval', 5, 5)], 5)
    """
    stats = LoopStats()
    for it in range(iters + 1):
        if evaluate is not None and it in eval_at:
            evaluate(it, stats)
        if it == iters:
            break
        t0 = time.perf_counter()
        batch = None if fetch is None else fetch(it)
        t1 = time.perf_counter()
        out = step(batch)
        t2 = time.perf_counter()
        stats.fetch_seconds += t1 - t0
        stats.step_seconds += t2 - t1
        stats.steps += 1
        if any([bool(cb(it, out, stats)) for cb in callbacks]):
            stats.stopped = True
            break
    return stats


class RunWatch:
    """A :func:`train_loop` callback that watches a run: every ``every`` steps and at the
    last one it records the loss, stops the run once the loss is not finite (after
    calling ``on_diverge``), and samples a teacher's mean angle (``teacher.stats``).

    Args:
        iters: the run's number of steps (the last, ``iters - 1``, is always watched).
        teacher: a teacher with ``stats["angle_mean"]``, or None.
        on_diverge: called with the step and the :class:`LoopStats` when the run
            diverges, e.g. to fill the rest of an accuracy curve (default: None).
        every: the watching period in steps (default: 50).

    Attributes:
        last_loss: the loss at the last watched step (nan before the first).
        diverged: the loss was not finite and the run was stopped.

    Example:
        >>> watch = RunWatch(6, every=2)
        >>> losses = [1.0, 0.5, 0.25, float("inf"), 0.125, 0.5]
        >>> stats = train_loop(6, lambda b: torch.tensor(losses[b]), fetch=lambda it: it,
        ...                    callbacks=[watch])
        >>> watch.diverged, stats.steps, watch.last_loss
        (False, 6, 0.5)
        >>> watch = RunWatch(6, every=1)
        >>> stats = train_loop(6, lambda b: torch.tensor(losses[b]), fetch=lambda it: it,
        ...                    callbacks=[watch])
        >>> watch.diverged, stats.steps, stats.stopped
        (True, 4, True)
    """

    def __init__(self, iters: int, teacher: Any = None, *,
                 on_diverge: Callable[[int, LoopStats], None] | None = None,
                 every: int = 50) -> None:
        self.iters, self.teacher, self.on_diverge, self.every = iters, teacher, on_diverge, every
        self.last_loss = float("nan")
        self.diverged = False
        self._angle_sum, self._angle_n = 0.0, 0

    def __call__(self, it: int, loss: Tensor, stats: LoopStats) -> bool:
        if it % self.every and it != self.iters - 1:
            return False
        self.last_loss = float(loss.item())
        if not math.isfinite(self.last_loss):
            self.diverged = True
            if self.on_diverge is not None:
                self.on_diverge(it, stats)
            return True
        if self.teacher is not None:
            self._angle_sum += float(self.teacher.stats["angle_mean"])
            self._angle_n += 1
        return False

    @property
    def angle_mean(self) -> float:
        """The mean of the sampled angles (0.0 without a teacher)."""
        return self._angle_sum / self._angle_n if self._angle_n else 0.0


def cross_entropy_step(
    model: nn.Module, opt: torch.optim.Optimizer,
    targets: Callable[[Tensor], Any] | None = None,
) -> Callable[[tuple[Tensor, Tensor]], Tensor]:
    """The ``step`` of :func:`train_loop` for a classifier: on a batch ``(x, y)``, the
    cross-entropy, backward and one optimizer step; returns the loss.

    Args:
        model: the classifier.
        opt: its optimizer.
        targets: called with ``y`` before the forward pass, e.g. a teacher's
            ``set_targets`` (default: None).
    """

    def step(batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        if targets is not None:
            targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    chunk: int,
    transform: Callable[[Tensor], Tensor] | None = None,
    loss: Callable[..., Tensor] | None = None,
) -> tuple[int, float]:
    """Correct predictions (argmax) of ``model`` on ``(x, y)`` in eval mode, and the summed
    loss; the model's training mode is restored.

    Args:
        model: the classifier.
        x: inputs; ``y``: class indices.
        chunk: examples per forward pass.
        transform: applied to each chunk of ``x`` first (default: None).
        loss: e.g. ``F.cross_entropy``, called with ``reduction="sum"`` (default: None,
            loss 0.0).

    Returns:
        ``(correct, loss_sum)``.
    """
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        out = model(xb if transform is None else transform(xb))
        yb = y[i : i + chunk]
        correct += int((out.argmax(-1) == yb).sum())
        if loss is not None:
            loss_sum += float(loss(out, yb, reduction="sum"))
    model.train(was_training)
    return correct, loss_sum


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, chunk: int,
             transform: Callable[[Tensor], Tensor] | None = None) -> float:
    """Test accuracy of ``model`` in % (0 on no examples); see :func:`evaluate`.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.eye(2)), net.bias.zero_()
        >>> accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), chunk=1)
        50.0
    """
    correct, _ = evaluate(model, x, y, chunk=chunk, transform=transform)
    return 100.0 * correct / max(len(y), 1)


# ----------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean (``statistics.fmean``) and sample standard deviation (0 for one value).

    Example:
        >>> mean_std([1.0, 3.0]), mean_std([2.0])
        ((2.0, 1.4142135623730951), (2.0, 0.0))
    """
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``"mean ± std"`` (``statistics.mean``), or the one value, with ``digits`` decimals.

    Example:
        >>> format_mean_std([1.0, 3.0]), format_mean_std([2.0], 3)
        ('2.00 ± 1.41', '2.000')
    """
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
