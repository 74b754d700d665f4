"""Attribution study: what causes performative teaching's gain over SGD?

``python -m torchdht.experiments attribution`` (or ``python -m
torchdht.experiments.attribution``) trains the paper's learners with
performative teaching and with controls that separate its ingredients:

* **MNIST, MLP 784-128-10**, the paper's protocol (plain SGD, lr 1e-3, weight
  decay 5e-4, batch 128, 39k iterations, normalised inputs), 5 seeds each:

  ==========================  =================================================
  ``sgd``                     plain SGD
  ``sgd-lr-x2`` ... ``x8``    plain SGD with the lr multiplied by 2, 4, 6, 8 (a
                              tuned baseline)
  ``sgd-enc-x6``              the encoder's lr multiplied by 1 + k = 6 (the
                              released code's count of encoder gradients)
  ``random``                  a uniform draw from the teacher's cap
  ``random-released``         that, plus the released code's extra encoder
                              gradient (``lookahead_encoder_grad=True``)
  ``dht``                     Algorithm 1, clean (eps 0.1, lookahead lr eta)
  ``dht-released``            Algorithm 1 plus the extra encoder gradient
  ``dht-eps*-la*-solve*``     clean DHT over eps in {0.02, 0.1, 0.3}, lookahead
                              lr in {eta, 10 eta}, solver step default and half
  ==========================  =================================================

* **CIFAR-10 (the JPEG copy), CNN-3**, the first 2,000 iterations of the
  paper's recipe (lr 0.1 before its first decay, momentum 0.9, weight decay
  5e-4, batch 128, random crop + flip), 1 seed: ``sgd``, ``sgd-enc-x6``,
  ``random``, ``random-released``, ``dht``, ``dht-released``; a sanity check
  of the MNIST conclusion.

For a given seed every condition starts from the same initialisation and
sees the same batches. Runs parallelise over ``--workers`` processes with one
torch thread each. Every finished run is saved at once under
``<out>/runs/`` and reused when the study is started again with the same
settings, so an interrupted study resumes. Written under ``--out`` (default
``runs/attribution``; ``runs/attribution-quick`` with ``--quick``):

* ``results.csv`` -- one row per run (final test accuracy, ms/step, seconds);
* ``summary.csv`` -- mean +- std over seeds per condition;
* ``comparisons.csv`` -- paired differences (same seeds) with a paired t-test;
* ``attribution.png`` -- final accuracies and accuracy curves;
* ``conclusion.md`` -- the tables and a short conclusion generated from them;
* ``config.json`` -- the settings and the wall time of each part.

``--quick`` runs a reduced version in well under a minute (MNIST 100
iterations, 2 seeds, 8 conditions; CIFAR 3 iterations of batch 16 on 100
images, tested on 100): a smoke test of the whole pipeline, whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import default_root
from ..functional.solve import default_solve_lr
from ..models import build_model
from ..performative import PerformativeTeacher

__all__ = [
    "CIFAR_CONDITIONS",
    "DESCRIPTION",
    "MNIST_CONDITIONS",
    "Condition",
    "PartSettings",
    "add_arguments",
    "main",
    "paired_comparison",
]

DESCRIPTION = (
    "What causes performative teaching's gain: the extra encoder gradient of the released "
    "code, the greedy teacher, or an under-tuned lr? MNIST MLP (5 seeds) and CIFAR-10 CNN-3."
)
DATA_ENV_VAR = "TORCHDHT_DATA"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
LOOKAHEAD_STEPS = 5  # the paper's n_w; 1 + k encoder gradients in the released code
SOLVE_STEPS = 15  # the paper's m
STUDY_VERSION = 1  # part of every saved run's key: bump when a run's meaning changes


@dataclass(frozen=True)
class Condition:
    """One arm of the study.

    Attributes:
        name: identifier used in tables, files and ``--conditions``.
        group: ``"sgd"``, ``"lr"`` (the lr sweep), ``"teacher"`` or ``"grid"``.
        lr_mult: multiplier of every parameter group's lr.
        encoder_lr_mult: further multiplier of the encoder's lr (not the head's).
        teacher: :class:`~torchdht.PerformativeTeacher` arguments, None for no
            teacher; ``lookahead_lr`` and ``solve_lr`` are given as multiples
            (``lookahead_lr_mult`` of eta, ``solve_lr_mult`` of the default
            step) and resolved per run.
        note: one line for the tables.
    """

    name: str
    group: str
    lr_mult: float = 1.0
    encoder_lr_mult: float = 1.0
    teacher: dict[str, Any] | None = None
    note: str = ""


def _teacher(policy: str, released: bool = False, eps: float = 0.1, la: float = 1.0,
             solve: float = 1.0) -> dict[str, Any]:
    return {"policy": policy, "lookahead_encoder_grad": released, "eps": eps,
            "lookahead_lr_mult": la, "solve_lr_mult": solve}


def _grid() -> list[Condition]:
    out = []
    for eps in (0.02, 0.1, 0.3):
        for la in (1.0, 10.0):
            for solve in (1.0, 0.5):
                if (eps, la, solve) == (0.1, 1.0, 1.0):
                    continue  # that is "dht"
                out.append(Condition(
                    f"dht-eps{eps:g}-la{la:g}x-solve{solve:g}x", "grid",
                    teacher=_teacher("greedy", eps=eps, la=la, solve=solve),
                    note=f"clean DHT, eps {eps:g}, lookahead lr {la:g} eta, solver step "
                    f"{solve:g}x default",
                ))
    return out


_SGD = Condition("sgd", "sgd", note="plain SGD")
_ENC = Condition("sgd-enc-x6", "sgd", encoder_lr_mult=1.0 + LOOKAHEAD_STEPS,
                 note="plain SGD, encoder lr x6 (the released code's gradient count)")
_TEACHERS = [
    Condition("random", "teacher", teacher=_teacher("random"),
              note="uniform draw from the cap (the paper's ablation)"),
    Condition("random-released", "teacher", teacher=_teacher("random", released=True),
              note="random + the released code's extra encoder gradient (control)"),
    Condition("dht", "teacher", teacher=_teacher("greedy"), note="Algorithm 1, clean"),
    Condition("dht-released", "teacher", teacher=_teacher("greedy", released=True),
              note="Algorithm 1 + extra encoder gradient (released code)"),
]
MNIST_CONDITIONS: tuple[Condition, ...] = (
    _SGD,
    *(Condition(f"sgd-lr-x{m}", "lr", lr_mult=float(m), note=f"plain SGD, lr x{m}")
      for m in (2, 4, 6, 8)),
    _ENC,
    *_TEACHERS,
    *_grid(),
)
"""The MNIST arms, in table order."""
CIFAR_CONDITIONS: tuple[Condition, ...] = (_SGD, _ENC, *_TEACHERS)
"""The CIFAR-10 arms, in table order."""
_QUICK_MNIST = ("sgd", "sgd-lr-x6", "sgd-enc-x6", "random", "random-released", "dht",
                "dht-released", "dht-eps0.02-la10x-solve0.5x")


@dataclass(frozen=True)
class PartSettings:
    """Training settings of one part of the study.

    Attributes:
        iters: training iterations per run.
        seeds: seeds ``0 .. seeds-1`` per condition.
        batch_size: examples per step.
        lr: the base learning rate (also the teacher's eta).
        weight_decay: SGD weight decay.
        momentum: SGD momentum.
        eval_every: iterations between test evaluations (the last is always evaluated).
        train_subset: images per class kept for training (CIFAR only; None: all).
        test_subset: images per class kept for testing (CIFAR only; None: all).
    """

    iters: int
    seeds: int
    batch_size: int
    lr: float
    weight_decay: float
    momentum: float
    eval_every: int
    train_subset: int | None = None
    test_subset: int | None = None


FULL = {
    "mnist": PartSettings(39_000, 5, 128, 1e-3, 5e-4, 0.0, 1500),
    "cifar": PartSettings(2_000, 1, 128, 0.1, 5e-4, 0.9, 500),
}
QUICK = {
    "mnist": PartSettings(100, 2, 128, 1e-3, 5e-4, 0.0, 25),
    "cifar": PartSettings(3, 1, 16, 0.1, 5e-4, 0.9, 3, train_subset=10, test_subset=10),
}


# ----------------------------------------------------------------------------- data

_DATA: dict[tuple, Any] = {}  # per-process cache


def _mnist(root: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    key = ("mnist", root)
    if key not in _DATA:
        from torchvision.datasets import MNIST

        out = []
        for train in (True, False):
            ds = MNIST(root, train=train, download=False)
            x = (ds.data.to(torch.float32).div_(255) - MNIST_MEAN) / MNIST_STD
            out += [x.reshape(len(x), -1), ds.targets.to(torch.int64)]
        _DATA[key] = tuple(out)
    return _DATA[key]


def _read_jpeg_split(folder: Path, per_class: int | None) -> tuple[Tensor, Tensor]:
    import numpy as np
    from PIL import Image
    from torchvision.datasets import ImageFolder

    samples = ImageFolder(str(folder)).samples  # sorted by class, then file name
    if per_class is not None:
        seen: dict[int, int] = {}
        kept = []
        for path, label in samples:
            if seen.get(label, 0) < per_class:
                kept.append((path, label))
                seen[label] = seen.get(label, 0) + 1
        samples = kept
    x = torch.empty(len(samples), 3, 32, 32, dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as im:
            x[i] = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    return x, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _cifar(root: str, settings: PartSettings, fake: bool, cache_dir: str) -> tuple[Tensor, ...]:
    """CIFAR-10 as uint8 (N, 3, 32, 32) tensors and labels: train x, y, test x, y."""
    key = ("cifar", root, settings.train_subset, settings.test_subset, fake)
    if key in _DATA:
        return _DATA[key]
    if fake:  # random images of the same shape
        gen = torch.Generator().manual_seed(0)
        n_tr = 10 * (settings.train_subset or 102)
        n_te = 10 * (settings.test_subset or 26)
        out = (torch.randint(0, 256, (n_tr, 3, 32, 32), dtype=torch.uint8, generator=gen),
               torch.randint(0, 10, (n_tr,), generator=gen),
               torch.randint(0, 256, (n_te, 3, 32, 32), dtype=torch.uint8, generator=gen),
               torch.randint(0, 10, (n_te,), generator=gen))
    else:
        jpeg = Path(root) / "cifar10-jpeg"
        parts = []
        for split, per_class in (("train", settings.train_subset),
                                 ("test", settings.test_subset)):
            cache = Path(cache_dir) / f"cifar10_jpeg_{split}.pt"
            if per_class is None and cache.is_file():
                parts += list(torch.load(cache))
                continue
            x, y = _read_jpeg_split(jpeg / split, per_class)
            if per_class is None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save((x, y), cache)
            parts += [x, y]
        out = tuple(parts)
    _DATA[key] = out
    return out


def _cifar_batch(x_u8: Tensor, augment: bool, gen: torch.Generator | None) -> Tensor:
    """uint8 images -> normalised float; with random crop (padding 4) and flip."""
    if augment:
        assert gen is not None
        b = x_u8.shape[0]
        padded = F.pad(x_u8, (4, 4, 4, 4))
        offset = torch.randint(0, 9, (2, b), generator=gen)
        ar = torch.arange(32)
        rows = (offset[0, :, None] + ar)[:, None, :, None]
        cols = (offset[1, :, None] + ar)[:, None, None, :]
        x_u8 = padded[torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None],
                      rows, cols]
        flip = torch.rand(b, generator=gen) < 0.5
        x_u8 = torch.where(flip[:, None, None, None], x_u8.flip(-1), x_u8)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x_u8.to(torch.float32).div_(255) - mean) / std


# ----------------------------------------------------------------------------- one run


def _eval_points(iters: int, every: int) -> list[int]:
    points = list(range(every, iters, every))
    return [0, *points, iters]


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, cifar: bool) -> float:
    model.eval()
    correct = 0
    for xb, yb in zip(x.split(500), y.split(500)):
        xb = _cifar_batch(xb, False, None) if cifar else xb
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train()
    return 100.0 * correct / max(len(y), 1)


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (part, condition, seed) and return its record. Picklable entry point."""
    part, seed = job["part"], job["seed"]
    cond = Condition(**job["condition"])
    s = PartSettings(**job["settings"])
    cifar = part == "cifar"
    if cifar:
        x_tr, y_tr, x_te, y_te = _cifar(job["data_root"], s, job["fake"], job["cache_dir"])
    else:
        x_tr, y_tr, x_te, y_te = _mnist(job["data_root"])

    torch.manual_seed(seed)  # same initialisation for every condition
    model = build_model("cnn3" if cifar else "mlp", num_classes=10)
    lr = s.lr * cond.lr_mult
    opt = torch.optim.SGD(
        [{"params": model.encoder.parameters(), "lr": lr * cond.encoder_lr_mult},
         {"params": model.head.parameters(), "lr": lr}],
        lr=lr, momentum=s.momentum, weight_decay=s.weight_decay,
    )
    teacher = None
    if cond.teacher is not None:
        kw = dict(cond.teacher)
        la_mult, solve_mult = kw.pop("lookahead_lr_mult"), kw.pop("solve_lr_mult")
        teacher = PerformativeTeacher(
            model.head, optimizer=opt, seed=seed, lookahead_steps=LOOKAHEAD_STEPS,
            solve_steps=SOLVE_STEPS, lookahead_lr=None if la_mult == 1.0 else la_mult * lr,
            solve_lr=None if solve_mult == 1.0
            else solve_mult * default_solve_lr(kw["eps"], SOLVE_STEPS),
            **kw,
        )
    gen = torch.Generator().manual_seed(seed)  # same batches for every condition
    aug_gen = torch.Generator().manual_seed(10_000 + seed)
    points = set(_eval_points(s.iters, s.eval_every))
    curve: list[float] = []
    order = torch.empty(0, dtype=torch.int64)
    step_time, angle_sum, angle_n = 0.0, 0.0, 0
    diverged, last_loss = False, float("nan")
    start = time.perf_counter()
    model.train()
    for it in range(s.iters + 1):
        if it in points:
            curve.append(_accuracy(model, x_te, y_te, cifar))
        if it == s.iters:
            break
        if len(order) < s.batch_size:
            order = torch.cat([order, torch.randperm(len(y_tr), generator=gen)])
        idx, order = order[: s.batch_size], order[s.batch_size :]
        xb = _cifar_batch(x_tr[idx], True, aug_gen) if cifar else x_tr[idx]
        yb = y_tr[idx]
        t0 = time.perf_counter()
        if teacher is not None:
            teacher.set_targets(yb)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_time += time.perf_counter() - t0
        if it % 50 == 0 or it == s.iters - 1:
            last_loss = loss.item()
            if not math.isfinite(last_loss):
                diverged = True
                curve += [_accuracy(model, x_te, y_te, cifar)] * (len(points) - len(curve))
                break
            if teacher is not None:
                angle_sum += teacher.stats["angle_mean"]
                angle_n += 1
    if teacher is not None:
        teacher.remove()
    return {
        "part": part,
        "condition": cond.name,
        "seed": seed,
        "final_acc": curve[-1],
        "curve": curve,
        "eval_points": sorted(points),
        "ms_per_step": 1000.0 * step_time / max(s.iters, 1),
        "run_seconds": time.perf_counter() - start,
        "final_loss": last_loss,
        "diverged": diverged,
        "angle_mean": angle_sum / angle_n if angle_n else 0.0,
    }


def _init_worker() -> None:
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- statistics

# Two-sided 5 % critical values of Student's t, used when scipy is absent.
_T_CRIT = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
           9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def _t_crit(df: int) -> float:
    return _T_CRIT[max(k for k in _T_CRIT if k <= df)] if df < 30 else 1.96


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of ``a - b`` over the same seeds, with a paired t-test.

    Args:
        a: values of the first condition, one per seed.
        b: values of the second condition for the same seeds, in the same order.

    Returns:
        ``n``, ``diff_mean``, ``diff_std``, ``wins`` (seeds with ``a > b``),
        ``t``, ``p`` (two-sided; None without scipy or with fewer than two
        seeds), ``significant`` (at 5 %, two-sided) and ``statement``.

    Example:
        >>> r = paired_comparison([97.1, 97.3, 97.0], [96.0, 96.1, 96.2])
        >>> round(r["diff_mean"], 2), r["wins"], r["significant"]
        (1.03, 3, True)
        >>> paired_comparison([1.0, 2.0], [1.0, 2.0])["significant"]
        False
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long non-empty sequences, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.fmean(d)
    sd = statistics.stdev(d) if n > 1 else 0.0
    wins = sum(x > 0 for x in d)
    t: float | None = None
    p: float | None = None
    significant = False
    if n > 1:
        if sd > 0:
            t = mean / (sd / math.sqrt(n))
        else:
            t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        try:
            from scipy import stats as _st

            p = float(2.0 * _st.t.sf(abs(t), n - 1)) if math.isfinite(t) else (
                0.0 if t != 0 else 1.0)
            significant = p < 0.05
        except ImportError:  # pragma: no cover - scipy ships with scikit-learn
            significant = abs(t) > _t_crit(n - 1)
    if n < 2:
        statement = f"{mean:+.2f} points (1 seed: no test)"
    else:
        ptxt = f"p = {p:.3g}" if p is not None else f"|t| {'>' if significant else '<='} " \
            f"{_t_crit(n - 1)}"
        verdict = "significant" if significant else "not significant"
        statement = (f"{mean:+.2f} ± {sd:.2f} points, {wins}/{n} seeds better; paired t-test "
                     f"t = {t:.2f}, {ptxt}: {verdict} at 5 %")
    return {"n": n, "diff_mean": mean, "diff_std": sd, "wins": wins, "t": t, "p": p,
            "significant": significant, "statement": statement}


def _summarise(records: list[dict[str, Any]], conds: Sequence[Condition]) -> list[dict[str, Any]]:
    rows = []
    for c in conds:
        rs = sorted((r for r in records if r["condition"] == c.name), key=lambda r: r["seed"])
        if not rs:
            continue
        accs = [r["final_acc"] for r in rs]
        points = rs[0]["eval_points"]
        early = min(range(1, len(points)), key=lambda i: abs(points[i] - points[-1] / 10))
        rows.append({
            "condition": c.name,
            "group": c.group,
            "note": c.note,
            "n_seeds": len(rs),
            "seeds": [r["seed"] for r in rs],
            "acc_mean": statistics.fmean(accs),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "acc_per_seed": accs,
            "early_iter": points[early],
            "early_acc_mean": statistics.fmean(r["curve"][early] for r in rs),
            "ms_per_step": statistics.fmean(r["ms_per_step"] for r in rs),
            "run_seconds": statistics.fmean(r["run_seconds"] for r in rs),
            "angle_mean": statistics.fmean(r["angle_mean"] for r in rs),
            "diverged": sum(r["diverged"] for r in rs),
            "eval_points": points,
            "curve_mean": [statistics.fmean(r["curve"][i] for r in rs)
                           for i in range(len(points))],
        })
    return rows


def _by_seed(records: list[dict[str, Any]], name: str) -> dict[int, float]:
    return {r["seed"]: r["final_acc"] for r in records if r["condition"] == name}


def _compare(records: list[dict[str, Any]], a: str, b: str, why: str) -> dict[str, Any] | None:
    ra, rb = _by_seed(records, a), _by_seed(records, b)
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return None
    out = paired_comparison([ra[s] for s in seeds], [rb[s] for s in seeds])
    return {"a": a, "b": b, "question": why, **out}


def _comparisons(records: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict]:
    names = [r["condition"] for r in summary]
    pairs: list[tuple[str, str, str]] = [
        (n, "sgd", "vs plain SGD") for n in names if n != "sgd"
    ]
    lr_rows = [r for r in summary if r["group"] in ("sgd", "lr") and r["condition"] != "sgd-enc-x6"]
    best_lr = max(lr_rows, key=lambda r: r["acc_mean"])["condition"] if lr_rows else None
    grid = [r for r in summary if r["group"] == "grid" or r["condition"] == "dht"]
    best_grid = max(grid, key=lambda r: r["acc_mean"])["condition"] if grid else None
    pairs += [
        ("dht", "random", "clean: greedy vs random teacher"),
        ("dht-released", "random-released", "with the extra gradient: greedy vs random"),
        ("dht-released", "dht", "effect of the extra gradient (greedy)"),
        ("random-released", "random", "effect of the extra gradient (random)"),
        ("dht-released", "sgd-enc-x6", "released DHT vs encoder lr x6"),
    ]
    if best_lr and best_lr != "sgd":
        pairs.append(("dht-released", best_lr, "released DHT vs the best plain-SGD lr"))
        pairs.append((best_grid or "dht", best_lr, "best clean DHT vs the best plain-SGD lr"))
    out, seen = [], set()
    for a, b, why in pairs:
        if a == b or (a, b) in seen or a not in names or b not in names:
            continue
        seen.add((a, b))
        c = _compare(records, a, b, why)
        if c is not None:
            out.append(c)
    return out


# ----------------------------------------------------------------------------- conclusion


def _find(comps: list[dict], a: str, b: str) -> dict | None:
    return next((c for c in comps if c["a"] == a and c["b"] == b), None)


def _conclusion(mnist: list[dict], mcomps: list[dict], cifar: list[dict]) -> list[str]:
    """Plain sentences derived from the measurements (no claims beyond them)."""
    lines: list[str] = []
    acc = {r["condition"]: r for r in mnist}

    def say(a: str, b: str, label: str) -> dict | None:
        c = _find(mcomps, a, b)
        if c is not None:
            lines.append(f"- {label} (`{a}` − `{b}`): {c['statement']}.")
        return c

    if mnist:
        n = mnist[0]["n_seeds"]
        lines.append(f"MNIST (MLP, {n} seed{'s' if n != 1 else ''}, paired by seed):")
        rel = say("dht-released", "sgd", "Released-code DHT over SGD")
        clean = say("dht", "sgd", "Clean DHT over SGD")
        rnd = say("random", "sgd", "Random cap over SGD")
        ctrl = say("random-released", "sgd",
                   "Extra encoder gradient with a random teacher over SGD")
        greedy = say("dht-released", "random-released",
                     "Greedy over random, both with the extra gradient")
        enc = say("sgd-enc-x6", "sgd", "Encoder lr x6 over SGD")
        lr_rows = [r for r in mnist if r["group"] == "lr"]
        best = max([acc["sgd"], *lr_rows], key=lambda r: r["acc_mean"]) if "sgd" in acc else None
        tuned = None
        if best is not None and best["condition"] != "sgd":
            tuned = say("dht-released", best["condition"],
                        f"Released-code DHT over the best plain-SGD lr ({best['condition']}, "
                        f"chosen on the test set)")
        grid = [r for r in mnist if r["group"] == "grid" or r["condition"] == "dht"]
        if len(grid) > 1:
            g = max(grid, key=lambda r: r["acc_mean"])
            sgd_txt = f" (SGD {acc['sgd']['acc_mean']:.2f} %)" if "sgd" in acc else ""
            lines.append(f"- Best clean DHT setting: `{g['condition']}` at {g['acc_mean']:.2f} ± "
                         f"{g['acc_std']:.2f} %{sgd_txt}; the grid "
                         f"spans {min(r['acc_mean'] for r in grid):.2f}-"
                         f"{max(r['acc_mean'] for r in grid):.2f} %.")
        lines.append("")
        lines.append("What causes the gain, by these measurements:")

        def pos(c: dict | None) -> bool:
            return c is not None and c["significant"] and c["diff_mean"] > 0

        def null(c: dict | None) -> bool:
            return c is not None and not c["significant"]

        verdicts = []
        if pos(rel):
            assert rel is not None
            if ctrl is not None and greedy is not None:
                share = ctrl["diff_mean"] / rel["diff_mean"]
                verdicts.append(
                    f"Of the released code's {rel['diff_mean']:+.2f} point gain over SGD, the "
                    f"same extra encoder gradient with a random teacher (no teaching) gives "
                    f"{ctrl['diff_mean']:+.2f} ({100 * share:.0f} %), and the greedy teacher "
                    f"adds {greedy['diff_mean']:+.2f} on top ("
                    + ("significant" if greedy["significant"] else "not significant") + ").")
                g = greedy["diff_mean"]
                if share >= 1.0:
                    if greedy["significant"] and g < 0:
                        tail = f"; the greedy teacher takes {-g:.2f} points away (significant)"
                    elif greedy["significant"]:
                        tail = f"; the greedy teacher adds {g:+.2f} (significant)"
                    else:
                        tail = "; the greedy teacher adds nothing significant"
                    verdicts.append(
                        "So the whole gain comes from the extra encoder gradient (1 + k = 6 "
                        "gradients per step where SGD gets one), not from data hallucination "
                        "teaching" + tail + ".")
                elif share >= 0.75 and abs(g) <= 0.25 * rel["diff_mean"]:
                    verdicts.append(
                        "So the gain comes mainly from the extra encoder gradient (1 + k = 6 "
                        "gradients per step where SGD gets one), not from data hallucination "
                        "teaching." + (f" The greedy teacher's own contribution "
                                       f"({greedy['diff_mean']:+.2f}) is significant but small."
                                       if greedy["significant"] else ""))
                elif share < 0.5:
                    verdicts.append("So most of the gain needs the greedy teacher: the extra "
                                    "encoder gradient alone does not explain it.")
                else:
                    verdicts.append("So the extra encoder gradient explains part of the gain "
                                    "and the greedy teacher another part.")
            if enc is not None:
                verdicts.append(
                    f"Multiplying the encoder's lr by 6, with no teacher, gives "
                    f"{enc['diff_mean']:+.2f} ("
                    + ("significant" if enc["significant"] else "not significant")
                    + "): a larger encoder step " + ("is" if pos(enc) else "is not")
                    + " enough to obtain a gain.")
        elif rel is not None and rel["n"] < 2:
            verdicts.append("One seed only: no significance test, so no attribution is "
                            "claimed; the differences above are indicative only.")
        elif rel is not None:
            verdicts.append("The released code's DHT does not beat SGD significantly here.")
        if clean is not None:
            verdicts.append(
                "The clean algorithm (Algorithm 1 as written) "
                + ("beats SGD." if pos(clean) else
                   "is significantly worse than SGD." if clean["significant"] else
                   "gives no significant gain over SGD.")
            )
        if rnd is not None:
            verdicts.append("The random cap alone has "
                            + ("no significant effect, as the paper reports." if null(rnd)
                               else f"a significant effect of {rnd['diff_mean']:+.2f} points"
                               + (" (tiny next to the others)."
                                  if abs(rnd["diff_mean"]) < 0.1 else ".")))
        if tuned is not None and best is not None:
            teach_best = max((r["acc_mean"] for r in mnist if r["group"] in ("teacher", "grid")),
                             default=-math.inf)
            ahead = tuned["diff_mean"] > 0 and (tuned["significant"] or tuned["n"] < 2)
            if not ahead:
                whom = ("every teacher" if best["acc_mean"] >= teach_best
                        else "released-code DHT")
                verdicts.append(
                    ("(Indicative, one seed.) " if tuned["n"] < 2 else "")
                    + f"Plain SGD with a larger lr ({best['condition']}, {best['acc_mean']:.2f} %) "
                    f"matches or beats {whom}: at the paper's lr 1e-3 the SGD baseline is "
                    f"under-tuned, and a gain measured against it is largely one of step size.")
            else:
                verdicts.append(("(Indicative, one seed.) " if tuned["n"] < 2 else "")
                                + f"Released-code DHT stays ahead of the best plain-SGD lr "
                                f"({best['condition']}).")
        lines += [f"{i + 1}. {v}" for i, v in enumerate(verdicts)]
        n_tests = len(mcomps)
        lines.append(f"(Tests are uncorrected for multiplicity: with {n_tests} comparisons about "
                     f"{0.05 * n_tests:.1f} false positives at 5 % are expected by chance.)")
    if cifar:
        lines.append("")
        c = {r["condition"]: r for r in cifar}
        n = cifar[0]["n_seeds"]
        lines.append(f"CIFAR-10 sanity check (CNN-3, {cifar[0]['eval_points'][-1]} iterations, "
                     f"{n} seed{'s' if n != 1 else ''}"
                     + (": no estimate of seed noise, indicative only" if n < 2 else "")
                     + "): " + ", ".join(f"{k} {v['acc_mean']:.2f} %" for k, v in c.items())
                     + ".")
        if "sgd" in c:
            gains = {k: v["acc_mean"] - c["sgd"]["acc_mean"] for k, v in c.items() if k != "sgd"}
            lines.append("Gains over SGD: " + ", ".join(f"{k} {v:+.2f}" for k, v in gains.items())
                         + ".")
            if "sgd" in acc:
                base = acc["sgd"]["acc_mean"]
                agree = [k + (" yes" if (v > 0) == (acc[k]["acc_mean"] > base) else " no")
                         for k, v in gains.items() if k in acc]
                if agree:
                    lines.append("Same sign of the gain over SGD as on MNIST: "
                                 + ", ".join(agree) + ".")
    return lines


# ----------------------------------------------------------------------------- output


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (";".join(f"{v:.2f}" for v in r[k]) if isinstance(r[k], list)
                            else f"{r[k]:.4f}" if isinstance(r[k], float) else r[k])
                        for k in fields})


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("condition", "test acc % (mean ± std)", "acc @ early it", "ms/step", "angle (rad)")
    body = [(r["condition"], f"{r['acc_mean']:6.2f} ± {r['acc_std']:.2f}"
             + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
             f"{r['early_acc_mean']:.2f} @ {r['early_iter']}", f"{r['ms_per_step']:.2f}",
             f"{r['angle_mean']:.4f}" if r["group"] in ("teacher", "grid") else "-")
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join([cells[0].ljust(widths[0]),
                           *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, body)])


