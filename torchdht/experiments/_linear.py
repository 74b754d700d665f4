"""What the omniscient and parameterized experiments share: the half-moon and MNIST 3/5
data, ``w*``, the teaching runs over seeds, the summary table, the files and the pictures
(the convergence curves, decision lines, grids of MNIST images).

Each teacher's run is :func:`torchdht.linear.omniscient.run` (one single-example SGD
step per iteration, ``|w - w*|`` and test accuracy recorded); :func:`teach` runs every
teacher from the same ``w0`` per seed (``learner.init`` from
``torch.Generator().manual_seed(seed)``), in the order given, and times each run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..linear.omniscient import History, LinearLearner, fit_w_star, run
from . import _core as core

__all__ = [
    "CHECKPOINTS",
    "DATASETS",
    "PAPER",
    "LinearConfig",
    "LinearData",
    "add_arguments",
    "add_dht_arguments",
    "decision_line",
    "fit_target",
    "format_summary",
    "headline",
    "image_grid",
    "load_data",
    "mean_std_text",
    "plot_convergence",
    "summarise",
    "target_line",
    "teach",
    "write_results",
    "write_summary",
]

CHECKPOINTS = (50, 100, 300)
"""The paper's table iterations."""
DATASETS = ("halfmoon", "mnist35")
PAPER = {"seeds": 10, "iters": 300, "restarts": 16, "solver_steps": 100}
"""The paper's setting of what both experiments have (greedy DHT's solver: restarts, steps)."""


@dataclass
class LinearConfig:
    """The settings both linear experiments have (checked on creation: ``ValueError``).

    Attributes:
        dataset: ``"halfmoon"`` (2-d) or ``"mnist35"`` (MNIST 3 vs 5 projected to 24-d)
            (default: "halfmoon").
        seeds: evaluation seeds ``0 .. seeds - 1`` (default: 10).
        iters: teaching iterations, single-example SGD steps (default: 300).
        lr: the learner's SGD learning rate (default: 1e-3, the paper's).
        l2: the L2 coefficient of ``w*`` (default: 1e-3).
        restarts: greedy DHT's random starts (default: 16).
        solver_steps: greedy DHT's solver steps (default: 100).
        solver_lr: greedy DHT's solver step, a fraction of the box width (default: 0.02).
        data_root: the folder holding ``MNIST/raw`` (default: None, the default root).
        out: the output folder (default: None, the experiment's own under ``runs/``).
        threads: torch CPU threads, None to leave them (default: 1; the tensors are
            small, and extra threads mostly add synchronisation).
        plot: write the PNGs (default: True).
        progress: progress output (default: True).
        verbose: print the report (default: True).

    Example:
        >>> LinearConfig(seeds=0)
        Traceback (most recent call last):
        ...
        ValueError: --seeds must be >= 1, got 0
    """

    dataset: str = "halfmoon"
    seeds: int = PAPER["seeds"]
    iters: int = PAPER["iters"]
    lr: float = 1e-3
    l2: float = 1e-3
    restarts: int = PAPER["restarts"]
    solver_steps: int = PAPER["solver_steps"]
    solver_lr: float = 0.02
    data_root: str | None = None
    out: str | None = None
    threads: int | None = 1
    plot: bool = True
    progress: bool = True
    verbose: bool = True

    def __post_init__(self) -> None:
        core.check_choice("dataset", self.dataset, DATASETS)
        core.check_rate(self, ["lr"], positive=True)
        core.check_rate(self, ["l2"], positive=False)
        core.check_min(self, ("seeds", "iters", "restarts", "solver_steps"), 1)


def add_arguments(p: argparse.ArgumentParser, defaults: Mapping[str, Any],
                  quick: Mapping[str, Any], *, out_help: str, quick_help: str) -> None:
    """The options both linear experiments have: the common ones, ``--dataset``, ``--lr``,
    ``--l2``, ``--no-plots`` and ``--threads``.

    Args:
        p: the parser.
        defaults: the paper's ``seeds`` and ``iters`` (and the experiment's other presets).
        quick: ``--quick``'s.
        out_help: the default output folder in words.
        quick_help: what ``--quick`` runs.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_arguments(p, {"seeds": 10, "iters": 300}, {"seeds": 2, "iters": 20},
        ...               out_help="(default: runs/x)", quick_help="a smoke run")
        >>> a = p.parse_args(["--dataset", "mnist35", "--threads", "0"])
        >>> a.dataset, a.lr, a.threads, a.seeds
        ('mnist35', 0.001, 0, None)
    """
    core.add_common_arguments(
        p, data="folder holding MNIST/raw (--dataset mnist35)", out=None, out_help=out_help,
        seeds=f"(default: {defaults['seeds']}; --quick: {quick['seeds']})",
        iters=core.preset_help("of single-example SGD", "iters", defaults, quick),
        quick=quick_help)
    p.add_argument("--dataset", choices=DATASETS, default="halfmoon",
                   help="half-moon (2-d) or MNIST 3 vs 5 projected to 24-d")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="the learner's SGD learning rate (the paper's)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 coefficient of w*")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, 0: leave (the tensors are small, and extra threads "
                   "mostly add synchronisation)")


