"""Parameterized teaching of a linear learner (sections 3.3, 5.1-5.3; appendix C.3-C.9).

``python -m torchdht.experiments parameterized --dataset {halfmoon,mnist35}
--teacher {transform,blackbox,gan,vae,privacy}`` first trains a parameterized
teacher by unrolling the learner's SGD, then teaches the learner (default:
binary logistic regression, no bias) with it for ``--iters`` single-example
SGD steps of ``--lr`` (the paper's 1e-3) from ``--seeds`` initialisations,
next to the random teacher (SGD), IMT and greedy DHT from the same ``w0``.
The teachers (``--teacher``):

* ``transform`` -- :class:`~torchdht.linear.TransformTeacher`, the omniscient
  data-transformation policy ``x~ = pi(x, y, w_t, w_t - w*)`` scored on
  ``|w_v - w*|^2`` (section 3.3.1, Figure 4);
* ``blackbox`` -- :class:`~torchdht.linear.BlackBoxTeacher`, the same policy
  without ``w*``, ``x~ = pi(x, y, w_t)``, scored on the learners' loss on
  held-out validation data (section 5.2, Figure 8);
* ``gan`` -- :class:`~torchdht.linear.generative.GANTeacher`, a conditional
  generator ``G(w, w - w*, z, y)`` with a discriminator against the training
  data (section 3.3.2, Figures 5-7): on half-moon
  :func:`~torchdht.linear.generative.halfmoon_gan` (MLP generator 8 - 32 - 16
  - 2, discriminator 4 - 8 - 1), on MNIST
  :func:`~torchdht.linear.generative.mnist_gan` (a conditional DCGAN making
  28x28 images that the learner sees as ``image.flatten() @ P``; the
  discriminator sees the 1000 training images); ``--adv-weight`` (default 1)
  weighs the adversarial term, ``--d-steps`` (default 1) discriminator steps
  per generator step;
* ``vae`` -- :class:`~torchdht.linear.generative.VAETeacher`: a conditional VAE
  is pretrained on the training set (:func:`~torchdht.linear.generative.pretrain_vae`,
  ``--vae-epochs`` epochs, default 100; MLP 128 - 256 - 128 on half-moon with
  a 2-d latent code, the two-convolution VAE on the MNIST training images with
  a 16-d code, ``--vae-latent``) and frozen; the policy (the data set's policy
  MLP, ``--hidden``) writes latent codes it decodes (images on MNIST, mapped
  with ``P``), plus ``--kl-weight`` (default 1) times ``KL(pi || N(0, I))``.
  The VAE is cached under ``--cache-dir`` (default ``runs/vae-cache``, never
  inside the data root) and read back when the data, architecture, epochs and
  seed agree;
* ``privacy`` -- :class:`~torchdht.linear.privacy.PrivacyTeacher` around a
  transformation teacher (section 5.3, eq. 10, Figures 9, 10): every emitted
  example stays at least ``eps`` from a privacy set in the feature space of
  ``phi``; training adds ``--penalty`` (default 1) times the hinge
  ``relu(eps - min_j |phi(x~) - phi(p_j)|)`` per unrolled step, teaching
  repairs violating proposals (never emits one). Its pieces:

  - the privacy set is a random ``--privacy-fraction`` (default 0.1) of the
    training set, drawn with ``--teacher-seed``; the teacher's pool is the
    rest (the baselines still use the whole training set);
  - ``phi`` is the encoder mean of the pretrained VAE (the same cached VAE as
    ``--teacher vae``, :func:`~torchdht.linear.generative.vae_phi`: the means
    for both class conditions, concatenated). On MNIST the VAE reads images,
    so a 24-d feature vector ``x`` is lifted with the pseudo-inverse of the
    projection, ``x @ pinv(P)`` reshaped to 28x28: the minimum-norm image with
    those features (``P^T`` applied to it gives ``x`` back) and the paper's own
    way of showing features as pictures (appendix B); it is linear, so the
    hinge's gradient flows through it. These ``P^+ P`` images are blurrier than
    the images the VAE was trained on, so the MNIST distances are compressed;
    ``eps`` is set on the same scale (below), so the constraint stays
    meaningful;
  - ``eps`` (``--eps``, a distance, not squared): by default the median, over
    the private examples, of the ``phi``-distance to the nearest *public*
    pool example. A typical private point then has its nearest public
    neighbour right at the boundary: the teacher may not come closer to a
    private example than the real public data typically does, yet most of
    the pool (about 90 % on both data sets) stays feasible, so the constraint
    is active without ruling out the data distribution. config.json records
    the quantiles and the infeasible share of the pool;
  - after teaching, the ``phi``-distance of every emitted example to the
    privacy set is recomputed here, independently of the teacher (same
    ``phi``), and the violations (distance < eps) counted: they must be 0.

Outputs under ``--out`` (default ``runs/parameterized-DATASET-TEACHER``):

* ``results.csv`` -- teacher, seed, iter, ``|w - w*|``, test accuracy;
* ``summary.csv`` -- mean and std over seeds at iterations 0, 50, 100, 300;
* ``convergence.png`` -- ``|w - w*|`` and test accuracy vs iteration, mean +- std
  (Figures 4, 5, 8, 9);
* ``halfmoon_points.png`` (half-moon) -- like the paper's Figure 6: one panel
  per iteration 10, 150, 290 (seed 0) with the learned teacher's generated
  points at ``w_t`` coloured by label, the training data faded behind them,
  the ``w*`` line and the ``w_t`` line (with ``privacy``: the private examples
  as black crosses); ``mnist_samples.png`` (MNIST) -- a grid of the learned
  teacher's examples at a few iterations (seed 0): for ``gan`` and ``vae`` the
  raw 28x28 samples (:meth:`~torchdht.linear.generative.GANTeacher.sample`)
  under a row of real training images (Figure 7), for the others the
  generated features mapped back to pictures with the pseudo-inverse of the
  projection;
* ``privacy_distance.png`` and ``privacy.csv`` (``privacy``) -- the private
  perceptual distance ``min_j |phi(x~_t) - phi(p_j)|`` of each emitted example
  over the teaching iterations, seed 0 and mean +- std over seeds, with a
  horizontal line at ``eps`` (Figure 10); the csv has seed, iter, distance,
  violation;
* ``teacher.pt`` -- the learned teacher's ``state_dict()`` (``--load`` takes it back);
* ``teacher_fit.csv`` -- the outer loss per training iteration (for ``gan``,
  ``vae`` and ``privacy`` also the extra term (adversarial / KL), the privacy
  hinge and the discriminator loss);
* ``config.json`` -- the settings, ``w*``'s test accuracy, the teacher's
  configuration, training time and outer loss at the start and end of
  training, the wall time of each teacher's teaching runs; ``gan``: the final
  discriminator loss and adversarial term; ``vae`` and ``privacy``:
  ``vae_pretraining`` (wall time of this run's pretraining call, whether the
  VAE came from the cache, the time it took when it was trained, the final
  losses); ``privacy``: the privacy set, ``eps`` and how it was chosen, the
  violations among emitted examples and the teacher's repair counts (in
  total and per seed).

It prints a table at iterations 50, 100 and 300. Rows: ``SGD``, ``IMT``,
``DHT-greedy`` (:class:`~torchdht.linear.DHTTeacher` with the omniscient
experiment's solver: 16 restarts, 100 steps, step 0.02 of the box width) and
``DHT-TEACHER`` (the learned policy).

The paper's setting is the default: LR learner without bias, learner lr 1e-3,
300 teaching iterations, 10 seeds; the teacher trained for 1000 outer
iterations of 40 unrolled SGD steps (8 learners in parallel) with Adam, lr
2e-3, betas (0.9, 0.999), no auxiliary loss (``--alpha 0``); the policy an
MLP with hidden sizes (32, 16) on half-moon and (128, 256, 512, 512, 1024)
with batch normalisation on MNIST 3/5 (the transformation, black-box, VAE and
privacy teachers' policy; the MNIST GAN's generator is the DCGAN and ignores
``--hidden``). The policy's input is ``[w, w - w*, x, onehot(y)]`` (``[w, x,
onehot(y)]`` for the black-box teacher, ``[w, w - w*, z, onehot(y)]`` for the
GAN): 8 (6) wide on half-moon as in the paper, and 2*24 + 24 + 2 = 74 (50) on
MNIST 3/5, where the paper's 82 (58) comes from a 10-class one-hot label;
ours is a 2-class one-hot, as the learner has two classes. The policy's output
is unconstrained, as in the paper; ``--box`` squashes it into the training
data's per-dimension ``[min, max]`` (greedy DHT's feasible set) with a sigmoid,
for a like-for-like comparison with greedy DHT.

Details:

* ``w*`` is fitted once on the whole training set in float64
  (:func:`~torchdht.linear.fit_w_star`, L2 1e-3) and cast to float32, like the
  data; everything else runs in float32. ``w0`` of evaluation seed ``s`` is
  ``LR.init(D, torch.Generator().manual_seed(s))``, as in the omniscient
  experiment; the teacher's own generator (policy initialisation, training
  learners, pool draws while training) is seeded with ``--teacher-seed``
  (default 10000, which must not be an evaluation seed), and so are the VAE
  pretraining and the privacy set. When teaching, the learned teacher's
  generator (and the privacy teacher's repair generator) is reseeded with
  ``s``, so it draws the same pool rows to transform as the SGD teacher feeds
  for that seed (same pool).
* The black-box teacher's validation set is the last 20 % of the training set
  and its pool the rest; the test set is never used for training. ``|w - w*|``
  is still reported against the true ``w*``. SGD, IMT and greedy DHT use the
  whole training set as their pool (IMT and DHT know ``w*``).
* The training learners restart from a fresh random initialisation every
  ``--horizon`` steps (default: ``--iters``), so the policy is trained on the
  states it meets when teaching.
* The options of one teacher (``--adv-weight``, ``--d-steps``: gan;
  ``--kl-weight``: vae; ``--eps``, ``--privacy-fraction``, ``--penalty``:
  privacy; ``--vae-epochs``, ``--vae-latent``, ``--cache-dir``: vae and
  privacy) are refused with another teacher, as is ``--residual`` with gan and
  vae.
* ``--quick`` is a smoke setting (2 seeds, 30 iterations, 40 outer iterations
  of 10 unrolled steps, DHT 4 restarts x 20 steps, 2 VAE pretraining epochs)
  that takes seconds on a CPU; options given explicitly override it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..data import load_mnist35_images
from ..linear.omniscient import (
    LR,
    DHTTeacher,
    History,
    IMTTeacher,
    LinearLearner,
    SGDTeacher,
    fit_w_star,
    run,
)
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
from .omniscient import _decision_line, _fmt, _plt, plot_convergence, print_table, summarise

__all__ = [
    "BASELINES",
    "DESCRIPTION",
    "TEACHERS",
    "TeacherBuilder",
    "add_arguments",
    "main",
    "run_parameterized",
]

DESCRIPTION = (
    "Parameterized teaching of a linear learner on half-moon or MNIST 3/5: train a "
    "data-transformation, black-box, GAN, VAE or privacy-constrained teacher by unrolling, then "
    "teach against SGD, IMT and greedy DHT (paper sections 3.3, 5.1-5.3, Figures 4-10)."
)
CHECKPOINTS = (50, 100, 300)
BASELINES = ("SGD", "IMT", "DHT")
"""The baseline teachers (``--baselines``); greedy DHT's row is ``DHT-greedy``."""
VALIDATION_FRACTION = 0.2
"""The black-box teacher's validation share: the last 20 % of the training set."""