def _plot(path: Path, mnist: list[dict], cifar: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (1 if mnist else 0) * 2 + (1 if cifar else 0)
    fig, grid = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2), squeeze=False)
    axes = list(grid[0])
    key = ("sgd", "sgd-lr-x6", "sgd-enc-x6", "random", "random-released", "dht", "dht-released")
    if mnist:
        ax = axes.pop(0)
        ys = list(range(len(mnist)))[::-1]
        colors = {"sgd": "tab:gray", "lr": "tab:blue", "teacher": "tab:red", "grid": "tab:orange"}
        for y, r in zip(ys, mnist):
            ax.errorbar(r["acc_mean"], y, xerr=r["acc_std"], fmt="o",
                        color=colors.get(r["group"], "k"), capsize=3)
            ax.scatter(r["acc_per_seed"], [y] * len(r["acc_per_seed"]), s=8, color="k",
                       alpha=0.4, zorder=3)
        if "sgd" in {r["condition"] for r in mnist}:
            ax.axvline(next(r["acc_mean"] for r in mnist if r["condition"] == "sgd"),
                       color="tab:gray", ls="--", lw=1)
        ax.set_yticks(ys, [r["condition"] for r in mnist], fontsize=7)
        ax.set_xlabel("final test accuracy (%), mean ± std, dots: seeds")
        ax.set_title("MNIST MLP: final accuracy")
        ax.grid(alpha=0.3, axis="x")
        ax = axes.pop(0)
        for r in mnist:
            if r["condition"] in key:
                ax.plot(r["eval_points"], r["curve_mean"], label=r["condition"], lw=1.4)
        finals = [r["acc_mean"] for r in mnist]
        ax.set_ylim(max(0.0, min(finals) - 8.0), min(100.0, max(finals) + 1.5))
        ax.set(xlabel="iteration", ylabel="test accuracy (%), mean over seeds",
               title="MNIST MLP: accuracy curves")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if cifar:
        ax = axes.pop(0)
        for r in cifar:
            ax.plot(r["eval_points"], r["curve_mean"], marker=".", label=r["condition"], lw=1.4)
        ax.set(xlabel="iteration", ylabel="test accuracy (%)",
               title="CIFAR-10 CNN-3 (lr 0.1), 1 seed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- driver


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The study's options."""
    p.add_argument("--quick", action="store_true",
                   help="a reduced smoke run of the whole pipeline (well under a minute)")
    p.add_argument("--parts", default="mnist,cifar", help="comma-separated: mnist, cifar")
    p.add_argument("--conditions", default=None,
                   help="comma-separated subset of the conditions (default: all of the mode)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes, one torch thread each (default: CPU count)")
    p.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    p.add_argument("--mnist-iters", type=int, default=None, help="override (default: 39000)")
    p.add_argument("--cifar-iters", type=int, default=None, help="override (default: 2000)")
    p.add_argument("--data-root", default=str(default_root()),
                   help="folder holding MNIST/raw/ and cifar10-jpeg/ (default: "
                   f"${DATA_ENV_VAR} or ../shared/data)")
    p.add_argument("--fake-data", action="store_true",
                   help="CIFAR part on random images of the same shape (no data needed)")
    p.add_argument("--out", default=None,
                   help="output folder (default: runs/attribution, or runs/attribution-quick)")
    p.add_argument("--no-resume", action="store_true", help="rerun runs already saved in --out")
    p.add_argument("--no-progress", action="store_true")


def _run_part(jobs: list[dict], out: Path, workers: int, resume: bool, progress: bool,
              desc: str) -> tuple[list[dict], float, int]:
    """Run the jobs (reusing saved ones); returns records, wall seconds, runs reused."""
    from tqdm.auto import tqdm

    run_dir = out / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    records, todo = [], []
    for job in jobs:
        f = run_dir / f"{job['part']}__{job['condition']['name']}__seed{job['seed']}.json"
        if resume and f.is_file():
            saved = json.loads(f.read_text())
            if _identity(saved.get("job")) == _identity(job):
                records.append(saved["result"])
                continue
        todo.append((job, f))
    reused = len(records)
    # Longest first (teachers, then plain), for a balanced pool.
    todo.sort(key=lambda jf: (jf[0]["condition"]["teacher"] is None,
                              jf[0]["condition"]["teacher"] is not None
                              and jf[0]["condition"]["teacher"]["policy"] != "greedy"))
    start = time.perf_counter()
    # disable=None: no bar when stderr is not a terminal (no carriage returns in logs).
    bar = tqdm(total=len(todo), disable=None if progress else True, desc=desc, unit="run",
               dynamic_ncols=True)

    def save(job_file: Path, job: dict, result: dict) -> None:
        job_file.write_text(json.dumps({"job": job, "result": result}))
        records.append(result)
        bar.set_postfix_str(f"{result['condition']} s{result['seed']}: "
                            f"{result['final_acc']:.2f}%")
        bar.update()

    try:
        if workers <= 1 or len(todo) <= 1:
            old = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for job, f in todo:
                    save(f, job, _run_job(job))
            finally:
                torch.set_num_threads(old)
        elif todo:
            import multiprocessing as mp

            by_key = {(j["condition"]["name"], j["seed"]): (j, f) for j, f in todo}
            ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                for result in pool.imap_unordered(_run_job, [j for j, _ in todo]):
                    job, f = by_key[(result["condition"], result["seed"])]
                    save(f, job, result)
    finally:
        bar.close()
    return records, time.perf_counter() - start, reused


def _identity(job: Any) -> Any:
    """What decides a run's result: the job without the seed count and the folders.

    A run saved by ``--seeds 3`` is the same run under ``--seeds 5``, and moving
    the data or the output folder does not change it.

    Example:
        >>> a = {"seed": 0, "settings": {"seeds": 3, "iters": 9}, "data_root": "a",
        ...      "cache_dir": "x"}
        >>> _identity(a) == _identity({**a, "settings": {"seeds": 5, "iters": 9},
        ...                            "data_root": "/b"})
        True
    """
    if not isinstance(job, dict):
        return job
    out = {k: v for k, v in job.items() if k not in ("data_root", "cache_dir")}
    if isinstance(out.get("settings"), dict):
        out["settings"] = {k: v for k, v in out["settings"].items() if k != "seeds"}
    return out


def _jobs(part: str, conds: Sequence[Condition], s: PartSettings, args: argparse.Namespace,
          out: Path) -> list[dict]:
    return [{"version": STUDY_VERSION, "part": part, "condition": dataclasses.asdict(c),
             "seed": seed, "settings": dataclasses.asdict(s), "data_root": str(args.data_root),
             "fake": bool(args.fake_data and part == "cifar"),
             "cache_dir": str(out / "cache")}
            for seed in range(s.seeds) for c in conds]


def _check_data(part: str, root: Path, fake: bool) -> None:
    if part == "mnist" and not (root / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found: {root}/MNIST/raw/ does not exist. Point --data-root "
                         f"(or ${DATA_ENV_VAR}) at the folder holding MNIST/raw/.")
    if part == "cifar" and not fake and not (root / "cifar10-jpeg" / "train").is_dir():
        raise SystemExit(f"CIFAR-10 JPEGs not found under {root}/cifar10-jpeg/{{train,test}}/. "
                         f"Point --data-root there, pass --fake-data, or --parts mnist.")


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> dict[str, Any]:
    """Run the study (``argv`` as for the command line, or parsed options).

    Returns:
        ``{"mnist": summary rows, "cifar": summary rows, "comparisons": [...],
        "conclusion": [lines], "timings": {...}, "out": folder}``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--quick"]).quick, len(MNIST_CONDITIONS), len(CIFAR_CONDITIONS)
        (True, 21, 6)
    """
    if isinstance(argv, argparse.Namespace):
        args = argv
    else:
        parser = argparse.ArgumentParser(prog="python -m torchdht.experiments.attribution",
                                         description=DESCRIPTION)
        add_arguments(parser)
        args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in FULL]
    if bad or not parts:
        raise SystemExit(f"--parts must name mnist and/or cifar, got {args.parts!r}")
    for flag, value in (("--workers", args.workers), ("--seeds", args.seeds),
                        ("--mnist-iters", args.mnist_iters), ("--cifar-iters", args.cifar_iters)):
        if value is not None and value < 1:
            raise SystemExit(f"{flag} must be >= 1, got {value}")
    out = Path(args.out or ("runs/attribution-quick" if args.quick else "runs/attribution"))
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_root)
    mode = QUICK if args.quick else FULL
    settings = dict(mode)
    for part, override in (("mnist", args.mnist_iters), ("cifar", args.cifar_iters)):
        if override is not None:
            every = max(1, min(settings[part].eval_every, override))
            settings[part] = dataclasses.replace(settings[part], iters=override, eval_every=every)
    if args.seeds is not None:
        settings = {k: dataclasses.replace(v, seeds=args.seeds) for k, v in settings.items()}
    wanted = None if args.conditions is None else {c.strip() for c in args.conditions.split(",")}
    all_conds = {"mnist": MNIST_CONDITIONS, "cifar": CIFAR_CONDITIONS}
    known = {c.name for cs in all_conds.values() for c in cs}
    if wanted is not None and wanted - known:
        raise SystemExit(f"unknown conditions {sorted(wanted - known)}; known: {sorted(known)}")

    results: dict[str, Any] = {"out": str(out), "timings": {}}
    summaries: dict[str, list[dict]] = {"mnist": [], "cifar": []}
    all_records: list[dict] = []
    comps: list[dict] = []
    for part in parts:
        _check_data(part, root, args.fake_data)
        conds = [c for c in all_conds[part]
                 if (wanted is None or c.name in wanted)
                 and (not args.quick or part != "mnist" or c.name in _QUICK_MNIST)]
        if not conds:
            continue
        s = settings[part]
        if part == "cifar" and not args.fake_data and s.train_subset is None:
            _cifar(str(root), s, False, str(out / "cache"))  # decode + cache once, here
        records, wall, reused = _run_part(_jobs(part, conds, s, args, out), out, args.workers,
                                          not args.no_resume, not args.no_progress, part)
        all_records += records
        summaries[part] = _summarise(records, conds)
        if part == "mnist":
            comps = _comparisons(records, summaries[part])
        results["timings"][part] = {
            "wall_seconds": wall,
            "runs": len(records),
            "runs_reused": reused,
            "run_seconds_total": sum(r["run_seconds"] for r in records),
            "workers": args.workers,
            "settings": dataclasses.asdict(s),
        }

    conclusion = _conclusion(summaries["mnist"], comps, summaries["cifar"])
    # ---- files
    _write_csv(out / "results.csv", sorted(all_records, key=lambda r: (r["part"], r["seed"])),
               ("part", "condition", "seed", "final_acc", "ms_per_step", "run_seconds",
                "final_loss", "diverged", "angle_mean"))
    summary_rows = [{"part": p, **r} for p in ("mnist", "cifar") for r in summaries[p]]
    _write_csv(out / "summary.csv", summary_rows,
               ("part", "condition", "group", "n_seeds", "acc_mean", "acc_std", "acc_per_seed",
                "early_iter", "early_acc_mean", "ms_per_step", "run_seconds", "angle_mean",
                "diverged", "note"))
    _write_csv(out / "comparisons.csv", comps,
               ("a", "b", "question", "n", "diff_mean", "diff_std", "wins", "t", "p",
                "significant", "statement"))
    _plot(out / "attribution.png", summaries["mnist"], summaries["cifar"])
    timing_lines = []
    for part, t in results["timings"].items():
        timing_lines.append(
            f"- {part}: {t['runs']} runs ({t['runs_reused']} reused from an earlier "
            f"invocation), {t['wall_seconds'] / 60:.1f} min wall on {t['workers']} worker(s); "
            f"sum of run times {t['run_seconds_total'] / 60:.1f} min.")
    text = ["# Attribution study" + (" (quick mode: numbers are meaningless)" if args.quick
                                      else ""), ""]
    for part, title in (("mnist", "MNIST, MLP"), ("cifar", "CIFAR-10, CNN-3")):
        if summaries[part]:
            s = settings[part]
            text += [f"## {title}: {s.iters} iterations, batch {s.batch_size}, lr {s.lr:g}, "
                     f"momentum {s.momentum:g}, wd {s.weight_decay:g}, {s.seeds} seed(s)",
                     "", "```", _table(summaries[part]), "```", ""]
    if comps:
        text += ["## Paired comparisons (MNIST, same seeds)", "", "```"]
        text += [f"{c['a']} − {c['b']} ({c['question']}): {c['statement']}" for c in comps]
        text += ["```", ""]
    text += ["## Conclusion", "", *conclusion, "", "## Time taken", "", *timing_lines, ""]
    (out / "conclusion.md").write_text("\n".join(text))
    (out / "config.json").write_text(json.dumps({
        "quick": bool(args.quick), "parts": parts, "workers": args.workers,
        "data_root": str(root), "fake_data": bool(args.fake_data),
        "lookahead_steps": LOOKAHEAD_STEPS, "solve_steps": SOLVE_STEPS,
        "timings": results["timings"], "torch": torch.__version__,
    }, indent=2))
    print("\n".join(text))
    print(f"Wrote {out}/results.csv, summary.csv, comparisons.csv, attribution.png, "
          f"conclusion.md, config.json")
    results.update(mnist=summaries["mnist"], cifar=summaries["cifar"], comparisons=comps,
                   conclusion=conclusion)
    return results


if __name__ == "__main__":
    from torchdht.experiments.attribution import main as _main  # the importable module's copy

    _main(sys.argv[1:])