def add_dht_arguments(g: Any, defaults: Mapping[str, Any], quick: Mapping[str, Any],
                      what: str = "DHT") -> None:
    """Greedy DHT's solver options: ``--restarts`` and ``--solver-steps`` (presets),
    ``--solver-lr``."""
    g.add_argument("--restarts", type=int, default=None,
                   help=core.preset_help(f"{what} random starts", "restarts", defaults, quick))
    g.add_argument("--solver-steps", type=int, default=None,
                   help=core.preset_help(f"{what} solver steps", "solver_steps", defaults,
                                         quick))
    g.add_argument("--solver-lr", type=float, default=0.02,
                   help=f"{what} solver step, a fraction of the box width")


@dataclass
class LinearData:
    """A data set for a linear learner.

    Attributes:
        dataset: ``"halfmoon"`` or ``"mnist35"``.
        x: training inputs (N, D); ``y``: their labels in the learner's form.
        x_test: test inputs; ``y_test``: their labels in the learner's form.
        classes: the training class indices (N,).
        projection: MNIST's projection ``P`` (784, D), or None (half-moon).
    """

    dataset: str
    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: Tensor
    projection: Tensor | None

    @property
    def dim(self) -> int:
        """The number of features ``D``."""
        return int(self.x.shape[1])

    def to(self, dtype: torch.dtype) -> LinearData:
        """The same data with every floating-point tensor cast to ``dtype``."""

        def cast(t: Tensor | None) -> Any:
            return t.to(dtype) if t is not None and t.is_floating_point() else t

        return replace(self, x=cast(self.x), y=cast(self.y), x_test=cast(self.x_test),
                       y_test=cast(self.y_test), projection=cast(self.projection))


def load_data(dataset: str, root: str | None, learner: LinearLearner, *,
              bias: bool = False) -> LinearData:
    """Half-moon or MNIST 3/5 in float64 (for ``w*``), labels in the learner's form.

    Args:
        dataset: ``"halfmoon"`` or ``"mnist35"``.
        root: MNIST's data root (None: the default root).
        learner: gives the labels (``learner.targets``; floating ones in float64).
        bias: append a constant feature.

    Example:
        >>> from torchdht.linear import LR
        >>> d = load_data("halfmoon", None, LR)
        >>> d.x.shape, d.y.dtype, d.classes[:3].tolist(), d.projection
        (torch.Size([800, 2]), torch.float64, [1, 1, 0], None)
    """
    if dataset == "halfmoon":
        from ..data.halfmoon import load_halfmoon

        s: Any = load_halfmoon(bias=bias, dtype=torch.float64)
        projection = None
    else:
        from ..data.mnist35 import load_mnist35

        s = load_mnist35(root=root, bias=bias, dtype=torch.float64)
        projection = s.projection
    y, y_test = learner.targets(s.y_train), learner.targets(s.y_test)
    if y.is_floating_point():
        y, y_test = y.to(s.x_train.dtype), y_test.to(s.x_train.dtype)
    return LinearData(dataset, s.x_train, y, s.x_test, y_test, s.y_train, projection)


def fit_target(learner: LinearLearner, data: LinearData, l2: float) -> tuple[Tensor, float]:
    """``w*`` (:func:`~torchdht.linear.fit_w_star` on the training set) and the seconds
    it took."""
    t0 = time.perf_counter()
    w_star = fit_w_star(learner, data.x, data.y, l2=l2)
    return w_star, time.perf_counter() - t0


