"""The GAN teacher (paper section 3.3.2, appendix C.5, C.7): a generator trained by unrolling.

:class:`GANTeacher` is an unrolled teacher
(:class:`~torchdht.linear.unrolled.base.UnrolledTeacher`) whose policy is a
conditional generator ``G(w, w - w*, z, y)`` (``z ~ N(0, I)``) making a
*sample*; ``to_features`` maps it to the learner's input (identity on
half-moon, ``image.flatten(1) @ P`` on MNIST). A discriminator ``D(sample, y)``
is trained on real versus generated samples (``d_steps`` steps per generator
step), and the generator's outer loss gets ``adv_weight`` times the
non-saturating adversarial term ``mean softplus(-D(G(z), y))`` over the
examples it made in the unroll. :func:`halfmoon_gan` and :func:`mnist_gan`
build the paper's two settings.

The per-step noise ``z`` comes from the teacher's own ``torch.Generator``
(``teacher.generator``: a random number generator, not the GAN's generator
network, which is ``teacher.policy``); dropout in the discriminator draws from
the global RNG under a fork seeded from it, so training is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..._checks import check_float, check_int
from ...errors import TeacherError, TeacherTypeError
from ..omniscient.checks import Pool, check_learner, check_pool
from ..omniscient.learners import LinearLearner, check_lr
from .base import UnrolledTeacher, call_module, evaluating
from .networks import (
    ConvDiscriminator,
    ConvGenerator,
    MLPDiscriminator,
    MLPGenerator,
    Projection,
    build_seeded,
    describe,
    feature_map,
    signature,
)
from .unroll import one_hot_labels

__all__ = ["GANTeacher", "halfmoon_gan", "mnist_gan"]


class GANTeacher(UnrolledTeacher):
    """A GAN-based teacher: a conditional generator trained by unrolling plus a discriminator.

    The generator (the policy, ``teacher.policy``) is called as
    ``generator(h, onehot(y))`` with ``h = [w_t, w_t - w*, (x), z]``
    (``x`` the random pool example only with ``with_example=True``; ``z ~ N(0, I)``
    of size ``noise_dim``) and returns a *sample*; ``to_features(sample)`` is the
    learner's input (identity by default). The discriminator is called as
    ``discriminator(sample, onehot(y))`` and returns one logit per row.

    Each outer iteration: unroll ``v`` steps, one Adam step of the generator on
    ``mean |w_v - w*|^2 + alpha * aux + adv_weight * mean softplus(-D(G(z), y))``
    (the non-saturating generator loss over the examples made in the graph
    part of the unroll), then ``d_steps`` Adam steps of the discriminator on
    ``d_batch`` real samples (label 1) and as many generated ones from this
    unroll (detached; label 0), binary cross-entropy.

    The teacher owns ``generator`` and ``discriminator`` (it trains them in
    place); ``to_features``, when a module, is copied and frozen.

    Args:
        learner: the learner.
        pool: ``(x, y)`` learner features and labels; the labels (and, with
            ``with_example``, the examples) the generator is conditioned on
            are drawn from it.
        lr: the learner's SGD step.
        w_star: the target weights.
        generator: ``nn.Module``, ``(h, onehot) -> sample``.
        discriminator: ``nn.Module``, ``(sample, onehot) -> (N,)`` logits.
        noise_dim: size of ``z`` (default 2; 0 for none).
        to_features: ``sample -> (N, D)`` features (default identity), e.g.
            :class:`Projection`.
        real: ``(samples, labels)`` the discriminator sees as real (labels in
            the learner's format, like the pool's); default the pool. Required
            when ``to_features`` is given (then samples live in another space).
        adv_weight: weight of the adversarial term (default 1).
        d_steps: discriminator steps per generator step (default 1; 0 trains
            the generator on the teaching loss alone).
        d_lr: the discriminator's Adam step (default ``teacher_lr``).
        d_batch: real and generated samples per discriminator step (default 64).
        with_example: also condition the generator on a random pool example.
        **kwargs: as for :class:`~torchdht.linear.TransformTeacher`
            (``unroll``, ``alpha``, ``trajectories``, ``horizon``,
            ``teacher_lr``, ``betas``, ``grad_clip``, ``seed``, ...).

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = halfmoon_gan(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]), unroll=5, seed=0)
        >>> h = t.fit(iters=3)
        >>> xt, yt = t.propose(torch.zeros(2))
        >>> h.discriminator.shape, xt.shape
        (torch.Size([3]), torch.Size([1, 2]))
    """

    kind = "gan"
    isolate_rng = True

    def __init__(
        self,
        learner: LinearLearner,
        pool: Pool,
        lr: float,
        *,
        w_star: Tensor,
        generator: nn.Module,
        discriminator: nn.Module,
        noise_dim: int = 2,
        to_features: Callable[[Tensor], Tensor] | None = None,
        real: Pool | None = None,
        adv_weight: float = 1.0,
        d_steps: int = 1,
        d_lr: float | None = None,
        d_batch: int = 64,
        with_example: bool = False,
        **kwargs: Any,
    ) -> None:
        check_learner(learner)
        px, py = check_pool(learner, pool)
        for bad in ("policy", "hidden", "batch_norm", "residual"):
            if bad in kwargs:
                raise TeacherTypeError(f"GANTeacher takes generator= instead of {bad}=")
        if "box" in kwargs:
            raise TeacherTypeError("GANTeacher's examples come from its generator; "
                                   "box= does not apply")
        if not isinstance(generator, nn.Module):
            raise TeacherTypeError(f"generator must be an nn.Module, got "
                                   f"{type(generator).__name__}")
        if not isinstance(discriminator, nn.Module):
            raise TeacherTypeError(
                f"discriminator must be an nn.Module, got {type(discriminator).__name__}")
        self.to_features = feature_map(to_features, px.dtype)
        self.noise_width = check_int(noise_dim, "noise_dim", 0)
        self.adv_weight = check_float(adv_weight, "adv_weight", 0.0)
        self.d_steps = check_int(d_steps, "d_steps", 0)
        self.d_batch = check_int(d_batch, "d_batch", 1)
        self.with_example = bool(with_example)
        dtype = px.dtype
        if real is None:
            if to_features is not None:
                raise TeacherError(
                    "real: the discriminator sees samples in the generator's space, which is not "
                    "the pool's when to_features is given; pass real=(samples, labels)"
                )
            rx, ry = px, py
        else:
            if not isinstance(real, (tuple, list)) or len(real) != 2:
                raise TeacherTypeError("real must be a pair (samples, labels)")
            rx, ry = real
            if not isinstance(rx, Tensor) or not rx.is_floating_point() or rx.dim() < 2 or \
                    rx.shape[0] < 1:
                raise TeacherTypeError("real: samples must be a non-empty floating-point "
                                       "tensor (N, ...)")
            if not bool(torch.isfinite(rx).all()):
                raise TeacherError("real: samples contain NaN or inf")
            ry = learner.check_labels(ry, rx.shape[0], name="real labels")
        self.real = (rx.detach().to(dtype), ry)
        self.discriminator = discriminator.to(dtype)
        super().__init__(learner, pool, lr, w_star=w_star, policy=generator, **kwargs)
        self.policy_arch = signature(self.policy)
        if self.sample_shape != tuple(self.real[0].shape[1:]):
            raise TeacherError(
                f"real: samples have shape {tuple(self.real[0].shape[1:])} per example but the "
                f"generator makes {self.sample_shape}; the discriminator compares the two"
            )
        self._real_onehot = one_hot_labels(learner, self.real[1], dtype)
        try:
            with evaluating(self.discriminator):
                out = self.discriminator(self.real[0][:2], self._real_onehot[:2])
        except TypeError as err:
            raise TeacherTypeError(
                "discriminator must be called as discriminator(samples, onehot) -> (N,) "
                f"logits; calling it failed: {err}"
            ) from err
        except RuntimeError as err:
            raise TeacherError(f"discriminator could not score real samples: {err}") from err
        if not isinstance(out, Tensor) or out.numel() != min(2, self.real[0].shape[0]):
            raise TeacherError("discriminator must return one logit per sample, (N,) or (N, 1)")
        self.d_lr = check_lr(d_lr if d_lr is not None else self.teacher_lr, "d_lr")
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr,
                                            betas=tuple(self.optimizer.defaults["betas"]))

    def input_width(self) -> int:
        ex = self.dim if self.with_example else 0
        return self.state_width() + ex + self.noise_width + self.classes

    def check_policy(self) -> None:
        self.check_step()

    def policy_contract(self) -> str:
        return (f"generator(h, onehot) with h of width {self.in_features - self.classes} "
                f"(w, w - w*{', x' if self.with_example else ''}, z of size {self.noise_width}) "
                f"and onehot of width {self.classes} must return samples that to_features maps "
                f"to (N, {self.dim})")

    def _d_params(self) -> dict[str, Tensor]:
        d = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        d.update(dict(self.discriminator.named_buffers()))
        return d

    def step(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
             noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """The generator's sample for ``[w, w - w*, (x), z]`` and label; the adversarial term."""
        oh = one_hot_labels(self.learner, y, self.dtype)
        parts = self.state_features(w)
        if self.with_example:
            parts.append(x)
        if noise is not None:
            parts.append(noise)
        h = torch.cat(parts, dim=1)
        sample = call_module(self.policy, params, h, oh)
        feats = self.to_features(sample) if self.to_features is not None else sample
        extra = None
        if self.adv_weight and torch.is_grad_enabled():
            logits = functional_call(self.discriminator, self._d_params(), (sample, oh))
            adv = F.softplus(-logits.reshape(-1)).mean()
            extra = self.adv_weight * adv / self.graph_steps
        return sample, feats, extra

    def discriminator_step(self, fake: Tensor, fake_y: Tensor) -> Tensor:
        """``d_steps`` Adam steps of the discriminator on real rows versus ``fake`` (detached).

        Args:
            fake: generated samples (N, *sample_shape).
            fake_y: their labels (learner format).

        Returns:
            The mean discriminator loss over the steps (NaN when ``d_steps`` is 0).
        """
        fake = fake.detach()
        oh_f = one_hot_labels(self.learner, fake_y, self.dtype)
        rx, oh_r = self.real[0], self._real_onehot
        losses = []
        self.discriminator.train()
        for _ in range(self.d_steps):
            fi = torch.randint(0, fake.shape[0], (self.d_batch,), generator=self.generator)
            ri = torch.randint(0, rx.shape[0], (self.d_batch,), generator=self.generator)
            lr_ = self.discriminator(rx[ri], oh_r[ri]).reshape(-1)
            lf = self.discriminator(fake[fi], oh_f[fi]).reshape(-1)
            loss = F.softplus(-lr_).mean() + F.softplus(lf).mean()
            self.d_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.d_optimizer.step()
            losses.append(loss.detach())
        if not losses:
            return torch.tensor(float("nan"), dtype=self.dtype)
        return torch.stack(losses).mean()

    def after_outer_step(self, samples: dict[int, Tensor], ys: Tensor) -> Tensor:
        """The discriminator's steps on the samples the unroll made (graph steps only)."""
        keys = sorted(samples)
        fake = torch.cat([samples[i] for i in keys])
        fy = ys[keys].reshape(-1, *ys.shape[2:])
        return self.discriminator_step(fake, fy)

    def extra_config(self) -> dict[str, Any]:
        return {
            "noise_width": self.noise_width,
            "adv_weight": self.adv_weight,
            "d_steps": self.d_steps,
            "d_batch": self.d_batch,
            "d_lr": self.d_lr,
            "with_example": self.with_example,
            "discriminator": signature(self.discriminator),
            "to_features": describe(self.to_features),
            "real_size": self.real[0].shape[0],
        }

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`UnrolledTeacher.state_dict`, plus the discriminator and its optimizer."""
        out = super().state_dict()
        out["discriminator"] = self.discriminator.state_dict()
        out["d_optimizer"] = self.d_optimizer.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another configuration is refused.

        Raises:
            ValueError: another configuration, or not a GAN teacher checkpoint.
        """
        super().load_state_dict(state)
        if "discriminator" not in state or "d_optimizer" not in state:
            raise TeacherError("state: not a GANTeacher checkpoint (no discriminator)")
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])


