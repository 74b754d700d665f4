"""Mixup-based teaching on CIFAR-10 (paper section 4.1, Table 1).

``python -m torchdht.experiments mixup`` (or ``python -m torchdht.experiments.mixup``)
trains the same simple CNN with five methods, from the same initialisation
and data order per seed, with Adam (lr 1e-3), batch 128 and no augmentation:

============  ==============================================================
``erm``        plain training on class indices
``cmixup``     mixup, ``lam ~ Beta(1, 1)`` (``MixupTeacher(policy="beta")``)
``dmixup``     mixup, ``lam`` uniform on {0, 0.5, 1} (``policy="discrete"``)
``unroll``     ``lam = h_theta(state)``, one second-order hypergradient step
               through a virtual learner step on a validation batch every
               ``--unroll-every`` training steps (``policy="unroll"``)
``reinforce``  ``lam`` in {0, 0.5, 1} from an MLP policy trained by REINFORCE
               online, during the run it teaches: reward = validation
               accuracy, one policy update per episode of ``--episode-epochs``
               epochs (``policy="reinforce"``)
============  ==============================================================

Optional (``--methods ...,reinforce-restarts``): the released code's protocol,
``--pg-restarts`` search runs of ``--episode-epochs`` epochs, each restarting
the learner from the same initial weights and ending with one policy update,
then a fresh run of ``--epochs`` that samples from the frozen policy.

The CNN (:func:`simple_cnn`): conv 5x5 3->6, ReLU, max-pool 2; conv 5x5
6->16, ReLU, max-pool 2; flatten (400); linear 400->120, ReLU; linear
120->84, ReLU; linear 84->10 (62k parameters; the classic LeNet-style
CIFAR-10 net, the ``CNN_MIXUP`` class of the authors' released code).

The validation split is held out of the training set and used by every
method the same way (the teachers' state and rewards; reported for all).
The test set is only reported. Default sizes are cut so all five methods
finish on two CPU cores; ``--full`` is the paper's setting (40k/10k split of
the 50k training images, full test set, 50 epochs). It writes under ``--out``:
``results.csv`` (one row per method), ``curves.csv`` (one row per method,
seed and epoch), ``accuracy.png`` (test accuracy and mixing coefficient per
epoch) and ``config.json``, and prints the table beside the paper's Table 1.

Data: ``--data-root`` (default ``$TORCHDHT_DATA``, else ``../shared/data``)
holding ``cifar10-jpeg/{train,test}/<class>/*.jpg`` (read like
``torchvision.datasets.ImageFolder``) or torchvision's
``cifar-10-batches-py``; otherwise ``torchvision.datasets.CIFAR10(root,
download=True)`` fetches it there.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..mixup import MixupTeacher

__all__ = [
    "DESCRIPTION",
    "METHODS",
    "PAPER_TABLE1",
    "CifarData",
    "add_arguments",
    "cuts",
    "format_table",
    "load_cifar10",
    "main",
    "resolve_config",
    "run_mixup",
    "simple_cnn",
]

DESCRIPTION = (
    "Mixup-based teaching on CIFAR-10 with a simple CNN: ERM, cMixup, dMixup, unrolling and "
    "policy gradient (paper section 4.1, Table 1)."
)
METHODS = ("erm", "cmixup", "dmixup", "unroll", "reinforce")
"""The default methods, in table order."""
EXTRA_METHODS = ("reinforce-restarts",)
"""Optional: REINFORCE with the released code's protocol (``--pg-restarts``)."""
LABELS = {"erm": "ERM", "cmixup": "cMixup", "dmixup": "dMixup", "unroll": "Unrolling",
          "reinforce": "Policy gradient", "reinforce-restarts": "Policy gradient, restarts"}
PAPER_TABLE1 = {"erm": 61.75, "cmixup": 66.27, "dmixup": 65.80, "unroll": 65.18,
                "reinforce": 67.64, "reinforce-restarts": 67.64}
"""Test accuracy (%) of the paper's Table 1 (CIFAR-10, 50 epochs); its one policy-gradient
figure stands beside both of our protocols."""

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")

DEFAULTS = {"train_size": 20000, "val_size": 5000, "test_size": 10000, "epochs": 50,
            "episode_epochs": 2, "unroll_every": 1}
