"""What every unrolled teacher shares: one outer step, one fit loop, one history type.

A parameterized teacher is a policy trained by unrolling the learner's SGD
(paper section 3.3). Each outer iteration (:meth:`UnrolledTeacher.outer_step`)
draws ``v`` random pool examples (and, for generative policies, per-step
noise) for each of ``K`` learners, unrolls ``v`` SGD steps on the policy's
examples (:func:`~torchdht.linear.unrolled.unroll.unroll`), back-propagates
the outer loss

    final(w_v) + alpha * aux + extra + penalty

into the policy and takes one Adam step; a teacher may then do more (the GAN
teacher trains its discriminator, :meth:`UnrolledTeacher.after_outer_step`).
``final`` is ``mean_k |w_v - w*|^2`` (omniscient) or the learners' loss on
held-out data (black box), ``extra`` the teacher's own term (adversarial or
KL), ``penalty`` an optional per-step term (the privacy hinge).

The learners carry over from one outer iteration to the next (detached, so no
graph outlives an iteration and memory stays flat) and restart from a fresh
random initialisation once they have taken ``horizon`` steps, so the policy is
trained on the states it meets when it teaches. Their ages are staggered
(learner ``k`` starts ``k / K`` of the horizon in), so every batch mixes early
and late states.

A subclass says what the policy sees and makes: :meth:`UnrolledTeacher.step`
maps ``(params, w, x, y, noise)`` to ``(sample, features, extra)`` for ``K``
learners (the default is the data-transformation policy), with
:meth:`~UnrolledTeacher.input_width`, :meth:`~UnrolledTeacher.final_loss`,
:meth:`~UnrolledTeacher.check_policy` and :meth:`~UnrolledTeacher.extra_config`.

The per-step noise comes from the teacher's own ``torch.Generator``
(``teacher.generator``), is drawn once per step before the unroll, and is
shared by the two policy calls of a step (the example and its auxiliary-loss
copy). With ``isolate_rng`` (GAN and VAE teachers) each outer iteration runs
under ``torch.random.fork_rng`` seeded from the teacher's generator, so
dropout is reproducible and the caller's global RNG is left as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..._checks import check_float, check_int
from ...errors import TeacherError, TeacherTypeError
from ..omniscient.checks import Pool, check_learner, check_pool, check_weights, make_generator
from ..omniscient.learners import LinearLearner, check_lr
from .networks import policy_mlp
from .unroll import UnrollResult, distance_loss, one_hot_labels, unroll

__all__ = [
    "FitHistory",
    "Penalty",
    "UnrolledTeacher",
    "call_module",
    "check_config",
    "evaluating",
]

Penalty = Callable[[Tensor], Tensor]
"""``penalty(features (K, D)) -> (K,)``, added per unrolled step as its mean over K."""


class FitHistory(NamedTuple):
    """What an unrolled teacher's ``fit`` records, one entry per outer iteration.

    ``loss = final + alpha * aux + extra + penalty``.
    """

    loss: Tensor
    """The outer loss."""
    final: Tensor
    """``mean_k |w_v - w*|^2`` (omniscient) or the validation loss (black box)."""
    aux: Tensor
    """The auxiliary sum (before ``alpha``)."""
    extra: Tensor
    """The teacher's own term: ``adv_weight`` times the adversarial term (GAN),
    ``kl_weight`` times the KL term (VAE), zero otherwise."""
    penalty: Tensor
    """The privacy hinge (summed over the unrolled steps; zero without a privacy constraint)."""
    discriminator: Tensor
    """The discriminator's mean loss over its steps (GAN), NaN otherwise."""
    seconds: float
    """Wall time of the call."""