def halfmoon_gan(
    learner: LinearLearner,
    pool: Pool,
    lr: float,
    *,
    w_star: Tensor,
    noise_dim: int = 2,
    hidden: Sequence[int] = (32, 16),
    d_hidden: int = 8,
    seed: int | None = None,
    **kwargs: Any,
) -> GANTeacher:
    """The paper's half-moon GAN teacher (appendix C.5).

    Generator: :class:`MLPGenerator`, input 8 (``w``, ``w - w*``, ``z`` in 2-d,
    the one-hot label) - 32 - 16 - 2, ReLU. Discriminator:
    :class:`MLPDiscriminator`, input 4 - 8 - 1, LeakyReLU(0.2), Dropout(0.3);
    it sees the pool as real data.

    Args:
        learner, pool, lr, w_star: as for :class:`GANTeacher`.
        noise_dim: size of ``z`` (default 2).
        hidden: the generator's hidden sizes (default (32, 16)).
        d_hidden: the discriminator's hidden size (default 8).
        seed: seed of the initialisation and of the teacher's generator.
        **kwargs: passed to :class:`GANTeacher`.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> x = torch.randn(16, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> halfmoon_gan(LR, (x, y), 0.1, w_star=torch.ones(2), seed=0).in_features
        8
    """
    check_learner(learner)
    px, _ = check_pool(learner, pool)
    d = px.shape[1]
    classes = learner.num_outputs if learner.num_outputs > 1 else 2
    state = 2 * int(torch.Size(learner.weight_shape(d)).numel())
    ex = d if kwargs.get("with_example", False) else 0
    gen = build_seeded(seed, 1, lambda: MLPGenerator(state + ex + noise_dim, classes, d, hidden))
    disc = build_seeded(seed, 2, lambda: MLPDiscriminator(d, classes, d_hidden))
    return GANTeacher(learner, pool, lr, w_star=w_star, generator=gen, discriminator=disc,
                      noise_dim=noise_dim, seed=seed, **kwargs)


