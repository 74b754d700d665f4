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
``accuracy.png`` in the output folder.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .performative import PerformativeTeacher

__all__ = [
    "METHODS", "RANDOM_NOTE", "DATA_ENV_VAR", "DemoData", "load_data", "format_table", "run_demo"
]

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

DATA_ENV_VAR = "TORCHDHT_DATA"
"""Environment variable naming the folder that holds ``MNIST/raw/``."""

DEFAULT_ITERS = 3000
DEFAULT_SEEDS = 3
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 0.05
DEFAULT_HIDDEN = 128

_CSV_FIELDS = (
    "method",
    "policy",
    "lookahead_encoder_grad",
    "dataset",
    "n_seeds",
    "iters",
    "test_acc_mean",
    "test_acc_std",
    "test_acc_per_seed",
    "early_iter",
    "early_acc_mean",
    "ms_per_step_mean",
    "ms_per_step_std",
    "time_vs_sgd",
    "angle_mean_rad",
)


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


def _resolve_mnist_root(data_root: str | os.PathLike[str]) -> Path:
    """The folder holding ``MNIST/raw/`` (also accepts the ``MNIST`` folder itself)."""
    root = Path(data_root).expanduser()
    if (root / "MNIST" / "raw").is_dir():
        return root
    if root.name == "MNIST" and (root / "raw").is_dir():
        return root.parent
    if not root.exists():
        why = "it does not exist"
    elif not root.is_dir():
        why = "it is not a folder"
    else:
        why = "it holds no MNIST/raw/ folder"
    raise FileNotFoundError(
        f"MNIST data root {str(root)!r} is not usable: {why}. Point --data-root (or "
        f"${DATA_ENV_VAR}) at the folder that holds MNIST/raw/ with the four IDX files "
        f"(train-images-idx3-ubyte, ...), or leave both unset to use scikit-learn's digits."
    )


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


def _load_mnist(data_root: str | os.PathLike[str]) -> DemoData:
    root = _resolve_mnist_root(data_root)
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MNIST demo needs torchvision: pip install torchvision (or torchdht[vision])"
        ) from exc
    splits = []
    for train in (True, False):
        ds = MNIST(str(root), train=train, download=False)
        x = ds.data.reshape(len(ds.data), -1).to(torch.float32) / 255.0
        splits.append((x, ds.targets.to(torch.int64)))
    (x_train, y_train), (x_test, y_test) = splits
    return DemoData("mnist", x_train, y_train, x_test, y_test, num_classes=10)


def load_data(data_root: str | os.PathLike[str] | None = None) -> DemoData:
    """Load the demo's data set.

    Args:
        data_root: folder holding ``MNIST/raw/`` to train on MNIST (read with
            ``torchvision.datasets.MNIST(..., download=False)``, flattened and
            scaled to [0, 1]); None for scikit-learn's ``load_digits``
            (standardised with the training set's statistics, fixed stratified
            split of 1,347 training and 450 test images).

    Returns:
        A :class:`DemoData`.

    Raises:
        FileNotFoundError: ``data_root`` is given but holds no ``MNIST/raw/``.
    """
    if data_root is None:
        return _load_digits()
    return _load_mnist(data_root)


def _batch_order(n: int, batch_size: int, iters: int, seed: int) -> Tensor:
    """Indices of ``iters`` full batches: consecutive epochs of seeded permutations."""
    gen = torch.Generator().manual_seed(seed)
    need = iters * batch_size
    perms = [torch.randperm(n, generator=gen) for _ in range(math.ceil(need / n))]
    return torch.cat(perms)[:need].view(iters, batch_size)


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 4096) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), chunk):
        correct += int((model(x[i : i + chunk]).argmax(-1) == y[i : i + chunk]).sum())
    model.train(was_training)
    return 100.0 * correct / max(len(x), 1)


def _eval_points(iters: int, eval_every: int) -> list[int]:
    points = list(range(0, iters, eval_every))
    if points[-1] != iters:
        points.append(iters)
    return points