PAPER = {
    "seeds": 10, "iters": 300, "outer_iters": 1000, "unroll": 40, "trajectories": 8,
    "restarts": 16, "solver_steps": 100, "vae_epochs": 100,
}
"""The paper's setting (the defaults)."""
QUICK = {
    "seeds": 2, "iters": 30, "outer_iters": 40, "unroll": 10, "trajectories": 8,
    "restarts": 4, "solver_steps": 20, "vae_epochs": 2,
}
"""``--quick``: a smoke setting that takes seconds."""
HIDDEN = {"halfmoon": (32, 16), "mnist35": (128, 256, 512, 512, 1024)}
"""The paper's policy MLP per data set (appendix C.3, C.4); MNIST with batch norm."""
VAE_LATENT = {"halfmoon": 2, "mnist35": 16}
"""The VAE's code size per data set (``--vae-latent``): 2 for the 2-d half-moon points
(:func:`~torchdht.linear.generative.pretrain_vae`'s default), 16 for MNIST images
(:class:`~torchdht.linear.generative.ConvVAE`'s default)."""
GENERATIVE = {"adv_weight": 1.0, "d_steps": 1, "kl_weight": 1.0, "penalty": 1.0,
              "privacy_fraction": 0.1, "cache_dir": str(Path("runs") / "vae-cache")}
