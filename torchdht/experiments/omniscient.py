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
teachers' sampling change.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..linear.omniscient import (
    LR,
    LSR,
    DHTTeacher,
    History,
    IMTTeacher,
    LabelSynthesis,
    LinearLearner,
    ScalingTeacher,
    SGDTeacher,
    Softmax,
    fit_w_star,
    run,
)

__all__ = ["DESCRIPTION", "TEACHERS", "add_arguments", "main", "plot_convergence", "print_table",
           "run_omniscient", "summarise"]

DESCRIPTION = (
    "Omniscient teaching of a linear learner on half-moon or MNIST 3/5: SGD, IMT, greedy DHT "
    "and their +Label variants (paper section 5.1, Figure 3)."
)
TEACHERS = ("SGD", "IMT", "DHT", "SGD+Label", "IMT+Label", "DHT+Label")
"""The default teachers, in table order."""
EXTRA_TEACHERS = ("DHT-all", "DHT-all+Label", "Scaling")
"""Optional: DHT solving for every label and keeping the best; Theorem 1's scaling teacher."""
CHECKPOINTS = (50, 100, 300)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options."""
    p.add_argument("--dataset", choices=("halfmoon", "mnist35"), default="halfmoon",
                   help="half-moon (2-d) or MNIST 3 vs 5 projected to 24-d")
    p.add_argument("--learner", choices=("lr", "lsr", "softmax"), default="lr",
                   help="LR: binary logistic regression (default); LSR: least squares on +-1; "
                   "softmax: 2-class softmax regression")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (default: 10)")
    p.add_argument("--iters", type=int, default=300, help="teaching iterations (default: 300)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="the learner's SGD learning rate (default: 1e-3, the paper's)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 coefficient of w* (default: 1e-3)")
    p.add_argument("--teachers", default=",".join(TEACHERS),
                   help="comma-separated, from " + ",".join(TEACHERS + EXTRA_TEACHERS))
    p.add_argument("--restarts", type=int, default=16, help="DHT random starts (default: 16)")
    p.add_argument("--solver-steps", type=int, default=100, help="DHT solver steps (default: 100)")
    p.add_argument("--solver-lr", type=float, default=0.02,
                   help="DHT solver step, a fraction of the box width (default: 0.02)")
    p.add_argument("--label-norm", type=float, default=2.0, help="+Label bound (default: 2)")
    p.add_argument("--c1", type=float, default=0.5, help="scaling teacher's c1 (default: 0.5)")
    p.add_argument("--bias", action="store_true", help="append a constant feature")
    p.add_argument("--data-root", dest="root", default=None, metavar="DIR",
                   help="MNIST root (default: $TORCHDHT_DATA or ../shared/data)")
    p.add_argument("--root", dest="root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="output folder (default: runs/omniscient-DATASET)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 seeds, 20 iterations, small DHT solves")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the tensors are tiny, and extra threads "
                   "only add synchronisation)")
    p.add_argument("--workers", type=int, default=1, choices=(1,), metavar="N",
                   help="parallel processes: this experiment runs in one, so only 1 (default: 1)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (this experiment shows no progress bar)")


def _learner(name: str) -> LinearLearner:
    return {"lr": LR, "lsr": LSR, "softmax": Softmax(2)}[name]


def _load(dataset: str, root: str | None, bias: bool) -> dict[str, Any]:
    if dataset == "halfmoon":
        from ..data.halfmoon import load_halfmoon

        s = load_halfmoon(bias=bias, dtype=torch.float64)
        return {"split": s, "projection": None}
    from ..data.mnist35 import load_mnist35

    m = load_mnist35(root=root, bias=bias, dtype=torch.float64)
    return {"split": m, "projection": m.projection}


def _make_teacher(
    name: str, learner: LinearLearner, w_star: Tensor, pool: tuple[Tensor, Tensor],
    seed: int, cfg: argparse.Namespace,
) -> Any:
    base_name, plus = (name[: -len("+Label")], True) if name.endswith("+Label") else (name, False)
    if base_name == "SGD":
        t: Any = SGDTeacher(learner, pool, seed=seed)
    elif base_name == "IMT":
        t = IMTTeacher(learner, w_star, cfg.lr, pool)
    elif base_name in ("DHT", "DHT-all"):
        t = DHTTeacher(
            learner, w_star, cfg.lr, pool=pool, restarts=cfg.restarts, steps=cfg.solver_steps,
            solver_lr=cfg.solver_lr, labels="all" if base_name == "DHT-all" else "uniform",
            seed=seed,
        )
    elif base_name == "Scaling":
        t = ScalingTeacher(learner, w_star, cfg.lr, pool, c1=cfg.c1, seed=seed)
    else:
        raise ValueError(
            f"--teachers: unknown teacher {name!r}; choose from "
            f"{', '.join(TEACHERS + EXTRA_TEACHERS)}"
        )
    if plus:
        t = LabelSynthesis(t, learner, w_star, cfg.lr, norm=cfg.label_norm)
    return t


def _fmt(mean_std: tuple[float, float], digits: int) -> str:
    return f"{mean_std[0]:.{digits}f}±{mean_std[1]:.{digits}f}"


def summarise(histories: dict[str, list[History]], names: Sequence[str],
              wall: dict[str, float], checkpoints: Sequence[int], path: Path) -> list[dict]:
    """Per teacher: ``|w - w*|`` and accuracy (mean, std over seeds) at iteration 0 and the
    checkpoints, plus ``wall_s``; written to ``path`` as CSV and returned as table rows."""
    table = []
    for n in names:
        dist = torch.stack([h.distance for h in histories[n]]).double()
        acc = torch.stack([h.accuracy for h in histories[n] if h.accuracy is not None])
        row: dict[str, Any] = {"teacher": n, "wall_s": wall[n]}
        for c in [0, *checkpoints]:
            row[f"dist_{c}"] = (float(dist[:, c].mean()), float(dist[:, c].std(unbiased=False)))
            row[f"acc_{c}"] = (float(acc[:, c].mean()), float(acc[:, c].std(unbiased=False)))
        table.append(row)
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["teacher", "iter", "dist_mean", "dist_std", "acc_mean", "acc_std", "wall_s"])
        for row in table:
            for c in [0, *checkpoints]:
                wr.writerow([row["teacher"], c, *row[f"dist_{c}"], *row[f"acc_{c}"],
                             f"{row['wall_s']:.3f}"])
    return table


def print_table(table: list[dict[str, Any]], checkpoints: Sequence[int]) -> None:
    """Print one row per teacher: ``|w - w*|`` and accuracy (mean ± std) at the checkpoints.

    Rows are dicts with ``teacher``, ``wall_s`` and ``dist_C`` / ``acc_C`` pairs
    ``(mean, std)`` for each checkpoint ``C``.

    Example:
        >>> print_table([{"teacher": "SGD", "dist_5": (1.0, 0.1), "acc_5": (0.5, 0.0),
        ...               "wall_s": 0.2}], [5])
        teacher      |w-w*| @5       acc @5  wall s
        -------  -------------  -----------  ------
        SGD      1.0000±0.1000  0.500±0.000     0.2
    """
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


def run_omniscient(cfg: argparse.Namespace) -> dict[str, Any]:
    """Run the experiment described by ``cfg`` (the parsed options); returns the results.

    Returns:
        A dict with ``histories`` (teacher -> list of :class:`History`, one per
        seed), ``wall`` (teacher -> seconds), ``table`` (the printed rows),
        ``out`` (the output folder) and ``w_star``.
    """
    if cfg.quick:
        cfg.seeds, cfg.iters = min(cfg.seeds, 2), min(cfg.iters, 20)
        cfg.restarts, cfg.solver_steps = min(cfg.restarts, 4), min(cfg.solver_steps, 20)
    if cfg.seeds < 1 or cfg.iters < 1:
        raise ValueError("--seeds and --iters must be >= 1")
    names = [n.strip() for n in cfg.teachers.split(",") if n.strip()]
    out = Path(cfg.out) if cfg.out else Path("runs") / f"omniscient-{cfg.dataset}"
    out.mkdir(parents=True, exist_ok=True)
    learner = _learner(cfg.learner)
    data = _load(cfg.dataset, cfg.root, cfg.bias)
    s = data["split"]
    x, xt = s.x_train, s.x_test
    y, yt = learner.targets(s.y_train), learner.targets(s.y_test)
    if y.is_floating_point():
        y, yt = y.to(x.dtype), yt.to(x.dtype)
    t0 = time.perf_counter()
    w_star = fit_w_star(learner, x, y, l2=cfg.l2)
    fit_s = time.perf_counter() - t0
    star_acc = learner.accuracy(w_star, xt, yt)
    pool = (x, y)
    for n in names:  # validate names before the long run
        _make_teacher(n, learner, w_star, pool, 0, cfg)
    dim = x.shape[1]
    histories: dict[str, list[History]] = {n: [] for n in names}
    wall = {n: 0.0 for n in names}
    for seed in range(cfg.seeds):
        w0 = learner.init(dim, torch.Generator().manual_seed(seed), dtype=x.dtype)
        for n in names:
            teacher = _make_teacher(n, learner, w_star, pool, seed, cfg)
            t0 = time.perf_counter()
            histories[n].append(run(teacher, learner, w0, w_star, cfg.iters, cfg.lr, test=(xt, yt)))
            wall[n] += time.perf_counter() - t0

    # ------------------------------------------------------------------ files
    with open(out / "results.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["teacher", "seed", "iter", "distance", "accuracy"])
        for n in names:
            for seed, h in enumerate(histories[n]):
                assert h.accuracy is not None
                for it in range(cfg.iters + 1):
                    wr.writerow([n, seed, it, f"{float(h.distance[it]):.8g}",
                                 f"{float(h.accuracy[it]):.6g}"])
    checkpoints = [c for c in CHECKPOINTS if c <= cfg.iters] or [cfg.iters]
    table = summarise(histories, names, wall, checkpoints, out / "summary.csv")
    config = {k: v for k, v in vars(cfg).items() if not k.startswith("_")}
    config.update(
        w_star_recipe=f"fit_w_star: mean loss + {cfg.l2}/2 |w|^2, damped Newton (float64) to "
        "convergence, from zeros; unique minimiser, the same for every seed",
        w_star_norm=float(w_star.norm()),
        w_star_test_accuracy=star_acc,
        w_star_fit_seconds=fit_s,
        wall_seconds=wall,
        dim=dim,
        n_train=int(x.shape[0]),
        n_test=int(xt.shape[0]),
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))

    # ------------------------------------------------------------------ print
    print(
        f"omniscient teaching: {cfg.dataset}, learner {learner.name}, D={dim}, "
        f"{cfg.seeds} seeds, {cfg.iters} iterations, lr={cfg.lr:g}"
    )
    print(
        f"w*: L2 {cfg.l2:g}, |w*| = {float(w_star.norm()):.4f}, test accuracy {star_acc:.4f}; "
        f"|w0 - w*| = {_fmt(table[0]['dist_0'], 4)}, test accuracy at w0 "
        f"{_fmt(table[0]['acc_0'], 3)}"
    )
    print_table(table, checkpoints)
    last = checkpoints[-1]
    final = {row["teacher"]: row[f"dist_{last}"][0] for row in table}
    checks = []
    if {"SGD", "IMT", "DHT"} <= final.keys():
        ok = final["DHT"] < final["IMT"] < final["SGD"]
        checks.append(f"DHT < IMT < SGD at {last}: {'yes' if ok else 'NO'}")
    for base in ("SGD", "IMT", "DHT"):
        if {base, base + "+Label"} <= final.keys():
            ok = final[base + "+Label"] <= final[base]
            checks.append(f"{base}+Label <= {base}: {'yes' if ok else 'NO'}")
    if checks:
        print("mean |w - w*| at iteration " + str(last) + ": " + "; ".join(checks))
    print(f"wrote {out}")

    if not cfg.no_plots:
        plot_convergence(
            out / "convergence.png", histories,
            f"omniscient teaching, {cfg.dataset}, {cfg.learner.upper()} learner, lr {cfg.lr:g}, "
            f"mean ± std over {cfg.seeds} seeds",
            dashed=lambda name: name.endswith("+Label"),
        )
        if cfg.dataset == "halfmoon":
            _plot_halfmoon(out / "halfmoon_points.png", histories, x, s.y_train, w_star, cfg)
        elif data["projection"] is not None:
            _plot_mnist(out / "mnist_samples.png", histories, x, data["projection"], cfg)
    return {"histories": histories, "wall": wall, "table": table, "out": out, "w_star": w_star}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(
    path: Path,
    histories: dict[str, list[History]],
    title: str,
    dashed: Callable[[str], bool] = lambda name: False,
) -> None:
    """``|w - w*|`` and test accuracy against the iteration, mean ± std over seeds, one line
    per teacher (``dashed(name)`` picks the dashed ones); saved as a PNG at ``path``."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, hs in histories.items():
        style = "--" if dashed(n) else "-"
        for ax, key in zip(axes, ("distance", "accuracy")):
            v = torch.stack([getattr(h, key) for h in hs]).double()
            it = torch.arange(v.shape[1]).numpy()
            m, sd = v.mean(0).numpy(), v.std(0, unbiased=False).numpy()
            line = ax.plot(it, m, style, label=n)[0]
            ax.fill_between(it, m - sd, m + sd, color=line.get_color(), alpha=0.15)
    axes[0].set_ylabel("|w - w*|")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _decision_line(ax: Any, w: Tensor, lim: tuple[float, float], **kw: Any) -> None:
    """The line ``w . x = 0`` in 2-D (through the origin), or ``w0 x0 + w1 x1 + w2 = 0``."""
    w = w.flatten() if w.dim() == 1 else (w[1] - w[0])
    a, b = float(w[0]), float(w[1])
    c = float(w[2]) if w.numel() > 2 else 0.0
    xs = torch.linspace(lim[0], lim[1], 50)
    if abs(b) > 1e-12:
        ax.plot(xs.numpy(), (-(a * xs + c) / b).numpy(), **kw)
    elif abs(a) > 1e-12:
        ax.axvline(-c / a, **kw)


