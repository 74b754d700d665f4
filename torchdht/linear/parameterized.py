"""Parameterized teachers trained by unrolling the learner's SGD (paper section 3.3.1, 5.1, 5.2).

:class:`TransformTeacher` is the data-transformation policy
``x~ = pi_theta(x, y, w_t, w_t - w*)``: it turns a random pool example into a
teaching example with the same label. :class:`BlackBoxTeacher` is the same
policy without ``w*``: its inputs are ``(x, y, w_t)`` and it is trained on the
learners' loss on held-out validation data instead of ``|w_v - w*|^2``.

Training (:meth:`fit`) repeats: draw ``v`` random pool examples for each of
``K`` learners, unroll ``v`` SGD steps on the policy's examples
(:func:`~torchdht.linear.unroll.unroll`), back-propagate the outer loss into
the policy, one Adam step. The learners carry over from one outer iteration to
the next (detached, so no graph outlives an iteration and memory stays flat)
and restart from a fresh random initialisation once they have taken
``horizon`` steps, so the policy is trained on the states it meets when it
teaches. Their ages are staggered (learner ``k`` starts ``k / K`` of the
horizon in), so every batch mixes early and late states. After training,
:meth:`propose` answers like every other teacher in :mod:`torchdht.linear` and
plugs into :func:`~torchdht.linear.run`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import check_float, check_int
from ..errors import TeacherError, TeacherTypeError
from .learners import LinearLearner, check_lr
from .teachers import Pool, _check_learner, _check_pool, _check_weights, _generator
from .unroll import distance_loss, one_hot_labels, unroll, validation_loss

__all__ = [
    "BlackBoxTeacher",
    "FitHistory",
    "TransformTeacher",
    "policy_mlp",
]


def policy_mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (32, 16),
    batch_norm: bool = False,
) -> nn.Sequential:
    """An MLP policy: ``Linear (+ BatchNorm1d) + ReLU`` per hidden layer, then a ``Linear``.

    The paper's policies: half-moon ``hidden=(32, 16)``; MNIST 3/5
    ``hidden=(128, 256, 512, 512, 1024), batch_norm=True``.

    Example:
        >>> policy_mlp(8, 2)
        Sequential(
          (0): Linear(in_features=8, out_features=32, bias=True)
          (1): ReLU()
          (2): Linear(in_features=32, out_features=16, bias=True)
          (3): ReLU()
          (4): Linear(in_features=16, out_features=2, bias=True)
        )
    """
    in_features = check_int(in_features, "in_features", 1)
    out_features = check_int(out_features, "out_features", 1)
    hidden = tuple(check_int(h, "hidden sizes", 1) for h in hidden)
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class FitHistory(NamedTuple):
    """What :meth:`TransformTeacher.fit` records, one entry per outer iteration."""

    loss: Tensor
    """The outer loss."""
    final: Tensor
    """Its first term: ``mean_k |w_v - w*|^2`` (omniscient) or the validation loss (black box)."""
    aux: Tensor
    """The auxiliary sum (before ``alpha``)."""
    seconds: float
    """Wall time of the call."""


def check_config(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Refuse a checkpoint whose configuration differs, naming the keys that differ."""
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, this teacher {mine.get(k)!r}"
                           for k in diff)
        raise TeacherError(
            f"state: the checkpoint was saved by a teacher of another configuration ({detail})"
        )


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """A (K,) row mask shaped to broadcast against ``like`` (K, ...)."""
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


