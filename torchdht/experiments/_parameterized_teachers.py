"""The parameterized experiment's teachers: one builder per ``--teacher`` (:data:`TEACHERS`),
the baselines, the pretrained VAE, and the privacy teacher's accounting.

A builder takes the :class:`Problem` (the data, learner, its lr and ``w*``) and the
:class:`~torchdht.experiments._parameterized_config.ParameterizedConfig` and returns a
:class:`Built`: the teacher and what the experiment reports besides it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import load_mnist35_images
from ..linear.omniscient import DHTTeacher, History, IMTTeacher, LinearLearner, SGDTeacher
from ..linear.unrolled import (
    BlackBoxTeacher,
    PrivacyTeacher,
    Projection,
    TransformTeacher,
    VAETeacher,
    halfmoon_gan,
    mnist_gan,
    pretrain_vae,
    private_transform_teacher,
    vae_phi,
)
from ._linear import LinearData
from ._parameterized_config import EPS_QUANTILE, VALIDATION_FRACTION, ParameterizedConfig

__all__ = ["TEACHERS", "Built", "Problem", "TeacherBuilder", "baseline", "inner",
           "mnist_images", "privacy_report", "reseed"]


@dataclass
class Problem:
    """What a teacher is built for.

    Attributes:
        data: the data set in float32, the learner's labels.
        learner: the learner.
        lr: its SGD learning rate.
        w_star: the target (float32).
    """

    data: LinearData
    learner: LinearLearner
    lr: float
    w_star: Tensor


@dataclass
class Built:
    """A builder's answer: the teacher, and what the experiment reports besides it.

    Attributes:
        teacher: has ``fit(iters, progress)``, ``propose(w)``, ``state_dict()``,
            ``load_state_dict(state)`` and ``config()``, like
            :class:`~torchdht.linear.TransformTeacher`.
        images: the MNIST training images (N, 1, 28, 28) in [-1, 1], where read.
        vae_info: config.json's ``vae_pretraining`` (the VAE and privacy teachers).
        phi: the privacy teacher's feature map.
        privacy_set: its private examples.
        privacy_info: config.json's ``privacy`` block, before teaching.
    """

    teacher: Any
    images: Tensor | None = None
    vae_info: dict[str, Any] | None = None
    phi: Callable[[Tensor], Tensor] | None = None
    privacy_set: Tensor | None = None
    privacy_info: dict[str, Any] | None = None


TeacherBuilder = Callable[[Problem, ParameterizedConfig], Built]
"""``builder(problem, config) -> Built``."""


def _policy_kwargs(cfg: ParameterizedConfig, data: LinearData | None = None) -> dict[str, Any]:
    """The policy's architecture (the box of ``data`` with ``cfg.box``) and the unrolling
    options every teacher takes."""
    box = (data.x.min(0).values, data.x.max(0).values) if cfg.box and data is not None else None
    return {
        "box": box,
        "hidden": tuple(cfg.hidden),
        "batch_norm": bool(cfg.batch_norm),
        "residual": bool(cfg.residual),
        **_teacher_kwargs(cfg),
    }


def _teacher_kwargs(cfg: ParameterizedConfig) -> dict[str, Any]:
    """The unrolling options every teacher takes (no policy architecture)."""
    return {
        "unroll": cfg.unroll,
        "truncate": cfg.truncate,
        "alpha": cfg.alpha,
        "trajectories": cfg.trajectories,
        "horizon": cfg.horizon,
        "teacher_lr": cfg.teacher_lr,
        "betas": (0.9, 0.999),
        "grad_clip": cfg.grad_clip,
        "seed": cfg.teacher_seed,
    }


def _build_transform(p: Problem, cfg: ParameterizedConfig) -> Built:
    """The omniscient data-transformation teacher on the whole training set."""
    return Built(TransformTeacher(p.learner, (p.data.x, p.data.y), p.lr, w_star=p.w_star,
                                  **_policy_kwargs(cfg, p.data)))


def _validation_split(n: int) -> int:
    """Rows of the pool when the last ``VALIDATION_FRACTION`` of ``n`` rows are held out.

    Example:
        >>> _validation_split(800), _validation_split(1000)
        (640, 800)
    """
    n_val = max(1, int(round(VALIDATION_FRACTION * n)))
    if n - n_val < 1:
        raise ValueError(f"the training set ({n} rows) is too small to hold out a validation set")
    return n - n_val


def _build_blackbox(p: Problem, cfg: ParameterizedConfig) -> Built:
    """The black-box teacher: pool = first 80 % of the training set, validation = last 20 %."""
    x, y = p.data.x, p.data.y
    k = _validation_split(x.shape[0])
    return Built(BlackBoxTeacher(p.learner, (x[:k], y[:k]), p.lr, validation=(x[k:], y[k:]),
                                 **_policy_kwargs(cfg, p.data)))


def _cache_dir(cfg: ParameterizedConfig) -> Path:
    """``--cache-dir``, resolved; refused inside the data root (which is read-only).

    Raises:
        ValueError: the folder is the data root or inside it.
    """
    from ..data.mnist35 import default_root

    assert cfg.cache_dir is not None
    path = Path(cfg.cache_dir).expanduser().resolve()
    roots = [default_root()] + ([Path(cfg.data_root)] if cfg.data_root else [])
    for root in roots:
        root = root.expanduser().resolve()
        if path == root or root in path.parents:
            raise ValueError(f"--cache-dir {cfg.cache_dir!r} is inside the data root {root}; "
                             "choose a folder of your own (default runs/vae-cache)")
    return path


def mnist_images(data: LinearData, root: str | None) -> Tensor:
    """The MNIST training images (N, 1, 28, 28) in [-1, 1] behind ``data.x`` (its dtype).

    Raises:
        ValueError: the images do not project to the training features.
    """
    assert data.projection is not None
    x = data.x
    imgs, classes = load_mnist35_images(root, n_train=x.shape[0], dtype=x.dtype)
    feats = imgs.flatten(1) @ data.projection.to(x.dtype)
    if not torch.equal(classes, data.classes) or \
            not torch.allclose(feats, x, atol=1e-3, rtol=1e-3):
        raise ValueError("the MNIST images do not project to the training features")
    return imgs


def _pretrained_vae(data: LinearData, cfg: ParameterizedConfig
                    ) -> tuple[nn.Module, dict[str, Any], Tensor | None]:
    """The conditional VAE pretrained on the training set (cached under ``--cache-dir``),
    config.json's ``vae_pretraining``, and the MNIST images (None on half-moon).

    Half-moon: the MLP VAE on the points; MNIST: the convolutional VAE on the
    training images. Seeded with ``--teacher-seed``. The training time of a cached
    VAE comes from a small json file next to it.
    """
    assert cfg.vae_latent is not None and cfg.vae_epochs is not None
    images = mnist_images(data, cfg.data_root) if data.projection is not None else None
    samples = images if images is not None else data.x
    cache = _cache_dir(cfg)
    t0 = time.perf_counter()
    pre = pretrain_vae(samples, data.classes, dataset="halfmoon" if images is None else "mnist",
                       latent=cfg.vae_latent, epochs=cfg.vae_epochs, seed=cfg.teacher_seed,
                       cache_dir=cache, progress=cfg.progress)
    seconds = time.perf_counter() - t0
    assert pre.path is not None
    meta = pre.path.with_suffix(".json")
    train_s: float | None = seconds
    if pre.cached:
        train_s = None
        if meta.is_file():
            try:
                train_s = json.loads(meta.read_text()).get("train_seconds")
            except (OSError, ValueError):
                train_s = None
    else:
        tmp = meta.with_name(meta.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"train_seconds": seconds, "epochs": cfg.vae_epochs,
                                   "threads": torch.get_num_threads()}))
        os.replace(tmp, meta)
    info = {
        "architecture": type(pre.vae).__name__,
        "trained_on": "training points" if images is None else "training images (N, 1, 28, 28)",
        "samples": int(samples.shape[0]),
        "latent": int(cfg.vae_latent),
        "epochs": int(cfg.vae_epochs),
        "seed": int(cfg.teacher_seed),
        "seconds": seconds,
        "cached": bool(pre.cached),
        "train_seconds": train_s,
        "path": str(pre.path),
        "final_loss": float(pre.loss[-1]),
        "final_recon": float(pre.recon[-1]),
        "final_kl": float(pre.kl[-1]),
    }
    return pre.vae, info, images


class _PinvLift(nn.Module):
    """Features to images for ``phi`` on MNIST: ``x @ pinv(P)``, reshaped to (N, 1, 28, 28).

    The minimum-norm image whose projection is ``x`` (``lift(x).flatten(1) @ P
    == x``), linear and so differentiable.

    Example:
        >>> P = torch.randn(784, 3, dtype=torch.float64)
        >>> x = torch.randn(2, 3, dtype=torch.float64)
        >>> img = _PinvLift(P)(x)
        >>> img.shape, torch.allclose(img.flatten(1) @ P, x)
        (torch.Size([2, 1, 28, 28]), True)
    """

    def __init__(self, projection: Tensor) -> None:
        super().__init__()
        self.pinv: Tensor
        pinv = torch.linalg.pinv(projection.double()).to(projection.dtype)
        self.register_buffer("pinv", pinv)

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.pinv.to(x.dtype)).reshape(x.shape[0], 1, 28, 28)


def _build_gan(p: Problem, cfg: ParameterizedConfig) -> Built:
    """The paper's GAN teacher: the MLP GAN on half-moon, the conditional DCGAN on MNIST."""
    pool = (p.data.x, p.data.y)
    kw = {**_teacher_kwargs(cfg), "adv_weight": cfg.adv_weight, "d_steps": cfg.d_steps}
    if p.data.projection is None:
        return Built(halfmoon_gan(p.learner, pool, p.lr, w_star=p.w_star,
                                  hidden=tuple(cfg.hidden), **kw))
    images = mnist_images(p.data, cfg.data_root)
    return Built(mnist_gan(p.learner, pool, p.lr, w_star=p.w_star, projection=p.data.projection,
                           real=(images, p.data.y), **kw), images=images)


