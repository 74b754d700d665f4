"""Omniscient teaching of a linear learner (section 5.1, Figure 3, appendix C.1-C.2).

``python -m torchdht.experiments omniscient --dataset {halfmoon,mnist35}``
teaches the learner (default: binary logistic regression, no bias) with the
random teacher (SGD), IMT, greedy DHT and their label-synthesis variants
(+Label), for ``--iters`` single-example SGD steps of ``--lr`` (the paper's
1e-3) from ``--seeds`` initialisations, and writes under ``--out``:

* ``results.csv`` -- teacher, seed, iter, ``|w - w*|``, test accuracy;
* ``summary.csv`` -- mean and std over seeds at the table's iterations;
* ``convergence.png`` -- ``|w - w*|`` and test accuracy vs iteration, mean +- std;
* ``halfmoon_points.png`` (half-moon) -- DHT's generated points (seed 0) with
  the decision lines of ``w*`` and of ``w_t`` at a few iterations;
  ``mnist_samples.png`` (MNIST) -- DHT's generated examples mapped back to
  pictures with the pseudo-inverse of the projection;
* ``config.json`` -- the settings, ``w*``'s recipe, its test accuracy, wall times.

It prints a table at iterations 50, 100 and 300. ``w*`` is the learner fitted
once on the training set (:func:`~torchdht.linear.fit_w_star`: L2 1e-3,
Newton to convergence, so the same for every seed); per seed only ``w0``
(Xavier-uniform from ``torch.Generator().manual_seed(seed)``) and the
teachers' sampling change. ``--quick`` is a smoke run (2 seeds, 20 iterations,
DHT 4 restarts x 20 steps); options given explicitly override it. The older
spelling ``--root`` (``--data-root``) is still accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..linear import omniscient as teaching
from ..linear.omniscient import History, LinearLearner
from . import _core as core
from . import _linear as lin

__all__ = ["DESCRIPTION", "EXTRA_TEACHERS", "TEACHERS", "OmniscientConfig", "OmniscientResult",
           "add_arguments", "config_from_args", "main", "run"]

DESCRIPTION = (
    "Omniscient teaching of a linear learner on half-moon or MNIST 3/5: SGD, IMT, greedy DHT "
    "and their +Label variants (paper section 5.1, Figure 3)."
)
TEACHERS = ("SGD", "IMT", "DHT", "SGD+Label", "IMT+Label", "DHT+Label")
"""The default teachers, in table order."""
EXTRA_TEACHERS = ("DHT-all", "DHT-all+Label", "Scaling")
"""Optional: DHT solving for every label and keeping the best; Theorem 1's scaling teacher."""
LEARNERS: dict[str, LinearLearner] = {
    "lr": teaching.LR, "lsr": teaching.LSR, "softmax": teaching.Softmax(2)}
"""``--learner`` name -> learner."""
DEFAULTS = lin.PAPER
"""The paper's setting."""
QUICK = {"seeds": 2, "iters": 20, "restarts": 4, "solver_steps": 20}
"""``--quick``: a smoke run."""


@dataclass
class OmniscientConfig(lin.LinearConfig):
    """The experiment's settings: those of
    :class:`~torchdht.experiments._linear.LinearConfig` (``dataset``, ``seeds``,
    ``iters``, ``lr``, ``l2``, DHT's ``restarts``, ``solver_steps`` and ``solver_lr``,
    ``data_root``, ``out`` (default: None, ``runs/omniscient-DATASET``), ``threads``,
    ``plot``, ``progress`` (this experiment has none), ``verbose``) and its own (checked
    on creation: ``ValueError``).

    Attributes:
        learner: ``"lr"`` (binary logistic regression), ``"lsr"`` (least squares on +-1)
            or ``"softmax"`` (2-class softmax regression) (default: "lr").
        teachers: the teachers, from :data:`TEACHERS` and :data:`EXTRA_TEACHERS`
            (default: :data:`TEACHERS`).
        label_norm: the +Label teachers' bound on the label (default: 2.0).
        c1: the scaling teacher's ``c1`` (default: 0.5).
        bias: append a constant feature (default: False).
    """

    learner: str = "lr"
    teachers: Sequence[str] = TEACHERS
    label_norm: float = 2.0
    c1: float = 0.5
    bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        core.check_choice("learner", self.learner, LEARNERS)
        self.teachers = list(self.teachers)
        for name in self.teachers:
            if name not in TEACHERS + EXTRA_TEACHERS:
                raise ValueError(f"--teachers: unknown teacher {name!r}; choose from "
                                 f"{', '.join(TEACHERS + EXTRA_TEACHERS)}")
        if not self.teachers:
            raise ValueError("--teachers: no teacher given")

    @property
    def folder(self) -> Path:
        """The output folder: ``out``, else ``runs/omniscient-DATASET``."""
        return Path(self.out) if self.out else Path("runs") / f"omniscient-{self.dataset}"


