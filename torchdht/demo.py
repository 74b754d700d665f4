"""The torchdht demo: plain SGD against performative teaching on a small MLP.

``python -m torchdht demo`` trains the same two-layer MLP with five methods,
on the same seeds, initialisations and data order, and compares their test
accuracy and their cost per training step:

========================  ===================================================
``sgd``                   plain training (the teacher is attached with
                          ``policy="none"``: features pass through untouched)
``random``                a uniform draw from the same cap (the paper's
                          ablation, ``policy="random"``)
``dht``                   the greedy teacher, the clean algorithm
                          (``policy="greedy"``)
``dht-released``          the greedy teacher as in the authors' released code
                          (``lookahead_encoder_grad=True``)
``random-released``       a control: the released code's extra encoder
                          gradient with the ``random`` draw
========================  ===================================================

The data need no download: scikit-learn's ``load_digits`` (1,797 8x8 digits)
by default, or MNIST from a local folder (``--data-root`` or the
``TORCHDHT_DATA`` environment variable) read with ``torchvision`` and
``download=False``. The results go to a printed table, ``results.csv`` and
``accuracy.png`` in the output folder. ``--quick`` runs 200 iterations on 2 seeds;
``--help`` lists the options and their defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .data import DATA_ENV_VAR
from .experiments import _core as core
from .performative import PerformativeTeacher

__all__ = [
    "DATA_ENV_VAR", "DESCRIPTION", "METHODS", "RANDOM_NOTE", "DemoConfig", "DemoData",
    "add_arguments", "config_from_args", "format_table", "load_data", "main", "run",
]

DESCRIPTION = (
    "Train a small MLP with plain SGD (sgd), a random perturbation in the teacher's cap "
    "(random), the greedy teacher (dht), the greedy teacher as in the authors' released code "
    "(dht-released) and a control, that code's extra encoder gradient with the random "
    "perturbation (random-released), on the same seeds and data order; print test accuracy "
    "and time per step, write results.csv and accuracy.png. Uses scikit-learn's digits (no "
    "download) unless an MNIST folder is given."
)

METHODS: dict[str, dict[str, Any]] = {
    "sgd": {"policy": "none"},
    "random": {"policy": "random"},
    "dht": {"policy": "greedy"},
    "dht-released": {"policy": "greedy", "lookahead_encoder_grad": True},
    # Control: the released code's extra encoder gradient without the greedy teacher.
    "random-released": {"policy": "random", "lookahead_encoder_grad": True},
}
"""The demo's methods: name -> keyword arguments of :class:`PerformativeTeacher`."""

RANDOM_NOTE = (
    "random tracks sgd by design: it moves each feature to a uniformly drawn point of the same "
    "cap, which changes the gradient little on average (the paper's ablation, a control for dht)."
)
"""The line printed under the table (with ``random`` and ``sgd``): why the two rows agree."""

DEFAULTS = {"iters": 3000, "seeds": 3}
"""The full demo's length."""
QUICK = {"iters": 200, "seeds": 2}
"""``--quick``: a run of seconds."""

_CSV_FIELDS = (
    "method", "policy", "lookahead_encoder_grad", "dataset", "n_seeds", "iters",
    "test_acc_mean", "test_acc_std", "test_acc_per_seed", "early_iter", "early_acc_mean",
    "ms_per_step_mean", "ms_per_step_std", "time_vs_sgd", "angle_mean_rad",
)
_CSV_FORMATS = {"test_acc_mean": ".4f", "test_acc_std": ".4f", "angle_mean_rad": ".4f",
                "ms_per_step_mean": ".5f", "ms_per_step_std": ".5f", "time_vs_sgd": ".4f"}