def _plot_halfmoon(
    path: Path, histories: dict[str, list[History]], x: Tensor, classes: Tensor,
    w_star: Tensor, cfg: argparse.Namespace,
) -> None:
    name = next((n for n in ("DHT", "DHT+Label", "DHT-all") if n in histories), None)
    if name is None:
        return
    plt = _plt()
    h = histories[name][0]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.scatter(x[:, 0], x[:, 1], c=classes.numpy(), cmap="coolwarm", s=8, alpha=0.25)
    ys = h.ys if h.ys.dim() == 1 else h.ys[:, 1] - h.ys[:, 0]
    sc = ax.scatter(h.xs[:, 0], h.xs[:, 1], c=torch.arange(h.xs.shape[0]).numpy(), cmap="viridis",
                    marker="x", s=30, label=f"{name} examples (colour: iteration)")
    for sign, mk in ((1, "+"), (-1, "_")):
        sel = (ys * sign) > 0
        if bool(sel.any()):
            ax.scatter(h.xs[sel, 0], h.xs[sel, 1], marker=mk, color="k", s=60, linewidths=0.8)
    lim = (float(x[:, 0].min()) - 0.3, float(x[:, 0].max()) + 0.3)
    _decision_line(ax, w_star, lim, color="k", lw=2.5, label="w*")
    marks = sorted({0, cfg.iters // 3, 2 * cfg.iters // 3, cfg.iters})
    cmap = plt.get_cmap("viridis")
    for t in marks:
        _decision_line(ax, h.weights[t], lim, color=cmap(t / max(cfg.iters, 1)), lw=1.3, ls="--",
                       label=f"w_{t}")
    ax.set_xlim(*lim)
    ax.set_ylim(float(x[:, 1].min()) - 0.5, float(x[:, 1].max()) + 0.5)
    fig.colorbar(sc, ax=ax, label="iteration")
    ax.legend(fontsize=7, loc="center left")
    ax.set_title(f"{name} on half-moon (seed 0); +/- marks the label fed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_mnist(
    path: Path, histories: dict[str, list[History]], x: Tensor, projection: Tensor,
    cfg: argparse.Namespace,
) -> None:
    from ..data.mnist35 import unproject

    name = next((n for n in ("DHT", "DHT+Label", "DHT-all") if n in histories), None)
    if name is None:
        return
    plt = _plt()
    h = histories[name][0]
    k = min(8, h.xs.shape[0])
    steps = torch.linspace(0, h.xs.shape[0] - 1, k).round().long()
    feats = h.xs[steps, : projection.shape[1]]
    real = x[:k, : projection.shape[1]]
    imgs = [unproject(real, projection), unproject(feats, projection)]
    fig, axes = plt.subplots(2, k, figsize=(1.4 * k, 3.2), squeeze=False)
    for r, (row, label) in enumerate(zip(imgs, ("training images, P^+ P x", f"{name} x_t"))):
        for j in range(k):
            ax = axes[r][j]
            ax.imshow(row[j].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 1:
                ax.set_title(f"t={int(steps[j]) + 1}", fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=7)
    fig.suptitle("MNIST 3/5: features mapped back with the pseudo-inverse", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of the ``omniscient`` subcommand.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--dataset", "mnist35"]).iters
        300
    """
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise SystemExit(f"--lr must be > 0, got {args.lr}")
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return run_omniscient(args)
    finally:
        torch.set_num_threads(threads)