@dataclass
class OmniscientResult:
    """What :func:`run` returns.

    Attributes:
        histories: teacher -> one :class:`~torchdht.linear.History` per seed.
        wall: teacher -> seconds of teaching.
        table: the printed rows (``teacher``, ``wall_s``, ``dist_C`` / ``acc_C`` pairs
            (mean, std) for C in 0 and the checkpoints).
        checkpoints: the table's iterations.
        w_star: the target.
        config: what config.json holds.
        out: the output folder.
    """

    histories: dict[str, list[History]]
    wall: dict[str, float]
    table: list[dict[str, Any]]
    checkpoints: list[int]
    w_star: Tensor
    config: dict[str, Any]
    out: Path


def _make_teacher(name: str, learner: LinearLearner, w_star: Tensor, pool: tuple[Tensor, Tensor],
                  seed: int, cfg: OmniscientConfig) -> Any:
    base, plus = (name[: -len("+Label")], True) if name.endswith("+Label") else (name, False)
    if base == "SGD":
        t: Any = teaching.SGDTeacher(learner, pool, seed=seed)
    elif base == "IMT":
        t = teaching.IMTTeacher(learner, w_star, cfg.lr, pool)
    elif base in ("DHT", "DHT-all"):
        t = teaching.DHTTeacher(learner, w_star, cfg.lr, pool=pool, restarts=cfg.restarts,
                                steps=cfg.solver_steps, solver_lr=cfg.solver_lr,
                                labels="all" if base == "DHT-all" else "uniform", seed=seed)
    else:  # Scaling
        t = teaching.ScalingTeacher(learner, w_star, cfg.lr, pool, c1=cfg.c1, seed=seed)
    if plus:
        t = teaching.LabelSynthesis(t, learner, w_star, cfg.lr, norm=cfg.label_norm)
    return t


def _checks(table: list[dict[str, Any]], last: int) -> str | None:
    """The paper's orderings of the final ``|w - w*|``, one verdict each."""
    final = {row["teacher"]: row[f"dist_{last}"][0] for row in table}
    checks = []
    if {"SGD", "IMT", "DHT"} <= final.keys():
        ok = final["DHT"] < final["IMT"] < final["SGD"]
        checks.append(f"DHT < IMT < SGD at {last}: {'yes' if ok else 'NO'}")
    for base in ("SGD", "IMT", "DHT"):
        if {base, base + "+Label"} <= final.keys():
            ok = final[base + "+Label"] <= final[base]
            checks.append(f"{base}+Label <= {base}: {'yes' if ok else 'NO'}")
    return f"mean |w - w*| at iteration {last}: " + "; ".join(checks) if checks else None