"""The default (CPU) setting; see ``--help`` for what it cuts."""
FULL = {"train_size": 40000, "val_size": 10000, "test_size": 10000, "epochs": 50,
        "episode_epochs": 2, "unroll_every": 1}
"""``--full``: the paper's setting."""


def simple_cnn(num_classes: int = 10) -> nn.Sequential:
    """The learner: a LeNet-style CNN for 3x32x32 images (62,006 parameters for 10 classes).

    Example:
        >>> net = simple_cnn()
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in net.parameters())
        62006
    """
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@dataclass
class CifarData:
    """CIFAR-10 splits held in memory as uint8 images ``(N, 3, 32, 32)`` and int64 labels.

    Attributes:
        x_train, y_train: the training split.
        x_val, y_val: the validation split (held out of the training images).
        x_test, y_test: the test split.
        source: where the images came from.

    Example:
        >>> d = load_cifar10(fake=True, train_size=8, val_size=4, test_size=4)
        >>> d.x_train.shape, d.x_train.dtype, d.y_val.shape
        (torch.Size([8, 3, 32, 32]), torch.uint8, torch.Size([4]))
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    source: str


def default_data_root() -> Path:
    """The data root of :func:`torchdht.data.default_root` (``$TORCHDHT_DATA``, else
    ``../shared/data`` beside the repository).

    Example:
        >>> isinstance(default_data_root(), Path)
        True
    """
    from ..data import default_root

    return default_root()


def _jpeg_dir(root: Path) -> Path | None:
    for cand in (root / "cifar10-jpeg", root):
        if (cand / "train" / CLASSES[0]).is_dir() and (cand / "test" / CLASSES[0]).is_dir():
            return cand
    return None


def _read_jpegs(folder: Path, count: int | None, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Decode a seeded random subset (all when ``count`` is None) of an ImageFolder tree."""
    import numpy as np
    from PIL import Image
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))
    if tuple(ds.classes) != CLASSES:
        raise ValueError(f"{folder}: expected the CIFAR-10 class folders {CLASSES}, got "
                         f"{tuple(ds.classes)}")
    order = torch.randperm(len(ds.samples), generator=gen)
    if count is not None:
        order = order[:count]
    arr = np.empty((len(order), 32, 32, 3), dtype=np.uint8)
    labels = torch.empty(len(order), dtype=torch.int64)
    for i, j in enumerate(order.tolist()):
        path, label = ds.samples[j]
        with Image.open(path) as im:
            arr[i] = np.asarray(im.convert("RGB"))
        labels[i] = label
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), labels


def _torchvision_cifar(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=train, download=download)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(ds.targets, dtype=torch.int64)