class _UnrolledTeacher:
    """Shared machinery of the unrolled teachers; subclasses say what the policy sees."""

    kind = "base"

    def __init__(
        self,
        learner: LinearLearner,
        pool: Pool,
        lr: float,
        *,
        policy: nn.Module | None = None,
        hidden: Sequence[int] = (32, 16),
        batch_norm: bool = False,
        residual: bool = False,
        box: tuple[Tensor, Tensor] | None = None,
        unroll: int = 40,
        truncate: int | None = None,
        alpha: float = 0.0,
        trajectories: int = 8,
        horizon: int = 300,
        teacher_lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        grad_clip: float | None = None,
        state_grad: bool = True,
        seed: int | None = None,
    ) -> None:
        self.learner = _check_learner(learner)
        self.x, self.y = _check_pool(learner, pool)
        self.dim = self.x.shape[1]
        self.dtype = self.x.dtype
        self.lr = check_lr(lr)
        self.unroll = check_int(unroll, "unroll", 1)
        if truncate is not None:
            truncate = check_int(truncate, "truncate", 1)
            if truncate > unroll:
                raise TeacherError(
                    f"truncate ({truncate}) must not exceed unroll ({unroll}): it is the number of "
                    "final unrolled steps the gradient flows through"
                )
        self.truncate = truncate
        self.alpha = check_float(alpha, "alpha", 0.0, finite=False)
        self.trajectories = check_int(trajectories, "trajectories", 1)
        self.horizon = check_int(horizon, "horizon", 1)
        self.teacher_lr = check_lr(teacher_lr, "teacher_lr")
        if grad_clip is not None:
            grad_clip = check_float(grad_clip, "grad_clip", 0.0, low_open=True, finite=False)
        self.grad_clip = grad_clip
        self.residual = bool(residual)
        self.box = self._check_box(box)
        self.state_grad = bool(state_grad)
        self.generator = _generator(seed)
        self.classes = learner.num_outputs if learner.num_outputs > 1 else 2
        self.in_features = self._input_width()
        if policy is None:
            init_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            with torch.random.fork_rng(devices=[]):  # leave the global RNG untouched
                torch.manual_seed(init_seed)
                policy = policy_mlp(self.in_features, self.dim, hidden, batch_norm)
            self._arch = {"hidden": list(hidden), "batch_norm": bool(batch_norm)}
        elif not isinstance(policy, nn.Module):
            raise TeacherTypeError(f"policy must be an nn.Module, got {type(policy).__name__}")
        else:
            self._arch = {"custom": type(policy).__name__}
        self.policy = policy.to(self.dtype)
        self._check_policy()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.teacher_lr,
                                          betas=(float(betas[0]), float(betas[1])))
        self._w: Tensor | None = None
        self._age: Tensor | None = None  # steps each carried learner has taken
        self.iterations = 0

    # ------------------------------------------------------------ subclasses
    def _input_width(self) -> int:
        raise NotImplementedError

    def _state_features(self, w: Tensor) -> list[Tensor]:
        """The learner-state part of the policy's input, rows (K, .)."""
        raise NotImplementedError

    def _final_loss(self) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError

    def _extra_config(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ the policy
    def _check_box(self, box: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
        if box is None:
            return None
        if self.residual:
            raise TeacherError("box and residual=True cannot be combined: with a box the policy's "
                               "output is squashed into it, not added to x")
        if not isinstance(box, (tuple, list)) or len(box) != 2:
            raise TeacherTypeError("box must be a pair (lo, hi) of tensors of shape (D,)")
        lo, hi = (torch.as_tensor(b, dtype=self.dtype) for b in box)
        if lo.shape != (self.dim,) or hi.shape != (self.dim,):
            raise TeacherError(
                f"box: lo and hi must have shape ({self.dim},) to match the pool's D={self.dim} "
                f"features, got {tuple(lo.shape)} and {tuple(hi.shape)}"
            )
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all() & (lo < hi).all()):
            raise TeacherError("box: lo and hi must be finite with lo < hi in every dimension")
        return lo.clone(), hi.clone()

    def _check_policy(self) -> None:
        probe = torch.zeros(2, self.in_features, dtype=self.dtype)
        was = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                out = self.policy(probe)
        except RuntimeError as err:
            raise TeacherError(
                f"policy must map (N, {self.in_features}) inputs (the learner state, the example "
                f"and its one-hot label for D={self.dim}) to (N, {self.dim}); calling it on "
                f"zeros of shape (2, {self.in_features}) failed: {err}"
            ) from err
        finally:
            self.policy.train(was)
        if not isinstance(out, Tensor) or tuple(out.shape) != (2, self.dim):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TeacherError(
                f"policy must return (N, {self.dim}) examples for the learner's D={self.dim} "
                f"features; it returned {shape} for an input of shape (2, {self.in_features})"
            )

    def features(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The policy's input rows: learner state, example, one-hot label; (K, in_features)."""
        return torch.cat([*self._state_features(w), x, one_hot_labels(self.learner, y, x.dtype)],
                         dim=1)

    def _transform(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor,
                   y: Tensor) -> Tensor:
        inp = self.features(w, x, y)
        if params is None:
            out = self.policy(inp)
        else:
            out = functional_call(self.policy, params, (inp,))
        if self.box is not None:
            lo, hi = self.box
            return lo + (hi - lo) * torch.sigmoid(out)
        return x + out if self.residual else out

    # ---------------------------------------------------------------- training
    def _fresh_weights(self) -> Tensor:
        return torch.stack([self.learner.init(self.dim, self.generator, self.dtype)
                            for _ in range(self.trajectories)])

    def _carried_weights(self) -> Tensor:
        """The carried-over learners (K, *shape) to unroll from next, after the restart rule."""
        if self._w is None or self._age is None:
            # staggered ages: learner k's first life is shorter by k / K of the horizon,
            # so every batch mixes early and late states (BatchNorm statistics included)
            self._w = self._fresh_weights()
            self._age = torch.arange(self.trajectories) * self.horizon // self.trajectories
        else:
            old = self._age >= self.horizon
            if bool(old.any()):
                fresh = self._fresh_weights()
                self._w = torch.where(_rows(old, self._w), fresh, self._w)
                self._age = torch.where(old, torch.zeros_like(self._age), self._age)
        return self._w

    def _carry(self, w: Tensor) -> None:
        """Bookkeeping after an outer step: carry the learners ``w`` over and age them."""
        self._w = w.detach()
        if self._age is not None:
            self._age = self._age + self.unroll
        self.iterations += 1

    def unrolled_loss(
        self,
        params: dict[str, Tensor] | None = None,
        w0: Tensor | None = None,
        index: Tensor | None = None,
    ):
        """One unrolled objective: ``K`` learners from ``w0``, ``v`` steps on pool rows ``index``.

        Args:
            params: the policy's parameters (and buffers) to evaluate at, as
                for :func:`torch.func.functional_call`; default the policy's own.
            w0: starting weights (K, *shape); default the carried-over learners.
            index: pool rows (v, K); default drawn from the teacher's generator.

        Returns:
            An :class:`~torchdht.linear.unroll.UnrollResult`.
        """
        if w0 is None:
            w0 = self._carried_weights()
        if index is None:
            index = torch.randint(0, self.x.shape[0], (self.unroll, w0.shape[0]),
                                  generator=self.generator)
        xs, ys = self.x[index], self.y[index]

        def generate(w: Tensor, i: int) -> tuple[Tensor, None]:
            return self._transform(params, w, xs[i], ys[i]), None

        return unroll(generate, self.learner, w0, ys, self.lr, self._final_loss(),
                      alpha=self.alpha, truncate=self.truncate, state_grad=self.state_grad)

    def fit(self, iters: int = 1000, progress: bool = False) -> FitHistory:
        """Train the policy for ``iters`` outer iterations (one Adam step each).

        Args:
            iters: outer iterations (default: 1000, the paper's).
            progress: show a tqdm progress bar with the running outer loss.

        Returns:
            A :class:`FitHistory`.
        """
        iters = check_int(iters, "iters", 0)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=iters, desc=f"{self.kind} teacher", unit="it", dynamic_ncols=True,
                       disable=None)  # None: no bar when stderr is not a terminal
        start = time.perf_counter()
        rows: list[Tensor] = []
        self.policy.train()
        params = list(self.policy.parameters())
        for it in range(iters):
            r = self.unrolled_loss()
            self.optimizer.zero_grad(set_to_none=True)
            r.loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.optimizer.step()
            self._carry(r.w)
            rows.append(torch.stack([r.loss.detach(), r.final, r.aux]))
            if bar is not None:
                bar.update(1)
                if it % 25 == 0 or it == iters - 1:
                    bar.set_postfix(loss=f"{float(r.loss.detach()):.4g}",
                                    final=f"{float(r.final):.4g}")
        if bar is not None:
            bar.close()
        self.policy.eval()
        table = torch.stack(rows) if rows else torch.zeros(0, 3, dtype=self.dtype)
        return FitHistory(table[:, 0], table[:, 1], table[:, 2], time.perf_counter() - start)

    # ---------------------------------------------------------------- teaching
    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A random pool example transformed by the policy for the learner at ``w``."""
        _check_weights(self.learner, w, self.dim, "w")
        i = int(torch.randint(0, self.x.shape[0], (1,), generator=self.generator))
        x, y = self.x[i : i + 1], self.y[i : i + 1]
        was = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                xt = self._transform(None, w.to(self.dtype).unsqueeze(0), x, y)
        finally:
            self.policy.train(was)
        return xt.to(w.dtype), y.clone()

    # --------------------------------------------------------------- state
    def config(self) -> dict[str, Any]:
        """The settings a checkpoint must agree on."""
        return {
            "kind": self.kind,
            "learner": repr(self.learner),
            "dim": self.dim,
            "lr": self.lr,
            "unroll": self.unroll,
            "truncate": self.truncate,
            "alpha": self.alpha,
            "trajectories": self.trajectories,
            "horizon": self.horizon,
            "residual": self.residual,
            "box": None if self.box is None else [b.tolist() for b in self.box],
            "state_grad": self.state_grad,
            "policy": self._arch,
            "in_features": self.in_features,
            **self._extra_config(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training or to propose the same examples again."""
        return {
            "config": self.config(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "w": None if self._w is None else self._w.clone(),
            "age": None if self._age is None else self._age.clone(),
            "iterations": self.iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another configuration is refused.

        Raises:
            ValueError: the checkpoint's configuration differs (the keys that
                differ are named) or it is not a teacher checkpoint.
        """
        if not isinstance(state, dict) or "config" not in state or "policy" not in state:
            raise TeacherError("state must be a dict from a parameterized teacher's state_dict()")
        mine, theirs = self.config(), state["config"]
        check_config(mine, theirs)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self._w = None if state["w"] is None else state["w"].clone()
        self._age = None if state["age"] is None else state["age"].clone()
        self.iterations = int(state["iterations"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(learner={self.learner!r}, dim={self.dim}, lr={self.lr:g}, "
                f"unroll={self.unroll}, alpha={self.alpha:g}, iterations={self.iterations})")


class TransformTeacher(_UnrolledTeacher):
    """The omniscient data-transformation policy ``x~ = pi(x, y, w_t, w_t - w*)`` (section 3.3.1).

    Trained by unrolling ``unroll`` SGD steps of ``trajectories`` learners
    and minimising ``mean |w_v - w*|^2 + alpha * sum_i l(x~_i, y_i | sg(w_i))``
    with Adam. The policy's input is ``[w, w - w*, x, onehot(y)]``; its
    output is ``x~`` (or ``x + output`` with ``residual=True``), unconstrained,
    as in the paper.

    Args:
        learner: the learner (LSR, LR or Softmax(C)).
        pool: ``(x, y)`` the random examples to transform are drawn from.
        lr: the learner's SGD step (the same as when teaching).
        w_star: the target weights.
        policy: an ``nn.Module`` mapping (N, in_features) to (N, D); default
            :func:`policy_mlp` with ``hidden`` and ``batch_norm``.
        hidden: hidden sizes of the default policy (default: (32, 16), the
            paper's half-moon policy).
        batch_norm: BatchNorm1d after each hidden layer of the default policy.
        residual: the policy outputs a correction added to ``x``.
        box: ``(lo, hi)`` of shape (D,): squash the policy's output into the
            box, ``x~ = lo + (hi - lo) * sigmoid(output)`` (default: no
            constraint, as in the paper; greedy DHT's feasible set is the data's
            box, so this makes the two comparable).
        unroll: unrolled steps per outer iteration, ``v`` (default 40).
        truncate: back-propagate through the last ``truncate`` steps only.
        alpha: weight of the auxiliary loss (default 0).
        trajectories: learners unrolled in parallel, ``K`` (default 8).
        horizon: steps after which a learner restarts from a fresh random
            initialisation (default 300, the teaching length).
        teacher_lr: Adam's step (default 2e-3, the paper's).
        betas: Adam's betas (default (0.9, 0.999), the paper's).
        grad_clip: clip the policy's gradient norm (default: no clipping).
        state_grad: exact back-propagation through the state the policy sees
            (default True); see :func:`~torchdht.linear.unroll.unroll`.
        seed: seed of the teacher's generator (policy init, pool draws,
            learner restarts).

    Example:
        >>> from torchdht.linear.learners import LR
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = TransformTeacher(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]),
        ...                      unroll=5, seed=0)
        >>> h = t.fit(iters=30)
        >>> xt, yt = t.propose(torch.zeros(2))
        >>> h.loss.shape, xt.shape, yt.shape
        (torch.Size([30]), torch.Size([1, 2]), torch.Size([1]))
    """

    kind = "transform"

    def __init__(self, learner: LinearLearner, pool: Pool, lr: float, *, w_star: Tensor,
                 **kwargs: Any) -> None:
        _check_learner(learner)
        _check_pool(learner, pool)
        self.w_star = _check_weights(learner, w_star, pool[0].shape[1], "w_star").to(
            pool[0].dtype)
        super().__init__(learner, pool, lr, **kwargs)

    def _input_width(self) -> int:
        return 2 * self.w_star.numel() + self.dim + self.classes

    def _state_features(self, w: Tensor) -> list[Tensor]:
        return [w.flatten(1), (w - self.w_star).flatten(1)]

    def _final_loss(self) -> Callable[[Tensor], Tensor]:
        return distance_loss(self.w_star)


class BlackBoxTeacher(_UnrolledTeacher):
    """The black-box transformation policy ``x~ = pi(x, y, w_t)``, scored on validation loss.

    As :class:`TransformTeacher` without ``w*`` (section 5.2): the policy sees
    ``[w, x, onehot(y)]`` and the outer loss is the learners' mean loss on
    ``validation`` after the unrolled steps, plus the same auxiliary term.
    Keep ``validation`` disjoint from the test data you report on.

    Args:
        learner: the learner.
        pool: ``(x, y)`` the random examples are drawn from.
        lr: the learner's SGD step.
        validation: ``(x, y)`` held-out data the outer loss is measured on.
        **kwargs: as for :class:`TransformTeacher`.

    Example:
        >>> from torchdht.linear.learners import LR
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = BlackBoxTeacher(LR, (x[:48], y[:48]), 0.1, validation=(x[48:], y[48:]),
        ...                     unroll=5, seed=0)
        >>> t.in_features, t.fit(iters=5).final.shape
        (6, torch.Size([5]))
    """

    kind = "blackbox"

    def __init__(self, learner: LinearLearner, pool: Pool, lr: float, *,
                 validation: Pool, **kwargs: Any) -> None:
        _check_learner(learner)
        x, _ = _check_pool(learner, pool)
        vx, vy = _check_pool(learner, validation, name="validation")
        if vx.shape[1] != x.shape[1]:
            raise TeacherError(
                f"validation has D={vx.shape[1]} features but the pool has D={x.shape[1]}"
            )
        self.validation = (vx.to(x.dtype), vy)
        super().__init__(learner, pool, lr, **kwargs)

    def _input_width(self) -> int:
        return int(torch.Size(self.learner.weight_shape(self.dim)).numel()) + self.dim + \
            self.classes

    def _state_features(self, w: Tensor) -> list[Tensor]:
        return [w.flatten(1)]

    def _final_loss(self) -> Callable[[Tensor], Tensor]:
        return validation_loss(self.learner, *self.validation)

    def _extra_config(self) -> dict[str, Any]:
        return {"validation_size": self.validation[0].shape[0]}
