"""The policies of :class:`~torchdht.mixup.MixupTeacher`: where the coefficient comes from.

A policy owns its hyperparameters, its state (network, optimizer, reward
baseline, the current episode) and its choice of the mixing coefficient
``lam``; the teacher owns the mixing, the permutation, the generator and the
learner's state features, and hands the policy what it needs.

* :class:`BetaPolicy`: ``lam ~ Beta(alpha, alpha)``, the usual mixup (cMixup).
* :class:`DiscretePolicy`: ``lam`` uniform on an action set (dMixup).
* :class:`ReinforcePolicy`: a small MLP over the learner's state, a
  categorical distribution over an action set, REINFORCE with a
  moving-average baseline and an entropy bonus, one update per episode.
* :class:`UnrollPolicy`: a small network ``h_theta(state)`` in ``(0, 1)``,
  trained through one virtual learner step (``hypergradient_step``).

Every policy keeps the reward baseline (:meth:`MixupPolicy.end_episode`);
only :class:`ReinforcePolicy` learns from it. A policy object serves one
teacher: the teacher initialises its network from the teacher's generator.

Example:
    >>> from torchdht.mixup import MixupTeacher, ReinforcePolicy
    >>> mixup = MixupTeacher(3, policy=ReinforcePolicy(lr=1e-3, hidden=32), total_steps=100,
    ...                      seed=0)
    >>> mixup.policy, mixup.policy_object.hidden, mixup.lr
    ('reinforce', 32, 0.001)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import check_float, check_int, check_positive
from ..errors import TeacherError, TeacherTypeError
from ..performative.teacher import suspend_teachers
from .functional import check_actions, mix_batch, sample_beta, to_soft_targets

__all__ = [
    "MixupPolicy",
    "BetaPolicy",
    "DiscretePolicy",
    "ReinforcePolicy",
    "UnrollPolicy",
    "policy_from_name",
]

POLICY_NAMES = ("reinforce", "unroll", "beta", "discrete")
_REWARD_METRICS = ("val_acc", "val_loss")
_DEFAULT_ACTIONS = (0.0, 0.5, 1.0)
_N_FEATURES = 3


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TeacherError(
                f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.detach().item()
    return check_float(value, name)


def _check_metric(reward_metric: Any) -> str:
    if reward_metric not in _REWARD_METRICS:
        raise TeacherError(f"reward_metric must be one of {_REWARD_METRICS}, got "
                           f"{reward_metric!r}")
    return str(reward_metric)


def _check_momentum(value: Any, name: str) -> float:
    return check_float(value, name, 0.0, 1.0, high_open=True)


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


class MixupPolicy:
    """The base of the policies: the reward baseline and the methods a policy lacks.

    Args:
        reward_metric: ``"val_acc"`` (reward = validation accuracy, a
            fraction in [0, 1]) or ``"val_loss"`` (reward = minus the
            validation loss) (default: "val_acc").
        baseline_momentum: momentum of the moving averages of the reward (the
            baseline) and of its squared deviation (the scale), in [0, 1)
            (default: 0.9).
    """

    name: ClassVar[str] = ""
    #: whether the teacher needs ``total_steps`` (the progress feature)
    needs_total_steps: ClassVar[bool] = False
    #: whether :meth:`end_episode` updates the policy
    learns_from_reward: ClassVar[bool] = False

    def __init__(self, *, reward_metric: str = "val_acc", baseline_momentum: float = 0.9
                 ) -> None:
        self.reward_metric = _check_metric(reward_metric)
        self.baseline_momentum = _check_momentum(baseline_momentum, "baseline_momentum")
        self.net: _PolicyNet | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr: float | None = None
        self.actions: tuple[float, ...] = _DEFAULT_ACTIONS
        #: validated arguments of the string shorthand that this policy does not use
        self.unused: dict[str, Any] = {}
        self._bound = False
        self._baseline: float | None = None
        self._reward_var = 0.0
        self._ep_states: list[list[float]] = []
        self._ep_actions: list[int] = []
        self._ep_keeps: list[Tensor] = []

    # ------------------------------------------------------------ building
    def bind(self, gen: torch.Generator) -> None:
        """Build the policy's network from the teacher's generator (once)."""
        if self._bound:
            raise TeacherError(f"this {type(self).__name__} already serves a MixupTeacher; "
                               f"build a new policy object for each teacher")
        self._bound = True

    # ------------------------------------------------------------- choosing
    def choose(self, state: list[float], gen: torch.Generator) -> tuple[float, int | None]:
        """The coefficient (and action index, or None) for one batch at ``state``."""
        raise NotImplementedError

    def after_mix(self, x: Tensor, y_soft: Tensor, perm: Tensor, state: list[float],
                  keep: Tensor | None) -> None:
        """The batch just mixed (by reference); only :class:`UnrollPolicy` keeps it."""

    def new_run(self) -> None:
        """Drop the current episode's unrewarded steps (and a pending batch)."""
        self._ep_states, self._ep_actions, self._ep_keeps = [], [], []

    # ------------------------------------------------------------- learning
    def end_episode(self, r: float, *, update: bool = True) -> dict[str, Any]:
        """Move the baseline with the reward ``r``; :class:`ReinforcePolicy` also learns.

        Returns ``reward``, ``advantage``, ``baseline``, ``entropy``,
        ``episode_steps`` and ``updated``.
        """
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
        updated = self.learns_from_reward and steps > 0 and bool(update)
        if updated:
            with torch.inference_mode(False), torch.enable_grad():
                entropy = self._update(adv)
        self._ep_states, self._ep_actions, self._ep_keeps = [], [], []
        return {"reward": r, "advantage": adv, "baseline": b, "entropy": entropy,
                "episode_steps": steps, "updated": updated}

    def _update(self, adv: float) -> float:
        raise NotImplementedError

    def action_probs(self, state: list[float]) -> list[float]:
        raise TeacherError(f"action_probs() needs policy 'reinforce' or 'discrete', "
                           f"not {self.name!r}")

    def current_lambda(self, state: list[float]) -> float:
        raise TeacherError(f"current_lambda() needs policy 'unroll', not {self.name!r}")

    def hypergradient_step(self, teacher: Any, model: nn.Module,
                           loss_fn: Callable[[Tensor, Tensor], Tensor],
                           val_batch: tuple[Tensor, Tensor], lr: float | None
                           ) -> dict[str, float]:
        raise TeacherError(f"hypergradient_step() needs policy 'unroll'; this teacher's "
                           f"policy is {self.name!r}")

    # ----------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """The policy's running state (its network's weights live in the teacher's
        ``state_dict`` under ``net.``)."""
        return {
            "baseline": self._baseline,
            "reward_var": self._reward_var,
            "ep_states": copy.deepcopy(self._ep_states),
            "ep_actions": list(self._ep_actions),
            "ep_keeps": [k.clone() for k in self._ep_keeps],
            "optimizer": None if self.optimizer is None
            else copy.deepcopy(self.optimizer.state_dict()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._baseline = state["baseline"]
        self._reward_var = float(state["reward_var"])
        self._ep_states = copy.deepcopy(list(state["ep_states"]))
        self._ep_actions = [int(a) for a in state["ep_actions"]]
        self._ep_keeps = [k.clone() for k in state["ep_keeps"]]
        if self.optimizer is not None:
            if state["optimizer"] is None:
                raise TeacherError("state has no policy optimizer state")
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.new_run_pending()

    def new_run_pending(self) -> None:
        """Forget a pending batch (only :class:`UnrollPolicy` has one)."""

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # ------------------------------------------------------------ internals
    def _state_tensor(self, states: list[list[float]]) -> Tensor:
        assert self.net is not None
        w = self.net.fc1.weight
        return torch.tensor(states, dtype=w.dtype, device=w.device)

    def _build_net(self, gen: torch.Generator, hidden: int, out: int, dropout: float,
                   bias: float) -> None:
        """PyTorch's default scheme for the hidden layer from ``gen``; a zero output
        layer whose bias is ``bias``."""
        self.net = _PolicyNet(hidden, out, dropout)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(_N_FEATURES)
            self.net.fc1.weight.uniform_(-bound, bound, generator=gen)
            self.net.fc1.bias.uniform_(-bound, bound, generator=gen)
            self.net.fc2.weight.zero_()
            self.net.fc2.bias.zero_()
            if bias != 0.0:
                self.net.fc2.bias.fill_(bias)
        assert self.lr is not None
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)


class BetaPolicy(MixupPolicy):
    """``lam ~ Beta(alpha, alpha)``: the usual mixup (cMixup).

    Args:
        alpha: the Beta concentration, > 0 (default: 1.0).
        reward_metric, baseline_momentum: as in :class:`MixupPolicy`.
    """

    name = "beta"

    def __init__(self, alpha: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.alpha = check_positive(alpha, "alpha")

    def choose(self, state: list[float], gen: torch.Generator) -> tuple[float, int | None]:
        return sample_beta(self.alpha, gen), None

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class DiscretePolicy(MixupPolicy):
    """``lam`` uniform on a discrete action set (dMixup).

    Args:
        actions: distinct mixing coefficients in ``[0, 1]`` (default:
            (0.0, 0.5, 1.0), the paper's).
        reward_metric, baseline_momentum: as in :class:`MixupPolicy`.
    """

    name = "discrete"

    def __init__(self, actions: Sequence[float] = _DEFAULT_ACTIONS, **kw: Any) -> None:
        super().__init__(**kw)
        self.actions = check_actions(actions)

    def choose(self, state: list[float], gen: torch.Generator) -> tuple[float, int | None]:
        a = int(torch.randint(len(self.actions), (), generator=gen))
        return self.actions[a], a

    def action_probs(self, state: list[float]) -> list[float]:
        return [1.0 / len(self.actions)] * len(self.actions)

    def extra_repr(self) -> str:
        return f"actions={self.actions}"


class ReinforcePolicy(MixupPolicy):
    """A categorical policy over an action set, an MLP over the learner's state, by REINFORCE.

    One update per episode (each :meth:`MixupTeacher.reward` call ends one),
    with a moving-average baseline, a normalised advantage and an entropy
    bonus; dropout on the hidden layer by masks from the teacher's generator.

    Args:
        actions: distinct mixing coefficients in ``[0, 1]`` (default:
            (0.0, 0.5, 1.0), the paper's).
        lr: Adam learning rate of the policy (default: 5e-3).
        hidden: hidden width of the policy network (default: 128).
        dropout: dropout of the hidden layer, in [0, 1) (default: 0.6, the paper's).
        entropy_coef: weight of the entropy bonus, >= 0 (default: 0.01).
        reward_metric, baseline_momentum: as in :class:`MixupPolicy`.
    """

    name = "reinforce"
    needs_total_steps = True
    learns_from_reward = True

    def __init__(self, actions: Sequence[float] = _DEFAULT_ACTIONS, *, lr: float = 5e-3,
                 hidden: int = 128, dropout: float = 0.6, entropy_coef: float = 0.01,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.actions = check_actions(actions)
        self.hidden = check_positive(hidden, "hidden", integer=True)
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, high_open=True)
        self.entropy_coef = check_float(entropy_coef, "entropy_coef", 0.0)
        self.lr = check_positive(lr, "lr")

    def bind(self, gen: torch.Generator) -> None:
        super().bind(gen)
        self._build_net(gen, self.hidden, len(self.actions), self.dropout, 0.0)

    def choose(self, state: list[float], gen: torch.Generator) -> tuple[float, int | None]:
        assert self.net is not None
        keep = torch.rand(self.hidden, generator=gen) >= self.dropout
        with torch.no_grad():
            logits = self.net(self._state_tensor([state]), keep.to(self.net.fc1.weight.device))
            probs = torch.softmax(logits.double(), -1)[0].cpu()
        a = int(torch.multinomial(probs, 1, generator=gen))
        self._ep_states.append(list(state))
        self._ep_actions.append(a)
        self._ep_keeps.append(keep)
        return self.actions[a], a

    def action_probs(self, state: list[float]) -> list[float]:
        assert self.net is not None
        with torch.no_grad():
            return torch.softmax(self.net(self._state_tensor([state])), -1)[0].tolist()

    def _update(self, adv: float) -> float:
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

    def extra_repr(self) -> str:
        return f"actions={self.actions}, reward_metric={self.reward_metric!r}"


class UnrollPolicy(MixupPolicy):
    """``lam = h_theta(state)`` in ``(0, 1)``, learned through one virtual learner step.

    Trained by :meth:`MixupTeacher.hypergradient_step` (see there for the
    hypergradient of each order).

    Args:
        lr: Adam learning rate of ``h_theta`` (default: 3e-4).
        hidden: hidden width of ``h_theta`` (default: 128).
        unroll_order: 1 or 2 (default: 2, the paper's).
        learner_lr: the learner's learning rate ``xi`` of the virtual step,
            if not given to ``hypergradient_step`` (default: None).
        fd_eps: finite-difference scale of the Hessian-vector product
            (default: 0.01, as in DARTS).
        init_lambda: the coefficient it starts from, in (0, 1) (default: 0.5).
        reward_metric, baseline_momentum: as in :class:`MixupPolicy`.
    """

    name = "unroll"
    needs_total_steps = True

    def __init__(self, *, lr: float = 3e-4, hidden: int = 128, unroll_order: int = 2,
                 learner_lr: float | None = None, fd_eps: float = 0.01,
                 init_lambda: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.hidden = check_positive(hidden, "hidden", integer=True)
        self.unroll_order = check_int(unroll_order, "unroll_order", 1, 2)
        self.learner_lr = (None if learner_lr is None
                           else check_positive(learner_lr, "learner_lr"))
        self.fd_eps = check_positive(fd_eps, "fd_eps")
        self.init_lambda = check_float(
            init_lambda, "init_lambda", 0.0, 1.0, low_open=True, high_open=True
        )
        self.lr = check_positive(lr, "lr")
        # The last mixed batch, by reference (not saved): inputs, soft targets,
        # permutation, state and the rows kept unmixed.
        self._pending: tuple[Tensor, Tensor, Tensor, list[float], Tensor | None] | None = None

    def bind(self, gen: torch.Generator) -> None:
        super().bind(gen)
        p = self.init_lambda
        self._build_net(gen, self.hidden, 1, 0.0, math.log(p / (1.0 - p)))

    def _lambda(self, state: list[float]) -> Tensor:
        assert self.net is not None
        return torch.sigmoid(self.net(self._state_tensor([state]))[0, 0])

    def choose(self, state: list[float], gen: torch.Generator) -> tuple[float, int | None]:
        with torch.no_grad():
            return float(self._lambda(state)), None

    def current_lambda(self, state: list[float]) -> float:
        with torch.no_grad():
            return float(self._lambda(state))

    def after_mix(self, x: Tensor, y_soft: Tensor, perm: Tensor, state: list[float],
                  keep: Tensor | None) -> None:
        self._pending = (x, y_soft, perm, state, keep)

    def new_run(self) -> None:
        super().new_run()
        self._pending = None

    def new_run_pending(self) -> None:
        self._pending = None

    def hypergradient_step(self, teacher: Any, model: nn.Module,
                           loss_fn: Callable[[Tensor, Tensor], Tensor],
                           val_batch: tuple[Tensor, Tensor], lr: float | None
                           ) -> dict[str, float]:
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
                                  teacher.num_classes, batch_size=xv.shape[0], dtype=xv.dtype,
                                  validate=teacher.validate, ignore_index=teacher.ignore_index)
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
            lam_theta = self._lambda(state)
            lam_theta.backward(torch.as_tensor(g_lam, dtype=lam_theta.dtype))
            self.optimizer.step()
        return stats

    def extra_repr(self) -> str:
        return f"unroll_order={self.unroll_order}"


_CLASSES: dict[str, type[MixupPolicy]] = {
    "beta": BetaPolicy, "discrete": DiscretePolicy,
    "reinforce": ReinforcePolicy, "unroll": UnrollPolicy,
}
#: the arguments of each policy class, of those the string shorthand takes
_ARGS: dict[str, tuple[str, ...]] = {
    "beta": ("alpha",),
    "discrete": ("actions",),
    "reinforce": ("actions", "lr", "hidden", "dropout", "entropy_coef"),
    "unroll": ("lr", "hidden", "unroll_order", "learner_lr", "fd_eps", "init_lambda"),
}
_SHARED = ("reward_metric", "baseline_momentum")


def policy_from_name(name: str, **kw: Any) -> MixupPolicy:
    """The policy object of the string shorthand ``MixupTeacher(C, name, **kw)``.

    Every argument is checked, whether the policy uses it or not; those it
    does not use are kept, checked, in ``policy.unused``. ``lr=None`` means
    the policy's default.

    Example:
        >>> policy_from_name("beta", alpha=0.4, dropout=0.5)
        BetaPolicy(alpha=0.4)
    """
    if name not in _CLASSES:
        raise TeacherError(f"policy must be one of {POLICY_NAMES}, got {name!r}")
    checks: dict[str, Callable[[Any], Any]] = {
        "actions": check_actions,
        "alpha": lambda v: check_positive(v, "alpha"),
        "reward_metric": _check_metric,
        "hidden": lambda v: check_positive(v, "hidden", integer=True),
        "dropout": lambda v: check_float(v, "dropout", 0.0, 1.0, high_open=True),
        "entropy_coef": lambda v: check_float(v, "entropy_coef", 0.0),
        "baseline_momentum": lambda v: _check_momentum(v, "baseline_momentum"),
        "unroll_order": lambda v: check_int(v, "unroll_order", 1, 2),
        "learner_lr": lambda v: None if v is None else check_positive(v, "learner_lr"),
        "fd_eps": lambda v: check_positive(v, "fd_eps"),
        "init_lambda": lambda v: check_float(v, "init_lambda", 0.0, 1.0, low_open=True,
                                             high_open=True),
        "lr": lambda v: None if v is None else check_positive(v, "lr"),
    }
    unknown = set(kw) - set(checks)
    if unknown:
        raise TeacherTypeError(f"unknown policy arguments {sorted(unknown)}")
    checked = {k: checks[k](kw[k]) for k in checks if k in kw}
    mine = _ARGS[name] + _SHARED
    own = {k: v for k, v in checked.items() if k in mine and not (k == "lr" and v is None)}
    policy = _CLASSES[name](**own)
    policy.unused = {k: v for k, v in checked.items() if k not in mine}
    return policy


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