def _build_vae(p: Problem, cfg: ParameterizedConfig) -> Built:
    """The VAE teacher on the pretrained VAE (on MNIST its images are mapped with ``P``)."""
    assert cfg.kl_weight is not None
    vae, info, images = _pretrained_vae(p.data, cfg)
    projection = p.data.projection
    teacher = VAETeacher(p.learner, (p.data.x, p.data.y), p.lr, w_star=p.w_star, vae=vae,
                         to_features=Projection(projection) if projection is not None else None,
                         kl_weight=cfg.kl_weight, hidden=tuple(cfg.hidden),
                         batch_norm=bool(cfg.batch_norm), **_teacher_kwargs(cfg))
    return Built(teacher, images=images, vae_info=info)


def _privacy_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(private rows, public rows)`` of ``n``: a seeded random ``fraction`` (at least one row).

    Example:
        >>> priv, pub = _privacy_split(10, 0.3, seed=0)
        >>> len(priv), len(pub), sorted(priv.tolist() + pub.tolist()) == list(range(10))
        (3, 7, True)
    """
    m = max(1, int(round(fraction * n)))
    if n - m < 1:
        raise ValueError(f"--privacy-fraction {fraction} leaves no public pool of the {n} rows")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:m].sort().values, perm[m:].sort().values


def _phi_features(phi: Callable[[Tensor], Tensor], x: Tensor, batch: int = 256) -> Tensor:
    """``phi(x)`` in batches, flattened, float64, no gradient."""
    with torch.no_grad():
        out = [phi(x[i : i + batch]).reshape(min(batch, x.shape[0] - i), -1)
               for i in range(0, x.shape[0], batch)]
    return torch.cat(out).double()


def _build_privacy(p: Problem, cfg: ParameterizedConfig) -> Built:
    """The privacy-constrained transformation teacher (eq. 10), ``phi`` = the VAE's encoder mean.

    The privacy set is a ``--privacy-fraction`` of the training set drawn with
    ``--teacher-seed``, the pool the rest; ``eps`` defaults to the
    ``EPS_QUANTILE`` quantile of the private examples' ``phi``-distances to
    their nearest pool example (see :mod:`torchdht.experiments.parameterized`).
    """
    assert cfg.privacy_fraction is not None and cfg.penalty is not None
    x, y = p.data.x, p.data.y
    private_rows, public_rows = _privacy_split(x.shape[0], cfg.privacy_fraction,
                                               cfg.teacher_seed)
    vae, vae_info, images = _pretrained_vae(p.data, cfg)
    lift = _PinvLift(p.data.projection) if p.data.projection is not None else None
    phi = vae_phi(vae, lift)
    private, pool = x[private_rows], (x[public_rows], y[public_rows])
    f_priv, f_pool = _phi_features(phi, private), _phi_features(phi, pool[0])
    nearest = torch.cdist(f_priv, f_pool).min(dim=1).values
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    eps = float(cfg.eps) if cfg.eps is not None else float(nearest.quantile(EPS_QUANTILE))
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps} (the private examples have public copies "
                         "in phi-space; pass --eps)")
    to_private = torch.cdist(f_pool, f_priv).min(dim=1).values
    kw = _policy_kwargs(cfg, p.data)
    seed = kw.pop("seed")
    teacher = private_transform_teacher(p.learner, pool, p.lr, w_star=p.w_star,
                                        privacy_set=private, eps=eps, phi=phi,
                                        penalty=cfg.penalty, seed=seed, **kw)
    info = {
        "size": int(private_rows.numel()),
        "fraction": float(cfg.privacy_fraction),
        "pool_size": int(public_rows.numel()),
        "rows_seed": int(cfg.teacher_seed),
        "phi": "vae_phi(pretrained VAE): encoder means for both classes, concatenated"
        + ("; features lifted to images with x @ pinv(P)" if lift is not None else ""),
        "phi_features": int(f_priv.shape[1]),
        "eps": eps,
        "eps_rule": "given (--eps)" if cfg.eps is not None else
        f"quantile {EPS_QUANTILE} of the private examples' phi-distance to the nearest pool "
        "example",
        "nearest_pool_distance_quantiles": {str(q): float(nearest.quantile(q)) for q in qs},
        "pool_within_eps_fraction": float((to_private < eps).double().mean()),
        "penalty": float(cfg.penalty),
    }
    return Built(teacher, images=images, vae_info=vae_info, phi=phi, privacy_set=private,
                 privacy_info=info)


TEACHERS: dict[str, TeacherBuilder] = {
    "transform": _build_transform,
    "blackbox": _build_blackbox,
    "gan": _build_gan,
    "vae": _build_vae,
    "privacy": _build_privacy,
}
"""``--teacher`` name -> builder; a new parameterized teacher is one entry here (and one in
:data:`~torchdht.experiments._parameterized_config.TEACHER_NAMES`)."""


def baseline(name: str, p: Problem, seed: int, cfg: ParameterizedConfig) -> Any:
    """The baseline teacher ``name`` (SGD, IMT or greedy DHT) of evaluation seed ``seed``, on
    the whole training set."""
    pool = (p.data.x, p.data.y)
    if name == "SGD":
        return SGDTeacher(p.learner, pool, seed=seed)
    if name == "IMT":
        return IMTTeacher(p.learner, p.w_star, p.lr, pool)
    return DHTTeacher(p.learner, p.w_star, p.lr, pool=pool, restarts=cfg.restarts,
                      steps=cfg.solver_steps, solver_lr=cfg.solver_lr, seed=seed)


def reseed(teacher: Any, seed: int) -> None:
    """Reseed the teacher's generator and those of the teachers it wraps (``.teacher``)."""
    gen = getattr(teacher, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
    wrapped = getattr(teacher, "teacher", None)
    if wrapped is not None and wrapped is not teacher:
        reseed(wrapped, seed)


def inner(teacher: Any) -> Any:
    """The unrolled teacher inside a wrapper (the privacy teacher's), else ``teacher``."""
    return teacher.teacher if isinstance(teacher, PrivacyTeacher) else teacher


def _privacy_distances(phi: Callable[[Tensor], Tensor], private: Tensor, xs: Tensor) -> Tensor:
    """``min_j |phi(x_n) - phi(p_j)|`` per emitted example, float64, recomputed here.

    Independent of the teacher's bookkeeping but the same arithmetic as its
    check: ``phi`` of the privacy set in one batch, of each example alone, the
    distance in float64.
    """
    with torch.no_grad():
        f_priv = phi(private).reshape(private.shape[0], -1).double()
        f = torch.cat([phi(xs[i : i + 1]).reshape(1, -1) for i in range(xs.shape[0])]).double()
    d = torch.cdist(f, f_priv, compute_mode="donot_use_mm_for_euclid_dist")
    return d.min(dim=1).values


def privacy_report(built: Built, histories: Sequence[History],
                   repairs: Sequence[Mapping[str, int]]) -> tuple[dict[str, Any], Tensor]:
    """config.json's ``privacy`` block and the distances (seeds, iters) of the emitted
    examples to the privacy set, recomputed (violations: distance < eps).

    Args:
        built: the privacy teacher as built.
        histories: its teaching runs, one per seed.
        repairs: its repair counts per seed.
    """
    teacher = built.teacher
    phi = built.phi if built.phi is not None else teacher.phi
    private = built.privacy_set if built.privacy_set is not None else teacher.privacy_set
    dists = torch.stack([_privacy_distances(phi, private, h.xs) for h in histories])
    eps = float(teacher.eps)
    total = {k: sum(r[k] for r in repairs) for k in teacher.stats}
    privacy = {
        **(built.privacy_info or {"size": int(private.shape[0]), "eps": eps}),
        "emitted": int(dists.numel()),
        "violations": int((dists < eps).sum()),
        "violations_rule": "phi-distance < eps, recomputed from the emitted examples",
        "min_distance": float(dists.min()),
        "min_distance_over_eps": float(dists.min() / eps),
        "mean_distance": float(dists.mean()),
        "repairs": int(total.get("violations", 0)),
        "repair_stats": total,
        "repairs_per_seed": [int(r.get("violations", 0)) for r in repairs],
        "repair_stats_per_seed": list(repairs),
    }
    return privacy, dists