@dataclass
class DemoConfig:
    """The demo's settings (checked on creation: ``ValueError``).

    Every method uses the same seeds ``0 .. seeds-1``; for a given seed all methods start
    from the same initialisation and see the same batches.

    Attributes:
        iters: training iterations per run (default: 3000).
        seeds: number of seeds per method (default: 3).
        lr: SGD learning rate, also the teacher's ``eta`` (default: 0.05).
        batch_size: examples per batch (default: 64).
        eps: chord radius of the teacher's cap (default: 0.1).
        eval_every: iterations between test evaluations (default: None, ``iters // 30``,
            at least 1); the last iteration is always evaluated.
        hidden: width of the MLP's hidden layer (default: 128).
        methods: subset of :data:`METHODS`, in the order to report (default: all).
        data_root: folder holding ``MNIST/raw/`` to use MNIST (default: None,
            scikit-learn's digits). See :func:`load_data`.
        out: folder for ``results.csv`` and ``accuracy.png`` (default: ``runs/demo``;
            None writes nothing).
        threads: torch threads during the run, restored afterwards (default: 1, the
            fastest for these small matrices and steady timings on a busy machine; None
            leaves torch's setting).
        progress: a progress bar (only when stderr is a terminal, or in a notebook).
        echo: print the table (and where the files went) when done.
    """

    iters: int = DEFAULTS["iters"]
    seeds: int = DEFAULTS["seeds"]
    lr: float = 0.05
    batch_size: int = 64
    eps: float = 0.1
    eval_every: int | None = None
    hidden: int = 128
    methods: Sequence[str] = tuple(METHODS)
    data_root: str | os.PathLike[str] | None = None
    out: str | os.PathLike[str] | None = "runs/demo"
    threads: int | None = 1
    progress: bool = True
    echo: bool = True
    points: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got "
                             f"{list(self.methods)}")
        for name in ("iters", "seeds", "batch_size", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")
        if self.eval_every is None:
            self.eval_every = max(1, self.iters // 30)
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be a positive int, got {self.eval_every!r}")
        self.points = core.eval_points(self.iters, self.eval_every)


@dataclass
class DemoData:
    """A classification data set held in memory as tensors.

    Attributes:
        name: ``"digits"`` or ``"mnist"``.
        x_train: float32 features of shape (N_train, D).
        y_train: int64 labels of shape (N_train,).
        x_test: float32 features of shape (N_test, D).
        y_test: int64 labels of shape (N_test,).
        num_classes: number of classes ``C``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int


def _load_digits() -> DemoData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=450, stratify=y, random_state=0)
    x_train = torch.as_tensor(x_tr, dtype=torch.float32)
    x_test = torch.as_tensor(x_te, dtype=torch.float32)
    mean = x_train.mean(0)
    std = x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant border pixels
    return DemoData(
        name="digits",
        x_train=(x_train - mean) / std,
        y_train=torch.as_tensor(y_tr, dtype=torch.int64),
        x_test=(x_test - mean) / std,
        y_test=torch.as_tensor(y_te, dtype=torch.int64),
        num_classes=10,
    )


def load_data(data_root: str | os.PathLike[str] | None = None) -> DemoData:
    """Load the demo's data set.

    Args:
        data_root: folder holding ``MNIST/raw/`` (or that ``MNIST`` folder) to train on
            MNIST, read with ``torchvision.datasets.MNIST(..., download=False)``,
            flattened and scaled to [0, 1] (:func:`~torchdht.experiments._core.load_mnist`
            with ``normalize=False``); None for scikit-learn's ``load_digits``
            (standardised with the training set's statistics, fixed stratified split of
            1,347 training and 450 test images).

    Returns:
        A :class:`DemoData`.

    Raises:
        FileNotFoundError: ``data_root`` is given but holds no ``MNIST/raw/``.
    """
    if data_root is None:
        return _load_digits()
    return DemoData("mnist", *core.load_mnist(data_root, normalize=False), num_classes=10)


def _batch_order(n: int, batch_size: int, iters: int, seed: int) -> Tensor:
    """Indices of ``iters`` full batches: consecutive epochs of seeded permutations."""
    gen = torch.Generator().manual_seed(seed)
    need = iters * batch_size
    perms = [torch.randperm(n, generator=gen) for _ in range(math.ceil(need / n))]
    return torch.cat(perms)[:need].view(iters, batch_size)


def _train_one(data: DemoData, method: str, seed: int, cfg: DemoConfig,
               on_step: Callable[[], None]) -> dict[str, Any]:
    """One training run; returns its accuracy curve, timing and mean angle."""
    with core.seeded(seed):  # same initialisation for every method
        model = nn.Sequential(nn.Linear(data.x_train.shape[1], cfg.hidden), nn.ReLU(),
                              nn.Linear(cfg.hidden, data.num_classes))
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        teacher = PerformativeTeacher(model[-1], optimizer=opt, eps=cfg.eps, seed=seed,
                                      **METHODS[method])
        order = _batch_order(len(data.x_train), cfg.batch_size, cfg.iters, seed)
        curve: list[float] = []
        last: dict[str, Any] = {"angle_sum": 0.0}

        def after_step(it: int, loss: Tensor, _: Any) -> None:
            last["loss"] = loss
            last["angle_sum"] += teacher.stats["angle_mean"]
            on_step()

        model.train()
        try:
            stats = core.train_loop(
                cfg.iters, core.cross_entropy_step(model, opt, teacher.set_targets),
                fetch=lambda it: (data.x_train[order[it]], data.y_train[order[it]]),
                eval_at=set(cfg.points), callbacks=[after_step],
                evaluate=lambda it, _: curve.append(
                    core.accuracy(model, data.x_test, data.y_test, chunk=4096)))
        finally:
            teacher.remove()
    final_loss = last["loss"].item()
    if not math.isfinite(final_loss):
        raise FloatingPointError(f"{method} (seed {seed}) diverged: final loss {final_loss}")
    return {
        "curve": curve,
        "final_acc": curve[-1],
        "ms_per_step": 1000.0 * stats.step_seconds / max(cfg.iters, 1),
        "angle_mean": last["angle_sum"] / max(cfg.iters, 1),
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render the rows returned by :func:`run` as an aligned text table.

    Args:
        rows: the results, one dict per method.

    Returns:
        The table, followed by a line naming the method with the best mean
        test accuracy.
    """
    n_seeds = rows[0]["n_seeds"] if rows else 0
    header = (
        "method",
        f"test acc % (mean ± std, {n_seeds} seed{'s' if n_seeds != 1 else ''})",
        f"acc @ it {rows[0]['early_iter'] if rows else 0}",
        "ms/step",
        "time vs sgd",
        "angle moved (rad)",
    )
    body = [(r["method"], f"{r['test_acc_mean']:6.2f} ± {r['test_acc_std']:.2f}",
             f"{r['early_acc_mean']:.2f}", f"{r['ms_per_step_mean']:.3f}",
             "-" if r["time_vs_sgd"] is None else f"{r['time_vs_sgd']:.2f}x",
             "-" if r["policy"] == "none" else f"{r['angle_mean_rad']:.4f}") for r in rows]
    out = [core.format_table(header, body)]
    if rows:
        best = max(r["test_acc_mean"] for r in rows)
        winners = [r for r in rows if r["test_acc_mean"] == best]
        names = " and ".join(r["method"] for r in winners)
        msg = f"Best mean test accuracy: {names} ({best:.2f}%)"
        sgd = next((r for r in rows if r["method"] == "sgd"), None)
        if sgd is not None and sgd not in winners:
            gap = best - sgd["test_acc_mean"]
            spread = max(r["test_acc_std"] for r in rows)
            msg += f", {gap:+.2f} points over sgd (largest std across methods: {spread:.2f})"
        out.append(msg + ".")
    return "\n".join(out)


def _plot(writer: core.Writer, rows: Sequence[dict[str, Any]], xs: Sequence[int],
          title: str) -> None:
    with writer.figure("accuracy.png") as (ax,):
        for r in rows:
            curves = torch.tensor(r["curves"], dtype=torch.float64)  # (seeds, points)
            mean = curves.mean(0)
            std = curves.std(0, unbiased=True) if len(curves) > 1 else torch.zeros_like(mean)
            (ln,) = ax.plot(xs, mean.tolist(), label=r["method"], linewidth=1.6)
            ax.fill_between(xs, (mean - std).tolist(), (mean + std).tolist(),
                            color=ln.get_color(), alpha=0.2, linewidth=0)
        finals = [r["test_acc_mean"] for r in rows]
        lo = min(min(r["curves"][s][len(xs) // 8] for s in range(r["n_seeds"])) for r in rows)
        ax.set_ylim(max(0.0, min(lo, min(finals)) - 2.0), 100.0)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")


def run(cfg: DemoConfig) -> list[dict[str, Any]]:
    """Train the MLP with each method and seed, then report and save the results.

    Every method uses the same seeds; for a given seed all methods start from the same
    initialisation (:func:`~torchdht.experiments._core.seeded`) and see the same batches
    (a ``torch.Generator`` seeded with the seed). Only the training steps
    (``set_targets``, forward, backward, optimizer step) are timed, with
    ``time.perf_counter``.

    Args:
        cfg: the settings.

    Returns:
        One dict per method with ``method``, ``policy``, ``lookahead_encoder_grad``,
        ``dataset``, ``n_seeds``, ``iters``, ``test_acc_mean``, ``test_acc_std`` and
        ``test_acc_per_seed`` (final test accuracy in %; std over seeds, 0 for one seed),
        ``early_iter`` and ``early_acc_mean`` (about a tenth of the run),
        ``ms_per_step_mean`` and ``ms_per_step_std``, ``time_vs_sgd`` (ratio of mean
        ms/step to ``sgd``'s, None without ``sgd``), ``angle_mean_rad`` (mean of
        ``teacher.stats["angle_mean"]`` over all steps and seeds), ``curves`` (test
        accuracy per seed at each ``eval_points`` iteration) and ``eval_points``.

    Raises:
        FileNotFoundError: ``cfg.data_root`` holds no ``MNIST/raw/``.
        ValueError: ``cfg.batch_size`` exceeds the training set.
        FloatingPointError: a run diverged (try a smaller ``lr``).
    """
    data = load_data(cfg.data_root)
    if cfg.batch_size > len(data.x_train):
        raise ValueError(
            f"batch_size {cfg.batch_size} exceeds the {len(data.x_train)} training examples"
        )
    points = cfg.points
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.methods}
    with core.torch_threads(cfg.threads) as threads:
        bar = core.progress_bar(len(cfg.methods) * cfg.seeds * cfg.iters, cfg.progress,
                           f"demo ({data.name})")
        try:
            for seed in range(cfg.seeds):  # interleave methods: machine noise hits all alike
                for method in cfg.methods:
                    bar.set_postfix_str(f"{method}, seed {seed}")
                    runs[method].append(_train_one(data, method, seed, cfg, bar.update))
        finally:
            bar.close()

    rows: list[dict[str, Any]] = []
    # An early checkpoint (about a tenth of the run) shows speed of learning,
    # which the final accuracy hides once every method has converged.
    early = min(range(len(points)), key=lambda i: abs(points[i] - cfg.iters / 10))
    for method in cfg.methods:
        rs = runs[method]
        acc_mean, acc_std = core.mean_std([r["final_acc"] for r in rs])
        ms_mean, ms_std = core.mean_std([r["ms_per_step"] for r in rs])
        rows.append({
            "method": method,
            "policy": METHODS[method]["policy"],
            "lookahead_encoder_grad": bool(METHODS[method].get("lookahead_encoder_grad", False)),
            "dataset": data.name,
            "n_seeds": cfg.seeds,
            "iters": cfg.iters,
            "test_acc_mean": acc_mean,
            "test_acc_std": acc_std,
            "test_acc_per_seed": [r["final_acc"] for r in rs],
            "early_iter": points[early],
            "early_acc_mean": statistics.fmean(r["curve"][early] for r in rs),
            "ms_per_step_mean": ms_mean,
            "ms_per_step_std": ms_std,
            "time_vs_sgd": None,
            "angle_mean_rad": statistics.fmean(r["angle_mean"] for r in rs),
            "curves": [r["curve"] for r in rs],
            "eval_points": points,
        })
    sgd_ms = next((r["ms_per_step_mean"] for r in rows if r["method"] == "sgd"), None)
    if sgd_ms:
        for r in rows:
            r["time_vs_sgd"] = r["ms_per_step_mean"] / sgd_ms

    writer = core.Writer(cfg.out)
    if writer.out is not None:
        writer.csv("results.csv", rows, _CSV_FIELDS, formats=_CSV_FORMATS)
        s = "s" if cfg.seeds != 1 else ""
        _plot(writer, rows, points, f"{data.name}: MLP {cfg.hidden} hidden, SGD lr {cfg.lr}, "
              f"batch {cfg.batch_size}, eps {cfg.eps}, {cfg.seeds} seed{s}")
    if cfg.echo:
        print(
            f"{data.name}: {len(data.x_train)} train / {len(data.x_test)} test, "
            f"MLP {data.x_train.shape[1]}-{cfg.hidden}-{data.num_classes}, SGD lr {cfg.lr}, "
            f"batch {cfg.batch_size}, {cfg.iters} iters, eps {cfg.eps}, "
            f"seeds 0..{cfg.seeds - 1}, {threads} torch thread(s)"
        )
        print(format_table(rows))
        if "random" in cfg.methods and "sgd" in cfg.methods:
            print(RANDOM_NOTE)
        if writer.written:
            print("Wrote " + " and ".join(str(p) for p in writer.written))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options: the common ones (``--data-root``, ``--out``, ``--seeds``,
    ``--iters``, ``--quick``, ``--workers``, ``--no-progress``; ``--quiet`` is an older
    spelling of ``--no-progress``) and its own."""
    core.add_common_arguments(
        p, data="folder holding MNIST/raw/ to use MNIST instead of scikit-learn's digits",
        data_default=f"${DATA_ENV_VAR} if set, else the digits", out="runs/demo",
        seeds=f"(default: {DEFAULTS['seeds']}; --quick: {QUICK['seeds']})",
        iters=f"(default: {DEFAULTS['iters']}; --quick: {QUICK['iters']})",
        quick=f"{QUICK['iters']} iterations, {QUICK['seeds']} seeds",
    )
    d = DemoConfig
    p.add_argument("--lr", type=float, default=d.lr,
                   help="SGD learning rate, also the teacher's eta")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per batch")
    p.add_argument("--eps", type=float, default=d.eps, help="chord radius of the teacher's cap")
    p.add_argument("--eval-every", type=int, default=None,
                   help="iterations between test evaluations (default: iters // 30, at least 1)")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden layer width")
    p.add_argument("--methods", action=core.ListAction, default=list(METHODS), metavar="M,M,...",
                   help=f"comma-separated subset of the methods (default: {','.join(METHODS)})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads during the demo, 0 leaves torch's setting")
    core.add_aliases(p, {"no_progress": ["--quiet"]})


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`DemoConfig` of parsed options (``ValueError`` if they do not check)."""
    core.fill_presets(args, QUICK if args.quick else DEFAULTS)
    return DemoConfig(
        iters=args.iters, seeds=args.seeds, lr=args.lr, batch_size=args.batch_size,
        eps=args.eps, eval_every=args.eval_every, hidden=args.hidden, methods=args.methods,
        data_root=args.data_root or os.environ.get(DATA_ENV_VAR) or None, out=args.out,
        threads=args.threads if args.threads > 0 else None, progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m torchdht demo") -> int:
    """``python -m torchdht demo [options]``: run the demo; returns the exit status (0, or 1
    when it cannot run, e.g. a ``--data-root`` without ``MNIST/raw/``)."""
    return core.run_main(sys.modules[__name__], argv, prog)