def teach(
    learner: LinearLearner, w_star: Tensor, dim: int, *, seeds: int, iters: int, lr: float,
    test: tuple[Tensor, Tensor], teachers: Mapping[str, Callable[[int], Any]],
) -> tuple[dict[str, list[History]], dict[str, float]]:
    """Teach the learner with every teacher, from the same ``w0`` per seed.

    Args:
        learner: the learner.
        w_star: the target (its dtype is the runs' dtype).
        dim: the number of features.
        seeds: seeds ``0 .. seeds - 1``; ``w0`` of seed ``s`` is ``learner.init(dim,
            torch.Generator().manual_seed(s))``.
        iters: teaching iterations per run.
        lr: the learner's SGD learning rate.
        test: the test set the accuracy is measured on.
        teachers: name -> ``make(seed)``, the teacher of that seed (called before the
            run's clock starts), in the order they run within a seed.

    Returns:
        ``(histories, wall)``: name -> one :class:`~torchdht.linear.History` per seed,
        and name -> seconds spent in its runs.

    Example:
        >>> from torchdht.linear import LR, SGDTeacher
        >>> d = load_data("halfmoon", None, LR)
        >>> w_star, _ = fit_target(LR, d, 1e-3)
        >>> h, wall = teach(LR, w_star, d.dim, seeds=2, iters=3, lr=1e-3,
        ...                 test=(d.x_test, d.y_test),
        ...                 teachers={"SGD": lambda s: SGDTeacher(LR, (d.x, d.y), seed=s)})
        >>> len(h["SGD"]), h["SGD"][0].distance.shape, list(wall)
        (2, torch.Size([4]), ['SGD'])
    """
    histories: dict[str, list[History]] = {n: [] for n in teachers}
    wall = {n: 0.0 for n in teachers}
    for seed in range(seeds):
        w0 = learner.init(dim, torch.Generator().manual_seed(seed), dtype=w_star.dtype)
        for name, make in teachers.items():
            teacher = make(seed)
            t0 = time.perf_counter()
            histories[name].append(run(teacher, learner, w0, w_star, iters, lr, test=test))
            wall[name] += time.perf_counter() - t0
    return histories, wall


# ----------------------------------------------------------------------------- the table


def summarise(histories: Mapping[str, Sequence[History]], wall: Mapping[str, float],
              checkpoints: Sequence[int]) -> list[dict[str, Any]]:
    """Per teacher: ``teacher``, ``wall_s`` and ``dist_C`` / ``acc_C``, the mean and std
    (over seeds, population) of ``|w - w*|`` and test accuracy at iteration 0 and each
    checkpoint ``C``."""
    table = []
    for n, hs in histories.items():
        dist = torch.stack([h.distance for h in hs]).double()
        acc = torch.stack([h.accuracy for h in hs if h.accuracy is not None])
        row: dict[str, Any] = {"teacher": n, "wall_s": wall[n]}
        for c in [0, *checkpoints]:
            row[f"dist_{c}"] = (float(dist[:, c].mean()), float(dist[:, c].std(unbiased=False)))
            row[f"acc_{c}"] = (float(acc[:, c].mean()), float(acc[:, c].std(unbiased=False)))
        table.append(row)
    return table


def mean_std_text(mean_std: tuple[float, float], digits: int) -> str:
    """``"mean±std"``.

    Example:
        >>> mean_std_text((1.0, 0.25), 3)
        '1.000±0.250'
    """
    return f"{mean_std[0]:.{digits}f}±{mean_std[1]:.{digits}f}"


def format_summary(table: Sequence[Mapping[str, Any]], checkpoints: Sequence[int]) -> str:
    """One row per teacher: ``|w - w*|`` and accuracy (mean ± std) at the checkpoints.

    Example:
        >>> print(format_summary([{"teacher": "SGD", "dist_5": (1.0, 0.1), "acc_5": (0.5, 0.0),
        ...                        "wall_s": 0.2}], [5]))
        teacher |     |w-w*| @5 |      acc @5 | wall s
        --------+---------------+-------------+-------
        SGD     | 1.0000±0.1000 | 0.500±0.000 |    0.2
    """
    header = ["teacher", *(f"|w-w*| @{c}" for c in checkpoints),
              *(f"acc @{c}" for c in checkpoints), "wall s"]
    return core.format_table(header, (
        [row["teacher"], *(mean_std_text(row[f"dist_{c}"], 4) for c in checkpoints),
         *(mean_std_text(row[f"acc_{c}"], 3) for c in checkpoints), f"{row['wall_s']:.1f}"]
        for row in table))


def headline(what: str, dataset: str, learner: LinearLearner, dim: int, seeds: int, iters: int,
             lr: float) -> str:
    """The first printed line of a run."""
    return (f"{what}: {dataset}, learner {learner.name}, D={dim}, {seeds} seeds, {iters} "
            f"iterations, lr={lr:g}")


def target_line(l2: float, w_star: Tensor, accuracy: float,
                table: Sequence[Mapping[str, Any]]) -> str:
    """The printed line on ``w*`` and the start ``w0`` (the table's iteration 0)."""
    return (f"w*: L2 {l2:g}, |w*| = {float(w_star.norm()):.4f}, test accuracy {accuracy:.4f}; "
            f"|w0 - w*| = {mean_std_text(table[0]['dist_0'], 4)}, test accuracy at w0 "
            f"{mean_std_text(table[0]['acc_0'], 3)}")