def _fake(n: int, offset: int) -> tuple[Tensor, Tensor]:
    import numpy as np
    from torchvision.datasets import FakeData

    ds = FakeData(size=n, image_size=(3, 32, 32), num_classes=10, random_offset=offset)
    imgs, labels = zip(*(ds[i] for i in range(n)))
    x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in imgs]))
    return x.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(labels, dtype=torch.int64)


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    train_size: int = DEFAULTS["train_size"],
    val_size: int = DEFAULTS["val_size"],
    test_size: int = DEFAULTS["test_size"],
    download: bool = True,
    fake: bool = False,
    split_seed: int = 0,
) -> CifarData:
    """Load CIFAR-10 splits: a seeded random train/val split of the training images.

    The split depends only on ``split_seed`` (not on the run's seeds), so
    every method and seed sees the same images.

    Args:
        root: folder holding ``cifar10-jpeg/`` (or the JPEG tree itself), or
            torchvision's ``cifar-10-batches-py`` (default: None, meaning
            :func:`default_data_root`).
        train_size: training images (at most 50,000 minus ``val_size``).
        val_size: validation images, disjoint from the training ones.
        test_size: test images (at most 10,000).
        download: let torchvision download CIFAR-10 into ``root`` when neither
            form is there.
        fake: use ``torchvision.datasets.FakeData`` of those sizes instead
            (random images and labels; for smoke tests).
        split_seed: seed of the split.

    Returns:
        A :class:`CifarData`.

    Example:
        >>> load_cifar10(fake=True, train_size=6, val_size=2, test_size=2).x_test.shape
        torch.Size([2, 3, 32, 32])
    """
    for name, value in (("train_size", train_size), ("val_size", val_size),
                        ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if train_size + val_size > 50000 or test_size > 10000:
        raise ValueError(f"CIFAR-10 has 50,000 training and 10,000 test images; asked for "
                         f"train_size + val_size = {train_size + val_size} and "
                         f"test_size = {test_size}")
    if fake:
        xt, yt = _fake(train_size + val_size, 0)
        xs, ys = _fake(test_size, 10**6)
        return CifarData(xt[:train_size], yt[:train_size], xt[train_size:], yt[train_size:],
                         xs, ys, "torchvision FakeData (random images)")
    base = Path(root) if root is not None else default_data_root()
    gen = torch.Generator().manual_seed(split_seed)
    jpeg = _jpeg_dir(base)
    if jpeg is not None:
        xt, yt = _read_jpegs(jpeg / "train", train_size + val_size, gen)
        xs, ys = _read_jpegs(jpeg / "test", test_size, gen)
        source = f"JPEG re-encodings in {jpeg} (ImageFolder)"
    else:
        try:
            xt, yt = _torchvision_cifar(base, True, download)
            xs, ys = _torchvision_cifar(base, False, download)
        except RuntimeError as exc:
            raise FileNotFoundError(
                f"no CIFAR-10 under {str(base)!r}: expected cifar10-jpeg/{{train,test}}/<class>/ "
                f"or cifar-10-batches-py/ there (or allow the download). Set --data-root or "
                f"$TORCHDHT_DATA. ({exc})"
            ) from exc
        order = torch.randperm(len(xt), generator=gen)[: train_size + val_size]
        xt, yt = xt[order], yt[order]
        order = torch.randperm(len(xs), generator=gen)[:test_size]
        xs, ys = xs[order], ys[order]
        source = f"torchvision CIFAR10 in {base}"
    return CifarData(xt[:train_size], yt[:train_size], xt[train_size:], yt[train_size:],
                     xs, ys, source)


_MEAN = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def _to_float(x: Tensor) -> Tensor:
    return (x.float().div_(255.0) - _MEAN.to(x.device)) / _STD.to(x.device)


@torch.no_grad()
def _evaluate(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy as a fraction)."""
    was = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        out = model(_to_float(x[i : i + chunk]))
        yy = y[i : i + chunk]
        loss_sum += float(F.cross_entropy(out, yy, reduction="sum"))
        correct += int((out.argmax(1) == yy).sum())
    model.train(was)
    n = max(len(x), 1)
    return loss_sum / n, correct / n


def _make_teacher(method: str, seed: int, total_steps: int, cfg: argparse.Namespace
                  ) -> MixupTeacher | None:
    if method == "erm":
        return None
    if method == "cmixup":
        return MixupTeacher(10, "beta", alpha=cfg.alpha, seed=seed)
    if method == "dmixup":
        return MixupTeacher(10, "discrete", seed=seed)
    if method == "unroll":
        return MixupTeacher(10, "unroll", total_steps=total_steps, seed=seed,
                            unroll_order=cfg.unroll_order, learner_lr=cfg.lr)
    if method in ("reinforce", "reinforce-restarts"):
        return MixupTeacher(10, "reinforce", total_steps=total_steps, seed=seed,
                            reward_metric="val_acc")
    raise ValueError(f"unknown method {method!r}; choose from {METHODS + EXTRA_METHODS}")


def _run_epochs(method: str, model: nn.Module, teacher: MixupTeacher | None, data: CifarData,
                cfg: argparse.Namespace, *, epochs: int, seed: int, phase: str,
                order_gen: torch.Generator, val_gen: torch.Generator, learn: bool,
                on_step: Callable[[], None]) -> tuple[list[dict[str, Any]], float, int]:
    """Train ``model`` (a fresh Adam) for ``epochs``; returns (rows, timed seconds, steps)."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    rows: list[dict[str, Any]] = []
    train_time = 0.0
    step = 0
    model.train()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=order_gen)
        loss_sum, lam_sum, mix_sum = 0.0, 0.0, 0.0
        counts = [0, 0, 0]
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb, yb = _to_float(data.x_train[idx]), data.y_train[idx]
            val_batch = None
            if method == "unroll" and step % cfg.unroll_every == 0:
                vidx = torch.randint(len(data.x_val), (cfg.batch_size,), generator=val_gen)
                val_batch = (_to_float(data.x_val[vidx]), data.y_val[vidx])
            t0 = time.perf_counter()
            if teacher is not None:
                xm, ym = teacher(xb, yb)
            else:
                xm, ym = xb, yb
            loss = F.cross_entropy(model(xm), ym)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if val_batch is not None:
                assert teacher is not None
                teacher.hypergradient_step(model, F.cross_entropy, val_batch, lr=cfg.lr)
            opt.step()
            lv = loss.item()
            if teacher is not None:
                teacher.observe(train_loss=lv)
            train_time += time.perf_counter() - t0
            if not math.isfinite(lv):
                raise FloatingPointError(f"{method} (seed {seed}) diverged at step {step}")
            lam = 1.0 if teacher is None else float(teacher.last_lambda)  # type: ignore[arg-type]
            loss_sum += lv
            lam_sum += lam
            mix_sum += min(lam, 1.0 - lam)
            if teacher is not None and teacher.last_action is not None:
                counts[teacher.last_action] += 1
            step += 1
            on_step()
        val_loss, val_acc = _evaluate(model, data.x_val, data.y_val)
        _, test_acc = _evaluate(model, data.x_test, data.y_test)
        row: dict[str, Any] = {
            "method": method, "seed": seed, "phase": phase, "epoch": epoch,
            "train_loss": loss_sum / steps_per_epoch, "val_loss": val_loss,
            "val_acc": 100 * val_acc, "test_acc": 100 * test_acc,
            "lambda_mean": lam_sum / steps_per_epoch,
            "mix_strength": mix_sum / steps_per_epoch,
            "frac_lam0": "", "frac_lam05": "", "frac_lam1": "", "policy_probs": "",
            "reward": "", "advantage": "",
        }
        rl = method in ("reinforce", "reinforce-restarts")
        if method == "dmixup" or rl:
            row["frac_lam0"], row["frac_lam05"], row["frac_lam1"] = (
                c / steps_per_epoch for c in counts)
        if teacher is not None:
            if rl and epoch % cfg.episode_epochs == 0:
                st = teacher.reward(val_loss=val_loss, val_acc=val_acc, update=learn)
                row["reward"], row["advantage"] = st["reward"], st["advantage"]
            else:
                teacher.observe(val_loss=val_loss)
            if rl:
                row["policy_probs"] = ";".join(f"{p:.3f}" for p in teacher.action_probs())
        rows.append(row)
    return rows, train_time, step


