"""Parameterized teaching of a linear learner (sections 3.3.1, 5.1, 5.2; appendix C.3-C.4, C.8-C.9).

``python -m torchdht.experiments parameterized --dataset {halfmoon,mnist35}
--teacher {transform,blackbox}`` first trains a parameterized teacher by
unrolling the learner's SGD (:class:`~torchdht.linear.TransformTeacher`: the
omniscient data-transformation policy ``x~ = pi(x, y, w_t, w_t - w*)`` scored
on ``|w_v - w*|^2``; :class:`~torchdht.linear.BlackBoxTeacher`: the same policy
without ``w*``, ``x~ = pi(x, y, w_t)``, scored on the learners' loss on
held-out validation data), then teaches the learner (default: binary
logistic regression, no bias) with it for ``--iters`` single-example SGD steps
of ``--lr`` (the paper's 1e-3) from ``--seeds`` initialisations, next to the
random teacher (SGD), IMT and greedy DHT from the same ``w0``, and writes under
``--out`` (default ``runs/parameterized-DATASET-TEACHER``):

* ``results.csv`` -- teacher, seed, iter, ``|w - w*|``, test accuracy;
* ``summary.csv`` -- mean and std over seeds at iterations 0, 50, 100, 300;
* ``convergence.png`` -- ``|w - w*|`` and test accuracy vs iteration, mean +- std;
* ``halfmoon_points.png`` (half-moon) -- like the paper's Figure 6: one panel
  per iteration 10, 150, 290 (seed 0) with the learned teacher's generated
  points at ``w_t`` coloured by label, the training data faded behind them,
  the ``w*`` line and the ``w_t`` line; ``mnist_samples.png`` (MNIST) -- a grid
  of the learned teacher's generated examples at a few iterations, mapped back
  to pictures with the pseudo-inverse of the projection;
* ``teacher.pt`` -- the learned teacher's ``state_dict()`` (``--load`` takes it back);
* ``teacher_fit.csv`` -- the outer loss per training iteration;
* ``config.json`` -- the settings, ``w*``'s test accuracy, the teacher's
  configuration, training time and outer loss at the start and end of
  training, the wall time of each teacher's teaching runs.

It prints a table at iterations 50, 100 and 300. Rows: ``SGD``, ``IMT``,
``DHT-greedy`` (:class:`~torchdht.linear.DHTTeacher` with the omniscient
experiment's solver: 16 restarts, 100 steps, step 0.02 of the box width) and
``DHT-TEACHER`` (the learned policy).

The paper's setting is the default: LR learner without bias, learner lr 1e-3,
300 teaching iterations, 10 seeds; the teacher trained for 1000 outer
iterations of 40 unrolled SGD steps (8 learners in parallel) with Adam, lr
2e-3, betas (0.9, 0.999), no auxiliary loss (``--alpha 0``); the policy an
MLP with hidden sizes (32, 16) on half-moon and (128, 256, 512, 512, 1024)
with batch normalisation on MNIST 3/5. The policy's input is ``[w, w - w*, x,
onehot(y)]`` (``[w, x, onehot(y)]`` for the black-box teacher): 8 (6) wide on
half-moon as in the paper, and 2*24 + 24 + 2 = 74 (50) on MNIST 3/5, where the
paper's 82 (58) comes from a 10-class one-hot label; ours is a 2-class one-hot,
as the learner has two classes.

Details:

* ``w*`` is fitted once on the whole training set in float64
  (:func:`~torchdht.linear.fit_w_star`, L2 1e-3) and cast to float32, like the
  data; everything else runs in float32. ``w0`` of evaluation seed ``s`` is
  ``LR.init(D, torch.Generator().manual_seed(s))``, as in the omniscient
  experiment; the teacher's own generator (policy initialisation, training
  learners, pool draws while training) is seeded with ``--teacher-seed``
  (default 10000, which must not be an evaluation seed). When teaching, the
  learned teacher's generator is reseeded with ``s``, so it draws the same pool
  rows to transform as the SGD teacher feeds for that seed (same pool).
* The black-box teacher's validation set is the last 20 % of the training set
  and its pool the rest; the test set is never used for training. ``|w - w*|``
  is still reported against the true ``w*``. SGD, IMT and greedy DHT use the
  whole training set as their pool (IMT and DHT know ``w*``).
* The training learners restart from a fresh random initialisation every
  ``--horizon`` steps (default: ``--iters``), so the policy is trained on the
  states it meets when teaching.
* ``--quick`` is a smoke setting (2 seeds, 30 iterations, 40 outer iterations
  of 10 unrolled steps, DHT 4 restarts x 20 steps) that takes seconds on a CPU;
  options given explicitly override it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..linear.learners import LR, LinearLearner, fit_w_star
from ..linear.parameterized import BlackBoxTeacher, TransformTeacher
from ..linear.runner import History, run
from ..linear.teachers import DHTTeacher, IMTTeacher, SGDTeacher
from .omniscient import _decision_line, _fmt, _plt

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
    "data-transformation (or black-box) teacher by unrolling, then teach against SGD, IMT and "
    "greedy DHT (paper sections 3.3.1, 5.1, 5.2, Figures 4 and 8)."
)
CHECKPOINTS = (50, 100, 300)
BASELINES = ("SGD", "IMT", "DHT")
"""The baseline teachers (``--baselines``); greedy DHT's row is ``DHT-greedy``."""
VALIDATION_FRACTION = 0.2
"""The black-box teacher's validation share: the last 20 % of the training set."""