def run(cfg: OmniscientConfig) -> OmniscientResult:
    """Teach with every teacher and seed; write the files, print the table.

    Raises:
        FileNotFoundError: MNIST 3/5 without ``MNIST/raw`` under the data root.

    Example:
        >>> import tempfile
        >>> res = run(OmniscientConfig(seeds=1, iters=3, teachers=["SGD", "IMT"],
        ...                            out=tempfile.mkdtemp(), plot=False, verbose=False))
        >>> [r["teacher"] for r in res.table], res.checkpoints, res.histories["IMT"][0].xs.shape
        (['SGD', 'IMT'], [3], torch.Size([3, 2]))
        >>> sorted(f.name for f in res.out.iterdir())
        ['config.json', 'results.csv', 'summary.csv']
    """
    with core.torch_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: OmniscientConfig) -> OmniscientResult:
    learner = LEARNERS[cfg.learner]
    data = lin.load_data(cfg.dataset, cfg.data_root, learner, bias=cfg.bias)
    w_star, fit_s = lin.fit_target(learner, data, cfg.l2)
    star_acc = learner.accuracy(w_star, data.x_test, data.y_test)
    pool = (data.x, data.y)
    histories, wall = lin.teach(
        learner, w_star, data.dim, seeds=cfg.seeds, iters=cfg.iters, lr=cfg.lr,
        test=(data.x_test, data.y_test),
        teachers={n: functools.partial(_make_teacher, n, learner, w_star, pool, cfg=cfg)
                  for n in cfg.teachers})
    checkpoints = [c for c in lin.CHECKPOINTS if c <= cfg.iters] or [cfg.iters]
    table = lin.summarise(histories, wall, checkpoints)
    config = {
        **dataclasses.asdict(cfg),
        "w_star_recipe": f"fit_w_star: mean loss + {cfg.l2}/2 |w|^2, damped Newton (float64) "
        "to convergence, from zeros; unique minimiser, the same for every seed",
        "w_star_norm": float(w_star.norm()), "w_star_test_accuracy": star_acc,
        "w_star_fit_seconds": fit_s, "wall_seconds": wall, "dim": data.dim,
        "n_train": int(data.x.shape[0]), "n_test": int(data.x_test.shape[0]),
    }
    writer = core.Writer(cfg.folder)
    lin.write_results(writer, histories, cfg.iters)
    lin.write_summary(writer, table, checkpoints)
    writer.json("config.json", config)
    if cfg.verbose:
        print(lin.headline("omniscient teaching", cfg.dataset, learner, data.dim, cfg.seeds,
                           cfg.iters, cfg.lr))
        print(lin.target_line(cfg.l2, w_star, star_acc, table))
        print(lin.format_summary(table, checkpoints))
        checks = _checks(table, checkpoints[-1])
        if checks:
            print(checks)
        print(f"wrote {writer.out}")
    if cfg.plot:
        lin.plot_convergence(
            writer, histories,
            f"omniscient teaching, {cfg.dataset}, {cfg.learner.upper()} learner, lr {cfg.lr:g}, "
            f"mean ± std over {cfg.seeds} seeds", dashed=lambda name: name.endswith("+Label"))
        name = next((n for n in ("DHT", "DHT+Label", "DHT-all") if n in histories), None)
        if name is not None and data.projection is None:
            _plot_halfmoon(writer, histories[name][0], name, data, w_star, cfg.iters)
        elif name is not None and data.projection is not None:
            _plot_mnist(writer, histories[name][0], name, data.x, data.projection)
    return OmniscientResult(histories, wall, table, checkpoints, w_star, config, cfg.folder)


