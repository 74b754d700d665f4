"""Performative teaching inside a Hugging Face ``transformers.Trainer``.

:class:`PerformativeTeachingCallback` attaches a
:class:`~torchdht.PerformativeTeacher` to the model's classification head when
training begins, arms it from the ``labels`` of every training forward, puts
its statistics into the Trainer's logs under ``dht/``, saves its state with
each checkpoint and restores it on resume::

    from torchdht.integrations.transformers import PerformativeTeachingCallback

    callback = PerformativeTeachingCallback(head="classifier", eps=0.1)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[callback])
    trainer.train()
    callback.teacher.steps_taught  # one per training forward

Needs ``pip install "torchdht[transformers]"``.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Union

import torch
from torch import nn

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError:
    raise ImportError(
        "torchdht.integrations.transformers needs transformers: "
        'pip install "torchdht[transformers]"'
    ) from None

from ..performative import PerformativeTeacher

__all__ = ["PerformativeTeachingCallback", "TEACHER_STATE_NAME"]

TEACHER_STATE_NAME = "torchdht_teacher.pt"
"""The file the callback writes into each Trainer checkpoint folder."""

_FORMAT = "torchdht.PerformativeTeachingCallback"
_VERSION = 1
_REFUSED = ("optimizer", "lr")

HeadSpec = Union[str, Callable[[nn.Module], nn.Module]]
PathLike = Union[str, "os.PathLike[str]"]


class PerformativeTeachingCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that teaches the model's head each training step.

    At ``on_train_begin`` it builds a :class:`~torchdht.PerformativeTeacher` on
    the head with the Trainer's optimizer (so ``eta`` is the ``lr`` of the
    param group holding ``head.weight``, and follows the Trainer's LR
    scheduler) and hooks the model so that every training forward
    ``model(**inputs)`` arms the teacher with ``inputs[label_key]``: each
    micro-batch of gradient accumulation is taught. Evaluation and prediction
    forwards run in eval mode and are not taught.

    * **Logs.** Every training-step log (the ones holding ``"loss"``) gets the
      teacher's :attr:`~torchdht.PerformativeTeacher.stats` of the last taught
      forward as ``dht/<name>``, plus ``dht/steps_taught``, both in
      ``trainer.state.log_history`` and in the ``logs`` seen by the callbacks
      after this one (the printer / progress bar). The Trainer calls its
      reporting integrations (``report_to``) *before* user callbacks; for them
      to receive the ``dht/`` figures, put this callback first:
      ``trainer.callback_handler.callbacks.insert(0, callback)`` instead of
      ``callbacks=[callback]``.
    * **Checkpoints.** ``on_save`` writes the teacher's ``state_dict()`` as
      :data:`TEACHER_STATE_NAME` into ``<output_dir>/checkpoint-<step>``. On
      resume (``trainer.train(resume_from_checkpoint=...)``) the Trainer does
      not tell callbacks which checkpoint it resumes from; the callback loads
      the teacher's state from, in this order, its own
      ``resume_from_checkpoint`` argument, ``args.resume_from_checkpoint``,
      or ``<output_dir>/checkpoint-<step>`` where ``<step>`` is the resumed
      ``global_step`` (which covers ``resume_from_checkpoint=True`` and any
      checkpoint of ``output_dir``). A checkpoint found there must belong to
      the resumed run (the same ``global_step`` and the same log history);
      when none does the teacher starts afresh with a warning. Resuming a
      checkpoint outside ``output_dir``: pass the same path to the callback.
    * **Limits.** The labels must reach the model's forward: with
      ``label_smoothing_factor > 0`` or a ``compute_loss_func`` the Trainer
      pops them first and the teacher raises
      :class:`~torchdht.MissingTargetsError`; arm it yourself then, e.g. in a
      ``Trainer`` subclass whose ``compute_loss`` calls
      ``callback.teacher.set_targets(inputs["labels"])`` first. The optimizer
      must hold ``head.weight`` itself (not DeepSpeed's flattened copies).

    Args:
        head: where the final ``nn.Linear`` is: a dotted attribute path on the
            model (``"classifier"`` for ``BertForSequenceClassification``,
            ``"score"`` for ``*ForSequenceClassification`` of decoder models,
            ``"classifier.out_proj"`` for RoBERTa), or a callable taking the
            model and returning the head (default: "classifier").
        label_key: the keyword argument of the model's forward holding the
            labels (default: "labels").
        resume_from_checkpoint: the checkpoint folder the Trainer resumes
            from, when it is not a ``checkpoint-<step>`` folder of
            ``args.output_dir`` (default: None, meaning found as above).
        **teacher_kwargs: passed on to :class:`~torchdht.PerformativeTeacher`
            (``eps``, ``policy``, ``seed``, ``lookahead_steps``, ...); checked
            here. Not ``optimizer`` or ``lr``: ``eta`` is the Trainer's.

    Attributes:
        teacher: the teacher of the current (or last) ``train()`` call, None
            before the first. Removed from the model at ``on_train_end``; its
            ``steps_taught`` and ``stats`` stay readable.

    Raises:
        TypeError: ``head`` is neither a string nor a callable, ``label_key``
            is not a string, or a teacher keyword is unknown or of a wrong type.
        ValueError: ``head`` is an empty path, ``teacher_kwargs`` holds
            ``optimizer`` or ``lr``, or a teacher keyword has a bad value.

    Example:
        A complete run is in the package README; the callback alone::

            callback = PerformativeTeachingCallback("classifier", eps=0.1, seed=0)
            trainer = Trainer(model, args, train_dataset=ds, callbacks=[callback])
    """

    teacher: PerformativeTeacher | None

    def __init__(
        self,
        head: HeadSpec = "classifier",
        label_key: str = "labels",
        *,
        resume_from_checkpoint: PathLike | None = None,
        **teacher_kwargs: Any,
    ) -> None:
        if isinstance(head, str):
            if not head or any(not part for part in head.split(".")):
                raise ValueError(
                    f"head must be a dotted attribute path on the model such as 'classifier', "
                    f"got {head!r}"
                )
        elif not callable(head):
            raise TypeError(
                f"head must be a dotted attribute path (str) or a callable taking the model and "
                f"returning its final nn.Linear, got {type(head).__name__}"
            )
        if not isinstance(label_key, str) or not label_key:
            raise TypeError(
                f"label_key must be the name of the model's label keyword argument (a non-empty "
                f"str), got {label_key!r}"
            )
        refused = [k for k in _REFUSED if k in teacher_kwargs]
        if refused:
            names = " and ".join(f"{k}=" for k in refused)
            raise ValueError(
                f"PerformativeTeachingCallback got {names}: eta is read from the Trainer's "
                f"optimizer (the lr of the group holding head.weight, following its scheduler); "
                f"set it with TrainingArguments(learning_rate=...)"
            )
        if resume_from_checkpoint is not None and not isinstance(
            resume_from_checkpoint, (str, os.PathLike)
        ):
            raise TypeError(
                f"resume_from_checkpoint must be a checkpoint folder (str or os.PathLike) or "
                f"None, got {type(resume_from_checkpoint).__name__}"
            )
        _check_teacher_kwargs(teacher_kwargs)
        self.head = head
        self.label_key = label_key
        self.resume_from_checkpoint = (
            None if resume_from_checkpoint is None else os.fspath(resume_from_checkpoint)
        )
        self.teacher_kwargs = dict(teacher_kwargs)
        self.teacher = None
        self._logged_steps = 0

    def __repr__(self) -> str:
        head = self.head if isinstance(self.head, str) else getattr(self.head, "__name__", "fn")
        kwargs = "".join(f", {k}={v!r}" for k, v in self.teacher_kwargs.items())
        return f"PerformativeTeachingCallback(head={head!r}, label_key={self.label_key!r}{kwargs})"

    # ------------------------------------------------------------- events
    def on_init_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        """Resolve the head once at ``Trainer(...)``, so that a wrong path fails there."""
        if model is not None:
            self._resolve_head(model)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the teacher with the Trainer's optimizer, hook the model, restore on resume."""
        if model is None or optimizer is None:
            raise ValueError(
                "PerformativeTeachingCallback.on_train_begin needs the Trainer's model and "
                "optimizer (transformers passes both to callbacks)"
            )
        self._drop_teacher()  # a train() that ended in an exception left its teacher on
        head = self._resolve_head(model)
        # The Trainer's optimizer is accelerate's AcceleratedOptimizer, a torch Optimizer
        # whose param_groups are the wrapped optimizer's: the group of head.weight is found
        # in it and its lr is the one the LR scheduler sets.
        try:
            teacher = PerformativeTeacher(head, optimizer=optimizer, **self.teacher_kwargs)
        except ValueError as err:
            if "no param group" not in str(err):
                raise
            raise ValueError(
                f"the Trainer's optimizer does not hold the head's weight ({self._head_name()}), "
                f"so the teacher cannot read its eta; the head must be trained by the Trainer's "
                f"optimizer as a plain parameter (not DeepSpeed's flattened copies)"
            ) from None
        try:
            teacher.arm_from(model, key=self.label_key)
            if state.global_step > 0:
                self._restore(teacher, args, state)
        except BaseException:
            teacher.remove()
            raise
        self.teacher = teacher
        self._logged_steps = teacher.steps_taught

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Add ``dht/`` figures to a training-step log that follows newly taught forwards."""
        teacher = self.teacher
        if teacher is None or logs is None or "loss" not in logs:
            return
        if teacher.steps_taught == self._logged_steps:
            return
        self._logged_steps = teacher.steps_taught
        figures = {f"dht/{k}": v for k, v in teacher.stats.items()}
        figures["dht/steps_taught"] = teacher.steps_taught
        logs.update(figures)
        # The Trainer appended a copy of `logs` to the history before calling the callbacks.
        if state.log_history:
            last = state.log_history[-1]
            if last.get("step") == state.global_step and last.get("loss") == logs["loss"]:
                last.update(figures)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Write the teacher's state into the checkpoint folder the Trainer just saved."""
        if self.teacher is None or not args.should_save:
            return
        folder = _checkpoint_folder(args.output_dir, state.global_step)
        if not os.path.isdir(folder):
            warnings.warn(
                f"PerformativeTeachingCallback: the checkpoint folder {folder} does not exist "
                f"(a hyperparameter-search run?); the teacher's state was not saved",
                stacklevel=2,
            )
            return
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "global_step": int(state.global_step),
            "teacher": self.teacher.state_dict(),
        }
        torch.save(payload, os.path.join(folder, TEACHER_STATE_NAME))

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Detach the teacher from the model (its figures stay readable)."""
        if self.teacher is not None:
            self.teacher.remove()

    # ---------------------------------------------------------- internals
    def _head_name(self) -> str:
        return repr(self.head) if isinstance(self.head, str) else "the head callable's result"

    def _resolve_head(self, model: nn.Module) -> nn.Linear:
        name = type(model).__name__
        if isinstance(self.head, str):
            try:
                found: Any = model.get_submodule(self.head)
            except AttributeError:
                children = ", ".join(n for n, _ in model.named_children()) or "none"
                raise ValueError(
                    f"head={self.head!r} does not resolve on {name} (its submodules: "
                    f"{children}); give the dotted path of its final nn.Linear, e.g. "
                    f"'classifier'"
                ) from None
        else:
            found = self.head(model)
        if not isinstance(found, nn.Linear):
            what = f"head={self.head!r}" if isinstance(self.head, str) else "the head callable"
            hint = ""
            if isinstance(found, nn.Module):
                linears = [n for n, m in found.named_modules() if isinstance(m, nn.Linear) and n]
                if linears:
                    hint = f" (its last nn.Linear is at '{linears[-1]}')"
            raise TypeError(
                f"{what} must give the model's final nn.Linear, got "
                f"{type(found).__module__}.{type(found).__qualname__} on {name}{hint}"
            )
        return found

    def _drop_teacher(self) -> None:
        if self.teacher is not None:
            self.teacher.remove()
            self.teacher = None

    def _restore(
        self, teacher: PerformativeTeacher, args: TrainingArguments, state: TrainerState
    ) -> None:
        """Load the teacher's state from the checkpoint the Trainer resumed."""
        step = int(state.global_step)
        if self.resume_from_checkpoint is not None:
            path = os.path.join(self.resume_from_checkpoint, TEACHER_STATE_NAME)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"resume_from_checkpoint={self.resume_from_checkpoint!r} holds no "
                    f"{TEACHER_STATE_NAME}; give the checkpoint folder the Trainer resumes from"
                )
            _load_into(teacher, path, step, strict=True)
            return
        candidates = []
        from_args = getattr(args, "resume_from_checkpoint", None)
        if isinstance(from_args, (str, os.PathLike)):
            candidates.append(os.fspath(from_args))
        candidates.append(_checkpoint_folder(args.output_dir, step))
        for folder in candidates:
            path = os.path.join(folder, TEACHER_STATE_NAME)
            if os.path.isfile(path) and _same_run(folder, state):
                if _load_into(teacher, path, step, strict=False):
                    return
        warnings.warn(
            f"PerformativeTeachingCallback: the Trainer resumed at step {step} but no "
            f"{TEACHER_STATE_NAME} of that checkpoint was found in "
            f"{' or '.join(candidates)}; the teacher starts afresh. Pass "
            f"PerformativeTeachingCallback(..., resume_from_checkpoint=<the same folder>) when "
            f"resuming from outside output_dir",
            stacklevel=3,
        )


