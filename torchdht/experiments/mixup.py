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
the 50k training images, full test set, 50 epochs), ``--quick`` a run of a
minute (1,000 / 200 / 500 images, 2 epochs); ``--iters N`` ends each run
after N steps. It writes under ``--out``:
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
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..mixup import MixupTeacher
from . import _core as core
from ._core.cifar import CLASSES, CifarData, load_cifar10

__all__ = [
    "CLASSES",
    "DESCRIPTION",
    "METHODS",
    "PAPER_TABLE1",
    "CifarData",
    "MixupConfig",
    "add_arguments",
    "config_from_args",
    "cuts",
    "format_table",
    "load_cifar10",
    "main",
    "run",
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

CIFAR_MEAN, CIFAR_STD = core.CIFAR10_MEAN, core.CIFAR10_STD

DEFAULTS = {"train_size": 20000, "val_size": 5000, "test_size": 10000, "epochs": 50,
            "episode_epochs": 2, "unroll_every": 1, "seeds": 1}
"""The default (CPU) setting; see ``--help`` for what it cuts."""
FULL = {"train_size": 40000, "val_size": 10000, "test_size": 10000, "epochs": 50,
        "episode_epochs": 2, "unroll_every": 1, "seeds": 1}
"""``--full``: the paper's setting."""
QUICK = {"train_size": 1000, "val_size": 200, "test_size": 500, "epochs": 2,
         "episode_epochs": 2, "unroll_every": 1, "seeds": 1}
"""``--quick``: every method and the whole pipeline in about a minute."""


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
class MixupConfig:
    """The experiment's settings (checked on creation: ``ValueError``); the sizes default
    to :data:`DEFAULTS`.

    Attributes:
        methods: from :data:`METHODS` and :data:`EXTRA_METHODS`, in table order.
        epochs, train_size, val_size, test_size, episode_epochs, unroll_every: see
            ``--help``.
        pg_restarts: ``reinforce-restarts``' search runs before the final run (default: 10).
        unroll_order: hypergradient order, 1 or 2 (default: 2, the paper's).
        alpha: cMixup's ``Beta(alpha, alpha)`` (default: 1.0).
        batch_size: batch size (default: 128).
        lr: Adam learning rate (default: 1e-3).
        seeds: seeds per method, from ``first_seed`` (default: 1, from 0).
        iters: training steps per run at most (default: None, every epoch).
        data_root: the data root (default: None, :func:`torchdht.data.resolve_root`'s).
        fake_data: ``torchvision.datasets.FakeData`` instead of CIFAR-10 (smoke tests).
        out: output folder, None or ``""`` for none (default: "runs/mixup").
        device: torch device (default: None, cuda if available, else cpu).
        threads: torch threads, None to leave them (default: 1).
        full: the sizes are the paper's (:data:`FULL`); recorded in ``config.json``.
        progress: a progress bar and a line per run; echo: print the table.
    """

    methods: Sequence[str] = METHODS
    epochs: int = DEFAULTS["epochs"]
    train_size: int = DEFAULTS["train_size"]
    val_size: int = DEFAULTS["val_size"]
    test_size: int = DEFAULTS["test_size"]
    episode_epochs: int = DEFAULTS["episode_epochs"]
    unroll_every: int = DEFAULTS["unroll_every"]
    pg_restarts: int = 10
    unroll_order: int = 2
    alpha: float = 1.0
    batch_size: int = 128
    lr: float = 1e-3
    seeds: int = 1
    first_seed: int = 0
    iters: int | None = None
    data_root: str | os.PathLike[str] | None = None
    fake_data: bool = False
    out: str | os.PathLike[str] | None = "runs/mixup"
    device: str | None = None
    threads: int | None = 1
    full: bool = False
    progress: bool = True
    echo: bool = True

    def __post_init__(self) -> None:
        self.methods = [m.strip() for m in self.methods if m.strip()]
        bad = [m for m in self.methods if m not in METHODS + EXTRA_METHODS]
        if bad or not self.methods:
            raise ValueError(f"--methods: unknown {bad}; choose from "
                             f"{','.join(METHODS + EXTRA_METHODS)}")
        for k in ("epochs", "train_size", "val_size", "test_size", "episode_epochs",
                  "unroll_every", "batch_size", "seeds", "pg_restarts"):
            if getattr(self, k) < 1:
                raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")
        if self.iters is not None and self.iters < 1:
            raise ValueError(f"--iters must be >= 1, got {self.iters}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.alpha > 0:
            raise ValueError(f"--alpha must be > 0, got {self.alpha}")
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"


def _make_teacher(method: str, seed: int, total_steps: int, cfg: MixupConfig
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
                cfg: MixupConfig, *, epochs: int, steps: int, seed: int, phase: str,
                order_gen: torch.Generator, val_gen: torch.Generator, learn: bool,
                on_step: Callable[[], None]) -> tuple[list[dict[str, Any]], float, int]:
    """Train ``model`` (a fresh Adam) for ``epochs``, ``steps`` steps at most, one row per
    epoch (the last one where the steps end); returns (rows, timed seconds, steps)."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n, bs = len(data.x_train), cfg.batch_size
    per_epoch = math.ceil(n / bs)
    steps = min(steps, epochs * per_epoch)
    rows: list[dict[str, Any]] = []
    acc: dict[str, Any] = {}  # this epoch's sums
    perm = torch.empty(0, dtype=torch.int64)

    def fetch(it: int) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        nonlocal perm
        b = it % per_epoch
        if b == 0:
            perm = torch.randperm(n, generator=order_gen)
            acc.update(loss=0.0, lam=0.0, mix=0.0, counts=[0, 0, 0])
        idx = perm[b * bs : (b + 1) * bs]
        val_batch = None
        if method == "unroll" and it % cfg.unroll_every == 0:
            vidx = torch.randint(len(data.x_val), (bs,), generator=val_gen)
            val_batch = (core.cifar_to_float(data.x_val[vidx]), data.y_val[vidx])
        return core.cifar_to_float(data.x_train[idx]), data.y_train[idx], val_batch

    def step(batch: tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]) -> float:
        xb, yb, val_batch = batch
        xm, ym = (xb, yb) if teacher is None else teacher(xb, yb)
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
        return lv

    def after_step(it: int, lv: float, _: Any) -> None:
        if not math.isfinite(lv):
            raise FloatingPointError(f"{method} (seed {seed}) diverged at step {it}")
        lam = 1.0 if teacher is None else float(teacher.last_lambda)  # type: ignore[arg-type]
        acc["loss"] += lv
        acc["lam"] += lam
        acc["mix"] += min(lam, 1.0 - lam)
        if teacher is not None and teacher.last_action is not None:
            acc["counts"][teacher.last_action] += 1
        on_step()

    def end_epoch(it: int, _: Any) -> None:
        epoch = math.ceil(it / per_epoch)
        done = it - (epoch - 1) * per_epoch  # steps in this epoch
        correct, loss_sum = core.evaluate(model, data.x_val, data.y_val, chunk=1000,
                                     transform=core.cifar_to_float, loss=F.cross_entropy)
        val_loss, val_acc = loss_sum / max(len(data.x_val), 1), correct / max(len(data.x_val), 1)
        correct, _ = core.evaluate(model, data.x_test, data.y_test, chunk=1000,
                              transform=core.cifar_to_float)
        row: dict[str, Any] = {
            "method": method, "seed": seed, "phase": phase, "epoch": epoch,
            "train_loss": acc["loss"] / done, "val_loss": val_loss, "val_acc": 100 * val_acc,
            "test_acc": 100 * (correct / max(len(data.x_test), 1)),
            "lambda_mean": acc["lam"] / done, "mix_strength": acc["mix"] / done,
            "frac_lam0": "", "frac_lam05": "", "frac_lam1": "", "policy_probs": "",
            "reward": "", "advantage": "",
        }
        rl = method in ("reinforce", "reinforce-restarts")
        if method == "dmixup" or rl:
            row["frac_lam0"], row["frac_lam05"], row["frac_lam1"] = (
                c / done for c in acc["counts"])
        if teacher is not None:
            if rl and epoch % cfg.episode_epochs == 0:
                st = teacher.reward(val_loss=val_loss, val_acc=val_acc, update=learn)
                row["reward"], row["advantage"] = st["reward"], st["advantage"]
            else:
                teacher.observe(val_loss=val_loss)
            if rl:
                row["policy_probs"] = ";".join(f"{p:.3f}" for p in teacher.action_probs())
        rows.append(row)

    model.train()
    stats = core.train_loop(steps, step, fetch=fetch, callbacks=[after_step], evaluate=end_epoch,
                       eval_at={*range(per_epoch, steps, per_epoch), steps})
    return rows, stats.step_seconds, stats.steps


def _train_one(method: str, data: CifarData, seed: int, cfg: MixupConfig,
               on_step: Callable[[], None]) -> dict[str, Any]:
    per_epoch = math.ceil(len(data.x_train) / cfg.batch_size)
    total = min(cfg.epochs * per_epoch, cfg.iters or cfg.epochs * per_epoch)
    kw: dict[str, Any] = {"seed": seed, "on_step": on_step,
                          "order_gen": torch.Generator().manual_seed(seed),  # same batches
                          "val_gen": torch.Generator().manual_seed(seed + 10**6)}
    wall0 = time.perf_counter()
    search: list[dict[str, Any]] = []
    with core.seeded(seed):  # same initialisation for every method
        model = simple_cnn().to(cfg.device)
        teacher = _make_teacher(method, seed, total, cfg)
        if method == "reinforce-restarts":
            # The released code's protocol: policy search over restarted short runs (one
            # episode each, from the same initial weights), then a fresh run that samples
            # from the learned policy without updating it.
            assert teacher is not None
            w0 = {k: v.clone() for k, v in model.state_dict().items()}
            for k in range(cfg.pg_restarts):
                model.load_state_dict(w0)
                teacher.new_run(total_steps=cfg.episode_epochs * per_epoch)
                rows, _, _ = _run_epochs(method, model, teacher, data, cfg,
                                         epochs=cfg.episode_epochs,
                                         steps=cfg.episode_epochs * per_epoch,
                                         phase=f"search-{k + 1}", learn=True, **kw)
                search.extend(rows)
            model.load_state_dict(w0)
            teacher.new_run(total_steps=total)
        curve, train_time, step = _run_epochs(method, model, teacher, data, cfg,
                                              epochs=cfg.epochs, steps=total, phase="train",
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
    return core.format_table(header, [
        (LABELS.get(r["method"], r["method"]), f"{PAPER_TABLE1[r['method']]:.2f}",
         f"{r['test_acc_mean']:.2f}" + (f" ± {r['test_acc_std']:.2f}" if n_seeds > 1 else ""),
         f"{r['best_acc_mean']:.2f}", f"{r['ms_per_step']:.2f}",
         "-" if r["cost_vs_erm"] is None else f"{r['cost_vs_erm']:.2f}x",
         f"{r['mix_strength']:.3f}", f"{r['wall_s']:.0f}") for r in rows])


_CURVE_FIELDS = ("method", "seed", "phase", "epoch", "train_loss", "val_loss", "val_acc",
                 "test_acc", "lambda_mean", "mix_strength", "frac_lam0", "frac_lam05", "frac_lam1",
                 "policy_probs", "reward", "advantage")
_RESULT_FIELDS = ("method", "paper_acc", "n_seeds", "epochs", "train_size", "val_size",
                  "test_size", "test_acc_mean", "test_acc_std", "test_acc_per_seed",
                  "best_acc_mean", "ms_per_step", "cost_vs_erm", "mix_strength", "episodes",
                  "wall_s")


def _plot(writer: core.Writer, rows: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]],
          title: str) -> None:
    with writer.figure("accuracy.png", 2, figsize=(12, 4.5)) as (ax, ax2):
        for r in rows:
            m = r["method"]
            seeds = sorted({c["seed"] for c in curves if c["method"] == m})
            per = [[c for c in curves if c["method"] == m and c["seed"] == s
                    and c["phase"] == "train"] for s in seeds]
            epochs = [c["epoch"] for c in per[0]]
            acc = [statistics.fmean(p[i]["test_acc"] for p in per) for i in range(len(epochs))]
            mix = [statistics.fmean(p[i]["mix_strength"] for p in per)
                   for i in range(len(epochs))]
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
        ax.figure.suptitle(title, fontsize=9)


def cuts(cfg: MixupConfig) -> list[str]:
    """What the setting ``cfg`` cuts from the paper's (:data:`FULL`), in words.

    Example:
        >>> cuts(MixupConfig())
        ['training images 20000 (paper: 40000)', 'validation images 5000 (paper: 10000)']
        >>> cuts(MixupConfig(**{k: v for k, v in FULL.items() if k != "seeds"}))
        []
    """
    names = {"train_size": "training images", "val_size": "validation images",
             "test_size": "test images", "epochs": "epochs",
             "episode_epochs": "epochs per REINFORCE episode",
             "unroll_every": "steps per hypergradient step"}
    out = [f"{names[k]} {getattr(cfg, k)} (paper: {v})" for k, v in FULL.items()
           if k in names and getattr(cfg, k) != v]
    if cfg.epochs // cfg.episode_epochs != FULL["epochs"] // FULL["episode_epochs"]:
        out.append(f"REINFORCE episodes {cfg.epochs // cfg.episode_epochs} "
                   f"(paper: {FULL['epochs'] // FULL['episode_epochs']})")
    if cfg.iters is not None:
        out.append(f"at most {cfg.iters} steps per run")
    return out


def run(cfg: MixupConfig, data: CifarData | None = None) -> list[dict[str, Any]]:
    """Run the experiment described by ``cfg``; returns one row per method.

    Args:
        cfg: the settings.
        data: the splits (default: None, loaded with :func:`load_cifar10`).

    Returns:
        One dict per method: ``method``, ``paper_acc``, ``test_acc_mean``,
        ``test_acc_std``, ``test_acc_per_seed`` (final epoch, %),
        ``best_acc_mean`` (best epoch on the test set, optimistic),
        ``ms_per_step`` (teacher + forward + backward + optimizer step, and
        the hypergradient for ``unroll``), ``cost_vs_erm``, ``mix_strength``,
        ``episodes``, ``wall_s`` and the settings.

    Example:
        >>> cfg = MixupConfig(fake_data=True, train_size=32, val_size=16, test_size=16,
        ...                   epochs=1, methods=["erm", "cmixup"], out="", progress=False,
        ...                   echo=False)
        >>> [r["method"] for r in run(cfg)]
        ['erm', 'cmixup']
    """
    methods = list(cfg.methods)
    t_load = time.perf_counter()
    if data is None:
        data = load_cifar10(cfg.data_root, train_size=cfg.train_size, val_size=cfg.val_size,
                            test_size=cfg.test_size, fake=cfg.fake_data)
    load_s = time.perf_counter() - t_load
    dev = torch.device(cfg.device or "cpu")
    data = CifarData(data.x_train.to(dev), data.y_train.to(dev), data.x_val.to(dev),
                     data.y_val.to(dev), data.x_test.to(dev), data.y_test.to(dev), data.source)
    per_epoch = math.ceil(len(data.x_train) / cfg.batch_size)
    run_steps = min(cfg.epochs * per_epoch, cfg.iters or cfg.epochs * per_epoch)
    extra = cfg.pg_restarts * cfg.episode_epochs * per_epoch if "reinforce-restarts" in methods \
        else 0
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    t_all = time.perf_counter()
    with core.torch_threads(cfg.threads) as threads:
        bar = core.progress_bar(cfg.seeds * (len(methods) * run_steps + extra), cfg.progress,
                           "mixup", mininterval=5.0)
        try:
            for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
                for m in methods:
                    bar.set_postfix_str(f"{m}, seed {seed}")
                    r = _train_one(m, data, seed, cfg, bar.update)
                    runs[m].append(r)
                    if cfg.progress:
                        bar.write(f"{m} seed {seed}: final test acc {r['final_acc']:.2f}% "
                                  f"(best {r['best_acc']:.2f}%), {r['ms_per_step']:.2f} "
                                  f"ms/step, {r['wall_s']:.0f} s")
        finally:
            bar.close()
    total_s = time.perf_counter() - t_all
    rows = []
    for m in methods:
        rs = runs[m]
        mean, std = core.mean_std([r["final_acc"] for r in rs])
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
    for r in rows:
        r["cost_vs_erm"] = None if erm is None else r["ms_per_step"] / erm["ms_per_step"]
    curves = [c for m in methods for r in runs[m] for c in r["search"] + r["curve"]]
    setting = (f"{len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test, "
               f"{cfg.epochs} epochs, batch {cfg.batch_size}, Adam lr {cfg.lr}, "
               f"seeds {cfg.first_seed}..{cfg.first_seed + cfg.seeds - 1}")
    writer = core.Writer(cfg.out)
    if writer.out is not None:
        writer.csv("curves.csv", curves, _CURVE_FIELDS, float_format=".5g")
        writer.csv("results.csv", rows, _RESULT_FIELDS, float_format=".5g",
                   formats={"cost_vs_erm": ".3f"})
        _plot(writer, rows, curves, f"CIFAR-10, simple CNN: {setting}")
        writer.json("config.json", {
            **dataclasses.asdict(cfg), "source": data.source, "load_s": load_s,
            "total_s": total_s, "cuts": cuts(cfg), "torch_threads": threads,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__})
    if cfg.echo:
        print(f"Data: {data.source}; {setting}; device {cfg.device}, {threads} torch "
              f"thread(s); unroll: order {cfg.unroll_order}, every {cfg.unroll_every} "
              f"step(s); reinforce: episode = {cfg.episode_epochs} epoch(s)"
              + (f"; reinforce-restarts: {cfg.pg_restarts} search runs, then frozen"
                 if "reinforce-restarts" in methods else ""))
        cut = cuts(cfg)
        print("Cut from the paper's setting (--full): " + ("; ".join(cut) if cut else "nothing"))
        print(format_table(rows))
        print(f"Total {total_s:.0f} s training + evaluation, {load_s:.0f} s loading.")
        if writer.written:
            print("Wrote " + ", ".join(str(p) for p in writer.written))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options: the common ones and its own.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> config_from_args(p.parse_args([])).train_size
        20000
    """
    d, q = DEFAULTS, QUICK
    core.add_common_arguments(
        p, data="folder holding cifar10-jpeg/ or cifar-10-batches-py/ (torchvision downloads "
        "CIFAR-10 there if neither is found)", out="runs/mixup", first_seed=True,
        seeds="(default: 1)",
        iters="at most, ending the last epoch early (default: all --epochs)",
        quick=f"{q['train_size']} train / {q['val_size']} val / {q['test_size']} test "
        f"images, {q['epochs']} epochs",
    )
    p.add_argument("--full", action="store_true",
                   help="the paper's setting: 40k train / 10k val (the full training set), "
                   "10k test, 50 epochs, reinforce episodes of 2 epochs, a hypergradient "
                   "every step (hours on a CPU; minutes on a GPU-sized machine)")
    for key, flag, what in (
            ("epochs", "--epochs", "epochs"),
            ("train_size", "--train-size", "training images"),
            ("val_size", "--val-size", "validation images held out of the training set"),
            ("test_size", "--test-size", "test images"),
            ("episode_epochs", "--episode-epochs",
             "epochs per REINFORCE episode, one policy update each"),
            ("unroll_every", "--unroll-every", "training steps per hypergradient step")):
        p.add_argument(flag, type=int, default=None,
                       help=f"{what} (default: {d[key]}; --full: {FULL[key]}; --quick: {q[key]})")
    c = MixupConfig
    p.add_argument("--pg-restarts", type=int, default=c.pg_restarts,
                   help="reinforce-restarts: restarted search runs of --episode-epochs epochs "
                   "before the final run (the released code's)")
    p.add_argument("--unroll-order", type=int, choices=(1, 2), default=c.unroll_order,
                   help="hypergradient order (2: the paper's)")
    p.add_argument("--alpha", type=float, default=c.alpha,
                   help="cMixup's Beta(alpha, alpha) (as in the released code)")
    p.add_argument("--batch-size", type=int, default=c.batch_size, help="batch size")
    p.add_argument("--lr", type=float, default=c.lr, help="Adam learning rate")
    p.add_argument("--methods", action=core.ListAction, default=list(METHODS), metavar="M,M,...",
                   help="comma-separated, from " + ",".join(METHODS + EXTRA_METHODS)
                   + f" (default: {','.join(METHODS)})")
    p.add_argument("--fake-data", action="store_true",
                   help="torchvision FakeData instead of CIFAR-10 (smoke tests)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu); the teachers' "
                   "small policy networks stay on the CPU")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the fastest for this small CNN on a shared CPU; "
                   "0 leaves torch's default)")


def config_from_args(args: argparse.Namespace) -> MixupConfig:
    """The :class:`MixupConfig` of parsed options (``ValueError`` if they do not check)."""
    if args.full and args.quick:
        raise ValueError("--full and --quick exclude each other")
    core.fill_presets(args, FULL if args.full else QUICK if args.quick else DEFAULTS)
    keys = ("methods", "epochs", "train_size", "val_size", "test_size", "episode_epochs",
            "unroll_every", "pg_restarts", "unroll_order", "alpha", "batch_size", "lr", "seeds",
            "first_seed", "iters", "data_root", "fake_data", "out", "device", "full")
    return MixupConfig(**{k: getattr(args, k) for k in keys}, threads=args.threads or None,
                       progress=not args.no_progress)


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments mixup") -> int:
    """``python -m torchdht.experiments mixup [options]``; returns the exit status (0, or 1
    when it cannot run, e.g. no CIFAR-10 under the data root).

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as printed:
        ...     code = main(["--fake-data", "--train-size", "32", "--val-size", "16",
        ...                  "--test-size", "16", "--epochs", "1", "--methods", "erm",
        ...                  "--out", "", "--no-progress"])
        >>> "61.75" in printed.getvalue(), code
        (True, 0)
    """
    return core.run_main(sys.modules[__name__], argv, prog)


if __name__ == "__main__":
    from torchdht.experiments.mixup import main as _main  # the importable module's copy

    sys.exit(_main(prog="python -m torchdht.experiments.mixup"))
