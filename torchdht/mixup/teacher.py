"""MixupTeacher: mixup with a learned (or sampled) mixing coefficient.

Mixup-based black-box teaching (section 4.1 and appendix B of the DHT paper)
as a drop-in for the usual call site ``x, y = mixup(x, y)``. The batch is
paired with a random permutation of itself and mixed with one coefficient
``lam`` per batch; where ``lam`` comes from is the policy:

* ``"reinforce"``: a small MLP over the learner's state, a categorical
  distribution over a discrete action set, REINFORCE with a moving-average
  baseline and an entropy bonus, one update per episode (each
  :meth:`MixupTeacher.reward` call ends one).
* ``"unroll"``: a small network ``h_theta(state)`` in ``(0, 1)``, trained by
  :meth:`MixupTeacher.hypergradient_step` through one virtual learner step.
* ``"beta"``: ``lam ~ Beta(alpha, alpha)``, the usual mixup (cMixup).
* ``"discrete"``: ``lam`` uniform on the action set (dMixup).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import (
    check_float,
    check_ignore_index,
    check_int,
    check_positive,
    check_seed,
)
from ..errors import TeacherError, TeacherTypeError
from ..performative.teacher import suspend_teachers
from .functional import (
    check_actions,
    mix_batch,
    sample_beta,
    sample_permutation,
    to_soft_targets,
)

__all__ = ["MixupTeacher"]

_POLICIES = ("reinforce", "unroll", "beta", "discrete")
_REWARD_METRICS = ("val_acc", "val_loss")
_STATE_VERSION = 1
_DEFAULT_LR = {"reinforce": 5e-3, "unroll": 3e-4}
_N_FEATURES = 3


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TeacherError(
                f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.detach().item()
    return check_float(value, name)


class _PolicyNet(nn.Module):
    """``in -> hidden -> out`` with ReLU; dropout by an explicit keep-mask.

    The mask is drawn by the teacher from its own generator, so the global RNG
    is never used and a REINFORCE update can recompute exactly the
    log-probabilities of the actions it sampled.
    """

    def __init__(self, hidden: int, out: int, dropout: float) -> None:
        super().__init__()
        # Uninitialised here (no draw from the global RNG); the teacher fills them.
        self.fc1 = nn.utils.skip_init(nn.Linear, _N_FEATURES, hidden)
        self.fc2 = nn.utils.skip_init(nn.Linear, hidden, out)
        self.dropout = dropout

    def forward(self, s: Tensor, keep: Tensor | None = None) -> Tensor:
        h = self.fc1(s)
        if keep is not None and self.dropout > 0:
            h = h * keep.to(h.dtype) / (1.0 - self.dropout)
        return self.fc2(F.relu(h))


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
        policy: ``"reinforce"``, ``"unroll"``, ``"beta"`` or ``"discrete"``
            (default: "reinforce").
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
        policy: str = "reinforce",
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
        if policy not in _POLICIES:
            raise TeacherError(f"policy must be one of {_POLICIES}, got {policy!r}")
        self.policy = policy
        self.actions = check_actions(actions)
        self.alpha = check_positive(alpha, "alpha")
        if policy in ("reinforce", "unroll"):
            if total_steps is None:
                raise TeacherError(
                    f"total_steps is required for policy {policy!r}: the number of training "
                    f"steps of the run, for the progress feature (e.g. epochs * len(loader))"
                )
        if total_steps is not None:
            total_steps = check_positive(total_steps, "total_steps", integer=True)
        self.total_steps = total_steps
        if reward_metric not in _REWARD_METRICS:
            raise TeacherError(f"reward_metric must be one of {_REWARD_METRICS}, got "
                               f"{reward_metric!r}")
        self.reward_metric = reward_metric
        self.hidden = check_positive(hidden, "hidden", integer=True)
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, high_open=True)
        self.entropy_coef = check_float(entropy_coef, "entropy_coef", 0.0)
        self.baseline_momentum = check_float(
            baseline_momentum, "baseline_momentum", 0.0, 1.0, high_open=True
        )
        self.loss_momentum = check_float(loss_momentum, "loss_momentum", 0.0, 1.0, high_open=True)
        self.unroll_order = check_int(unroll_order, "unroll_order", 1, 2)
        self.learner_lr = (None if learner_lr is None
                           else check_positive(learner_lr, "learner_lr"))
        self.fd_eps = check_positive(fd_eps, "fd_eps")
        self.init_lambda = check_float(
            init_lambda, "init_lambda", 0.0, 1.0, low_open=True, high_open=True
        )
        seed = check_seed(seed)
        self.seed = seed if seed is not None else int(torch.Generator().seed())
        self.validate = bool(validate)
        self.ignore_index = check_ignore_index(ignore_index)
        self._gen = torch.Generator().manual_seed(self.seed)

        self.net: _PolicyNet | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr: float | None
        if policy in ("reinforce", "unroll"):
            out = len(self.actions) if policy == "reinforce" else 1
            drop = self.dropout if policy == "reinforce" else 0.0
            self.net = _PolicyNet(self.hidden, out, drop)
            self._init_net()
            self.lr = check_positive(lr, "lr") if lr is not None else _DEFAULT_LR[policy]
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        else:
            self.lr = None if lr is None else check_positive(lr, "lr")

        # Running state (saved by state_dict through get_extra_state).
        self.step = 0
        self.episodes = 0
        self._train_first: float | None = None
        self._train_ema: float | None = None
        self._val_first: float | None = None
        self._val_best: float | None = None
        self._baseline: float | None = None
        self._reward_var = 0.0
        self._ep_states: list[list[float]] = []
        self._ep_actions: list[int] = []
        self._ep_keeps: list[Tensor] = []
        self.last_lambda: float | None = None
        self.last_action: int | None = None
        self.last_permutation: Tensor | None = None
        # The last mixed batch, by reference, for hypergradient_step (not saved):
        # inputs, soft targets, permutation, state and the rows kept unmixed.
        self._pending: tuple[Tensor, Tensor, Tensor, list[float], Tensor | None] | None = None

    # ------------------------------------------------------------- building
    def _init_net(self) -> None:
        """Initialise the policy from the teacher's generator (PyTorch's default scheme
        for the hidden layer; a zero output layer, so the policy starts uniform over the
        actions, or at ``init_lambda`` for ``"unroll"``)."""
        assert self.net is not None
        with torch.no_grad():
            bound = 1.0 / math.sqrt(_N_FEATURES)
            self.net.fc1.weight.uniform_(-bound, bound, generator=self._gen)
            self.net.fc1.bias.uniform_(-bound, bound, generator=self._gen)
            self.net.fc2.weight.zero_()
            self.net.fc2.bias.zero_()
            if self.policy == "unroll":
                p = self.init_lambda
                self.net.fc2.bias.fill_(math.log(p / (1.0 - p)))

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
        lam, action = self._choose(state)
        # Rows to ignore: on the CPU only when there are some; on an accelerator
        # always (finding out would cost a host sync; the result is the same).
        valid = None if y.is_floating_point() else y.long() != self.ignore_index
        if valid is not None and valid.device.type == "cpu" and bool(valid.all()):
            valid = None
        perm = sample_permutation(x.shape[0], self._gen, x.device, valid=valid)
        keep = None if valid is None else ~valid | (valid.sum() < 2)
        self.last_lambda, self.last_action, self.last_permutation = lam, action, perm
        if self.policy == "unroll":
            self._pending = (x, y_soft, perm, state, keep)
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
        if self._baseline is None:
            adv, b = 0.0, r
            self._baseline = r
        else:
            m = self.baseline_momentum
            b = self._baseline
            d = r - b
            self._reward_var = m * self._reward_var + (1.0 - m) * d * d
            adv = d / max(math.sqrt(self._reward_var), 1e-12)
            self._baseline = m * b + (1.0 - m) * r
        steps = len(self._ep_actions)
        entropy = float("nan")
        updated = self.policy == "reinforce" and steps > 0 and bool(update)
        if updated:
            with torch.inference_mode(False), torch.enable_grad():
                entropy = self._reinforce_update(adv)
        self._ep_states, self._ep_actions, self._ep_keeps = [], [], []
        self.episodes += 1
        return {
            "reward": r,
            "advantage": adv,
            "baseline": b,
            "entropy": entropy,
            "episode_steps": steps,
            "episodes": self.episodes,
            "updated": updated,
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
        self._ep_states, self._ep_actions, self._ep_keeps = [], [], []
        self._pending = None

    def action_probs(self, state: Sequence[float] | None = None) -> list[float]:
        """The policy's action probabilities at ``state`` (default: now), no dropout.

        For ``"discrete"`` the uniform distribution; for the others an error.

        Example:
            >>> MixupTeacher(2, "discrete").action_probs()
            [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
        """
        if self.policy == "discrete":
            return [1.0 / len(self.actions)] * len(self.actions)
        if self.policy != "reinforce":
            raise TeacherError(f"action_probs() needs policy 'reinforce' or 'discrete', "
                               f"not {self.policy!r}")
        assert self.net is not None
        s = self._state_tensor([list(state) if state is not None else self.state_features()])
        with torch.no_grad():
            return torch.softmax(self.net(s), -1)[0].tolist()

    def current_lambda(self, state: Sequence[float] | None = None) -> float:
        """``h_theta(state)`` of the ``"unroll"`` policy (default state: now).

        Example:
            >>> MixupTeacher(2, "unroll", total_steps=10, init_lambda=0.3).current_lambda()
            0.3...
        """
        if self.policy != "unroll":
            raise TeacherError(f"current_lambda() needs policy 'unroll', not {self.policy!r}")
        with torch.no_grad():
            return float(self._unroll_lambda(list(state) if state is not None
                                             else self.state_features()))

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
        if self.policy != "unroll":
            raise TeacherError(f"hypergradient_step() needs policy 'unroll'; this teacher's "
                               f"policy is {self.policy!r}")
        xi = lr if lr is not None else self.learner_lr
        if xi is None:
            raise TeacherError("hypergradient_step needs the learner's lr: pass lr= (or "
                               "learner_lr= to the constructor)")
        xi = check_positive(xi, "lr")
        if self._pending is None:
            raise TeacherError("hypergradient_step() before any training batch: call "
                               "x, y = mixup(x, y) with the teacher in training mode first")
        if not isinstance(model, nn.Module):
            raise TeacherTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not (isinstance(val_batch, (tuple, list)) and len(val_batch) == 2):
            raise TeacherTypeError("val_batch must be a pair (x_val, y_val)")
        x, y_soft, perm, state, keep = self._pending
        xv, yv = val_batch
        if not isinstance(xv, Tensor) or not xv.is_floating_point():
            raise TeacherTypeError("val_batch[0] must be a floating-point tensor of inputs")
        yv_soft = to_soft_targets(yv.to(xv.device) if isinstance(yv, Tensor) else yv,
                                  self.num_classes, batch_size=xv.shape[0], dtype=xv.dtype,
                                  validate=self.validate, ignore_index=self.ignore_index)
        assert self.net is not None and self.optimizer is not None
        # The virtual step is not a training step of the learner: a PerformativeTeacher on
        # the model passes its features through (and needs no targets) meanwhile.
        with torch.inference_mode(False), torch.enable_grad(), suspend_teachers(model):
            g_lam, stats = _unroll_hypergradient(
                model, loss_fn, x, y_soft, perm, xv, yv_soft,
                lam=self.current_lambda(state),
                xi=xi, order=self.unroll_order, fd_eps=self.fd_eps, keep=keep,
            )
            self.optimizer.zero_grad(set_to_none=True)
            lam_theta = self._unroll_lambda(state)
            lam_theta.backward(torch.as_tensor(g_lam, dtype=lam_theta.dtype))
            self.optimizer.step()
        return stats

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
        if self.policy in ("reinforce", "discrete"):
            parts.append(f"actions={self.actions}")
        if self.policy == "beta":
            parts.append(f"alpha={self.alpha}")
        if self.policy == "unroll":
            parts.append(f"unroll_order={self.unroll_order}")
        if self.policy == "reinforce":
            parts.append(f"reward_metric={self.reward_metric!r}")
        return ", ".join(parts)

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
            "baseline": self._baseline,
            "reward_var": self._reward_var,
            "ep_states": copy.deepcopy(self._ep_states),
            "ep_actions": list(self._ep_actions),
            "ep_keeps": [k.clone() for k in self._ep_keeps],
            "last_lambda": self.last_lambda,
            "last_action": self.last_action,
            "seed": self.seed,
            "rng": self._gen.get_state(),
            "optimizer": None if self.optimizer is None
            else copy.deepcopy(self.optimizer.state_dict()),
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
        self._baseline = state["baseline"]
        self._reward_var = float(state["reward_var"])
        self._ep_states = copy.deepcopy(list(state["ep_states"]))
        self._ep_actions = [int(a) for a in state["ep_actions"]]
        self._ep_keeps = [k.clone() for k in state["ep_keeps"]]
        self.last_lambda = state["last_lambda"]
        self.last_action = state["last_action"]
        self.seed = int(state["seed"])
        self._gen.set_state(state["rng"].clone())
        if self.optimizer is not None:
            if state["optimizer"] is None:
                raise TeacherError("state has no policy optimizer state")
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._pending = None

    # ------------------------------------------------------------ internals
    def _observe_val(self, v: float) -> None:
        if self._val_first is None:
            self._val_first = v
            self._val_best = v
        else:
            assert self._val_best is not None
            self._val_best = min(self._val_best, v)

    def _state_tensor(self, states: list[list[float]]) -> Tensor:
        assert self.net is not None
        w = self.net.fc1.weight
        return torch.tensor(states, dtype=w.dtype, device=w.device)

    def _unroll_lambda(self, state: list[float]) -> Tensor:
        assert self.net is not None
        return torch.sigmoid(self.net(self._state_tensor([state]))[0, 0])

    def _choose(self, state: list[float]) -> tuple[float, int | None]:
        if self.policy == "beta":
            return sample_beta(self.alpha, self._gen), None
        if self.policy == "discrete":
            a = int(torch.randint(len(self.actions), (), generator=self._gen))
            return self.actions[a], a
        if self.policy == "unroll":
            with torch.no_grad():
                return float(self._unroll_lambda(state)), None
        assert self.net is not None
        keep = torch.rand(self.hidden, generator=self._gen) >= self.dropout
        with torch.no_grad():
            logits = self.net(self._state_tensor([state]), keep.to(self.net.fc1.weight.device))
            probs = torch.softmax(logits.double(), -1)[0].cpu()
        a = int(torch.multinomial(probs, 1, generator=self._gen))
        self._ep_states.append(list(state))
        self._ep_actions.append(a)
        self._ep_keeps.append(keep)
        return self.actions[a], a

    def _reinforce_update(self, adv: float) -> float:
        assert self.net is not None and self.optimizer is not None
        dev = self.net.fc1.weight.device
        s = self._state_tensor(self._ep_states)
        keep = torch.stack(self._ep_keeps).to(dev)
        a = torch.tensor(self._ep_actions, device=dev)
        logp = torch.log_softmax(self.net(s, keep), -1)
        chosen = logp.gather(1, a.unsqueeze(1)).squeeze(1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = -adv * chosen.mean() - self.entropy_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(entropy.detach())


def _unroll_hypergradient(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y_soft: Tensor,
    perm: Tensor,
    xv: Tensor,
    yv_soft: Tensor,
    *,
    lam: float,
    xi: float,
    order: int,
    fd_eps: float,
    keep: Tensor | None = None,
) -> tuple[float, dict[str, float]]:
    """d L_val(one virtual step) / d lam, as documented in ``hypergradient_step``.

    ``keep`` marks the rows the training batch left unmixed (see :func:`mix_batch`).
    """
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad]
    fixed = {n: p.detach() for n, p in named.items() if not p.requires_grad}
    w0 = {n: named[n].detach() for n in names}
    # Buffers are cloned so BatchNorm's in-place running-stat updates land on copies.
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    devices = [d for d in {x.device, xv.device} if d.type == "cuda"]

    def run(w: dict[str, Tensor], inp: Tensor) -> Tensor:
        return functional_call(model, ({**fixed, **w}, buffers), (inp,))

    def leaves(w: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: t.detach().requires_grad_(True) for n, t in w.items()}

    with torch.random.fork_rng(devices=devices), torch.autocast(x.device.type, enabled=False):
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in devices]

        def reset_rng() -> None:
            torch.set_rng_state(cpu_state)
            for d, s in zip(devices, cuda_states):
                torch.cuda.set_rng_state(s, d)

        def train_loss(w: dict[str, Tensor], lam_t: Tensor | float) -> Tensor:
            reset_rng()
            xm, ym = mix_batch(x, y_soft, lam_t, perm, keep=keep)
            return loss_fn(run(w, xm), ym)

        lam_t = torch.tensor(lam, dtype=x.dtype, device=x.device)
        if order == 2:
            w = leaves(w0)
            lt = train_loss(w, lam_t)
            g = torch.autograd.grad(lt, list(w.values()), allow_unused=True)
            w_out = {n: w0[n] - xi * gi if gi is not None else w0[n] for n, gi in zip(names, g)}
        else:
            w_out = w0
        wv = leaves(w_out)
        lv = loss_fn(run(wv, xv), yv_soft)  # the validation forward draws fresh dropout masks
        val_value = float(lv.detach())
        grads_v = torch.autograd.grad(lv, list(wv.values()), allow_unused=True)
        v = [torch.zeros_like(w0[n]) if vi is None else vi for n, vi in zip(names, grads_v)]
        v_norm = math.sqrt(sum(float((vi.double() ** 2).sum()) for vi in v))
        if v_norm == 0.0 or not math.isfinite(v_norm):
            return 0.0, {"lambda": lam, "hypergrad": 0.0, "val_loss": val_value}
        e = fd_eps / v_norm

        def dloss_dlam(sign: float) -> Tensor:
            w = {n: w0[n] + sign * e * vi for n, vi in zip(names, v)}
            lam_leaf = lam_t.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(train_loss(w, lam_leaf), lam_leaf)
            return d

        g_lam = -xi * float(dloss_dlam(1.0) - dloss_dlam(-1.0)) / (2.0 * e)
    return g_lam, {"lambda": lam, "hypergrad": g_lam, "val_loss": val_value}