# ----------------------------------------------------------------------------- files


def write_results(writer: core.Writer, histories: Mapping[str, Sequence[History]],
                  iters: int) -> None:
    """``results.csv``: teacher, seed, iter, ``|w - w*|``, test accuracy."""

    def rows() -> Any:
        for n, hs in histories.items():
            for seed, h in enumerate(hs):
                assert h.accuracy is not None
                for it in range(iters + 1):
                    yield {"teacher": n, "seed": seed, "iter": it,
                           "distance": float(h.distance[it]), "accuracy": float(h.accuracy[it])}

    writer.csv("results.csv", rows(), ("teacher", "seed", "iter", "distance", "accuracy"),
               formats={"distance": ".8g", "accuracy": ".6g"})


def write_summary(writer: core.Writer, table: Sequence[Mapping[str, Any]],
                  checkpoints: Sequence[int]) -> None:
    """``summary.csv``: per teacher and iteration (0 and the checkpoints), the mean and std
    of ``|w - w*|`` and accuracy, and the teacher's wall time."""
    rows = ({"teacher": row["teacher"], "iter": c, "dist_mean": row[f"dist_{c}"][0],
             "dist_std": row[f"dist_{c}"][1], "acc_mean": row[f"acc_{c}"][0],
             "acc_std": row[f"acc_{c}"][1], "wall_s": row["wall_s"]}
            for row in table for c in [0, *checkpoints])
    writer.csv("summary.csv", rows, ("teacher", "iter", "dist_mean", "dist_std", "acc_mean",
                                     "acc_std", "wall_s"), formats={"wall_s": ".3f"})


# ----------------------------------------------------------------------------- pictures


def plot_convergence(writer: core.Writer, histories: Mapping[str, Sequence[History]],
                     title: str, dashed: Callable[[str], bool] = lambda name: False) -> None:
    """``convergence.png``: ``|w - w*|`` and test accuracy against the iteration, mean ±
    std over seeds, one line per teacher (``dashed(name)`` picks the dashed ones)."""
    with writer.figure("convergence.png", 2, figsize=(11, 4)) as axes:
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
        axes[0].figure.suptitle(title)


def decision_line(ax: Any, w: Tensor, lim: tuple[float, float], **kw: Any) -> None:
    """Draw the line ``w . x = 0`` in 2-D (through the origin), or ``w0 x0 + w1 x1 + w2 = 0``
    (a bias feature); a softmax ``w`` (2, D) draws its class boundary."""
    w = w.flatten() if w.dim() == 1 else (w[1] - w[0])
    a, b = float(w[0]), float(w[1])
    c = float(w[2]) if w.numel() > 2 else 0.0
    xs = torch.linspace(lim[0], lim[1], 50)
    if abs(b) > 1e-12:
        ax.plot(xs.numpy(), (-(a * xs + c) / b).numpy(), **kw)
    elif abs(a) > 1e-12:
        ax.axvline(-c / a, **kw)


def image_grid(
    writer: core.Writer, name: str, rows: Sequence[tuple[str, Tensor, Sequence[str]]],
    title: str, *, figsize: tuple[float, float], dpi: int = 110,
    grey: tuple[float, float] | None = (-1.0, 1.0), label_size: int = 8, title_size: int = 8,
) -> None:
    """A grid of 28x28 images: one row per ``(label, images (k, 28, 28), titles)`` (titles
    may be empty strings), with the row's label on its left.

    Args:
        writer: writes the PNG ``name``.
        rows: the rows, all of the same length.
        title: the figure's title.
        figsize: the figure's size in inches.
        dpi: its resolution.
        grey: the grey scale ``(black, white)`` of every image, or None for each image on
            its own scale (its min and max).
        label_size: the font size of the row labels (the image titles: 7).
        title_size: the font size of the figure's title.
    """
    k = len(rows[0][1])
    with writer.figure(name, k, figsize=figsize, nrows=len(rows), dpi=dpi) as axes:
        for r, (label, images, titles) in enumerate(rows):
            for j in range(k):
                ax, img = axes[r * k + j], images[j].reshape(28, 28)
                lo, hi = grey if grey is not None else (float(img.min()), float(img.max()))
                ax.imshow(img.numpy(), cmap="gray", vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
                if titles[j]:
                    ax.set_title(titles[j], fontsize=7)
            axes[r * k].set_ylabel(label, fontsize=label_size)
        axes[0].figure.suptitle(title, fontsize=title_size)
