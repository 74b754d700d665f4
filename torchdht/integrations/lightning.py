"""Performative teaching inside a Lightning ``Trainer``.

:class:`PerformativeTeaching` is a ``lightning.pytorch.Callback`` that attaches a
:class:`~torchdht.PerformativeTeacher` to the LightningModule's head when the
fit starts, arms it with the targets of every training batch, logs its
statistics under ``dht/``, saves its state in Lightning checkpoints and
restores it on resume::

    import lightning.pytorch as pl
    from torchdht.integrations.lightning import PerformativeTeaching

    teaching = PerformativeTeaching(head="model.fc", eps=0.1)
    trainer = pl.Trainer(max_epochs=10, callbacks=[teaching])
    trainer.fit(module, datamodule=dm)      # or trainer.fit(..., ckpt_path=...) to resume
    teaching.teacher.steps_taught           # one per training batch

Needs ``pip install "torchdht[lightning]"``.

**Batches that are not ``(inputs, targets)``.** Pass ``targets=`` a function of
the batch, e.g. ``targets=lambda batch: batch["labels"]``; it may return one
tensor per head call of the step (a sequence), as
:meth:`~torchdht.PerformativeTeacher.set_targets` accepts.

**With MixupTeacher.** Call the :class:`~torchdht.MixupTeacher` in
``training_step`` and re-arm the teacher with the mixed soft targets (arming
again replaces what the callback armed from the batch)::

    def training_step(self, batch, batch_idx):
        x, y = batch
        x, y_soft = self.mixup(x, y)                 # self.mixup = MixupTeacher(num_classes=C, ...)
        self.teaching.teacher.set_targets(y_soft)    # self.teaching: the callback
        return F.cross_entropy(self(x), y_soft)

**With TeachingSampler.** Give the training ``DataLoader`` a
:class:`~torchdht.TeachingSampler` as its ``batch_sampler`` (the Trainer's
optimizer exists when ``train_dataloader`` is called, and the sampler reads
``eta`` from it), and set the sampler's epoch there, since the Trainer draws
the first batch of a fit before any epoch hook runs::

    def train_dataloader(self):                      # in the LightningModule or a DataModule
        if self.sampler is None:
            self.sampler = TeachingSampler(self.train_set, model=self.model,
                                           head=self.model.fc, batch_size=64,
                                           optimizer=self.trainer.optimizers[0], seed=0)
        self.sampler.set_epoch(self.trainer.current_epoch)
        return DataLoader(self.train_set, batch_sampler=self.sampler)

Lightning calls ``set_epoch`` on a DataLoader's ``sampler`` but not on its
``batch_sampler``; this callback does it for a ``TeachingSampler`` found as the
``batch_sampler`` of the training DataLoader(s), at every
``on_train_epoch_start``, so the later epochs of a fit follow the Trainer's
epoch. Under DDP pass ``Trainer(use_distributed_sampler=False)``: the sampler
splits the data across ranks itself.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
except ImportError:
    raise ImportError(
        'torchdht.integrations.lightning needs Lightning: pip install "torchdht[lightning]"'
    ) from None

from ..errors import HeadTypeError
from ..performative import PerformativeTeacher
from ..sampler import TeachingSampler

__all__ = ["HeadSpec", "HeadSpecError", "PerformativeTeaching", "TargetsFn", "batch_targets"]

HeadSpec = Union[str, Callable[["pl.LightningModule"], nn.Module]]
"""A dotted attribute path on the LightningModule, or a function of it returning the head."""

TargetsFn = Callable[[Any], Union[Tensor, Sequence[Tensor]]]
"""A function from a training batch to the targets the teacher is armed with."""

_REFUSED = ("optimizer", "lr")
_PATH = re.compile(r"^[A-Za-z_0-9]+(\.[A-Za-z_0-9]+)*$")
_STATE_VERSION = 1


class HeadSpecError(HeadTypeError, ValueError):
    """The ``head`` of :class:`PerformativeTeaching` resolved to something that is not an
    ``nn.Linear``: both a :class:`~torchdht.HeadTypeError` (a ``TypeError``) and a
    ``ValueError``."""


def batch_targets(batch: Any) -> Any:
    """The default ``targets`` of :class:`PerformativeTeaching`: ``batch[1]``.

    Args:
        batch: a training batch ``(inputs, targets, ...)``.

    Returns:
        ``batch[1]``.

    Raises:
        TypeError: when the batch has no item 1 (e.g. a dict), naming the fix.
    """
    try:
        return batch[1]
    except (IndexError, KeyError, TypeError):
        raise TypeError(
            f"the default targets=lambda batch: batch[1] cannot read the targets of a "
            f"{type(batch).__name__} batch; pass PerformativeTeaching(targets=...) a function "
            f"of the batch, e.g. targets=lambda batch: batch['labels']"
        ) from None


class PerformativeTeaching(pl.Callback):
    """A Lightning callback that teaches the LightningModule's head every training batch.

    At ``on_fit_start`` (after the strategy has set up the model and built the
    optimizers) it builds a :class:`~torchdht.PerformativeTeacher` on the head
    with the optimizer of ``trainer.optimizers`` that trains the head's weight,
    so ``eta`` is the ``lr`` of that param group and follows LR schedulers.

    * **Arming.** ``on_train_batch_start`` arms the teacher with
      ``targets(batch)`` (moved to the head's device): each training batch is
      taught once, in the forward of ``training_step``. Validation, test,
      prediction and the sanity check run in eval mode without grad and are not
      taught; whatever a training batch armed and did not consume is dropped at
      its ``on_train_batch_end`` (with a warning, once per fit), and at
      ``on_validation_start``. A step that calls the head more than once
      (several crops, LBFGS closures) needs ``targets`` to return one tensor per
      call, or ``teacher.set_targets(y, calls=n)`` in ``training_step``.
    * **Logs.** Each taught training step logs the teacher's
      :attr:`~torchdht.PerformativeTeacher.stats` through
      ``pl_module.log_dict({"dht/<name>": ...}, on_step=True, on_epoch=False)``
      (``dht/angle_max``, ``dht/eta``, ...). The figures are handed over as
      device tensors, so logging adds no host-device sync beyond the logger's.
    * **Checkpoints.** The callback's ``state_dict`` is the teacher's
      (``steps_taught``, ``enabled``, the random policy's seed and generator
      state), saved in every Lightning checkpoint. On resume Lightning loads it
      before the teacher exists; it is applied when the teacher is built, so
      ``trainer.fit(..., ckpt_path=...)`` continues bit for bit. A later fit
      with the same callback (without ``ckpt_path``) also continues the
      teacher's state.
    * **Teardown.** The teacher's hook is removed at ``teardown`` of the fit,
      or when the fit raises (``on_exception``); :attr:`teacher` stays
      readable.

    Args:
        head: the head, as a dotted attribute path on the LightningModule
            (e.g. ``"model.fc"``; digits index ``nn.Sequential``:
            ``"net.3"``) or a function of the LightningModule returning it
            (e.g. ``lambda m: m.model.get_classifier()`` for timm models).
            Resolved at fit start; it must be an ``nn.Linear`` (default:
            "model.head").
        targets: a function from the training batch (as ``training_step``
            receives it) to the targets: class indices or soft targets, or one
            tensor per head call (default: :func:`batch_targets`,
            ``batch[1]``).
        **teacher_kwargs: keyword arguments of
            :class:`~torchdht.PerformativeTeacher` (``eps``, ``policy``,
            ``seed``, ``solver``, ...), checked here. Not ``optimizer`` or
            ``lr``: the callback takes the Trainer's optimizer. With
            ``lookahead_encoder_grad=True`` and no ``grad_scaler``, the
            precision plugin's ``GradScaler`` (``precision="16-mixed"``) is used.

    Raises:
        ValueError: ``head`` is not a valid path or callable, ``targets`` is
            not callable, or ``teacher_kwargs`` hold ``optimizer`` or ``lr``;
            at fit start, ``head`` does not resolve or no optimizer trains it.
        HeadSpecError: at fit start, ``head`` resolves to something that is
            not an ``nn.Linear`` (a ``HeadTypeError`` and a ``ValueError``).

    Example:
        A LightningModule whose head is ``self.net[-1]``::

            teaching = PerformativeTeaching(head="net.2", eps=0.1)
            pl.Trainer(max_epochs=1, callbacks=[teaching]).fit(module, loader)
            teaching.teacher.stats["angle_max"]  # at most 2 * asin(eps / 2) rad
    """

    def __init__(
        self,
        head: HeadSpec = "model.head",
        targets: TargetsFn = batch_targets,
        **teacher_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(head, str):
            if not _PATH.match(head):
                raise ValueError(
                    f"head must be a dotted attribute path on the LightningModule such as "
                    f"'model.fc', or a function of the LightningModule returning the head; "
                    f"got {head!r}"
                )
        elif not callable(head) or isinstance(head, nn.Module):
            raise ValueError(
                f"head must be a dotted attribute path (str) on the LightningModule such as "
                f"'model.fc', or a function of the LightningModule returning the head (it is "
                f"resolved at fit start); got {type(head).__name__}"
            )
        if not callable(targets):
            raise ValueError(
                f"targets must be a function from the training batch to the targets tensor, "
                f"e.g. targets=lambda batch: batch[1]; got {type(targets).__name__}"
            )
        refused = [k for k in _REFUSED if k in teacher_kwargs]
        if refused:
            raise ValueError(
                f"PerformativeTeaching does not take {' or '.join(refused)}=: the teacher reads "
                f"eta from the optimizer the Trainer builds from configure_optimizers (the "
                f"param group holding the head's weight), so it follows LR schedulers"
            )
        # Check the teacher's arguments now, not at fit start after the data is loaded (on a
        # meta head: no memory, and no draw from the global RNG that seeds the user's model).
        PerformativeTeacher(nn.Linear(2, 2, device="meta"), lr=1.0, **teacher_kwargs).remove()
        self.head = head
        self.targets = targets
        self.teacher_kwargs = dict(teacher_kwargs)
        self._teacher: PerformativeTeacher | None = None
        self._live = False  # the teacher's hook is on the head (a fit is running)
        self._pending: dict[str, Any] | None = None  # a loaded state for the next teacher
        self._device: torch.device | None = None
        self._steps_before = 0
        self._armed = False
        self._warned = False

    # ------------------------------------------------------------------ API
    @property
    def teacher(self) -> PerformativeTeacher | None:
        """The teacher of the current (or last) fit; None before the first fit starts."""
        return self._teacher

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints: the class and the head, so that
        two callbacks teaching two heads keep separate states."""
        head = self.head if isinstance(self.head, str) else _qualname(self.head)
        return self._generate_state_key(head=head)

    def state_dict(self) -> dict[str, Any]:
        """The teacher's ``state_dict()`` (or the loaded one not yet applied), for checkpoints."""
        if self._teacher is not None and self._pending is None:
            return {"version": _STATE_VERSION, "teacher": self._teacher.state_dict()}
        if self._pending is not None:
            return {"version": _STATE_VERSION, "teacher": dict(self._pending)}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Lightning calls it before ``on_fit_start`` on resume
        (before the teacher exists): the state is then applied when the teacher is built."""
        if not state_dict:
            return
        if state_dict.get("version") != _STATE_VERSION or not isinstance(
            state_dict.get("teacher"), dict
        ):
            raise ValueError(
                f"not a PerformativeTeaching state (expected version {_STATE_VERSION} and a "
                f"'teacher' dict), got keys {sorted(state_dict)}"
            )
        state = dict(state_dict["teacher"])
        if self._teacher is not None and self._live:  # restored after setup (e.g. DeepSpeed)
            self._teacher.load_state_dict(state)
            self._pending = None
        else:
            self._pending = state

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the teacher on the head with the Trainer's optimizer (which exists from
        here: the strategy's setup has built it, and wrapped or sharded the model)."""
        head = self._resolve_head(pl_module)
        optimizer = _head_optimizer(trainer, head)
        kwargs = dict(self.teacher_kwargs)
        if kwargs.get("lookahead_encoder_grad") and "grad_scaler" not in kwargs:
            kwargs["grad_scaler"] = getattr(trainer.precision_plugin, "scaler", None)
        previous = self._teacher
        state = self._pending
        if state is None and previous is not None:
            state = previous.state_dict()  # a later fit with this callback continues
        if previous is not None:
            previous.remove()
            self._live = False
        teacher = PerformativeTeacher(head, optimizer, **kwargs)
        if state is not None:
            try:
                teacher.load_state_dict(state)
            except BaseException:
                teacher.remove()
                raise
        self._teacher, self._pending, self._live = teacher, None, True
        self._device = _device_of(head)
        self._armed, self._warned = False, False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set the epoch of a :class:`~torchdht.TeachingSampler` used as the training
        DataLoader's ``batch_sampler`` (Lightning does not)."""
        for sampler in _teaching_samplers(trainer.train_dataloader):
            sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Arm the teacher with ``targets(batch)`` for the forward of ``training_step``."""
        teacher = self._teacher
        self._armed = False
        if teacher is None or not self._live:
            return
        self._steps_before = teacher.steps_taught
        if not teacher.enabled:
            return
        teacher.set_targets(self._batch_targets(batch))
        self._armed = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Drop what was armed and not consumed, and log the step's statistics."""
        teacher = self._teacher
        if teacher is None or not self._live:
            return
        _disarm(teacher)
        taught = teacher.steps_taught > self._steps_before
        if self._armed and not taught and teacher.enabled and not self._warned:
            self._warned = True
            warnings.warn(
                "PerformativeTeaching armed the teacher for a training batch, but the head was "
                "not called in training mode with grad enabled during training_step, so the "
                "batch was not taught (warned once per fit)",
                stacklevel=2,
            )
        self._armed = False
        if taught:
            metrics = _stats_tensors(teacher)
            if metrics:
                pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing armed survives into validation (including the sanity check)."""
        if self._teacher is not None:
            _disarm(self._teacher)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Detach the teacher at the end of the fit."""
        if stage == "fit":
            self._detach()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Detach the teacher when the fit raises (Lightning then skips ``teardown``)."""
        self._detach()

    def __repr__(self) -> str:
        head = self.head if isinstance(self.head, str) else _qualname(self.head)
        kwargs = "".join(f", {k}={v!r}" for k, v in self.teacher_kwargs.items())
        return f"PerformativeTeaching(head={head!r}{kwargs})"

    # ------------------------------------------------------------ internals
    def _detach(self) -> None:
        if self._teacher is not None and self._live:
            self._teacher.remove()
        self._live = False
        self._armed = False

    def _resolve_head(self, pl_module: pl.LightningModule) -> nn.Linear:
        if isinstance(self.head, str):
            obj: Any = pl_module
            done: list[str] = []
            for part in self.head.split("."):
                try:
                    obj = getattr(obj, part)
                except AttributeError:
                    where = ".".join(done) or type(pl_module).__name__
                    raise ValueError(
                        f"head={self.head!r} does not resolve on {type(pl_module).__name__}: "
                        f"{where} has no attribute {part!r}. {_linear_hint(pl_module)}"
                    ) from None
                done.append(part)
            what = f"head={self.head!r}"
        else:
            obj = self.head(pl_module)
            what = f"head={_qualname(self.head)}(module)"
        if not isinstance(obj, nn.Linear):
            raise HeadSpecError(
                f"{what} must be an nn.Linear (the network's final linear layer), got "
                f"{type(obj).__module__}.{type(obj).__qualname__}. {_linear_hint(pl_module)}"
            )
        return obj

    def _batch_targets(self, batch: Any) -> Tensor | list[Tensor]:
        targets = self.targets(batch)
        device = self._device
        if isinstance(targets, Tensor):
            return targets if device is None or targets.device == device else targets.to(device)
        if isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
            if all(isinstance(t, Tensor) for t in targets):
                return [
                    t if device is None or t.device == device else t.to(device) for t in targets
                ]
        raise TypeError(
            f"targets(batch) must return a tensor (or a sequence of tensors, one per head "
            f"call), got {type(targets).__name__}"
        )


def _qualname(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or type(obj).__qualname__)


def _device_of(head: nn.Module) -> torch.device | None:
    for p in head.parameters():
        return p.device
    return None


def _linear_hint(pl_module: nn.Module) -> str:
    names = [name for name, m in pl_module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        return "The module has no nn.Linear submodule."
    shown = ", ".join(repr(n) for n in names[-5:])
    more = f" (the last 5 of {len(names)})" if len(names) > 5 else ""
    return f"Its nn.Linear submodules{more}: {shown}."


def _head_optimizer(trainer: pl.Trainer, head: nn.Linear) -> torch.optim.Optimizer:
    """The optimizer of the Trainer that trains the head's weight (or its parametrization's
    originals)."""
    optimizers = list(trainer.optimizers)
    if not optimizers:
        raise ValueError(
            "PerformativeTeaching needs the optimizer that trains the head (the teacher reads "
            "eta from it), but the Trainer has none: return one from configure_optimizers"
        )
    weights = {id(p) for name, p in head.named_parameters() if "bias" not in name}
    for opt in optimizers:
        for group in opt.param_groups:
            if any(id(p) in weights for p in group["params"]):
                return opt
    raise ValueError(
        f"none of the Trainer's {len(optimizers)} optimizer(s) trains the head's weight (is "
        f"the head frozen, or does head= point at another layer?); the teacher reads eta "
        f"from the param group holding it"
    )


def _disarm(teacher: PerformativeTeacher) -> None:
    """Drop targets armed and not consumed (``set_targets`` replaces them; this clears)."""
    teacher.clear_targets()


def _stats_tensors(teacher: PerformativeTeacher) -> dict[str, Tensor]:
    """The last taught call's statistics as one-element float tensors on their device: the
    figures of :attr:`PerformativeTeacher.stats` without reading them on the host."""
    return {
        f"dht/{k}": v.detach().float()
        for k, v in teacher.stats_tensors.items()
        if isinstance(v, Tensor) and v.numel() == 1 and not v.is_complex()
    }


def _teaching_samplers(loaders: Any) -> list[TeachingSampler]:
    """The TeachingSamplers used as ``batch_sampler`` of the given DataLoader(s)."""
    found: list[TeachingSampler] = []
    stack = [loaders]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.utils.data.DataLoader):
            if isinstance(item.batch_sampler, TeachingSampler):
                found.append(item.batch_sampler)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found