"""Defaults of the generative and privacy teachers' options (the teachers' own defaults)."""
OWNERS = {
    "adv_weight": ("gan",), "d_steps": ("gan",), "kl_weight": ("vae",),
    "vae_epochs": ("vae", "privacy"), "vae_latent": ("vae", "privacy"),
    "cache_dir": ("vae", "privacy"), "eps": ("privacy",), "privacy_fraction": ("privacy",),
    "penalty": ("privacy",), "box": ("transform", "blackbox", "privacy"),
}
"""The teachers each teacher-specific option applies to (given with another one: an error)."""
EPS_QUANTILE = 0.5
"""Default ``eps``: this quantile (the median) of the private examples' ``phi``-distances to
their nearest public pool example (see the module docstring)."""

TeacherBuilder = Callable[[LinearLearner, "dict[str, Any]", float, Tensor, argparse.Namespace],
                          Any]
"""``builder(learner, data, lr, w_star, args) -> teacher``: ``data`` has ``x``, ``y`` (the
training set, learner labels), ``x_test``, ``y_test``, ``classes`` (training class indices),
``projection`` (MNIST's ``P`` or None) and ``dataset``; ``args`` the parsed (resolved) options.
The teacher needs ``fit(iters, progress)``, ``propose(w)``, ``state_dict()``,
``load_state_dict(state)`` and ``config()``, like :class:`~torchdht.linear.TransformTeacher`.
A builder may leave what the experiment reports besides the teacher in ``args._side`` (a dict,
not written to config.json as is): ``vae_info`` (config.json's ``vae_pretraining``),
``images`` (the MNIST training images), and for the privacy teacher ``phi``,
``privacy_set`` and ``privacy_info``."""


def _data_box(data: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """The training set's per-dimension ``[min, max]``: greedy DHT's feasible set."""
    x = data["x"]
    return x.min(0).values, x.max(0).values


def _policy_kwargs(args: argparse.Namespace,
                   data: dict[str, Any] | None = None) -> dict[str, Any]:
    box = _data_box(data) if args.box and data is not None else None
    return {
        "box": box,
        "hidden": tuple(args.hidden),
        "batch_norm": bool(args.batch_norm),
        "residual": bool(args.residual),
        "unroll": args.unroll,
        "truncate": args.truncate,
        "alpha": args.alpha,
        "trajectories": args.trajectories,
        "horizon": args.horizon,
        "teacher_lr": args.teacher_lr,
        "betas": (0.9, 0.999),
        "grad_clip": args.grad_clip,
        "seed": args.teacher_seed,
    }


def _build_transform(learner: LinearLearner, data: dict[str, Any], lr: float, w_star: Tensor,
                     args: argparse.Namespace) -> TransformTeacher:
    """The omniscient data-transformation teacher on the whole training set."""
    return TransformTeacher(learner, (data["x"], data["y"]), lr, w_star=w_star,
                            **_policy_kwargs(args, data))


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


def _build_blackbox(learner: LinearLearner, data: dict[str, Any], lr: float, w_star: Tensor,
                    args: argparse.Namespace) -> BlackBoxTeacher:
    """The black-box teacher: pool = first 80 % of the training set, validation = last 20 %."""
    x, y = data["x"], data["y"]
    k = _validation_split(x.shape[0])
    return BlackBoxTeacher(learner, (x[:k], y[:k]), lr, validation=(x[k:], y[k:]),
                           **_policy_kwargs(args, data))


def _side(args: argparse.Namespace) -> dict[str, Any]:
    """What the builders hand back besides the teacher (``args._side``, kept out of config.json)."""
    side = getattr(args, "_side", None)
    if not isinstance(side, dict):
        side = {}
        args._side = side
    return side


def _teacher_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The unrolling options every teacher takes (no policy architecture)."""
    kw = _policy_kwargs(args)
    for key in ("hidden", "batch_norm", "residual", "box"):
        kw.pop(key)
    return kw


def _cache_dir(args: argparse.Namespace) -> Path:
    """``--cache-dir``, resolved; refused inside the data root (which is read-only).

    Raises:
        ValueError: the folder is the data root or inside it.
    """
    from ..data.mnist35 import default_root

    path = Path(args.cache_dir).expanduser().resolve()
    roots = [default_root()] + ([Path(args.data_root)] if args.data_root else [])
    for root in roots:
        root = root.expanduser().resolve()
        if path == root or root in path.parents:
            raise ValueError(f"--cache-dir {args.cache_dir!r} is inside the data root {root}; "
                             "choose a folder of your own (default runs/vae-cache)")
    return path


def _mnist_images(data: dict[str, Any], args: argparse.Namespace) -> Tensor:
    """The MNIST training images (N, 1, 28, 28) in [-1, 1] behind ``data["x"]`` (float32).

    Raises:
        ValueError: the images do not project to the training features.
    """
    side = _side(args)
    if "images" not in side:
        x = data["x"]
        imgs, classes = load_mnist35_images(args.data_root, n_train=x.shape[0], dtype=x.dtype)
        feats = imgs.flatten(1) @ data["projection"].to(x.dtype)
        if not torch.equal(classes, data["classes"]) or \
                not torch.allclose(feats, x, atol=1e-3, rtol=1e-3):
            raise ValueError("the MNIST images do not project to the training features")
        side["images"] = imgs
    return side["images"]


def _pretrained_vae(data: dict[str, Any], args: argparse.Namespace) -> nn.Module:
    """The conditional VAE pretrained on the training set (cached under ``--cache-dir``).

    Half-moon: the MLP VAE on the points; MNIST: the convolutional VAE on the
    training images. Seeded with ``--teacher-seed``. Records what
    config.json's ``vae_pretraining`` holds in ``args._side["vae_info"]``; the
    training time of a cached VAE comes from a small json file next to it.
    """
    side = _side(args)
    if "vae" in side:
        return side["vae"]
    mnist = data["projection"] is not None
    samples = _mnist_images(data, args) if mnist else data["x"]
    cache = _cache_dir(args)
    t0 = time.perf_counter()
    pre = pretrain_vae(samples, data["classes"], dataset="mnist" if mnist else "halfmoon",
                       latent=args.vae_latent, epochs=args.vae_epochs, seed=args.teacher_seed,
                       cache_dir=cache, progress=not args.no_progress)
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
        tmp.write_text(json.dumps({"train_seconds": seconds, "epochs": args.vae_epochs,
                                   "threads": torch.get_num_threads()}))
        os.replace(tmp, meta)
    side["vae"] = pre.vae
    side["vae_info"] = {
        "architecture": type(pre.vae).__name__,
        "trained_on": "training images (N, 1, 28, 28)" if mnist else "training points",
        "samples": int(samples.shape[0]),
        "latent": int(args.vae_latent),
        "epochs": int(args.vae_epochs),
        "seed": int(args.teacher_seed),
        "seconds": seconds,
        "cached": bool(pre.cached),
        "train_seconds": train_s,
        "path": str(pre.path),
        "final_loss": float(pre.loss[-1]),
        "final_recon": float(pre.recon[-1]),
        "final_kl": float(pre.kl[-1]),
    }
    return pre.vae


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


def _build_gan(learner: LinearLearner, data: dict[str, Any], lr: float, w_star: Tensor,
               args: argparse.Namespace) -> Any:
    """The paper's GAN teacher: the MLP GAN on half-moon, the conditional DCGAN on MNIST."""
    pool = (data["x"], data["y"])
    kw = {**_teacher_kwargs(args), "adv_weight": args.adv_weight, "d_steps": args.d_steps}
    if data["projection"] is None:
        return halfmoon_gan(learner, pool, lr, w_star=w_star, hidden=tuple(args.hidden), **kw)
    real = (_mnist_images(data, args), data["y"])
    return mnist_gan(learner, pool, lr, w_star=w_star, projection=data["projection"], real=real,
                     **kw)


def _build_vae(learner: LinearLearner, data: dict[str, Any], lr: float, w_star: Tensor,
               args: argparse.Namespace) -> VAETeacher:
    """The VAE teacher on the pretrained VAE (on MNIST its images are mapped with ``P``)."""
    vae = _pretrained_vae(data, args)
    to_features = Projection(data["projection"]) if data["projection"] is not None else None
    return VAETeacher(learner, (data["x"], data["y"]), lr, w_star=w_star, vae=vae,
                      to_features=to_features, kl_weight=args.kl_weight,
                      hidden=tuple(args.hidden), batch_norm=bool(args.batch_norm),
                      **_teacher_kwargs(args))


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


def _build_privacy(learner: LinearLearner, data: dict[str, Any], lr: float, w_star: Tensor,
                   args: argparse.Namespace) -> PrivacyTeacher:
    """The privacy-constrained transformation teacher (eq. 10), ``phi`` = the VAE's encoder mean.

    The privacy set is a ``--privacy-fraction`` of the training set drawn with
    ``--teacher-seed``, the pool the rest; ``eps`` defaults to the
    ``EPS_QUANTILE`` quantile of the private examples' ``phi``-distances to
    their nearest pool example (module docstring).
    """
    x, y = data["x"], data["y"]
    private_rows, public_rows = _privacy_split(x.shape[0], args.privacy_fraction,
                                               args.teacher_seed)
    vae = _pretrained_vae(data, args)
    lift = _PinvLift(data["projection"]) if data["projection"] is not None else None
    phi = vae_phi(vae, lift)
    private, pool = x[private_rows], (x[public_rows], y[public_rows])
    f_priv, f_pool = _phi_features(phi, private), _phi_features(phi, pool[0])
    nearest = torch.cdist(f_priv, f_pool).min(dim=1).values
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    eps = float(args.eps) if args.eps is not None else float(nearest.quantile(EPS_QUANTILE))
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps} (the private examples have public copies "
                         "in phi-space; pass --eps)")
    to_private = torch.cdist(f_pool, f_priv).min(dim=1).values
    kw = _policy_kwargs(args, data)
    seed = kw.pop("seed")
    teacher = private_transform_teacher(learner, pool, lr, w_star=w_star, privacy_set=private,
                                        eps=eps, phi=phi, penalty=args.penalty, seed=seed, **kw)
    side = _side(args)
    side["phi"] = phi
    side["privacy_set"] = private
    side["privacy_info"] = {
        "size": int(private_rows.numel()),
        "fraction": float(args.privacy_fraction),
        "pool_size": int(public_rows.numel()),
        "rows_seed": int(args.teacher_seed),
        "phi": "vae_phi(pretrained VAE): encoder means for both classes, concatenated"
        + ("; features lifted to images with x @ pinv(P)" if lift is not None else ""),
        "phi_features": int(f_priv.shape[1]),
        "eps": eps,
        "eps_rule": "given (--eps)" if args.eps is not None else
        f"quantile {EPS_QUANTILE} of the private examples' phi-distance to the nearest pool "
        "example",
        "nearest_pool_distance_quantiles": {str(q): float(nearest.quantile(q)) for q in qs},
        "pool_within_eps_fraction": float((to_private < eps).double().mean()),
        "penalty": float(args.penalty),
    }
    return teacher