def _train_one(method: str, data: CifarData, seed: int, cfg: argparse.Namespace,
               on_step: Callable[[], None]) -> dict[str, Any]:
    torch.manual_seed(seed)  # same initialisation for every method
    model = simple_cnn().to(cfg.device)
    steps_per_epoch = math.ceil(len(data.x_train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    teacher = _make_teacher(method, seed, total, cfg)
    order_gen = torch.Generator().manual_seed(seed)  # same batches for every method
    val_gen = torch.Generator().manual_seed(seed + 10**6)
    kw: dict[str, Any] = {"seed": seed, "order_gen": order_gen, "val_gen": val_gen,
                          "on_step": on_step}
    wall0 = time.perf_counter()
    search: list[dict[str, Any]] = []
    if method == "reinforce-restarts":
        # The released code's protocol: policy search over restarted short runs (one
        # episode each, from the same initial weights), then a fresh run that samples
        # from the learned policy without updating it.
        assert teacher is not None
        w0 = {k: v.clone() for k, v in model.state_dict().items()}
        for k in range(cfg.pg_restarts):
            model.load_state_dict(w0)
            teacher.new_run(total_steps=cfg.episode_epochs * steps_per_epoch)
            rows, _, _ = _run_epochs(method, model, teacher, data, cfg,
                                     epochs=cfg.episode_epochs, phase=f"search-{k + 1}",
                                     learn=True, **kw)
            search.extend(rows)
        model.load_state_dict(w0)
        teacher.new_run(total_steps=total)
    curve, train_time, step = _run_epochs(method, model, teacher, data, cfg,
                                          epochs=cfg.epochs, phase="train",
                                          learn=method != "reinforce-restarts", **kw)
    return {
        "curve": curve,
        "search": search,
        "final_acc": curve[-1]["test_acc"],
        "best_acc": max(r["test_acc"] for r in curve),
        "ms_per_step": 1000.0 * train_time / max(step, 1),
        "wall_s": time.perf_counter() - wall0,
        "mix_strength": statistics.fmean(r["mix_strength"] for r in curve),
        "episodes": 0 if teacher is None else teacher.episodes,
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results beside the paper's Table 1, as aligned text.

    Example:
        >>> row = {"method": "erm", "n_seeds": 1, "test_acc_mean": 60.0, "test_acc_std": 0.0,
        ...        "best_acc_mean": 61.0, "ms_per_step": 10.0, "cost_vs_erm": 1.0,
        ...        "mix_strength": 0.0, "wall_s": 100.0}
        >>> format_table([row]).splitlines()[-1].split(" | ")[:3]
        ['ERM   ', '            61.75', '                   60.00']
    """
    n_seeds = rows[0]["n_seeds"] if rows else 0
    header = ("method", "paper Table 1 (%)",
              "ours: final test acc (%)" + (f", {n_seeds} seeds" if n_seeds > 1 else ""),
              "best epoch (%)", "ms/step", "cost vs ERM", "mix strength", "wall (s)")
    body = []
    for r in rows:
        acc = f"{r['test_acc_mean']:.2f}"
        if n_seeds > 1:
            acc += f" ± {r['test_acc_std']:.2f}"
        cost = r["cost_vs_erm"]
        body.append((LABELS.get(r["method"], r["method"]), f"{PAPER_TABLE1[r['method']]:.2f}",
                     acc, f"{r['best_acc_mean']:.2f}", f"{r['ms_per_step']:.2f}",
                     "-" if cost is None else f"{cost:.2f}x", f"{r['mix_strength']:.3f}",
                     f"{r['wall_s']:.0f}"))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join([cells[0].ljust(widths[0])]
                          + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    out = [line(header), "-+-".join("-" * w for w in widths)]
    out.extend(line(b) for b in body)
    return "\n".join(out)


_CURVE_FIELDS = ("method", "seed", "phase", "epoch", "train_loss", "val_loss", "val_acc",
                 "test_acc", "lambda_mean", "mix_strength", "frac_lam0", "frac_lam05", "frac_lam1",
                 "policy_probs", "reward", "advantage")
_RESULT_FIELDS = ("method", "paper_acc", "n_seeds", "epochs", "train_size", "val_size",
                  "test_size", "test_acc_mean", "test_acc_std", "test_acc_per_seed",
                  "best_acc_mean", "ms_per_step", "cost_vs_erm", "mix_strength", "episodes",
                  "wall_s")


def _write(out: Path, rows: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]]) -> None:
    def fmt(v: Any) -> Any:
        return f"{v:.5g}" if isinstance(v, float) else v

    with (out / "curves.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_CURVE_FIELDS)
        w.writeheader()
        for r in curves:
            w.writerow({k: fmt(r[k]) for k in _CURVE_FIELDS})
    with (out / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_RESULT_FIELDS)
        w.writeheader()
        for r in rows:
            rec = {k: fmt(r[k]) for k in _RESULT_FIELDS}
            rec["test_acc_per_seed"] = ";".join(f"{a:.2f}" for a in r["test_acc_per_seed"])
            rec["cost_vs_erm"] = "" if r["cost_vs_erm"] is None else f"{r['cost_vs_erm']:.3f}"
            w.writerow(rec)


def _plot(path: Path, rows: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]],
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        m = r["method"]
        seeds = sorted({c["seed"] for c in curves if c["method"] == m})
        per = [[c for c in curves if c["method"] == m and c["seed"] == s
                and c["phase"] == "train"] for s in seeds]
        epochs = [c["epoch"] for c in per[0]]
        acc = [statistics.fmean(p[i]["test_acc"] for p in per) for i in range(len(epochs))]
        mix = [statistics.fmean(p[i]["mix_strength"] for p in per) for i in range(len(epochs))]
        label = f"{LABELS[m]} ({r['test_acc_mean']:.2f}%)"
        (ln,) = ax.plot(epochs, acc, label=label, linewidth=1.6)
        ax2.plot(epochs, mix, label=LABELS[m], color=ln.get_color(), linewidth=1.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("mix strength: mean of min(lam, 1 - lam)")
    ax2.set_ylim(-0.02, 0.52)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cuts(cfg: argparse.Namespace) -> list[str]:
    """What the setting ``cfg`` cuts from the paper's (:data:`FULL`), in words.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> cuts(resolve_config(p.parse_args([])))
        ['training images 20000 (paper: 40000)', 'validation images 5000 (paper: 10000)']
        >>> cuts(resolve_config(p.parse_args(["--full"])))
        []
    """
    names = {"train_size": "training images", "val_size": "validation images",
             "test_size": "test images", "epochs": "epochs",
             "episode_epochs": "epochs per REINFORCE episode",
             "unroll_every": "steps per hypergradient step"}
    out = [f"{names[k]} {getattr(cfg, k)} (paper: {v})" for k, v in FULL.items()
           if getattr(cfg, k) != v]
    if cfg.epochs // cfg.episode_epochs != FULL["epochs"] // FULL["episode_epochs"]:
        out.append(f"REINFORCE episodes {cfg.epochs // cfg.episode_epochs} "
                   f"(paper: {FULL['epochs'] // FULL['episode_epochs']})")
    return out


def run_mixup(cfg: argparse.Namespace, data: CifarData | None = None) -> list[dict[str, Any]]:
    """Run the experiment described by ``cfg`` (the parsed options); returns one row per method.

    Args:
        cfg: options as :func:`add_arguments` defines them (after
            :func:`resolve_config`).
        data: the splits (default: None, loaded with :func:`load_cifar10`).

    Returns:
        One dict per method: ``method``, ``paper_acc``, ``test_acc_mean``,
        ``test_acc_std``, ``test_acc_per_seed`` (final epoch, %),
        ``best_acc_mean`` (best epoch on the test set, optimistic),
        ``ms_per_step`` (teacher + forward + backward + optimizer step, and
        the hypergradient for ``unroll``), ``cost_vs_erm``, ``mix_strength``,
        ``episodes``, ``wall_s`` and the settings.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> cfg = resolve_config(p.parse_args(["--fake-data", "--train-size", "32",
        ...     "--val-size", "16", "--test-size", "16", "--epochs", "1", "--methods",
        ...     "erm,cmixup", "--out", "", "--no-progress"]))
        >>> cfg.echo = False
        >>> [r["method"] for r in run_mixup(cfg)]
        ['erm', 'cmixup']
    """
    methods = list(cfg.methods)
    t_load = time.perf_counter()
    if data is None:
        data = load_cifar10(cfg.data_root, train_size=cfg.train_size, val_size=cfg.val_size,
                            test_size=cfg.test_size, fake=cfg.fake_data)
    load_s = time.perf_counter() - t_load
    dev = torch.device(cfg.device)
    data = CifarData(data.x_train.to(dev), data.y_train.to(dev), data.x_val.to(dev),
                     data.y_val.to(dev), data.x_test.to(dev), data.y_test.to(dev), data.source)
    out = None
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from tqdm.auto import tqdm

    steps_per_epoch = math.ceil(len(data.x_train) / cfg.batch_size)
    extra = cfg.pg_restarts * cfg.episode_epochs if "reinforce-restarts" in methods else 0
    steps = (len(methods) * cfg.epochs + extra) * steps_per_epoch
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    # disable=None: no bar when stderr is not a terminal (no carriage returns in logs).
    bar = tqdm(total=cfg.seeds * steps, disable=None if cfg.progress else True, unit="step",
               desc="mixup", dynamic_ncols=True, mininterval=5.0)
    t_all = time.perf_counter()
    try:
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            for m in methods:
                bar.set_postfix_str(f"{m}, seed {seed}")
                r = _train_one(m, data, seed, cfg, bar.update)
                runs[m].append(r)
                if cfg.progress:
                    bar.write(f"{m} seed {seed}: final test acc {r['final_acc']:.2f}% "
                              f"(best {r['best_acc']:.2f}%), {r['ms_per_step']:.2f} ms/step, "
                              f"{r['wall_s']:.0f} s")
    finally:
        bar.close()
        torch.set_num_threads(old_threads)
    total_s = time.perf_counter() - t_all
    rows = []
    for m in methods:
        rs = runs[m]
        mean, std = _mean_std([r["final_acc"] for r in rs])
        rows.append({
            "method": m, "paper_acc": PAPER_TABLE1[m], "n_seeds": cfg.seeds,
            "epochs": cfg.epochs, "train_size": len(data.x_train), "val_size": len(data.x_val),
            "test_size": len(data.x_test), "test_acc_mean": mean, "test_acc_std": std,
            "test_acc_per_seed": [r["final_acc"] for r in rs],
            "best_acc_mean": statistics.fmean(r["best_acc"] for r in rs),
            "ms_per_step": statistics.fmean(r["ms_per_step"] for r in rs),
            "cost_vs_erm": None, "mix_strength": statistics.fmean(r["mix_strength"] for r in rs),
            "episodes": rs[0]["episodes"], "wall_s": sum(r["wall_s"] for r in rs),
        })
    erm = next((r for r in rows if r["method"] == "erm"), None)
    if erm is not None:
        for r in rows:
            r["cost_vs_erm"] = r["ms_per_step"] / erm["ms_per_step"]
    curves = [c for m in methods for r in runs[m] for c in r["search"] + r["curve"]]
    setting = (f"{len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test, "
               f"{cfg.epochs} epochs, batch {cfg.batch_size}, Adam lr {cfg.lr}, "
               f"seeds {cfg.first_seed}..{cfg.first_seed + cfg.seeds - 1}")
    if out is not None:
        _write(out, rows, curves)
        _plot(out / "accuracy.png", rows, curves, f"CIFAR-10, simple CNN: {setting}")
        config = {k: v for k, v in vars(cfg).items() if not k.startswith("_")}
        config.update(source=data.source, load_s=load_s, total_s=total_s, cuts=cuts(cfg),
                      device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda"
                      else "cpu",
                      torch_threads=cfg.threads or old_threads, torch=torch.__version__)
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if cfg.echo:
        print(f"Data: {data.source}; {setting}; device {cfg.device}, "
              f"{cfg.threads or old_threads} torch thread(s); "
              f"unroll: order {cfg.unroll_order}, every {cfg.unroll_every} step(s); reinforce: "
              f"episode = {cfg.episode_epochs} epoch(s)"
              + (f"; reinforce-restarts: {cfg.pg_restarts} search runs, then frozen"
                 if "reinforce-restarts" in methods else ""))
        cut = cuts(cfg)
        print("Cut from the paper's setting (--full): " + ("; ".join(cut) if cut else "nothing"))
        print(format_table(rows))
        print(f"Total {total_s:.0f} s training + evaluation, {load_s:.0f} s loading.")
        if out is not None:
            print(f"Wrote {out / 'results.csv'}, {out / 'curves.csv'}, {out / 'accuracy.png'}")
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> resolve_config(p.parse_args([])).train_size
        20000
    """
    d = DEFAULTS
    p.add_argument("--full", action="store_true",
                   help="the paper's setting: 40k train / 10k val (the full training set), "
                   "10k test, 50 epochs, reinforce episodes of 2 epochs, a hypergradient "
                   "every step (hours on a CPU; minutes on a GPU-sized machine)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default: {d['epochs']}; --full: {FULL['epochs']})")
    p.add_argument("--train-size", type=int, default=None,
                   help=f"training images (default: {d['train_size']}; --full: "
                   f"{FULL['train_size']})")
    p.add_argument("--val-size", type=int, default=None,
                   help=f"validation images held out of the training set (default: "
                   f"{d['val_size']}; --full: {FULL['val_size']})")
    p.add_argument("--test-size", type=int, default=None,
                   help=f"test images (default: {d['test_size']})")
    p.add_argument("--episode-epochs", type=int, default=None,
                   help=f"epochs per REINFORCE episode, one policy update each (default: "
                   f"{d['episode_epochs']}; --full: {FULL['episode_epochs']}, the paper's)")
    p.add_argument("--pg-restarts", type=int, default=10,
                   help="reinforce-restarts: restarted search runs of --episode-epochs epochs "
                   "before the final run (default: 10, the released code's)")
    p.add_argument("--unroll-every", type=int, default=None,
                   help=f"training steps per hypergradient step (default: {d['unroll_every']}; "
                   f"--full: {FULL['unroll_every']})")
    p.add_argument("--unroll-order", type=int, choices=(1, 2), default=2,
                   help="hypergradient order (default: 2, the paper's)")
    p.add_argument("--alpha", type=float, default=1.0, help="cMixup's Beta(alpha, alpha) "
                   "(default: 1.0, as in the released code)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per method (default: 1)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated, from " + ",".join(METHODS + EXTRA_METHODS)
                   + f" (default: {','.join(METHODS)})")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds are first-seed .. first-seed + seeds - 1 (default: 0)")
    p.add_argument("--data-root", default=None,
                   help="folder holding cifar10-jpeg/ or cifar-10-batches-py/ (default: "
                   "$TORCHDHT_DATA, else ../shared/data; torchvision downloads CIFAR-10 "
                   "there if neither is found)")
    p.add_argument("--fake-data", action="store_true",
                   help="torchvision FakeData instead of CIFAR-10 (smoke tests)")
    p.add_argument("--out", default="runs/mixup", help="output folder (default: runs/mixup)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu); the teachers' "
                   "small policy networks stay on the CPU")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: 1, the fastest for this small CNN on a "
                   "shared CPU; 0 leaves torch's default)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")


def resolve_config(cfg: argparse.Namespace) -> argparse.Namespace:
    """Fill the size options left unset from :data:`DEFAULTS` or :data:`FULL`; check them.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> resolve_config(p.parse_args(["--full"])).train_size
        40000
    """
    base = FULL if cfg.full else DEFAULTS
    for k, v in base.items():
        if getattr(cfg, k, None) is None:
            setattr(cfg, k, v)
    methods = cfg.methods.split(",") if isinstance(cfg.methods, str) else list(cfg.methods)
    methods = [m.strip() for m in methods if m.strip()]
    bad = [m for m in methods if m not in METHODS + EXTRA_METHODS]
    if bad or not methods:
        raise SystemExit(f"--methods: unknown {bad}; choose from "
                         f"{','.join(METHODS + EXTRA_METHODS)}")
    cfg.methods = methods
    for k in ("epochs", "train_size", "val_size", "test_size", "episode_epochs",
              "unroll_every", "batch_size", "seeds", "pg_restarts"):
        if getattr(cfg, k) < 1:
            raise SystemExit(f"--{k.replace('_', '-')} must be >= 1, got {getattr(cfg, k)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise SystemExit(f"--lr must be > 0, got {cfg.lr}")
    if not cfg.alpha > 0:
        raise SystemExit(f"--alpha must be > 0, got {cfg.alpha}")
    if not hasattr(cfg, "echo"):
        cfg.echo = True
    if getattr(cfg, "device", None) is None:
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg


def main(args: Sequence[str] | argparse.Namespace | None = None) -> list[dict[str, Any]]:
    """Entry point: ``python -m torchdht.experiments mixup [options]``.

    Args:
        args: command-line arguments (default: None, ``sys.argv[1:]``), or
            options already parsed by a parser that :func:`add_arguments`
            filled.

    Returns:
        The rows of :func:`run_mixup`.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as printed:
        ...     rows = main(["--fake-data", "--train-size", "32", "--val-size", "16",
        ...                  "--test-size", "16", "--epochs", "1", "--methods", "erm",
        ...                  "--out", "", "--no-progress"])
        >>> "61.75" in printed.getvalue(), len(rows)
        (True, 1)
    """
    if not isinstance(args, argparse.Namespace):
        p = argparse.ArgumentParser(prog="python -m torchdht.experiments mixup",
                                    description=DESCRIPTION)
        add_arguments(p)
        args = p.parse_args(sys.argv[1:] if args is None else list(args))
    return run_mixup(resolve_config(args))


if __name__ == "__main__":
    main()