def _train_one(
    data: DemoData,
    method: str,
    seed: int,
    *,
    iters: int,
    batch_size: int,
    lr: float,
    eps: float,
    hidden: int,
    eval_points: Sequence[int],
    on_step: Callable[[], None],
) -> dict[str, Any]:
    """One training run; returns its accuracy curve, timing and mean angle."""
    torch.manual_seed(seed)  # same initialisation for every method
    model = nn.Sequential(
        nn.Linear(data.x_train.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, data.num_classes)
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    teacher = PerformativeTeacher(model[-1], optimizer=opt, eps=eps, seed=seed, **METHODS[method])
    order = _batch_order(len(data.x_train), batch_size, iters, seed)  # same order per seed
    evals = set(eval_points)
    curve: list[float] = []
    step_time = 0.0
    angle_sum = 0.0
    model.train()
    try:
        for it in range(iters + 1):
            if it in evals:
                curve.append(_accuracy(model, data.x_test, data.y_test))
            if it == iters:
                break
            idx = order[it]
            xb, yb = data.x_train[idx], data.y_train[idx]
            t0 = time.perf_counter()
            teacher.set_targets(yb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_time += time.perf_counter() - t0
            angle_sum += teacher.stats["angle_mean"]
            on_step()
    finally:
        teacher.remove()
    final_loss = loss.item()
    if not math.isfinite(final_loss):
        raise FloatingPointError(f"{method} (seed {seed}) diverged: final loss {final_loss}")
    return {
        "curve": curve,
        "final_acc": curve[-1],
        "ms_per_step": 1000.0 * step_time / max(iters, 1),
        "angle_mean": angle_sum / max(iters, 1),
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render the rows returned by :func:`run_demo` as an aligned text table.

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
    body = []
    for r in rows:
        ratio = r["time_vs_sgd"]
        angle = r["angle_mean_rad"]
        body.append(
            (
                r["method"],
                f"{r['test_acc_mean']:6.2f} ± {r['test_acc_std']:.2f}",
                f"{r['early_acc_mean']:.2f}",
                f"{r['ms_per_step_mean']:.3f}",
                "-" if ratio is None else f"{ratio:.2f}x",
                "-" if r["policy"] == "none" else f"{angle:.4f}",
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return " | ".join([first, *rest])

    out = [line(header), "-+-".join("-" * w for w in widths)]
    out.extend(line(b) for b in body)
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


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            rec = {k: r[k] for k in _CSV_FIELDS}
            rec["test_acc_per_seed"] = ";".join(f"{a:.2f}" for a in r["test_acc_per_seed"])
            rec["time_vs_sgd"] = "" if r["time_vs_sgd"] is None else f"{r['time_vs_sgd']:.4f}"
            for k in ("test_acc_mean", "test_acc_std", "angle_mean_rad"):
                rec[k] = f"{r[k]:.4f}"
            for k in ("ms_per_step_mean", "ms_per_step_std"):
                rec[k] = f"{r[k]:.5f}"
            writer.writerow(rec)


def _plot(
    path: Path, eval_points: Sequence[int], rows: Sequence[dict[str, Any]], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = list(eval_points)
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(
    *,
    iters: int = DEFAULT_ITERS,
    seeds: int = DEFAULT_SEEDS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    eps: float = 0.1,
    eval_every: int | None = None,
    hidden: int = DEFAULT_HIDDEN,
    methods: Sequence[str] = tuple(METHODS),
    data_root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = "runs/demo",
    threads: int | None = 1,
    progress: bool = True,
    echo: bool = True,
) -> list[dict[str, Any]]:
    """Train the MLP with each method and seed, then report and save the results.

    Every method uses the same seeds; for a given seed all methods start from
    the same initialisation (``torch.manual_seed(seed)``) and see the same
    batches (a ``torch.Generator`` seeded with ``seed``). Seeds are
    ``0 .. seeds-1``. Only the training steps (``set_targets``, forward,
    backward, optimizer step) are timed, with ``time.perf_counter``.

    Args:
        iters: training iterations per run.
        seeds: number of seeds per method.
        lr: SGD learning rate (also the teacher's ``eta``).
        batch_size: examples per batch.
        eps: chord radius of the teacher's cap.
        eval_every: iterations between test evaluations (default: None,
            about 30 points over the run); the last iteration is always
            evaluated.
        hidden: width of the MLP's hidden layer.
        methods: subset of :data:`METHODS`, in the order to report.
        data_root: folder holding ``MNIST/raw/`` to use MNIST (default: None,
            scikit-learn's digits). See :func:`load_data`.
        out: folder for ``results.csv`` and ``accuracy.png``, created if
            needed (default: ``runs/demo``; None writes nothing).
        threads: ``torch.set_num_threads`` for the run, restored afterwards
            (default: 1, which is the fastest for these small matrices and
            keeps timings stable on a busy machine; None leaves it alone).
        progress: show a tqdm progress bar over all runs (only when stderr is a
            terminal, or in a notebook).
        echo: print the table (and where the files went) when done.

    Returns:
        One dict per method with ``method``, ``policy``,
        ``lookahead_encoder_grad``, ``dataset``, ``n_seeds``, ``iters``,
        ``test_acc_mean``, ``test_acc_std`` and ``test_acc_per_seed`` (final
        test accuracy in %; std over seeds, 0 for one seed),
        ``ms_per_step_mean`` and ``ms_per_step_std``, ``time_vs_sgd`` (ratio
        of mean ms/step to ``sgd``'s, None without ``sgd``),
        ``angle_mean_rad`` (mean of ``teacher.stats["angle_mean"]`` over all
        steps and seeds), ``curves`` (test accuracy per seed at each
        ``eval_points`` iteration) and ``eval_points``.

    Raises:
        ValueError: an unknown method or a non-positive setting.
        FileNotFoundError: ``data_root`` holds no ``MNIST/raw/``.
        FloatingPointError: a run diverged (try a smaller ``lr``).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}"
        )
    for name, value in (("iters", iters), ("seeds", seeds), ("batch_size", batch_size),
                        ("hidden", hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive float, got {lr!r}")
    if eval_every is None:
        eval_every = max(1, iters // 30)
    if eval_every < 1:
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")

    data = load_data(data_root)
    if batch_size > len(data.x_train):
        raise ValueError(
            f"batch_size {batch_size} exceeds the {len(data.x_train)} training examples"
        )
    out_dir = None
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
    points = _eval_points(iters, eval_every)

    from tqdm.auto import tqdm

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    # disable=None: no bar when stderr is not a terminal (a log file or a pipe would get
    # every carriage-return redraw); notebooks still get theirs.
    bar = tqdm(total=len(methods) * seeds * iters, disable=None if progress else True,
               unit="step", desc=f"demo ({data.name})", dynamic_ncols=True)
    try:
        for seed in range(seeds):  # interleave methods so that machine noise hits all alike
            for method in methods:
                bar.set_postfix_str(f"{method}, seed {seed}")
                runs[method].append(
                    _train_one(data, method, seed, iters=iters, batch_size=batch_size, lr=lr,
                               eps=eps, hidden=hidden, eval_points=points, on_step=bar.update)
                )
    finally:
        bar.close()
        torch.set_num_threads(old_threads)

    rows: list[dict[str, Any]] = []
    # An early checkpoint (about a tenth of the run) shows speed of learning,
    # which the final accuracy hides once every method has converged.
    early = min(range(len(points)), key=lambda i: abs(points[i] - iters / 10))
    for method in methods:
        rs = runs[method]
        acc_mean, acc_std = _mean_std([r["final_acc"] for r in rs])
        ms_mean, ms_std = _mean_std([r["ms_per_step"] for r in rs])
        rows.append({
            "method": method,
            "policy": METHODS[method]["policy"],
            "lookahead_encoder_grad": bool(METHODS[method].get("lookahead_encoder_grad", False)),
            "dataset": data.name,
            "n_seeds": seeds,
            "iters": iters,
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

    if out_dir is not None:
        _write_csv(out_dir / "results.csv", rows)
        title = (f"{data.name}: MLP {hidden} hidden, SGD lr {lr}, batch {batch_size}, "
                 f"eps {eps}, {seeds} seed{'s' if seeds != 1 else ''}")
        _plot(out_dir / "accuracy.png", points, rows, title)
    if echo:
        print(
            f"{data.name}: {len(data.x_train)} train / {len(data.x_test)} test, "
            f"MLP {data.x_train.shape[1]}-{hidden}-{data.num_classes}, SGD lr {lr}, "
            f"batch {batch_size}, {iters} iters, eps {eps}, seeds 0..{seeds - 1}, "
            f"{torch.get_num_threads() if threads is None else threads} torch thread(s)"
        )
        print(format_table(rows))
        if "random" in methods and "sgd" in methods:
            print(RANDOM_NOTE)
        if out_dir is not None:
            print(f"Wrote {out_dir / 'results.csv'} and {out_dir / 'accuracy.png'}")
    return rows