PAPER = {
    "seeds": 10, "iters": 300, "outer_iters": 1000, "unroll": 40, "trajectories": 8,
    "restarts": 16, "solver_steps": 100,
}
"""The paper's setting (the defaults)."""
QUICK = {
    "seeds": 2, "iters": 30, "outer_iters": 40, "unroll": 10, "trajectories": 8,
    "restarts": 4, "solver_steps": 20,
}
"""``--quick``: a smoke setting that takes seconds."""
HIDDEN = {"halfmoon": (32, 16), "mnist35": (128, 256, 512, 512, 1024)}
"""The paper's policy MLP per data set (appendix C.3, C.4); MNIST with batch norm."""

TeacherBuilder = Callable[[LinearLearner, "dict[str, Any]", float, Tensor, argparse.Namespace],
                          Any]
"""``builder(learner, data, lr, w_star, args) -> teacher``: ``data`` has ``x``, ``y`` (the
training set, learner labels), ``x_test``, ``y_test``, ``classes`` (training class indices),
``projection`` (MNIST's ``P`` or None) and ``dataset``; ``args`` the parsed (resolved) options.
The teacher needs ``fit(iters, progress)``, ``propose(w)``, ``state_dict()``,
``load_state_dict(state)`` and ``config()``, like :class:`~torchdht.linear.TransformTeacher`."""


def _policy_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
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
                            **_policy_kwargs(args))


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
                           **_policy_kwargs(args))