TEACHERS: dict[str, TeacherBuilder] = {
    "transform": _build_transform,
    "blackbox": _build_blackbox,
    "gan": _build_gan,
    "vae": _build_vae,
    "privacy": _build_privacy,
}
"""``--teacher`` name -> builder; a new parameterized teacher is one entry here."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options."""
    p.add_argument("--dataset", choices=("halfmoon", "mnist35"), default="halfmoon",
                   help="half-moon (2-d) or MNIST 3 vs 5 projected to 24-d")
    p.add_argument("--teacher", choices=tuple(TEACHERS), default="transform",
                   help="the parameterized teacher (default: transform)")
    p.add_argument("--seeds", type=int, default=None,
                   help="evaluation seeds 0..N-1 (default: 10; --quick: 2)")
    p.add_argument("--iters", type=int, default=None,
                   help="teaching iterations (default: 300; --quick: 30)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="the learner's SGD learning rate (default: 1e-3, the paper's)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 coefficient of w* (default: 1e-3)")
    g = p.add_argument_group("teacher training")
    g.add_argument("--outer-iters", type=int, default=None,
                   help="outer (Adam) iterations (default: 1000; --quick: 40)")
    g.add_argument("--unroll", type=int, default=None,
                   help="unrolled SGD steps per outer iteration (default: 40; --quick: 10)")
    g.add_argument("--truncate", type=int, default=None,
                   help="back-propagate through the last N unrolled steps only (default: all)")
    g.add_argument("--alpha", type=float, default=0.0,
                   help="weight of the auxiliary loss (default: 0)")
    g.add_argument("--trajectories", type=int, default=None,
                   help="learners unrolled in parallel (default: 8)")
    g.add_argument("--horizon", type=int, default=None,
                   help="steps after which a training learner restarts (default: --iters)")
    g.add_argument("--teacher-lr", type=float, default=2e-3,
                   help="Adam's learning rate (default: 2e-3; betas (0.9, 0.999))")
    g.add_argument("--grad-clip", type=float, default=None,
                   help="clip the policy's gradient norm (default: no clipping)")
    g.add_argument("--hidden", type=_int_list, default=None,
                   help="policy hidden sizes, comma-separated (default: 32,16 on half-moon; "
                   "128,256,512,512,1024 on MNIST)")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="batch norm in the policy (default: on for MNIST, off for half-moon)")
    g.add_argument("--residual", action="store_true",
                   help="the policy outputs a correction added to x")
    g.add_argument("--box", action="store_const", const=True, default=None,
                   help="squash the policy's examples into the training data's per-dimension "
                   "[min, max] box, greedy DHT's feasible set (transform, blackbox, privacy; "
                   "default: unconstrained, as in the paper)")
    g.add_argument("--teacher-seed", type=int, default=10_000,
                   help="seed of the teacher's generator (default: 10000; not an eval seed)")
    g.add_argument("--load", default=None, metavar="PATH",
                   help="load a saved teacher.pt instead of training (same configuration)")
    v = p.add_argument_group("generative and privacy teachers (--teacher gan, vae, privacy)")
    v.add_argument("--adv-weight", type=float, default=None,
                   help="gan: weight of the adversarial term (default: 1)")
    v.add_argument("--d-steps", type=int, default=None,
                   help="gan: discriminator steps per generator step (default: 1)")
    v.add_argument("--kl-weight", type=float, default=None,
                   help="vae: weight of KL(pi || N(0, I)) (default: 1)")
    v.add_argument("--vae-epochs", type=int, default=None,
                   help="vae, privacy: VAE pretraining epochs (default: 100; --quick: 2)")
    v.add_argument("--vae-latent", type=int, default=None,
                   help="vae, privacy: the VAE's code size (default: 2 on half-moon, 16 on MNIST)")
    v.add_argument("--cache-dir", default=None,
                   help="vae, privacy: where the pretrained VAE is cached (default: "
                   "runs/vae-cache; not inside the data root)")
    v.add_argument("--eps", type=float, default=None,
                   help="privacy: minimum phi-distance to the privacy set (default: the median "
                   "phi-distance of a private example to its nearest public pool example)")
    v.add_argument("--privacy-fraction", type=float, default=None,
                   help="privacy: share of the training set that is private (default: 0.1)")
    v.add_argument("--penalty", type=float, default=None,
                   help="privacy: weight of the hinge while training (default: 1)")
    b = p.add_argument_group("baselines")
    b.add_argument("--baselines", default=",".join(BASELINES),
                   help="comma-separated, from " + ",".join(BASELINES) + " ('' for none)")
    b.add_argument("--restarts", type=int, default=None,
                   help="greedy DHT random starts (default: 16; --quick: 4)")
    b.add_argument("--solver-steps", type=int, default=None,
                   help="greedy DHT solver steps (default: 100; --quick: 20)")
    b.add_argument("--solver-lr", type=float, default=0.02,
                   help="greedy DHT solver step, a fraction of the box width (default: 0.02)")
    p.add_argument("--data-root", default=None,
                   help="MNIST root (default: $TORCHDHT_DATA or ../shared/data)")
    p.add_argument("--out", default=None,
                   help="output folder (default: runs/parameterized-DATASET-TEACHER)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 seeds, 30 iterations, 40 outer iterations of 10 steps, "
                   "small DHT solves")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while training")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1)")
    p.add_argument("--workers", type=int, default=1, choices=(1,), metavar="N",
                   help="parallel processes: this experiment runs in one, so only 1 (default: 1)")