def check_config(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Refuse a checkpoint whose configuration differs, naming the keys that differ.

    Example:
        >>> check_config({"unroll": 40}, {"unroll": 10})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchdht.errors.TeacherError: state: ... (unroll: checkpoint 10, this teacher 40)
    """
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, this teacher {mine.get(k)!r}"
                           for k in diff)
        raise TeacherError(
            f"state: the checkpoint was saved by a teacher of another configuration ({detail})"
        )


def call_module(module: nn.Module, params: dict[str, Tensor] | None, *args: Tensor) -> Tensor:
    """``module(*args)``, or with ``params`` (and buffers) swapped in by ``functional_call``."""
    return module(*args) if params is None else functional_call(module, params, args)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode, without gradient, for the block; its mode is restored after.

    Example:
        >>> m = nn.Dropout(0.5)
        >>> with evaluating(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """A (K,) row mask shaped to broadcast against ``like`` (K, ...)."""
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


class UnrolledTeacher:
    """Base of the unrolled teachers: the data-transformation policy and the training loop.

    Subclasses: :class:`~torchdht.linear.unrolled.policies.TransformTeacher`,
    :class:`~torchdht.linear.unrolled.policies.BlackBoxTeacher`,
    :class:`~torchdht.linear.unrolled.gan.GANTeacher` and
    :class:`~torchdht.linear.unrolled.vae.VAETeacher`; the arguments are
    documented on :class:`~torchdht.linear.unrolled.policies.TransformTeacher`.
    """

    kind = "base"
    omniscient = True
    """The policy sees ``w - w*`` and training scores ``|w_v - w*|^2`` (else: black box)."""
    noise_width = 0
    """Per-step noise the policy consumes (GAN: ``z``; VAE: the reparameterisation noise)."""
    isolate_rng = False
    """Run each outer iteration of :meth:`fit` under a forked global RNG seeded from the
    teacher's generator (GAN and VAE teachers: dropout reproducible, the caller's RNG kept).
    The transformation policies do not, so their pool draws are what they always were."""
    sample_shape: tuple[int, ...]
    """Shape of one sample, set by :meth:`check_step` (e.g. (1, 28, 28) for images)."""

    def __init__(
        self,
        learner: LinearLearner,
        pool: Pool,
        lr: float,
        *,
        w_star: Tensor | None = None,
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
        self.learner = check_learner(learner)
        self.x, self.y = check_pool(learner, pool)
        self.w_star: Tensor | None = None
        if self.omniscient:
            self.w_star = check_weights(learner, cast(Tensor, w_star), self.x.shape[1],
                                        "w_star").to(self.x.dtype)
        elif w_star is not None:
            raise TeacherTypeError(f"the {self.kind} teacher does not see w*; w_star= does not "
                                   "apply")
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
        self.graph_steps = truncate if truncate is not None else self.unroll
        """The unrolled steps that keep a graph (``truncate``, else ``unroll``)."""
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
        self.generator = make_generator(seed)
        self.classes = learner.num_outputs if learner.num_outputs > 1 else 2
        self.in_features = self.input_width()
        self.policy_arch: dict[str, Any]
        """The policy's architecture as recorded in :meth:`config`."""
        if policy is None:
            init_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            with torch.random.fork_rng(devices=[]):  # leave the global RNG untouched
                torch.manual_seed(init_seed)
                policy = policy_mlp(self.in_features, self.dim, hidden, batch_norm)
            self.policy_arch = {"hidden": list(hidden), "batch_norm": bool(batch_norm)}
        elif not isinstance(policy, nn.Module):
            raise TeacherTypeError(f"policy must be an nn.Module, got {type(policy).__name__}")
        else:
            self.policy_arch = {"custom": type(policy).__name__}
        self.policy = policy.to(self.dtype)
        self.check_policy()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.teacher_lr,
                                          betas=(float(betas[0]), float(betas[1])))
        self._w: Tensor | None = None
        self._age: Tensor | None = None  # steps each carried learner has taken
        self.iterations = 0

    # ---------------------------------------------------------------- hooks
    def state_width(self) -> int:
        """Width of the learner-state part of the policy's input (``w``, and ``w - w*``)."""
        n = int(torch.Size(self.learner.weight_shape(self.dim)).numel())
        return 2 * n if self.omniscient else n

    def input_width(self) -> int:
        """Width of the policy's input rows: learner state, example, one-hot label."""
        return self.state_width() + self.dim + self.classes

    def state_features(self, w: Tensor) -> list[Tensor]:
        """The learner-state part of the policy's input, rows (K, .): ``w`` (and ``w - w*``)."""
        if self.w_star is None:
            return [w.flatten(1)]
        return [w.flatten(1), (w - self.w_star).flatten(1)]

    def final_loss(self) -> Callable[[Tensor], Tensor]:
        """The first term of the outer loss, a scalar function of ``w_v`` (K, *shape)."""
        if self.w_star is None:
            raise NotImplementedError
        return distance_loss(self.w_star)

    def extra_config(self) -> dict[str, Any]:
        """Settings of a subclass that a checkpoint must agree on."""
        return {}

    def policy_contract(self) -> str:
        """What the policy must accept and return, for error messages."""
        return ""

    def after_outer_step(self, samples: dict[int, Tensor], ys: Tensor) -> Tensor | None:
        """Called after each Adam step with the unroll's samples per step and labels (v, K).

        Returns a loss to record in :attr:`FitHistory.discriminator` (None: NaN).
        """
        return None

    def step(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
             noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """One example per learner: ``(sample, features, extra)`` for learners ``w`` (K, *shape).

        The data-transformation policy: ``x~ = pi([state, x, onehot(y)])``
        (``x + pi(...)`` with ``residual``, squashed into ``box`` when given);
        the sample is the feature and there is no extra term.
        """
        out = call_module(self.policy, params, self.features(w, x, y))
        if self.box is not None:
            lo, hi = self.box
            out = lo + (hi - lo) * torch.sigmoid(out)
        elif self.residual:
            out = x + out
        return out, out, None

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

    def probe_policy(self) -> Any:
        """The policy's output on zeros of shape (2, in_features), in eval mode, no gradient."""
        with evaluating(self.policy):
            return self.policy(torch.zeros(2, self.in_features, dtype=self.dtype))

    def check_policy(self) -> None:
        """Probe the policy on zeros: it must map (N, in_features) to (N, D)."""
        try:
            out = self.probe_policy()
        except RuntimeError as err:
            raise TeacherError(
                f"policy must map (N, {self.in_features}) inputs (the learner state, the example "
                f"and its one-hot label for D={self.dim}) to (N, {self.dim}); calling it on "
                f"zeros of shape (2, {self.in_features}) failed: {err}"
            ) from err
        if not isinstance(out, Tensor) or tuple(out.shape) != (2, self.dim):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TeacherError(
                f"policy must return (N, {self.dim}) examples for the learner's D={self.dim} "
                f"features; it returned {shape} for an input of shape (2, {self.in_features})"
            )

    def check_step(self) -> None:
        """Probe :meth:`step` on a batch of two: the features must be (N, D); sets
        :attr:`sample_shape`. The check of the generative policies."""
        n = 2
        w = torch.zeros(n, *self.learner.weight_shape(self.dim), dtype=self.dtype)
        x = self.x[:1].expand(n, -1)
        y = self.y[:1].expand(n, *self.y.shape[1:])
        noise = torch.zeros(n, self.noise_width, dtype=self.dtype) if self.noise_width else None
        try:
            with evaluating(self.policy):
                sample, feats, _ = self.step(None, w, x, y, noise)
        except TypeError as err:
            raise TeacherTypeError(
                f"{type(self).__name__}: the policy was called with the wrong arguments: "
                f"{self.policy_contract()}; the call failed with: {err}"
            ) from err
        except (RuntimeError, ValueError, IndexError) as err:
            raise TeacherError(
                f"{type(self).__name__}: the policy could not be evaluated on a probe batch: "
                f"{self.policy_contract()}; the call failed with: {err}"
            ) from err
        if not isinstance(feats, Tensor) or tuple(feats.shape) != (n, self.dim):
            shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise TeacherError(
                f"{type(self).__name__}: the examples must be (N, {self.dim}) learner features "
                f"(after to_features); got {shape} for N={n}. {self.policy_contract()}"
            )
        self.sample_shape = tuple(sample.shape[1:])

    def features(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The policy's input rows: learner state, example, one-hot label; (K, in_features)."""
        return torch.cat([*self.state_features(w), x, one_hot_labels(self.learner, y, x.dtype)],
                         dim=1)

    def transform(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
                  noise: Tensor | None = None) -> Tensor:
        """The learner features of :meth:`step` (noise drawn from the generator if needed)."""
        if noise is None and self.noise_width:
            noise = torch.randn(x.shape[0], self.noise_width, generator=self.generator,
                                dtype=self.dtype)
        return self.step(params, w, x, y, noise)[1]

    def sample(self, w: Tensor, y: Tensor, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Samples (e.g. images) and learner features for learners ``w`` (N, *shape), labels ``y``.

        For inspection (no gradient, the policy in eval mode); ``x`` are the
        pool examples the policy is conditioned on where it uses them
        (default: random pool rows).

        Example:
            >>> from torchdht.linear.omniscient import LR
            >>> from torchdht.linear.unrolled import halfmoon_gan
            >>> x = torch.randn(16, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
            >>> t = halfmoon_gan(LR, (x, y), 0.1, w_star=torch.ones(2), seed=0)
            >>> samples, feats = t.sample(torch.zeros(3, 2), y[:3])
            >>> samples.shape, torch.equal(samples, feats)
            (torch.Size([3, 2]), True)
        """
        n = w.shape[0]
        if x is None:
            x = self.x[torch.randint(0, self.x.shape[0], (n,), generator=self.generator)]
        noise = (torch.randn(n, self.noise_width, generator=self.generator, dtype=self.dtype)
                 if self.noise_width else None)
        with evaluating(self.policy):
            s, f, _ = self.step(None, w.to(self.dtype), x.to(self.dtype), y, noise)
        return s, f

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

    def _unrolled(
        self,
        params: dict[str, Tensor] | None,
        w0: Tensor | None,
        index: Tensor | None,
        noise: Tensor | None,
        penalty: Penalty | None,
    ) -> tuple[UnrollResult, dict[int, Tensor], Tensor, Tensor]:
        """One unrolled objective; the result, the samples per step, the labels, the penalty."""
        if w0 is None:
            w0 = self._carried_weights()
        if index is None:
            index = torch.randint(0, self.x.shape[0], (self.unroll, w0.shape[0]),
                                  generator=self.generator)
        xs, ys = self.x[index], self.y[index]
        v, k = index.shape[0], index.shape[1]
        if noise is None and self.noise_width:
            noise = torch.randn(v, k, self.noise_width, generator=self.generator, dtype=self.dtype)
        samples: dict[int, Tensor] = {}
        pens: dict[int, Tensor] = {}

        def generate(w: Tensor, i: int) -> tuple[Tensor, Tensor | None]:
            sample, feats, extra = self.step(params, w, xs[i], ys[i],
                                             None if noise is None else noise[i])
            samples[i] = sample.detach()  # the auxiliary call of step i overwrites with the same
            if penalty is not None and torch.is_grad_enabled():
                p = penalty(feats).mean()
                pens[i] = p.detach()
                extra = p if extra is None else extra + p
            return feats, extra

        r = unroll(generate, self.learner, w0, ys, self.lr, self.final_loss(), alpha=self.alpha,
                   truncate=self.truncate, state_grad=self.state_grad)
        pen = torch.stack(list(pens.values())).sum() if pens else r.loss.new_zeros(())
        return r, samples, ys, pen

    def unrolled_loss(
        self,
        params: dict[str, Tensor] | None = None,
        w0: Tensor | None = None,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> UnrollResult:
        """One unrolled objective: ``K`` learners from ``w0``, ``v`` steps on pool rows ``index``.

        Args:
            params: the policy's parameters (and buffers) to evaluate at, as
                for :func:`torch.func.functional_call`; default the policy's own.
            w0: starting weights (K, *shape); default the carried-over learners.
            index: pool rows (v, K); default drawn from the teacher's generator.
            noise: the per-step noise (v, K, noise_width) of a generative
                policy; default drawn.

        Returns:
            An :class:`~torchdht.linear.unrolled.unroll.UnrollResult`; ``extra``
            holds the teacher's own term.
        """
        return self._unrolled(params, w0, index, noise, None)[0]

    def outer_step(self, penalty: Penalty | None = None) -> Tensor:
        """One outer iteration: unroll, one Adam step of the policy, then
        :meth:`after_outer_step`. Returns the history row
        ``(loss, final, aux, extra, penalty, discriminator)``.
        """
        r, samples, ys, pen = self._unrolled(None, None, None, None, penalty)
        self.optimizer.zero_grad(set_to_none=True)
        r.loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(list(self.policy.parameters()), self.grad_clip)
        self.optimizer.step()
        self._carry(r.w)
        d = self.after_outer_step(samples, ys)
        if d is None:
            d = r.loss.new_tensor(float("nan"))
        return torch.stack([r.loss.detach(), r.final, r.aux, r.extra - pen, pen,
                            d.detach().to(r.final.dtype)])

    def fit(
        self,
        iters: int = 1000,
        progress: bool = False,
        *,
        penalty: Penalty | None = None,
        isolate_rng: bool | None = None,
    ) -> FitHistory:
        """Train the policy for ``iters`` outer iterations (one Adam step each).

        Args:
            iters: outer iterations (default: 1000, the paper's).
            progress: show a tqdm progress bar with the running outer loss.
            penalty: a per-step term on the examples' features, ``(K, D) -> (K,)``
                (its mean over K is added to the outer loss at every unrolled
                step), e.g. :meth:`~torchdht.linear.unrolled.privacy.PrivacyTeacher.hinge`.
            isolate_rng: run each iteration under a forked global RNG seeded
                from the teacher's generator (default: the class's
                :attr:`isolate_rng`).

        Returns:
            A :class:`FitHistory`.
        """
        iters = check_int(iters, "iters", 0)
        isolate = self.isolate_rng if isolate_rng is None else bool(isolate_rng)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=iters, desc=f"{self.kind} teacher", unit="it", dynamic_ncols=True,
                       disable=None)  # None: no bar when stderr is not a terminal
        start = time.perf_counter()
        rows: list[Tensor] = []
        self.policy.train()
        try:
            for it in range(iters):
                if isolate:
                    seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
                    with torch.random.fork_rng(devices=[]):  # dropout: reproducible, RNG kept
                        torch.manual_seed(seed)
                        rows.append(self.outer_step(penalty))
                else:
                    rows.append(self.outer_step(penalty))
                if bar is not None:
                    bar.update(1)
                    if it % 25 == 0 or it == iters - 1:
                        bar.set_postfix(loss=f"{float(rows[-1][0]):.4g}",
                                        final=f"{float(rows[-1][1]):.4g}")
        finally:
            if bar is not None:
                bar.close()
            self.policy.eval()
        table = torch.stack(rows) if rows else torch.zeros(0, 6, dtype=self.dtype)
        return FitHistory(table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4],
                          table[:, 5], time.perf_counter() - start)

    # ---------------------------------------------------------------- teaching
    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """A random pool example made into a teaching example by the policy for learner ``w``."""
        check_weights(self.learner, w, self.dim, "w")
        i = int(torch.randint(0, self.x.shape[0], (1,), generator=self.generator))
        x, y = self.x[i : i + 1], self.y[i : i + 1]
        with evaluating(self.policy):
            xt = self.transform(None, w.to(self.dtype).unsqueeze(0), x, y)
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
            "policy": self.policy_arch,
            "in_features": self.in_features,
            **self.extra_config(),
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