TEACHERS: dict[str, TeacherBuilder] = {
    "transform": _build_transform,
    "blackbox": _build_blackbox,
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
    p.add_argument("--dataset", choices=("halfmoon", "mnist35"), default="halfmoon")
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
    g.add_argument("--teacher-seed", type=int, default=10_000,
                   help="seed of the teacher's generator (default: 10000; not an eval seed)")
    g.add_argument("--load", default=None, metavar="PATH",
                   help="load a saved teacher.pt instead of training (same configuration)")
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


def _resolve(args: argparse.Namespace) -> None:
    """Fill the options left at None from the paper's (or ``--quick``'s) setting; check them."""
    base = QUICK if args.quick else PAPER
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.horizon is None:
        args.horizon = args.iters
    if args.hidden is None:
        args.hidden = HIDDEN[args.dataset]
    args.hidden = list(args.hidden)
    if args.batch_norm is None:
        args.batch_norm = args.dataset == "mnist35"
    for key in ("seeds", "iters", "unroll", "trajectories", "horizon", "restarts",
                "solver_steps"):
        if getattr(args, key) < 1:
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
    gen = getattr(teacher, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)


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
        teacher), ``w_star``, ``config`` (what config.json holds) and ``out``.
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
    teacher = TEACHERS[args.teacher](learner, data, args.lr, w_star, args)
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
            wr.writerow(["outer_iter", "loss", "final", "aux"])
            for i in range(len(fit_hist.loss)):
                wr.writerow([i, f"{float(fit_hist.loss[i]):.8g}", f"{float(fit_hist.final[i]):.8g}",
                             f"{float(fit_hist.aux[i]):.8g}"])

    # --------------------------------------------------------------- teaching
    baselines = [n for n in args.baselines.split(",") if n]
    labels = [("DHT-greedy" if n == "DHT" else n) for n in baselines] + [name]
    histories: dict[str, list[History]] = {lab: [] for lab in labels}
    wall = {lab: 0.0 for lab in labels}
    test = (data["x_test"], data["y_test"])
    for seed in range(args.seeds):
        w0 = learner.init(dim, torch.Generator().manual_seed(seed), dtype=dtype)
        for base, label in zip(baselines, labels):
            t = _baseline(base, learner, w_star, data, seed, args)
            t0 = time.perf_counter()
            histories[label].append(run(t, learner, w0, w_star, args.iters, args.lr, test=test))
            wall[label] += time.perf_counter() - t0
        _reseed(teacher, seed)
        t0 = time.perf_counter()
        histories[name].append(run(teacher, learner, w0, w_star, args.iters, args.lr, test=test))
        wall[name] += time.perf_counter() - t0

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
    checkpoints = _checkpoints(args.iters)
    table = []
    for r in labels:
        dist = torch.stack([h.distance for h in histories[r]]).double()
        acc = torch.stack([h.accuracy for h in histories[r] if h.accuracy is not None])
        row: dict[str, Any] = {"teacher": r, "wall_s": wall[r]}
        for c in [0, *checkpoints]:
            row[f"dist_{c}"] = (float(dist[:, c].mean()), float(dist[:, c].std(unbiased=False)))
            row[f"acc_{c}"] = (float(acc[:, c].mean()), float(acc[:, c].std(unbiased=False)))
        table.append(row)
    with open(out / "summary.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["teacher", "iter", "dist_mean", "dist_std", "acc_mean", "acc_std", "wall_s"])
        for row in table:
            for c in [0, *checkpoints]:
                wr.writerow([row["teacher"], c, *row[f"dist_{c}"], *row[f"acc_{c}"],
                             f"{row['wall_s']:.3f}"])
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
        pool_size=int(teacher.x.shape[0]) if hasattr(teacher, "x") else None,
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
        teacher_outer_iters_done=int(getattr(teacher, "iterations", args.outer_iters)),
        fit_loss_start=None if fit_loss is None else fit_loss[0],
        fit_loss_end=None if fit_loss is None else fit_loss[1],
        wall_seconds=wall,
    )
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
        print(f"teacher: loaded from {args.load} ({teacher.iterations} outer iterations)")
    print(
        f"w*: L2 {args.l2:g}, |w*| = {float(w_star.norm()):.4f}, test accuracy {star_acc:.4f}; "
        f"|w0 - w*| = {_fmt(table[0]['dist_0'], 4)}, test accuracy at w0 "
        f"{_fmt(table[0]['acc_0'], 3)}"
    )
    head = ["teacher"] + [f"|w-w*| @{c}" for c in checkpoints] + [f"acc @{c}" for c in checkpoints]
    head.append("wall s")
    lines = [head]
    for row in table:
        lines.append(
            [row["teacher"]]
            + [_fmt(row[f"dist_{c}"], 4) for c in checkpoints]
            + [_fmt(row[f"acc_{c}"], 3) for c in checkpoints]
            + [f"{row['wall_s']:.1f}"]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    for i, r in enumerate(lines):
        print("  ".join(v.ljust(widths[j]) if j == 0 else v.rjust(widths[j])
                        for j, v in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"wrote {out}")

    if not args.no_plots:
        _plot_convergence(out / "convergence.png", histories, args)
        if args.dataset == "halfmoon":
            _plot_halfmoon(out / "halfmoon_points.png", teacher, histories[name][0], data,
                           w_star, name, args)
        elif data["projection"] is not None:
            _plot_mnist(out / "mnist_samples.png", teacher, histories[name][0], data, name, args)
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
        "out": out,
    }


# ------------------------------------------------------------------ pictures
def _plot_convergence(path: Path, histories: dict[str, list[History]],
                      args: argparse.Namespace) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    it = torch.arange(args.iters + 1).numpy()
    for n, hs in histories.items():
        style = "-" if n.startswith("DHT-") and n != "DHT-greedy" else "--"
        for ax, key in zip(axes, ("distance", "accuracy")):
            v = torch.stack([getattr(h, key) for h in hs]).double()
            m, sd = v.mean(0).numpy(), v.std(0, unbiased=False).numpy()
            line = ax.plot(it, m, style, label=n)[0]
            ax.fill_between(it, m - sd, m + sd, color=line.get_color(), alpha=0.15)
    axes[0].set_ylabel("|w - w*|")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"parameterized teaching ({args.teacher}), {args.dataset}, LR learner, lr {args.lr:g}, "
        f"mean ± std over {args.seeds} seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _generated(teacher: Any, w: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` of the teacher's proposals at the learner state ``w`` (fixed draws)."""
    _reseed(teacher, seed)
    pairs = [teacher.propose(w) for _ in range(n)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1].reshape(1) for p in pairs])


def _plot_halfmoon(path: Path, teacher: Any, h: History, data: dict[str, Any], w_star: Tensor,
                   name: str, args: argparse.Namespace) -> None:
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


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of the ``parameterized`` subcommand.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args(["--dataset", "mnist35", "--teacher", "blackbox"])
        >>> a.teacher, a.seeds, a.alpha, sorted(TEACHERS)
        ('blackbox', None, 0.0, ['blackbox', 'transform'])
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
