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
* ``gan`` -- :class:`~torchdht.linear.unrolled.GANTeacher`, a conditional
  generator ``G(w, w - w*, z, y)`` with a discriminator against the training
  data (section 3.3.2, Figures 5-7): on half-moon
  :func:`~torchdht.linear.unrolled.halfmoon_gan` (MLP generator 8 - 32 - 16
  - 2, discriminator 4 - 8 - 1), on MNIST
  :func:`~torchdht.linear.unrolled.mnist_gan` (a conditional DCGAN making
  28x28 images that the learner sees as ``image.flatten() @ P``; the
  discriminator sees the 1000 training images); ``--adv-weight`` (default 1)
  weighs the adversarial term, ``--d-steps`` (default 1) discriminator steps
  per generator step;
* ``vae`` -- :class:`~torchdht.linear.unrolled.VAETeacher`: a conditional VAE
  is pretrained on the training set (:func:`~torchdht.linear.unrolled.pretrain_vae`,
  ``--vae-epochs`` epochs, default 100; MLP 128 - 256 - 128 on half-moon with
  a 2-d latent code, the two-convolution VAE on the MNIST training images with
  a 16-d code, ``--vae-latent``) and frozen; the policy (the data set's policy
  MLP, ``--hidden``) writes latent codes it decodes (images on MNIST, mapped
  with ``P``), plus ``--kl-weight`` (default 1) times ``KL(pi || N(0, I))``.
  The VAE is cached under ``--cache-dir`` (default ``runs/vae-cache``, never
  inside the data root) and read back when the data, architecture, epochs and
  seed agree;