def _check_teacher_kwargs(teacher_kwargs: dict[str, Any]) -> None:
    """Build a throwaway teacher, so bad keywords fail at construction, not in train()."""
    try:
        PerformativeTeacher(nn.Linear(2, 2), lr=1.0, **teacher_kwargs).remove()
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise TypeError(
                f"PerformativeTeachingCallback: {err}; teacher keywords are those of "
                f"PerformativeTeacher (eps, policy, seed, lookahead_steps, ...)"
            ) from None
        raise


def _checkpoint_folder(output_dir: Any, step: int) -> str:
    return os.path.join(os.fspath(output_dir), f"checkpoint-{step}")


def _same_run(folder: str, state: TrainerState) -> bool:
    """Whether ``folder`` is the checkpoint ``state`` was loaded from: same step and history."""
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return bool(
        saved.get("global_step") == state.global_step
        and saved.get("log_history") == state.log_history
    )


def _load_into(teacher: PerformativeTeacher, path: str, step: int, *, strict: bool) -> bool:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    ok = (
        isinstance(payload, dict)
        and payload.get("format") == _FORMAT
        and payload.get("version") == _VERSION
        and "teacher" in payload
    )
    if not ok:
        raise ValueError(f"{path} is not a PerformativeTeachingCallback checkpoint")
    if payload.get("global_step") != step:
        if strict:
            raise ValueError(
                f"{path} was saved at step {payload.get('global_step')} but the Trainer resumed "
                f"at step {step}; give the checkpoint folder the Trainer resumes from"
            )
        return False
    teacher.load_state_dict(payload["teacher"])
    return True