def mnist_gan(
    learner: LinearLearner,
    pool: Pool,
    lr: float,
    *,
    w_star: Tensor,
    projection: Tensor,
    real: Pool,
    noise_dim: int = 16,
    width: int = 128,
    d_width: int = 32,
    seed: int | None = None,
    **kwargs: Any,
) -> GANTeacher:
    """The paper's MNIST GAN teacher (appendix C.7): a conditional DCGAN in image space.

    The generator (:class:`ConvGenerator`) makes 28x28 images in [-1, 1]; the
    learner sees ``image.flatten(1) @ projection`` (:class:`Projection`); the
    discriminator (:class:`ConvDiscriminator`) sees real images
    (:func:`~torchdht.data.load_mnist35_images`) and generated ones with their label maps.

    Args:
        learner, pool, lr, w_star: as for :class:`GANTeacher` (the pool: the
            projected features).
        projection: ``P`` (784, D).
        real: ``(images (N, 1, 28, 28), labels)``, labels in the learner's
            format (``learner.targets(classes)``).
        noise_dim: size of ``z`` (default 16).
        width: the generator's base channel count (default 128, the paper's).
        d_width: the discriminator's (default 32, the paper's).
        seed: seed of the initialisation and of the teacher's generator.
        **kwargs: passed to :class:`GANTeacher`.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> P = torch.randn(784, 4) / 28
        >>> imgs = torch.rand(8, 1, 28, 28) * 2 - 1; y = torch.tensor([1.0, -1.0] * 4)
        >>> t = mnist_gan(LR, (imgs.flatten(1) @ P, y), 0.1, w_star=torch.ones(4), projection=P,
        ...               real=(imgs, y), width=8, d_width=4, unroll=2, d_batch=4, seed=0)
        >>> t.propose(torch.zeros(4))[0].shape
        torch.Size([1, 4])
    """
    check_learner(learner)
    px, _ = check_pool(learner, pool)
    d = px.shape[1]
    if not isinstance(projection, Tensor) or projection.dim() != 2 or \
            tuple(projection.shape) != (784, d):
        shape = tuple(projection.shape) if isinstance(projection, Tensor) else projection
        raise TeacherError(f"projection must have shape (784, {d}) to match the pool, got {shape}")
    classes = learner.num_outputs if learner.num_outputs > 1 else 2
    state = 2 * int(torch.Size(learner.weight_shape(d)).numel())
    ex = d if kwargs.get("with_example", False) else 0
    gen = build_seeded(seed, 1, lambda: ConvGenerator(state + ex + noise_dim, classes, width))
    disc = build_seeded(seed, 2, lambda: ConvDiscriminator(classes, d_width))
    return GANTeacher(learner, pool, lr, w_star=w_star, generator=gen, discriminator=disc,
                      noise_dim=noise_dim, to_features=Projection(projection), real=real,
                      seed=seed, **kwargs)