* ``privacy`` -- :class:`~torchdht.linear.unrolled.PrivacyTeacher` around a
  transformation teacher (section 5.3, eq. 10, Figures 9, 10): every emitted
  example stays at least ``eps`` from a privacy set in the feature space of
  ``phi``; training adds ``--penalty`` (default 1) times the hinge
  ``relu(eps - min_j |phi(x~) - phi(p_j)|)`` per unrolled step, teaching
  repairs violating proposals (never emits one). Its pieces:

  - the privacy set is a random ``--privacy-fraction`` (default 0.1) of the
    training set, drawn with ``--teacher-seed``; the teacher's pool is the
    rest (the baselines still use the whole training set);
  - ``phi`` is the encoder mean of the pretrained VAE (the same cached VAE as
    ``--teacher vae``, :func:`~torchdht.linear.unrolled.vae_phi`: the means
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
  raw 28x28 samples (:meth:`~torchdht.linear.unrolled.GANTeacher.sample`)
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

In Python: ``run(ParameterizedConfig(...))`` returns a
:class:`~torchdht.experiments._parameterized_report.ParameterizedResult`; ``main(argv)``
is the command line. The settings and their checks are in
:mod:`torchdht.experiments._parameterized_config`, the teachers' builders in
:mod:`torchdht.experiments._parameterized_teachers`, the files, printout and pictures in
:mod:`torchdht.experiments._parameterized_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Sequence
from typing import Any

import torch

from ..linear.omniscient import LR
from ..linear.unrolled import PrivacyTeacher
from . import _core as core
from . import _linear as lin
from ._core.checks import flag
from ._parameterized_config import (
    BASELINES,
    GENERATIVE,
    HIDDEN,
    OWNERS,
    PAPER,
    QUICK,
    TEACHER_NAMES,
    VAE_LATENT,
    ParameterizedConfig,
    applies,
)
from ._parameterized_report import (
    ParameterizedResult,
    checkpoints,
    config_extras,
    plot,
    print_report,
    write_fit,
    write_privacy,
)
from ._parameterized_teachers import (
    TEACHERS,
    Problem,
    TeacherBuilder,
    baseline,
    inner,
    privacy_report,
    reseed,
)

__all__ = [
    "BASELINES",
    "DESCRIPTION",
    "TEACHERS",
    "ParameterizedConfig",
    "ParameterizedResult",
    "TeacherBuilder",
    "add_arguments",
    "config_from_args",
    "main",
    "run",
]

DESCRIPTION = (
    "Parameterized teaching of a linear learner on half-moon or MNIST 3/5: train a "
    "data-transformation, black-box, GAN, VAE or privacy-constrained teacher by unrolling, then "
    "teach against SGD, IMT and greedy DHT (paper sections 3.3, 5.1-5.3, Figures 4-10)."
)


def run(cfg: ParameterizedConfig) -> ParameterizedResult:
    """Train the teacher (or load it), teach with it and the baselines from every seed's
    ``w0``; write the files, print the report.

    Raises:
        FileNotFoundError: MNIST 3/5 without ``MNIST/raw`` under the data root.
        ValueError: ``load`` holds a teacher of another configuration (the message names
            the differing key), or the data cannot meet a setting.

    Example:
        >>> import tempfile
        >>> res = run(ParameterizedConfig(seeds=1, iters=4, outer_iters=2, unroll=3,
        ...     restarts=2, solver_steps=3, out=tempfile.mkdtemp(), plot=False,
        ...     progress=False, verbose=False))
        >>> [r["teacher"] for r in res.table], res.checkpoints, res.fit_loss is not None
        (['SGD', 'IMT', 'DHT-greedy', 'DHT-transform'], [4], True)
    """
    with core.torch_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: ParameterizedConfig) -> ParameterizedResult:
    learner = LR
    data64 = lin.load_data(cfg.dataset, cfg.data_root, learner)
    w_star64, fit_s = lin.fit_target(learner, data64, cfg.l2)
    data, w_star = data64.to(torch.float32), w_star64.to(torch.float32)
    star_acc = learner.accuracy(w_star, data.x_test, data.y_test)
    problem = Problem(data, learner, cfg.lr, w_star)

    # ------------------------------------------------------------ the learned teacher
    built = TEACHERS[cfg.teacher](problem, cfg)
    teacher = built.teacher
    fit = None
    if cfg.load:
        state = torch.load(cfg.load, map_location="cpu", weights_only=True)
        teacher.load_state_dict(state)  # a checkpoint of another configuration: ValueError
        teacher_s = 0.0
    else:
        fit = teacher.fit(cfg.outer_iters, progress=cfg.progress)
        teacher_s = float(fit.seconds)
    writer = core.Writer(cfg.folder)
    path = writer.path("teacher.pt")
    assert path is not None
    torch.save(teacher.state_dict(), path)
    if fit is not None:
        write_fit(writer, fit)

    # ------------------------------------------------------------------- teaching
    stats: list[dict[str, int]] = []  # the privacy teacher's counts before each seed

    def learned(seed: int) -> Any:
        reseed(teacher, seed)
        stats.append(dict(getattr(teacher, "stats", {})))
        return teacher

    makers = {row: functools.partial(baseline, n, problem, cfg=cfg)
              for n, row in zip(cfg.baselines, cfg.rows())}
    histories, wall = lin.teach(learner, w_star, data.dim, seeds=cfg.seeds, iters=cfg.iters,
                                lr=cfg.lr, test=(data.x_test, data.y_test),
                                teachers={**makers, cfg.row: learned})
    privacy, dists = None, None
    if isinstance(teacher, PrivacyTeacher):
        stats.append(dict(teacher.stats))
        repairs = [{k: v - before.get(k, 0) for k, v in after.items()}
                   for before, after in zip(stats, stats[1:])]
        privacy, dists = privacy_report(built, histories[cfg.row], repairs)

    # ---------------------------------------------------------------------- files
    points = checkpoints(cfg.iters)
    table = lin.summarise(histories, wall, points)
    fit_loss = None
    if fit is not None and len(fit.loss):
        fit_loss = (float(fit.loss[0]), float(fit.loss[-1]))
    core_teacher = inner(teacher)
    config = {
        **dataclasses.asdict(cfg),
        "learner": learner.name,
        "dtype": "float32",
        "dim": data.dim,
        "n_train": int(data.x.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "pool_size": int(core_teacher.x.shape[0]) if hasattr(core_teacher, "x") else None,
        "validation_size": (int(data.x.shape[0]) - int(teacher.x.shape[0])
                            if cfg.teacher == "blackbox" else None),
        "adam_betas": [0.9, 0.999],
        "w_star_recipe": f"fit_w_star: mean loss + {cfg.l2}/2 |w|^2, damped Newton (float64) "
        "to convergence, cast to float32; the same for every seed",
        "w_star_norm": float(w_star.norm()),
        "w_star_test_accuracy": star_acc,
        "w_star_fit_seconds": fit_s,
        "teacher_config": teacher.config(),
        "teacher_loaded_from": cfg.load,
        "teacher_train_seconds": teacher_s,
        "teacher_seconds_per_outer_iter": (teacher_s / cfg.outer_iters
                                           if fit is not None and cfg.outer_iters else None),
        "teacher_outer_iters_done": int(getattr(core_teacher, "iterations", cfg.outer_iters)),
        "fit_loss_start": None if fit_loss is None else fit_loss[0],
        "fit_loss_end": None if fit_loss is None else fit_loss[1],
        "wall_seconds": wall,
        **config_extras(cfg, built, fit),
    }
    if privacy is not None:
        config["privacy"] = privacy
    lin.write_results(writer, histories, cfg.iters)
    if dists is not None:
        write_privacy(writer, dists, float(teacher.eps))
    lin.write_summary(writer, table, points)
    writer.json("config.json", config)
    res = ParameterizedResult(table, points, wall, teacher_s, fit_loss, histories, teacher,
                              w_star, config, privacy, dists, cfg.folder)
    if cfg.verbose:
        print_report(cfg, res)
    if cfg.plot:
        plot(writer, cfg, res, data, built)
    return res


def _int_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options: the common ones and its own.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args(["--dataset", "mnist35", "--teacher", "blackbox"])
        >>> a.teacher, a.seeds, a.alpha, sorted(TEACHERS)
        ('blackbox', None, 0.0, ['blackbox', 'gan', 'privacy', 'transform', 'vae'])
        >>> c = config_from_args(a)
        >>> c.seeds, c.hidden, c.batch_norm
        (10, [128, 256, 512, 512, 1024], True)
    """
    d, q = PAPER, QUICK

    def preset(key: str, what: str) -> str:
        return core.preset_help(what, key, d, q)

    lin.add_arguments(p, d, q, out_help="(default: runs/parameterized-DATASET-TEACHER)",
                      quick_help=f"{q['seeds']} seeds, {q['iters']} iterations, "
                      f"{q['outer_iters']} outer iterations of {q['unroll']} unrolled steps, DHT "
                      f"{q['restarts']} restarts x {q['solver_steps']} steps, "
                      f"{q['vae_epochs']} VAE epochs (seconds on a CPU)")
    c = ParameterizedConfig
    p.add_argument("--teacher", choices=TEACHER_NAMES, default=c.teacher,
                   help="the parameterized teacher")
    g = p.add_argument_group("teacher training")
    g.add_argument("--outer-iters", type=int, default=None,
                   help=preset("outer_iters", "outer (Adam) iterations"))
    g.add_argument("--unroll", type=int, default=None,
                   help=preset("unroll", "unrolled SGD steps per outer iteration"))
    g.add_argument("--truncate", type=int, default=None,
                   help="back-propagate through the last N unrolled steps only (default: all)")
    g.add_argument("--alpha", type=float, default=c.alpha, help="weight of the auxiliary loss")
    g.add_argument("--trajectories", type=int, default=None,
                   help=f"learners unrolled in parallel (default: {d['trajectories']})")
    g.add_argument("--horizon", type=int, default=None,
                   help="steps after which a training learner restarts (default: --iters)")
    g.add_argument("--teacher-lr", type=float, default=c.teacher_lr,
                   help="Adam's learning rate (betas (0.9, 0.999))")
    g.add_argument("--grad-clip", type=float, default=None,
                   help="clip the policy's gradient norm (default: no clipping)")
    g.add_argument("--hidden", type=_int_list, default=None,
                   help="policy hidden sizes, comma-separated (default: "
                   f"{','.join(map(str, HIDDEN['halfmoon']))} on half-moon; "
                   f"{','.join(map(str, HIDDEN['mnist35']))} on MNIST)")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="batch norm in the policy (default: on for MNIST, off for half-moon)")
    g.add_argument("--residual", action="store_true",
                   help="the policy outputs a correction added to x")
    g.add_argument("--box", action="store_true",
                   help="squash the policy's examples into the training data's per-dimension "
                   "[min, max] box, greedy DHT's feasible set (transform, blackbox, privacy; "
                   "default: unconstrained, as in the paper)")
    g.add_argument("--teacher-seed", type=int, default=c.teacher_seed,
                   help="seed of the teacher's generator (not an evaluation seed)")
    g.add_argument("--load", default=None, metavar="PATH",
                   help="load a saved teacher.pt of the same configuration instead of training "
                   "(default: train)")
    v = p.add_argument_group("generative and privacy teachers (--teacher gan, vae, privacy)")
    gen = GENERATIVE
    for key, kind, what in (  # each option's teachers first, then what it sets and its default
            ("adv_weight", float, f"weight of the adversarial term (default: "
             f"{gen['adv_weight']:g})"),
            ("d_steps", int, f"discriminator steps per generator step (default: "
             f"{gen['d_steps']})"),
            ("kl_weight", float, f"weight of KL(pi || N(0, I)) (default: {gen['kl_weight']:g})"),
            ("vae_epochs", int, preset("vae_epochs", "VAE pretraining epochs")),
            ("vae_latent", int, f"the VAE's code size (default: {VAE_LATENT['halfmoon']} on "
             f"half-moon, {VAE_LATENT['mnist35']} on MNIST)"),
            ("cache_dir", str, f"where the pretrained VAE is cached (default: "
             f"{gen['cache_dir']}; not inside the data root)"),
            ("eps", float, "minimum phi-distance to the privacy set (default: the median "
             "phi-distance of a private example to its nearest public pool example)"),
            ("privacy_fraction", float, f"share of the training set that is private (default: "
             f"{gen['privacy_fraction']:g})"),
            ("penalty", float, f"weight of the hinge while training (default: "
             f"{gen['penalty']:g})")):
        v.add_argument(flag(key), type=kind, default=None,
                       help=f"{', '.join(OWNERS[key])}: {what}")
    b = p.add_argument_group("baselines")
    b.add_argument("--baselines", action=core.ListAction, default=list(BASELINES),
                   metavar="B,B,...", help="comma-separated, from " + ",".join(BASELINES)
                   + f", '' for none (default: {','.join(BASELINES)})")
    lin.add_dht_arguments(b, d, q, what="greedy DHT")


def config_from_args(args: argparse.Namespace) -> ParameterizedConfig:
    """The :class:`ParameterizedConfig` of parsed options (``ValueError`` if they do not
    check): ``--quick``'s presets where they apply to ``--teacher``, the paper's otherwise.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> c = config_from_args(p.parse_args(["--quick", "--teacher", "gan"]))
        >>> c.iters, c.outer_iters, c.adv_weight, c.vae_epochs
        (30, 40, 1.0, None)
    """
    if args.quick:
        core.fill_presets(args, {k: v for k, v in QUICK.items() if applies(k, args.teacher)})
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ParameterizedConfig)
             if f.name != "threads" and getattr(args, f.name, None) is not None}
    return ParameterizedConfig(**given, threads=args.threads or None, plot=not args.no_plots,
                               progress=not args.no_progress)


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments parameterized") -> int:
    """``python -m torchdht.experiments parameterized [options]``; returns the exit status (0,
    or 1 when it cannot run, e.g. no MNIST under the data root or a teacher.pt of another
    configuration)."""
    return core.run_main(sys.modules[__name__], argv, prog)


if __name__ == "__main__":
    from torchdht.experiments.parameterized import main as _main  # the importable copy

    sys.exit(_main(prog="python -m torchdht.experiments.parameterized"))
