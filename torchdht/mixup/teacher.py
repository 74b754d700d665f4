"""MixupTeacher: mixup with a learned (or sampled) mixing coefficient.

Mixup-based black-box teaching (section 4.1 and appendix B of the DHT paper)
as a drop-in for the usual call site ``x, y = mixup(x, y)``. The batch is
paired with a random permutation of itself and mixed with one coefficient
``lam`` per batch; where ``lam`` comes from is the policy, an object of
:mod:`torchdht.mixup.policies` or its name as a shorthand:

* ``"reinforce"`` (:class:`~torchdht.mixup.ReinforcePolicy`): a small MLP over
  the learner's state, a categorical distribution over a discrete action set,
  REINFORCE with a moving-average baseline and an entropy bonus, one update
  per episode (each :meth:`MixupTeacher.reward` call ends one).
* ``"unroll"`` (:class:`~torchdht.mixup.UnrollPolicy`): a small network
  ``h_theta(state)`` in ``(0, 1)``, trained by
  :meth:`MixupTeacher.hypergradient_step` through one virtual learner step.
* ``"beta"`` (:class:`~torchdht.mixup.BetaPolicy`): ``lam ~ Beta(alpha,
  alpha)``, the usual mixup (cMixup).
* ``"discrete"`` (:class:`~torchdht.mixup.DiscretePolicy`): ``lam`` uniform on
  the action set (dMixup).

The teacher keeps the mixing, the permutation, its generator and the
learner's state features; the policy keeps its hyperparameters, its network,
optimizer and reward baseline, and chooses ``lam``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._checks import (
    check_float,
    check_ignore_index,
    check_positive,
    check_seed,
)
from ..errors import TeacherError, TeacherTypeError
from .functional import (
    mix_batch,
    sample_permutation,
    to_soft_targets,
)
from .policies import (
    POLICY_NAMES,
    MixupPolicy,
    _as_float,
    policy_from_name,
)
from .policies import _unroll_hypergradient as _unroll_hypergradient  # noqa: F401

__all__ = ["MixupTeacher"]

_STATE_VERSION = 1
# The keyword arguments of the string shorthand that belong to the policy, with their
# defaults (an object policy takes them itself).
_POLICY_KWARGS: dict[str, Any] = {
    "actions": (0.0, 0.5, 1.0), "alpha": 1.0, "reward_metric": "val_acc", "lr": None,
    "hidden": 128, "dropout": 0.6, "entropy_coef": 0.01, "baseline_momentum": 0.9,
    "unroll_order": 2, "learner_lr": None, "fd_eps": 0.01, "init_lambda": 0.5,
}


def _delegate(name: str, settable: bool = False) -> property:
    """A teacher attribute read from (and written to) its policy object.

    A policy that does not own it answers with the checked value the string
    shorthand was given (``policy.unused``), or None.
    """

    def fget(self: MixupTeacher) -> Any:
        p = self.policy_object
        if name in p.unused:
            return p.unused[name]
        return getattr(p, name, None)

    def fset(self: MixupTeacher, value: Any) -> None:
        setattr(self.policy_object, name, value)

    return property(fget, fset if settable else None,
                    doc=f"The policy's ``{name}`` (see :attr:`policy_object`).")

class MixupTeacher(nn.Module):
    """Mixup whose coefficient is chosen by a teaching policy (DHT section 4.1).

    Call it where timm users call ``Mixup``: ``x, y_soft = mixup(x, y)``. In
    training mode (``mixup.train()``, the default) the batch is paired by a
    random permutation of itself and mixed with one coefficient ``lam`` for
    the whole batch (the policy's state is global to the learner, not per
    example); the targets come back as soft targets ``(B, C)``. In eval mode
    the inputs come back as they are (the same tensor) and the targets as
    ``lam = 1`` would give them (one-hot), so the loss code is unchanged.
    Inputs are never modified in place. All randomness (permutations,
    coefficients, actions, the policy's dropout and initialisation) comes
    from the teacher's own CPU ``torch.Generator``; the global RNG is never
    used.

    The learned policies see the learner through a state of three features:
    training progress ``step / total_steps`` in ``[0, 1]``, the current
    training loss (an exponential moving average of what :meth:`observe`
    receives) over the first one, and the best validation loss so far over
    the first one (1.0 until known).

    Args:
        num_classes: the number of classes ``C``.
        policy: a policy object (:class:`~torchdht.mixup.BetaPolicy`,
            :class:`~torchdht.mixup.DiscretePolicy`,
            :class:`~torchdht.mixup.ReinforcePolicy`,
            :class:`~torchdht.mixup.UnrollPolicy`), which takes its own
            hyperparameters, or the shorthand ``"reinforce"``, ``"unroll"``,
            ``"beta"`` or ``"discrete"``, which builds one from the keyword
            arguments below (default: "reinforce"). With an object, the
            policy's keyword arguments here (``actions`` to ``init_lambda``,
            not ``total_steps`` or ``loss_momentum``) must be left at their
            defaults. The attribute :attr:`policy` is the name, and
            :attr:`policy_object` the object.
        actions: the discrete action set of ``"reinforce"`` and
            ``"discrete"``: distinct mixing coefficients in ``[0, 1]``
            (default: (0.0, 0.5, 1.0), the paper's).
        alpha: the Beta concentration of ``"beta"``, > 0 (default: 1.0).
        total_steps: the number of training steps of the run, for the
            progress feature; required by ``"reinforce"`` and ``"unroll"``
            (default: None).
        reward_metric: ``"val_acc"`` (reward = validation accuracy as a
            fraction in [0, 1], the paper's main text) or ``"val_loss"``
            (reward = minus the validation loss, its appendix) (default:
            "val_acc").
        lr: Adam learning rate of the policy (default: None, meaning 5e-3 for
            ``"reinforce"`` and 3e-4 for ``"unroll"``).
        hidden: hidden width of the policy network (default: 128).
        dropout: dropout of the REINFORCE policy's hidden layer (default:
            0.6, the paper's).
        entropy_coef: weight of the entropy bonus of REINFORCE (default: 0.01).
        baseline_momentum: momentum of the moving averages of the reward (the
            baseline) and of its squared deviation (the scale) (default: 0.9).
        loss_momentum: momentum of the moving average of the training loss
            (default: 0.9).
        unroll_order: 1 or 2, the hypergradient of ``"unroll"`` (default: 2,
            the paper's). See :meth:`hypergradient_step`.
        learner_lr: the learner's learning rate ``xi`` of the virtual step,
            if not given to :meth:`hypergradient_step` (default: None).
        fd_eps: finite-difference scale of the Hessian-vector product; the
            weights move by ``fd_eps / |v|`` along ``v`` (default: 0.01, as in
            DARTS).
        init_lambda: the coefficient ``"unroll"`` starts from, in (0, 1)
            (default: 0.5).
        seed: seed of the teacher's generator (default: None, a fresh
            non-deterministic seed).
        validate: check target values on the host even on CUDA, which costs
            a device sync (default: False).
        ignore_index: a class index marking rows to leave out, as in
            ``F.cross_entropy`` (default: -100). Such rows are neither mixed
            nor used as a partner (their input comes back bit for bit), the
            other rows are paired among themselves, and their soft target row
            is all zeros. Any int is allowed; a value in ``[0, num_classes)``
            makes that class's rows ignored.

    Example:
        >>> from torchdht.mixup import ReinforcePolicy
        >>> a = MixupTeacher(3, "reinforce", total_steps=100, lr=1e-3, seed=0)
        >>> b = MixupTeacher(3, ReinforcePolicy(lr=1e-3), total_steps=100, seed=0)
        >>> x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        >>> all(torch.equal(u, v) for u, v in zip(a(x, y), b(x, y)))
        True
        >>> mixup = MixupTeacher(num_classes=3, policy="reinforce", total_steps=100, seed=0)
        >>> x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        >>> xm, ym = mixup(x, y)
        >>> xm.shape, ym.shape, mixup.last_lambda in (0.0, 0.5, 1.0)
        (torch.Size([8, 5]), torch.Size([8, 3]), True)
        >>> mixup.observe(train_loss=1.1)
        >>> stats = mixup.reward(val_acc=0.4)   # ends the episode: one policy update
        >>> stats["episode_steps"]
        1
    """
    def __init__(
        self,
        num_classes: int,
        policy: str | MixupPolicy = "reinforce",
        *,
        actions: Sequence[float] = (0.0, 0.5, 1.0),
        alpha: float = 1.0,
        total_steps: int | None = None,
        reward_metric: str = "val_acc",
        lr: float | None = None,
        hidden: int = 128,
        dropout: float = 0.6,
        entropy_coef: float = 0.01,
        baseline_momentum: float = 0.9,
        loss_momentum: float = 0.9,
        unroll_order: int = 2,
        learner_lr: float | None = None,
        fd_eps: float = 0.01,
        init_lambda: float = 0.5,
        seed: int | None = None,
        validate: bool = False,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive(num_classes, "num_classes", integer=True)
        given = dict(actions=actions, alpha=alpha, reward_metric=reward_metric, lr=lr,
                     hidden=hidden, dropout=dropout, entropy_coef=entropy_coef,
                     baseline_momentum=baseline_momentum, unroll_order=unroll_order,
                     learner_lr=learner_lr, fd_eps=fd_eps, init_lambda=init_lambda)
        if isinstance(policy, MixupPolicy):
            changed = [k for k, v in given.items()
                       if not (type(v) is type(_POLICY_KWARGS[k]) and v == _POLICY_KWARGS[k])]
            if changed:
                raise TeacherError(
                    f"{', '.join(changed)} belong to the policy: pass them to "
                    f"{type(policy).__name__}(...), not to MixupTeacher, when policy is an object"
                )
            pol = policy
        elif isinstance(policy, str) and policy in POLICY_NAMES:
            pol = policy_from_name(policy, **given)
        else:
            raise TeacherError(f"policy must be one of {POLICY_NAMES} or a MixupPolicy "
                               f"object, got {policy!r}")
        self.policy_object = pol
        #: the policy's name: "reinforce", "unroll", "beta" or "discrete"
        self.policy = pol.name
        if pol.needs_total_steps and total_steps is None:
            raise TeacherError(
                f"total_steps is required for policy {pol.name!r}: the number of training "
                f"steps of the run, for the progress feature (e.g. epochs * len(loader))"
            )
        if total_steps is not None:
            total_steps = check_positive(total_steps, "total_steps", integer=True)
        self.total_steps = total_steps
        self.loss_momentum = check_float(loss_momentum, "loss_momentum", 0.0, 1.0, high_open=True)
        seed = check_seed(seed)
        self.seed = seed if seed is not None else int(torch.Generator().seed())
        self.validate = bool(validate)
        self.ignore_index = check_ignore_index(ignore_index)
        self._gen = torch.Generator().manual_seed(self.seed)
        # The policy's network (if any) from the teacher's generator, registered here so
        # that state_dict() and .to() see it (keys "net.*").
        pol.bind(self._gen)
        self.net = pol.net

        # Running state of the learner (saved by state_dict through get_extra_state).
        self.step = 0
        self.episodes = 0
        self._train_first: float | None = None
        self._train_ema: float | None = None
        self._val_first: float | None = None
        self._val_best: float | None = None
        self.last_lambda: float | None = None
        self.last_action: int | None = None
        self.last_permutation: Tensor | None = None

    # The policy's hyperparameters and state, as attributes of the teacher.
    actions = _delegate("actions")
    alpha = _delegate("alpha")
    reward_metric = _delegate("reward_metric")
    lr = _delegate("lr")
    hidden = _delegate("hidden")
    dropout = _delegate("dropout")
    entropy_coef = _delegate("entropy_coef")
    baseline_momentum = _delegate("baseline_momentum")
    unroll_order = _delegate("unroll_order", settable=True)
    learner_lr = _delegate("learner_lr", settable=True)
    fd_eps = _delegate("fd_eps")
    init_lambda = _delegate("init_lambda")
    optimizer = _delegate("optimizer")
    _baseline = _delegate("_baseline")
    _reward_var = _delegate("_reward_var")
    _ep_states = _delegate("_ep_states")
    _ep_actions = _delegate("_ep_actions")
    _ep_keeps = _delegate("_ep_keeps")


    # ------------------------------------------------------------------ API
    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a training batch; in eval mode return it unchanged.

        Class indices equal to ``ignore_index`` mark rows that are neither
        mixed nor used as a partner: their input comes back bit for bit and
        their soft target row is all zeros; the other rows are paired among
        themselves (with fewer than two of them, they come back unmixed).
        Every integer dtype of ``y`` gives the same result as int64.

        Args:
            x: floating inputs ``(B, ...)``; not modified.
            y: class indices ``(B,)`` or soft targets ``(B, num_classes)``;
                not modified.

        Returns:
            ``(x_mixed, y_soft)``: new tensors, ``y_soft`` of shape
            ``(B, num_classes)``. In eval mode ``x`` itself and the soft form
            of ``y``.
        """
        if not isinstance(x, Tensor):
            raise TeacherTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TeacherTypeError(f"x must be a floating-point tensor (mixup interpolates), got "
                                   f"{x.dtype}; convert images to float first")
        if x.dim() == 0:
            raise TeacherError("x must have a batch dimension, got a 0-d tensor")
        if isinstance(y, Tensor):
            y = y.to(x.device)
        y_soft = to_soft_targets(y, self.num_classes, batch_size=x.shape[0], dtype=x.dtype,
                                 validate=self.validate, ignore_index=self.ignore_index)
        if not self.training:
            return x, y_soft
        state = self.state_features()
        lam, action = self.policy_object.choose(state, self._gen)
        # Rows to ignore: on the CPU only when there are some; on an accelerator
        # always (finding out would cost a host sync; the result is the same).
        valid = None if y.is_floating_point() else y.long() != self.ignore_index
        if valid is not None and valid.device.type == "cpu" and bool(valid.all()):
            valid = None
        perm = sample_permutation(x.shape[0], self._gen, x.device, valid=valid)
        keep = None if valid is None else ~valid | (valid.sum() < 2)
        self.last_lambda, self.last_action, self.last_permutation = lam, action, perm
        self.policy_object.after_mix(x, y_soft, perm, state, keep)
        self.step += 1
        return mix_batch(x, y_soft, lam, perm, keep=keep)

    def observe(self, train_loss: float | Tensor | None = None,
                val_loss: float | Tensor | None = None) -> None:
        """Feed the state features.

        Args:
            train_loss: the training loss of the last step (a float, or a
                0-d tensor, read with ``.item()``); the first one seen is the
                reference, the feature is a moving average over it.
            val_loss: a validation loss; the feature is the best so far over
                the first one. :meth:`reward` also takes it.
        """
        if train_loss is None and val_loss is None:
            raise TeacherError("observe needs train_loss= and/or val_loss=")
        if train_loss is not None:
            v = _as_float(train_loss, "train_loss")
            if self._train_first is None:
                self._train_first = v
                self._train_ema = v
            else:
                assert self._train_ema is not None
                m = self.loss_momentum
                self._train_ema = m * self._train_ema + (1.0 - m) * v
        if val_loss is not None:
            self._observe_val(_as_float(val_loss, "val_loss"))

    def reward(self, val_loss: float | Tensor | None = None,
               val_acc: float | Tensor | None = None, *, update: bool = True
               ) -> dict[str, float]:
        """End the current episode; with ``"reinforce"``, update the policy once.

        The reward ``R`` is ``val_acc`` or ``-val_loss`` (``reward_metric``).
        With moving averages ``b`` (baseline) and ``s2`` (scale) of momentum
        ``m``: ``d = R - b``, ``s2 <- m s2 + (1 - m) d^2``, advantage
        ``A = d / sqrt(s2)`` (so ``|A| <= 1 / sqrt(1 - m)``), then
        ``b <- m b + (1 - m) R``. The first episode only sets ``b = R``
        (``A = 0``). The update minimises
        ``-A mean_t log pi(a_t | s_t) - entropy_coef mean_t H(pi(. | s_t))``
        over the episode's steps, with the dropout masks used when the actions
        were sampled. Other policies only record ``val_loss``.

        Episodes within one training run are not independent: the validation
        accuracy rises, then levels off or falls, and the moving average lags
        it, so early actions tend to look good and late ones bad whatever they
        were. Episodes that restart the learner (:meth:`new_run`, as in the
        authors' released code) give the baseline independent rewards.

        Args:
            val_loss: validation loss of the learner now.
            val_acc: validation accuracy of the learner now, a fraction in
                ``[0, 1]``.
            update: update the policy (default: True); False ends the
                episode and records the reward without learning (a frozen
                policy).

        Returns:
            Figures of the episode: ``reward``, ``advantage``, ``baseline``
            (the ``b`` it was compared with), ``updated``,
            ``entropy`` (mean policy entropy over the episode's steps, nats),
            ``episode_steps`` and ``episodes``.
        """
        if self._train_first is None and self._val_first is None:
            raise TeacherError(
                "reward() before any observe(): call mixup.observe(train_loss=...) during "
                "the episode so the policy's state has a training loss"
            )
        metric = val_acc if self.reward_metric == "val_acc" else val_loss
        if metric is None:
            raise TeacherError(f"reward_metric is {self.reward_metric!r}: pass "
                               f"{self.reward_metric}= to reward()")
        acc = None if val_acc is None else _as_float(val_acc, "val_acc")
        if acc is not None and not 0.0 <= acc <= 1.0:
            raise TeacherError(f"val_acc must be a fraction in [0, 1], got {acc!r}")
        loss = None if val_loss is None else _as_float(val_loss, "val_loss")
        if loss is not None:
            self._observe_val(loss)
        r = acc if self.reward_metric == "val_acc" else -loss  # type: ignore[operator]
        assert r is not None
        out = self.policy_object.end_episode(r, update=update)
        self.episodes += 1
        return {
            "reward": out["reward"],
            "advantage": out["advantage"],
            "baseline": out["baseline"],
            "entropy": out["entropy"],
            "episode_steps": out["episode_steps"],
            "episodes": self.episodes,
            "updated": out["updated"],
        }

    def new_run(self, total_steps: int | None = None) -> None:
        """The learner was re-initialised: restart the progress and loss references.

        Keeps what was learned (the policy, its optimizer, the reward
        baseline) and the generator; drops the current episode's unrewarded
        steps and the pending unroll batch. For policy search over restarted
        training runs, the protocol of the authors' released code.

        Args:
            total_steps: the new run's number of steps (default: None, keep
                the current ``total_steps``).

        Example:
            >>> t = MixupTeacher(2, "reinforce", total_steps=10, seed=0)
            >>> _ = t(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
            >>> t.new_run(total_steps=20)
            >>> t.step, t.total_steps
            (0, 20)
        """
        if total_steps is not None:
            self.total_steps = check_positive(total_steps, "total_steps", integer=True)
        self.step = 0
        self._train_first = self._train_ema = None
        self._val_first = self._val_best = None
        self.policy_object.new_run()

    def action_probs(self, state: Sequence[float] | None = None) -> list[float]:
        """The policy's action probabilities at ``state`` (default: now), no dropout.

        For ``"discrete"`` the uniform distribution; for the others an error.

        Example:
            >>> MixupTeacher(2, "discrete").action_probs()
            [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
        """
        return self.policy_object.action_probs(
            list(state) if state is not None else self.state_features())

    def current_lambda(self, state: Sequence[float] | None = None) -> float:
        """``h_theta(state)`` of the ``"unroll"`` policy (default state: now).

        Example:
            >>> MixupTeacher(2, "unroll", total_steps=10, init_lambda=0.3).current_lambda()
            0.3...
        """
        return self.policy_object.current_lambda(
            list(state) if state is not None else self.state_features())

    def state_features(self) -> list[float]:
        """The policy's state now: [progress, train loss ratio, best val loss ratio].

        Example:
            >>> MixupTeacher(2, "beta").state_features()
            [0.0, 1.0, 1.0]
        """
        progress = 0.0
        if self.total_steps is not None:
            progress = min(self.step / self.total_steps, 1.0)
        train = 1.0
        if self._train_first is not None and self._train_first > 0:
            assert self._train_ema is not None
            train = self._train_ema / self._train_first
        val = 1.0
        if self._val_first is not None and self._val_first > 0:
            assert self._val_best is not None
            val = self._val_best / self._val_first
        return [progress, train, val]

    def hypergradient_step(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        val_batch: tuple[Tensor, Tensor],
        *,
        lr: float | None = None,
    ) -> dict[str, float]:
        """One teacher update of the ``"unroll"`` policy through a virtual learner step.

        With the last mixed training batch (the inputs of the last training
        call), ``lam = h_theta(s)`` its coefficient, the learner's weights
        ``w`` and ``xi = lr``, the virtual step is
        ``w' = w - xi * grad_w L_train(w, lam)`` and the outer loss
        ``L_val``. Since ``lam`` enters only through ``L_train``:

        * order 2 (the paper's): the exact
          ``d/d lam L_val(w - xi grad_w L_train(w, lam))
          = -xi v^T d/d lam grad_w L_train(w, lam)`` with ``v = grad L_val(w')``;
        * order 1: the derivative of the first-order expansion in ``xi``,
          ``L_val(w) - xi <grad L_val(w), grad_w L_train(w, lam)>``: the same
          with ``v = grad L_val(w)`` (no virtual step; it chooses ``lam`` so
          that the training gradient aligns with the validation gradient).
          DARTS' own first-order rule (``xi = 0``) would give zero here.

        The mixed product ``v^T d/d lam grad_w L_train`` is taken by central
        finite differences as in DARTS:
        ``(dL_train/d lam (w + e v) - dL_train/d lam (w - e v)) / (2 e)``,
        ``e = fd_eps / |v|``. The result is back-propagated through ``h_theta``
        and the teacher's Adam takes one step.

        A :class:`~torchdht.PerformativeTeacher` on the model is suspended
        during the virtual step (it models a plain learner step; no targets
        are needed). Everything runs through ``torch.func.functional_call`` on
        detached copies: the model's parameters, their ``.grad``, its buffers (BatchNorm
        statistics), the user's optimizer and the global RNG state are
        unchanged (dropout draws the same masks in every evaluation of the
        same batch). Autocast is off inside.

        Args:
            model: the learner, as it is now; its ``training`` flag is used.
            loss_fn: ``loss_fn(logits, soft_targets) -> scalar``, e.g.
                ``torch.nn.functional.cross_entropy``; validation targets are
                passed as soft (one-hot) targets too, rows of ``ignore_index``
                as zero rows (zero loss; a mean still divides by all rows).
            val_batch: ``(x_val, y_val)`` on the model's device.
            lr: the learner's learning rate ``xi`` (default: None, meaning
                ``learner_lr`` of the constructor).

        Returns:
            ``lambda`` (before the update), ``hypergrad`` (``dL_val/d lam``) and
            ``val_loss`` (at ``w'`` for order 2, at ``w`` for order 1).

        Example:
            >>> import torch.nn.functional as F
            >>> model = nn.Linear(5, 3)
            >>> mixup = MixupTeacher(3, "unroll", total_steps=100, learner_lr=0.1, seed=0)
            >>> x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
            >>> xm, ym = mixup(x, y)
            >>> before = model.weight.detach().clone()
            >>> val = (torch.randn(8, 5), torch.randint(0, 3, (8,)))
            >>> stats = mixup.hypergradient_step(model, F.cross_entropy, val)
            >>> sorted(stats), torch.equal(model.weight, before)
            (['hypergrad', 'lambda', 'val_loss'], True)
        """
        return self.policy_object.hypergradient_step(self, model, loss_fn, val_batch, lr)

    @property
    def stats(self) -> dict[str, Any]:
        """The last training call: ``lambda``, ``action`` (index or None), ``step``,
        ``episodes`` and the current ``state``."""
        return {
            "lambda": self.last_lambda,
            "action": self.last_action,
            "step": self.step,
            "episodes": self.episodes,
            "state": self.state_features(),
        }

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}", f"policy={self.policy!r}"]
        more = self.policy_object.extra_repr()
        return ", ".join(parts + ([more] if more else []))

    # ------------------------------------------------------------ state dict
    def get_extra_state(self) -> dict[str, Any]:
        """Running state, the policy's optimizer and the generator (for ``state_dict``)."""
        return {
            "version": _STATE_VERSION,
            "policy": self.policy,
            "actions": list(self.actions),
            "step": self.step,
            "total_steps": self.total_steps,
            "episodes": self.episodes,
            "train_first": self._train_first,
            "train_ema": self._train_ema,
            "val_first": self._val_first,
            "val_best": self._val_best,
            "last_lambda": self.last_lambda,
            "last_action": self.last_action,
            "seed": self.seed,
            "rng": self._gen.get_state(),
            # baseline, reward_var, ep_states, ep_actions, ep_keeps, optimizer
            **self.policy_object.state_dict(),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` returned (called by ``load_state_dict``)."""
        if not isinstance(state, Mapping):
            raise TeacherTypeError(f"the teacher's extra state must be a dict, got "
                                   f"{type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise TeacherError(f"unsupported MixupTeacher state version {state.get('version')!r}")
        if state["policy"] != self.policy or tuple(state["actions"]) != self.actions:
            raise TeacherError(
                f"state was saved by a teacher with policy {state['policy']!r} and actions "
                f"{tuple(state['actions'])}; this one has policy {self.policy!r} and actions "
                f"{self.actions}"
            )
        self.step = int(state["step"])
        self.total_steps = state["total_steps"]
        self.episodes = int(state["episodes"])
        self._train_first = state["train_first"]
        self._train_ema = state["train_ema"]
        self._val_first = state["val_first"]
        self._val_best = state["val_best"]
        self.last_lambda = state["last_lambda"]
        self.last_action = state["last_action"]
        self.seed = int(state["seed"])
        self._gen.set_state(state["rng"].clone())
        self.policy_object.load_state_dict(state)

    # ------------------------------------------------------------ internals
    def _observe_val(self, v: float) -> None:
        if self._val_first is None:
            self._val_first = v
            self._val_best = v
        else:
            assert self._val_best is not None
            self._val_best = min(self._val_best, v)