def _plot_halfmoon(writer: core.Writer, h: History, name: str, data: lin.LinearData,
                   w_star: Tensor, iters: int) -> None:
    """``halfmoon_points.png``: the teacher's examples (seed 0) and the decision lines."""
    x = data.x
    with writer.figure("halfmoon_points.png", 1, figsize=(7, 5.5)) as (ax,):
        ax.scatter(x[:, 0], x[:, 1], c=data.classes.numpy(), cmap="coolwarm", s=8, alpha=0.25)
        ys = h.ys if h.ys.dim() == 1 else h.ys[:, 1] - h.ys[:, 0]
        sc = ax.scatter(h.xs[:, 0], h.xs[:, 1], c=torch.arange(h.xs.shape[0]).numpy(),
                        cmap="viridis", marker="x", s=30,
                        label=f"{name} examples (colour: iteration)")
        for sign, mk in ((1, "+"), (-1, "_")):
            sel = (ys * sign) > 0
            if bool(sel.any()):
                ax.scatter(h.xs[sel, 0], h.xs[sel, 1], marker=mk, color="k", s=60,
                           linewidths=0.8)
        lim = (float(x[:, 0].min()) - 0.3, float(x[:, 0].max()) + 0.3)
        lin.decision_line(ax, w_star, lim, color="k", lw=2.5, label="w*")
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        for t in sorted({0, iters // 3, 2 * iters // 3, iters}):
            lin.decision_line(ax, h.weights[t], lim, color=cmap(t / max(iters, 1)), lw=1.3,
                              ls="--", label=f"w_{t}")
        ax.set_xlim(*lim)
        ax.set_ylim(float(x[:, 1].min()) - 0.5, float(x[:, 1].max()) + 0.5)
        ax.figure.colorbar(sc, ax=ax, label="iteration")
        ax.legend(fontsize=7, loc="center left")
        ax.set_title(f"{name} on half-moon (seed 0); +/- marks the label fed")


def _plot_mnist(writer: core.Writer, h: History, name: str, x: Tensor,
                projection: Tensor) -> None:
    """``mnist_samples.png``: training images and the teacher's examples (seed 0), mapped
    back with the pseudo-inverse of the projection."""
    from ..data.mnist35 import unproject

    k = min(8, h.xs.shape[0])
    steps = torch.linspace(0, h.xs.shape[0] - 1, k).round().long()
    real = unproject(x[:k, : projection.shape[1]], projection)
    fed = unproject(h.xs[steps, : projection.shape[1]], projection)
    lin.image_grid(
        writer, "mnist_samples.png",
        [("training images, P^+ P x", real, [""] * k),
         (f"{name} x_t", fed, [f"t={int(s) + 1}" for s in steps])],
        "MNIST 3/5: features mapped back with the pseudo-inverse",
        figsize=(1.4 * k, 3.2), dpi=120, label_size=7, title_size=9)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options: the common ones (the older ``--root`` a hidden alias of
    ``--data-root``) and its own.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> config_from_args(p.parse_args(["--dataset", "mnist35"])).iters
        300
        >>> p.parse_args(["--root", "/data"]).data_root
        '/data'
    """
    q = QUICK
    lin.add_arguments(p, DEFAULTS, q, out_help="(default: runs/omniscient-DATASET)",
                      quick_help=f"{q['seeds']} seeds, {q['iters']} iterations, DHT "
                      f"{q['restarts']} restarts x {q['solver_steps']} steps")
    c = OmniscientConfig
    p.add_argument("--learner", choices=tuple(LEARNERS), default=c.learner,
                   help="lr: binary logistic regression; lsr: least squares on +-1; "
                   "softmax: 2-class softmax regression")
    p.add_argument("--teachers", action=core.ListAction, default=list(TEACHERS),
                   metavar="T,T,...", help="comma-separated, from "
                   + ",".join(TEACHERS + EXTRA_TEACHERS) + f" (default: {','.join(TEACHERS)})")
    lin.add_dht_arguments(p, DEFAULTS, q)
    p.add_argument("--label-norm", type=float, default=c.label_norm, help="+Label bound")
    p.add_argument("--c1", type=float, default=c.c1, help="scaling teacher's c1")
    p.add_argument("--bias", action="store_true", help="append a constant feature")
    core.add_aliases(p, {"data_root": ["--root"]})


def config_from_args(args: argparse.Namespace) -> OmniscientConfig:
    """The :class:`OmniscientConfig` of parsed options (``ValueError`` if they do not check)."""
    core.fill_presets(args, QUICK if args.quick else DEFAULTS)
    keys = ("dataset", "learner", "seeds", "iters", "lr", "l2", "teachers", "restarts",
            "solver_steps", "solver_lr", "label_norm", "c1", "bias", "data_root", "out")
    return OmniscientConfig(**{k: getattr(args, k) for k in keys}, threads=args.threads or None,
                            plot=not args.no_plots, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments omniscient") -> int:
    """``python -m torchdht.experiments omniscient [options]``; returns the exit status (0, or
    1 when it cannot run, e.g. no MNIST under the data root)."""
    return core.run_main(sys.modules[__name__], argv, prog)


if __name__ == "__main__":
    from torchdht.experiments.omniscient import main as _main  # the importable module's copy

    sys.exit(_main(prog="python -m torchdht.experiments.omniscient"))