def _resolve(args: argparse.Namespace) -> None:
    """Fill the options left at None from the paper's (or ``--quick``'s) setting; check them.

    Raises:
        ValueError: an option out of range, or one that does not apply to ``--teacher``.
    """
    for key, owners in OWNERS.items():
        if getattr(args, key, None) is not None and args.teacher not in owners:
            raise ValueError(f"--{key.replace('_', '-')} applies to --teacher "
                             f"{' or '.join(owners)}, not {args.teacher}")
    if args.residual and args.teacher in ("gan", "vae"):
        raise ValueError(f"--residual does not apply to --teacher {args.teacher} (its policy "
                         "makes samples or latent codes, not corrections of x)")
    def applies(key: str) -> bool:
        return args.teacher in OWNERS.get(key, (args.teacher,))

    base = QUICK if args.quick else PAPER
    for key, value in base.items():
        if getattr(args, key) is None and applies(key):
            setattr(args, key, value)
    if args.horizon is None:
        args.horizon = args.iters
    if args.hidden is None:
        args.hidden = HIDDEN[args.dataset]
    args.hidden = list(args.hidden)
    if args.batch_norm is None:
        args.batch_norm = args.dataset == "mnist35"
    # teacher-specific options: filled for their teachers only (None otherwise)
    for key, default in GENERATIVE.items():
        if getattr(args, key) is None and applies(key):
            setattr(args, key, default)
    if args.vae_latent is None and applies("vae_latent"):
        args.vae_latent = VAE_LATENT[args.dataset]
    for key in ("adv_weight", "kl_weight", "penalty"):
        value = getattr(args, key)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0 and finite, got {value}")
    if args.eps is not None and not (math.isfinite(args.eps) and args.eps > 0):
        raise ValueError(f"--eps must be > 0 and finite, got {args.eps}")
    if args.privacy_fraction is not None and not 0 < args.privacy_fraction < 1:
        raise ValueError(f"--privacy-fraction must be in (0, 1), got {args.privacy_fraction}")
    if args.d_steps is not None and args.d_steps < 0:
        raise ValueError(f"--d-steps must be >= 0, got {args.d_steps}")
    for key in ("seeds", "iters", "unroll", "trajectories", "horizon", "restarts",
                "solver_steps", "vae_epochs", "vae_latent"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.outer_iters < 0:
        raise ValueError(f"--outer-iters must be >= 0, got {args.outer_iters}")
    if 0 <= args.teacher_seed < args.seeds:
        raise ValueError(
            f"--teacher-seed {args.teacher_seed} is one of the evaluation seeds 0..{args.seeds - 1}"
            "; the teacher must not be trained from the evaluation initialisations"
        )
    names = [n.strip() for n in args.baselines.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown {unknown}; choose from {', '.join(BASELINES)}")
    args.baselines = ",".join(n for n in BASELINES if n in names)


def _load_data(dataset: str, root: str | None, learner: LinearLearner) -> dict[str, Any]:
    """The data set in float64 (for ``w*``) with learner labels."""
    if dataset == "halfmoon":
        from ..data.halfmoon import load_halfmoon

        s: Any = load_halfmoon(dtype=torch.float64)
        projection = None
    else:
        from ..data.mnist35 import load_mnist35

        s = load_mnist35(root=root, dtype=torch.float64)
        projection = s.projection
    return {
        "dataset": dataset,
        "x": s.x_train,
        "y": learner.targets(s.y_train).to(torch.float64),
        "x_test": s.x_test,
        "y_test": learner.targets(s.y_test).to(torch.float64),
        "classes": s.y_train,
        "projection": projection,
    }


def _baseline(name: str, learner: LinearLearner, w_star: Tensor, data: dict[str, Any],
              seed: int, args: argparse.Namespace) -> Any:
    pool = (data["x"], data["y"])
    if name == "SGD":
        return SGDTeacher(learner, pool, seed=seed)
    if name == "IMT":
        return IMTTeacher(learner, w_star, args.lr, pool)
    return DHTTeacher(learner, w_star, args.lr, pool=pool, restarts=args.restarts,
                      steps=args.solver_steps, solver_lr=args.solver_lr, seed=seed)


def _reseed(teacher: Any, seed: int) -> None:
    """Reseed the teacher's generator and those of the teachers it wraps (``.teacher``)."""
    gen = getattr(teacher, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
    inner = getattr(teacher, "teacher", None)
    if inner is not None and inner is not teacher:
        _reseed(inner, seed)


def _inner(teacher: Any) -> Any:
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


def _checkpoints(iters: int) -> list[int]:
    """The table's iterations: 50, 100, 300 where reached, and always the last.

    Example:
        >>> _checkpoints(300), _checkpoints(30), _checkpoints(200)
        ([50, 100, 300], [30], [50, 100, 200])
    """
    return sorted({c for c in CHECKPOINTS if c <= iters} | {iters})


def _panel_iters(iters: int) -> list[int]:
    """The picture's iterations: the paper's 10, 150, 290, scaled down for short runs.

    Example:
        >>> _panel_iters(300), _panel_iters(30)
        ([10, 150, 290], [1, 15, 29])
    """
    if iters >= 290:
        return [10, 150, 290]
    return sorted({min(iters, max(1, round(iters * f / 300))) for f in (10, 150, 290)})


def run_parameterized(args: argparse.Namespace) -> dict[str, Any]:
    """Run the experiment described by ``args`` (the parsed options); returns the results.

    Returns:
        A dict with ``table`` (the summary rows: teacher, wall_s, and
        ``dist_C`` / ``acc_C`` (mean, std) pairs for C in 0 and the
        checkpoints), ``checkpoints``, ``wall`` (teacher row -> seconds of
        teaching), ``teacher_seconds`` (training time; 0.0 when loaded),
        ``fit_loss`` ((start, end) or None when loaded), ``histories`` (row ->
        list of :class:`~torchdht.linear.History`), ``teacher`` (the learned
        teacher), ``w_star``, ``config`` (what config.json holds), ``privacy``
        (config.json's privacy block for ``--teacher privacy``, else None) and ``out``.
    """
    _resolve(args)
    default_out = Path("runs") / f"parameterized-{args.dataset}-{args.teacher}"
    out = Path(args.out) if args.out else default_out
    learner = LR
    data64 = _load_data(args.dataset, args.data_root, learner)
    t0 = time.perf_counter()
    w_star64 = fit_w_star(learner, data64["x"], data64["y"], l2=args.l2)
    fit_s = time.perf_counter() - t0
    dtype = torch.float32
    data = {k: (v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v)
            for k, v in data64.items()}
    w_star = w_star64.to(dtype)
    star_acc = learner.accuracy(w_star, data["x_test"], data["y_test"])
    dim = data["x"].shape[1]

    # -------------------------------------------------------- the learned teacher
    args._side = {}
    teacher = TEACHERS[args.teacher](learner, data, args.lr, w_star, args)
    side = _side(args)
    name = f"DHT-{args.teacher}"
    fit_hist = None
    if args.load:
        state = torch.load(args.load, map_location="cpu", weights_only=True)
        teacher.load_state_dict(state)  # a checkpoint of another configuration: ValueError
        teacher_s = 0.0
    else:
        fit_hist = teacher.fit(args.outer_iters, progress=not args.no_progress)
        teacher_s = float(fit_hist.seconds)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), out / "teacher.pt")
    if fit_hist is not None:
        with open(out / "teacher_fit.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            cols = ["loss", "final", "aux"] + [c for c in ("extra", "penalty", "discriminator")
                                               if hasattr(fit_hist, c)]
            wr.writerow(["outer_iter", *cols])
            for i in range(len(fit_hist.loss)):
                wr.writerow([i, *(f"{float(getattr(fit_hist, c)[i]):.8g}" for c in cols)])

    # --------------------------------------------------------------- teaching
    baselines = [n for n in args.baselines.split(",") if n]
    labels = [("DHT-greedy" if n == "DHT" else n) for n in baselines] + [name]
    histories: dict[str, list[History]] = {lab: [] for lab in labels}
    wall = {lab: 0.0 for lab in labels}
    repairs: list[dict[str, int]] = []
    test = (data["x_test"], data["y_test"])
    for seed in range(args.seeds):
        w0 = learner.init(dim, torch.Generator().manual_seed(seed), dtype=dtype)
        for base, label in zip(baselines, labels):
            t = _baseline(base, learner, w_star, data, seed, args)
            t0 = time.perf_counter()
            histories[label].append(run(t, learner, w0, w_star, args.iters, args.lr, test=test))
            wall[label] += time.perf_counter() - t0
        _reseed(teacher, seed)
        before = dict(getattr(teacher, "stats", {}))
        t0 = time.perf_counter()
        histories[name].append(run(teacher, learner, w0, w_star, args.iters, args.lr, test=test))
        wall[name] += time.perf_counter() - t0
        if isinstance(teacher, PrivacyTeacher):
            repairs.append({k: v - before.get(k, 0) for k, v in teacher.stats.items()})

    # ------------------------------------------------------- privacy accounting
    privacy = None
    if isinstance(teacher, PrivacyTeacher):
        phi, private = side.get("phi", teacher.phi), side.get("privacy_set", teacher.privacy_set)
        dists = torch.stack([_privacy_distances(phi, private, h.xs) for h in histories[name]])
        eps = float(teacher.eps)
        violations = int((dists < eps).sum())
        total = {k: sum(r[k] for r in repairs) for k in teacher.stats}
        privacy = {
            **side.get("privacy_info", {"size": int(private.shape[0]), "eps": eps}),
            "emitted": int(dists.numel()),
            "violations": violations,
            "violations_rule": "phi-distance < eps, recomputed from the emitted examples",
            "min_distance": float(dists.min()),
            "min_distance_over_eps": float(dists.min() / eps),
            "mean_distance": float(dists.mean()),
            "repairs": int(total.get("violations", 0)),
            "repair_stats": total,
            "repairs_per_seed": [int(r.get("violations", 0)) for r in repairs],
            "repair_stats_per_seed": repairs,
        }

    # ------------------------------------------------------------------ files
    with open(out / "results.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["teacher", "seed", "iter", "distance", "accuracy"])
        for r in labels:
            for seed, h in enumerate(histories[r]):
                assert h.accuracy is not None
                for it in range(args.iters + 1):
                    wr.writerow([r, seed, it, f"{float(h.distance[it]):.8g}",
                                 f"{float(h.accuracy[it]):.6g}"])
    if privacy is not None:
        with open(out / "privacy.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["seed", "iter", "distance", "violation"])
            for seed in range(dists.shape[0]):
                for it in range(dists.shape[1]):
                    d = float(dists[seed, it])
                    wr.writerow([seed, it + 1, f"{d:.8g}", int(d < eps)])
    checkpoints = _checkpoints(args.iters)
    table = summarise(histories, labels, wall, checkpoints, out / "summary.csv")
    fit_loss = None
    if fit_hist is not None and len(fit_hist.loss):
        fit_loss = (float(fit_hist.loss[0]), float(fit_hist.loss[-1]))
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    config.update(
        learner=learner.name,
        dtype="float32",
        dim=dim,
        n_train=int(data["x"].shape[0]),
        n_test=int(data["x_test"].shape[0]),
        pool_size=(int(_inner(teacher).x.shape[0]) if hasattr(_inner(teacher), "x")
                   else None),
        validation_size=(int(data["x"].shape[0]) - int(teacher.x.shape[0])
                         if args.teacher == "blackbox" else None),
        adam_betas=[0.9, 0.999],
        w_star_recipe=f"fit_w_star: mean loss + {args.l2}/2 |w|^2, damped Newton (float64) to "
        "convergence, cast to float32; the same for every seed",
        w_star_norm=float(w_star.norm()),
        w_star_test_accuracy=star_acc,
        w_star_fit_seconds=fit_s,
        teacher_config=teacher.config(),
        teacher_loaded_from=args.load,
        teacher_train_seconds=teacher_s,
        teacher_seconds_per_outer_iter=(teacher_s / args.outer_iters
                                        if fit_hist is not None and args.outer_iters else None),
        teacher_outer_iters_done=int(getattr(_inner(teacher), "iterations", args.outer_iters)),
        fit_loss_start=None if fit_loss is None else fit_loss[0],
        fit_loss_end=None if fit_loss is None else fit_loss[1],
        wall_seconds=wall,
    )
    gan = None
    if fit_hist is not None and args.teacher == "gan" and len(fit_hist.loss):
        gan = {"final_discriminator_loss": float(fit_hist.discriminator[-1]),
               "final_adversarial_term": float(fit_hist.extra[-1]),
               "discriminator_loss_at_equilibrium": 2 * math.log(2)}
        config["gan"] = gan
    if "vae_info" in side:
        config["vae_pretraining"] = side["vae_info"]
    if privacy is not None:
        config["privacy"] = privacy
    (out / "config.json").write_text(json.dumps(config, indent=2))

    # ------------------------------------------------------------------ print
    print(
        f"parameterized teaching ({args.teacher}): {args.dataset}, learner {learner.name}, "
        f"D={dim}, {args.seeds} seeds, {args.iters} iterations, lr={args.lr:g}"
    )
    if fit_hist is not None:
        per = teacher_s / max(args.outer_iters, 1)
        loss_txt = "" if fit_loss is None else \
            f"; outer loss {fit_loss[0]:.4g} -> {fit_loss[1]:.4g}"
        print(f"teacher: {args.outer_iters} outer iterations x {args.unroll} unrolled steps in "
              f"{teacher_s:.1f} s ({1000 * per:.1f} ms each){loss_txt}")
    else:
        print(f"teacher: loaded from {args.load} ({_inner(teacher).iterations} outer iterations)")
    if "vae_info" in side:
        v = side["vae_info"]
        took = "" if v["train_seconds"] is None else \
            f" (trained earlier in {v['train_seconds']:.1f} s)"
        how = (f"read from the cache {v['path']} in {v['seconds']:.1f} s{took}" if v["cached"]
               else f"trained in {v['seconds']:.1f} s, cached to {v['path']}")
        print(f"VAE ({v['architecture']}, latent {v['latent']}, {v['epochs']} epochs): {how}; "
              f"final loss {v['final_loss']:.4g} (recon {v['final_recon']:.4g}, "
              f"KL {v['final_kl']:.4g})")
    if gan is not None:
        print(f"GAN: final discriminator loss {gan['final_discriminator_loss']:.4g} (2 ln 2 = "
              f"{2 * math.log(2):.4g} at equilibrium), adversarial term "
              f"{gan['final_adversarial_term']:.4g}")
    print(
        f"w*: L2 {args.l2:g}, |w*| = {float(w_star.norm()):.4f}, test accuracy {star_acc:.4f}; "
        f"|w0 - w*| = {_fmt(table[0]['dist_0'], 4)}, test accuracy at w0 "
        f"{_fmt(table[0]['acc_0'], 3)}"
    )
    print_table(table, checkpoints)
    if privacy is not None:
        st = privacy["repair_stats"]
        print(
            f"privacy: {privacy['size']} private examples, eps {privacy['eps']:.4g} "
            f"({privacy['eps_rule']}); {privacy['violations']} violations among "
            f"{privacy['emitted']} emitted examples (min distance {privacy['min_distance']:.4g}"
            f" = {privacy['min_distance_over_eps']:.3g} eps); repairs {privacy['repairs']} "
            f"(resampled {st.get('resampled', 0)}, projected {st.get('projected', 0)}, "
            f"fallback {st.get('fallback', 0)})"
        )
    print(f"wrote {out}")

    if not args.no_plots:
        plot_convergence(
            out / "convergence.png", histories,
            f"parameterized teaching ({args.teacher}), {args.dataset}, LR learner, "
            f"lr {args.lr:g}, mean ± std over {args.seeds} seeds",
            dashed=lambda name: not (name.startswith("DHT-") and name != "DHT-greedy"),
        )
        if args.dataset == "halfmoon":
            _plot_halfmoon(out / "halfmoon_points.png", teacher, histories[name][0], data,
                           w_star, name, args, private=side.get("privacy_set"))
        elif args.teacher in ("gan", "vae"):
            _plot_mnist_samples(out / "mnist_samples.png", teacher, histories[name][0],
                                _mnist_images(data, args), data["classes"], name, args)
        elif data["projection"] is not None:
            _plot_mnist(out / "mnist_samples.png", teacher, histories[name][0], data, name, args)
        if privacy is not None:
            _plot_privacy(out / "privacy_distance.png", dists, float(teacher.eps), name, args)
    return {
        "table": table,
        "checkpoints": checkpoints,
        "wall": wall,
        "teacher_seconds": teacher_s,
        "fit_loss": fit_loss,
        "histories": histories,
        "teacher": teacher,
        "w_star": w_star,
        "config": config,
        "privacy": privacy,
        "out": out,
    }


# ------------------------------------------------------------------ pictures


def _generated(teacher: Any, w: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` of the teacher's proposals at the learner state ``w`` (fixed draws)."""
    _reseed(teacher, seed)
    pairs = [teacher.propose(w) for _ in range(n)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1].reshape(1) for p in pairs])


def _plot_halfmoon(path: Path, teacher: Any, h: History, data: dict[str, Any], w_star: Tensor,
                   name: str, args: argparse.Namespace, private: Tensor | None = None) -> None:
    plt = _plt()
    x, classes = data["x"], data["classes"]
    marks = _panel_iters(args.iters)
    fig, axes = plt.subplots(1, len(marks), figsize=(5 * len(marks), 4.6), squeeze=False)
    colors = {-1: "tab:blue", 1: "tab:red"}
    for ax, t in zip(axes[0], marks):
        w = h.weights[t]
        gx, gy = _generated(teacher, w, 200, seed=12345)
        for c, lab in ((0, -1), (1, 1)):
            sel = classes == c
            ax.scatter(x[sel, 0], x[sel, 1], color=colors[lab], s=6, alpha=0.12)
            sel = gy == lab
            ax.scatter(gx[sel, 0], gx[sel, 1], color=colors[lab], s=14, alpha=0.85,
                       label=f"generated, y={lab:+d}")
        if private is not None:
            ax.scatter(private[:, 0], private[:, 1], color="black", marker="x", s=16, lw=0.8,
                       alpha=0.7, label="privacy set")
        pts = torch.cat([x, gx])
        span = (pts.max(0).values - pts.min(0).values).clamp_min(1e-3)
        lo, hi = pts.min(0).values - 0.08 * span, pts.max(0).values + 0.08 * span
        lim = (float(lo[0]), float(hi[0]))
        _decision_line(ax, w_star, lim, color="tab:orange", lw=2.2, label="w*")
        _decision_line(ax, w, lim, color="tab:green", lw=1.8, ls="--", label=f"w_{t}")
        ax.set_xlim(*lim)
        ax.set_ylim(float(lo[1]), float(hi[1]))
        ax.set_title(f"iteration {t}")
        ax.grid(alpha=0.2)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{name} on half-moon (seed 0): 200 generated points at w_t; faded: training "
                 "data", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_mnist(path: Path, teacher: Any, h: History, data: dict[str, Any], name: str,
                args: argparse.Namespace) -> None:
    from ..data.mnist35 import DIGITS, unproject

    plt = _plt()
    projection = data["projection"]
    k = 8
    marks = sorted({0, *_panel_iters(args.iters)})
    rows = [("train, P^+ P x", data["x"][:k], data["y"][:k])]
    for t in marks:
        gx, gy = _generated(teacher, h.weights[t], k, seed=12345)
        rows.append((f"t={t}", gx, gy))
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k, 1.45 * len(rows)), squeeze=False)
    for r, (label, feats, ys) in enumerate(rows):
        imgs = unproject(feats.double(), projection.double())
        for j in range(k):
            ax = axes[r][j]
            img = imgs[j]
            ax.imshow(img.numpy(), cmap="gray", vmin=float(img.min()), vmax=float(img.max()))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"'{DIGITS[int(ys[j] > 0)]}'", fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"MNIST 3/5, {name} (seed 0): examples generated at w_t, mapped back with P^+ "
                 "(each on its own grey scale)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_mnist_samples(path: Path, teacher: Any, h: History, images: Tensor, classes: Tensor,
                        name: str, args: argparse.Namespace) -> None:
    """Figure 7: the GAN's / VAE's raw 28x28 samples at a few iterations (seed 0), real on top."""
    from ..data.mnist35 import DIGITS

    plt = _plt()
    k = 8
    want = torch.arange(k) % 2  # alternate 3, 5
    ys = LR.targets(want).to(images.dtype)
    firsts = {c: (classes == c).nonzero().flatten() for c in (0, 1)}
    real_idx = [int(firsts[int(c)][j // 2]) for j, c in enumerate(want)]
    marks = sorted({0, *_panel_iters(args.iters)})
    rows = [("real", images[real_idx])]
    for t in marks:
        _reseed(teacher, 12345)
        w = h.weights[t].to(images.dtype)
        samples, _ = teacher.sample(w.expand(k, *w.shape), ys)
        rows.append((f"t={t}", samples.reshape(k, 28, 28)))
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k, 1.45 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for j in range(k):
            ax = axes[r][j]
            ax.imshow(imgs[j].reshape(28, 28).numpy(), cmap="gray", vmin=-1.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"'{DIGITS[int(want[j])]}'", fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"MNIST 3/5, {name} (seed 0): raw 28x28 samples generated at w_t (top: real "
                 "training images; grey scale [-1, 1])", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_privacy(path: Path, dists: Tensor, eps: float, name: str,
                  args: argparse.Namespace) -> None:
    """Figure 10: the private perceptual distance of the emitted examples over the iterations."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    it = torch.arange(1, dists.shape[1] + 1).numpy()
    m, sd = dists.mean(0).numpy(), dists.std(0, unbiased=False).numpy()
    ax.plot(it, dists[0].numpy(), lw=0.8, alpha=0.7, label="seed 0")
    line = ax.plot(it, m, lw=1.6, label=f"mean over {dists.shape[0]} seeds")[0]
    ax.fill_between(it, m - sd, m + sd, color=line.get_color(), alpha=0.15)
    ax.axhline(eps, color="tab:red", ls="--", lw=1.4, label=f"eps = {eps:.3g}")
    lo, hi = min(float(dists.min()), eps), max(float(dists.max()), eps)
    if lo > 0 and hi / lo > 100:  # eps and the distances far apart: both visible on a log scale
        ax.set_yscale("log")
    ax.set_xlabel("teaching iteration")
    ax.set_ylabel("min_j |phi(x~) - phi(p_j)|")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{name}, {args.dataset}: private perceptual distance of the emitted examples",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of the ``parameterized`` subcommand.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args(["--dataset", "mnist35", "--teacher", "blackbox"])
        >>> a.teacher, a.seeds, a.alpha, sorted(TEACHERS)
        ('blackbox', None, 0.0, ['blackbox', 'gan', 'privacy', 'transform', 'vae'])
    """
    for key in ("lr", "teacher_lr", "l2", "alpha"):
        value = getattr(args, key)
        if not math.isfinite(value) or value < 0 or (value == 0 and key in ("lr", "teacher_lr")):
            raise SystemExit(f"--{key.replace('_', '-')} must be {'>' if 'lr' in key else '>='} 0"
                             f" and finite, got {value}")
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return run_parameterized(args)
    finally:
        torch.set_num_threads(threads)
