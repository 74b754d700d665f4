"""How much of the cap solver's objective decrease the line-search solver attains.

What it measures. For a linear head ``(W, b)`` with target ``(W*, b*)`` and
learning rate ``eta`` the greedy teaching objective of a feature row ``z'`` is
(eq. 9 of the DHT paper)::

    f(z') = eta^2 |dl/dtheta|^2 - 2 eta <theta - theta*, dl/dtheta>

and both solvers minimise it over the cap ``|z'| = |z|``,
``chord(z'/|z'|, z/|z|) <= eps`` around each row ``z``:

* ``pgd-S``: today's solver, :func:`torchdht.functional.solve_cap` on
  :func:`~torchdht.functional.objective.linear_ce_closure` with ``S`` steps;
  ``pgd-15`` (the default) is the reference;
* ``ls(G,R)``: :func:`torchdht.functional.linesearch.solve_cap_linesearch` on
  :func:`~torchdht.functional.linesearch.dense_head_ops` with ``grid=G``,
  ``refine=R``.

Each cell reports the attained fraction
``sum_rows(before - after)[solver] / sum_rows(before - after)[pgd-15]`` (each
solver's own ``before``/``after``) and the median wall time of one solver
call, closure or ops construction included, with one torch thread.

How. Three learners are trained on real data with their own recipe, one
thread, float32:

* ``mlp``: the paper's MNIST MLP 784-128-10 (``torchdht.models``), normalised
  flattened MNIST, SGD lr 1e-3, weight decay 5e-4, batch 128 (the protocol of
  ``torchdht/experiments/attribution.py``);
* ``cnn3``: CNN-3 (``torchdht.models``) on the CIFAR-10 JPEG copy, SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, batch 128, random crop (padding 4) + flip;
* ``resnet18``: ``timm.create_model("resnet18", pretrained=False,
  num_classes=10)`` on the same CIFAR-10 images (32x32), SGD lr 0.05, momentum
  0.9, no weight decay, batch 64, random crop + flip.

One batch of the training split (the model's batch size, drawn at random with
a fixed seed) is held out of training. At each measuring point (step 0, i.e.
the initialisation; step 20; and a late step: mlp 3000, cnn3 300, resnet18
150 by default) the model runs this batch in eval mode under ``no_grad``; a
forward pre-hook on the head (the final ``nn.Linear`` of the mlp and cnn3,
``model.get_classifier()`` of the timm model) captures its input features
``z``, and the head's weight and bias are copied. The target comes from
:func:`torchdht.functional.lookahead.linear_lookahead` (``lr = eta``, 5
steps) on the detached ``z``; ``eta`` is the model's own lr. Every solver then
runs on the same ``(z, targets, W, b, W*, b*, eta)`` for eps in {0.02, 0.1,
0.3}. Timings interleave the configurations (one call of each per round, after
warm-up rounds) and take the median over rounds.

Data come from ``--data-root`` (default ``$TORCHDHT_DATA`` or
``../shared/data`` relative to the repository): ``MNIST/raw/`` and
``cifar10-jpeg/train/``; nothing is downloaded or written there. Only as many
CIFAR-10 training JPEGs are decoded as the training needs.

Run: python benchmarks/solver_attainment.py [--quick] [--out runs/solver_attainment.md]

``--quick`` trains for a few steps only (a smoke test; its numbers mean
little). The script measures and reports; it asserts nothing about the results.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchdht.experiments.attribution import _cifar_batch, _mnist, _read_jpeg_split
from torchdht.functional import solve_cap
from torchdht.functional.linesearch import dense_head_ops, solve_cap_linesearch
from torchdht.functional.lookahead import linear_lookahead
from torchdht.functional.objective import linear_ce_closure
from torchdht.functional.sphere import chord_to_angle
from torchdht.models import build_model

# Hashes of the solver sources as imported (read right after the import), so a
# report names the exact code it measured.
SOURCE_HASHES = {
    Path(m.__file__).name: hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:12]
    for m in (sys.modules[solve_cap_linesearch.__module__], sys.modules[solve_cap.__module__])
}

REPO = Path(__file__).resolve().parent.parent
EPS_VALUES = (0.02, 0.1, 0.3)
LOOKAHEAD_STEPS = 5
PGD_STEPS = (2, 3, 5, 15)
REFERENCE = "pgd-15"
LS_CONFIGS = ((4, 0), (4, 1), (4, 2), (4, 3), (4, 5), (8, 3))
TOLS = (1e-2, 3e-3, 1e-3)
"""``pgd-15 tol=T``: ``solve_cap`` with 15 steps at most and early exit (``tol=T``);
``pgd-15 lr=alpha tol=T`` the same with a first angular step of the cap's whole radius."""


@dataclass(frozen=True)
class Recipe:
    """How one learner is built and trained."""

    name: str
    data: str  # "mnist" or "cifar10"
    batch: int
    lr: float
    momentum: float
    weight_decay: float
    late: int  # the late measuring point (training steps)
    quick_late: int
    note: str


RECIPES = {
    "mlp": Recipe("mlp", "mnist", 128, 1e-3, 0.0, 5e-4, 3000, 40,
                  "MNIST MLP 784-128-10, SGD lr 1e-3, wd 5e-4, batch 128"),
    "cnn3": Recipe("cnn3", "cifar10", 128, 0.1, 0.9, 5e-4, 300, 8,
                   "CNN-3, SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, crop + flip"),
    "resnet18": Recipe("resnet18", "cifar10", 64, 0.05, 0.9, 0.0, 150, 8,
                       "timm resnet18, SGD lr 0.05, momentum 0.9, no wd, batch 64, crop + flip"),
}


# ----------------------------------------------------------------------------- data


def load_mnist(root: Path) -> tuple[Tensor, Tensor]:
    """Normalised, flattened MNIST training images (60000, 784) and labels (the study's)."""
    return _mnist(str(root))[:2]


def load_cifar10(root: Path, per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` training JPEGs of each class as uint8 (N, 3, 32, 32), labels."""
    return _read_jpeg_split(root / "cifar10-jpeg" / "train", per_class)


cifar_batch = _cifar_batch
"""uint8 images -> normalised float32; random crop (padding 4) and flip when augmenting."""


def build(name: str) -> tuple[nn.Module, nn.Linear]:
    """The model and its head (the layer whose input the teacher changes)."""
    if name == "resnet18":
        import timm

        model = timm.create_model("resnet18", pretrained=False, num_classes=10)
        head = model.get_classifier()
    else:
        model = build_model(name, num_classes=10)
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert isinstance(head, nn.Linear)
    return model, head


@dataclass
class Snapshot:
    """What the solvers see at one measuring point."""

    model: str
    step: int
    z: Tensor
    targets: Tensor
    weight: Tensor
    bias: Tensor | None
    eta: float
    dropped: int  # zero rows left out (the solvers need non-zero rows)


@torch.no_grad()
def capture(model: nn.Module, head: nn.Linear, x: Tensor) -> Tensor:
    """The head's input for ``x``: eval mode, no_grad, a forward pre-hook."""
    got: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach().clone()))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return got[0].to(torch.float32).reshape(len(x), -1)


def train_and_snapshot(
    recipe: Recipe,
    points: list[int],
    x_all: Tensor,
    y_all: Tensor,
    seed: int,
    log: Callable[[str], None],
) -> tuple[list[Snapshot], dict]:
    """Train ``recipe`` up to ``max(points)`` steps, snapshotting the held-out batch at each."""
    cifar = recipe.data == "cifar10"
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_all), generator=gen)
    probe_idx, pool = perm[: recipe.batch], perm[recipe.batch:]
    probe_x = x_all[probe_idx]
    probe_x = cifar_batch(probe_x, False, None) if cifar else probe_x
    probe_y = y_all[probe_idx]

    torch.manual_seed(seed)
    model, head = build(recipe.name)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    aug = torch.Generator().manual_seed(10_000 + seed)
    order = torch.empty(0, dtype=torch.int64)
    snaps: list[Snapshot] = []
    losses: list[float] = []
    t_start = time.perf_counter()
    model.train()
    for step in range(max(points) + 1):
        if step in points:
            z = capture(model, head, probe_x)
            keep = z.norm(dim=-1) > 0
            snaps.append(Snapshot(
                recipe.name, step, z[keep].contiguous(), probe_y[keep].clone(),
                head.weight.detach().to(torch.float32).clone(),
                None if head.bias is None else head.bias.detach().to(torch.float32).clone(),
                recipe.lr, int((~keep).sum()),
            ))
            recent = losses[-20:]
            log(f"  {recipe.name} @ {step}: features {tuple(z.shape)}, |z| median "
                f"{z.norm(dim=-1).median().item():.3g}, train loss (last {len(recent)}) "
                f"{statistics.fmean(recent) if recent else float('nan'):.4f}, "
                f"{time.perf_counter() - t_start:.0f} s")
        if step == max(points):
            break
        if len(order) < recipe.batch:
            order = torch.cat([order, pool[torch.randperm(len(pool), generator=gen)]])
        idx, order = order[: recipe.batch], order[recipe.batch:]
        xb = cifar_batch(x_all[idx], True, aug) if cifar else x_all[idx]
        loss = F.cross_entropy(model(xb), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    info = {
        "train_s": time.perf_counter() - t_start,
        "final_loss": statistics.fmean(losses[-20:]) if losses else float("nan"),
        "dim": snaps[0].z.shape[1],
        "rows": snaps[0].z.shape[0],
    }
    return snaps, info


# ----------------------------------------------------------------------------- solvers


EVALS: list[int] = [0]
"""Objective evaluations of the last counted ``solve_cap`` call (its first one included)."""


def _counted(fn: Callable) -> Callable:
    EVALS[0] = 0

    def wrapped(z: Tensor):
        EVALS[0] += 1
        return fn(z)
    return wrapped


def solver_configs() -> list[tuple[str, Callable[[Snapshot, Tensor, Tensor, float], object]]]:
    """(label, call) for every configuration; ``call(snap, w_star, b_star, eps)``."""
    out = []
    for steps in PGD_STEPS:
        def pgd(s: Snapshot, ws: Tensor, bs: Tensor | None, eps: float, steps: int = steps):
            fn = linear_ce_closure(s.targets, s.weight, s.bias, ws, bs, s.eta)
            return solve_cap(fn, s.z, eps, steps)
        out.append((f"pgd-{steps}", pgd))
    for tol in TOLS:
        def pgd_tol(s: Snapshot, ws: Tensor, bs: Tensor | None, eps: float, tol: float = tol):
            fn = linear_ce_closure(s.targets, s.weight, s.bias, ws, bs, s.eta)
            return solve_cap(_counted(fn), s.z, eps, 15, tol=tol)
        out.append((f"pgd-15 tol={tol:g}", pgd_tol))
    for tol in TOLS:
        def pgd_wide(s: Snapshot, ws: Tensor, bs: Tensor | None, eps: float, tol: float = tol):
            fn = linear_ce_closure(s.targets, s.weight, s.bias, ws, bs, s.eta)
            return solve_cap(_counted(fn), s.z, eps, 15, lr=chord_to_angle(eps), tol=tol)
        out.append((f"pgd-15 lr=alpha tol={tol:g}", pgd_wide))
    for grid, refine in LS_CONFIGS:
        def ls(s: Snapshot, ws: Tensor, bs: Tensor | None, eps: float, grid: int = grid,
               refine: int = refine):
            ops = dense_head_ops(s.weight, s.bias, ws, bs, s.eta)
            return solve_cap_linesearch(s.z, s.targets, ops, s.eta, eps, grid=grid,
                                        refine=refine)
        out.append((f"ls({grid},{refine})", ls))
    return out


@torch.no_grad()
def measure(snap: Snapshot, eps: float, warmup: int, repeats: int) -> dict[str, dict]:
    """Per configuration: total decrease, attained fraction of pgd-15, median ms."""
    la = linear_lookahead(snap.z, snap.targets, snap.weight, snap.bias, lr=snap.eta,
                          steps=LOOKAHEAD_STEPS)
    configs = solver_configs()
    res: dict[str, dict] = {}
    for label, call in configs:
        EVALS[0] = 0
        out = call(snap, la.weight, la.bias, eps)
        dec = (out.before.double() - out.after.double()).sum().item()
        res[label] = {"decrease": dec, "times": [],
                      "before": out.before.double().sum().item(), "evals": EVALS[0]}
    for r in range(warmup + repeats):
        # rotate the order each round so no configuration always runs first
        for k in range(len(configs)):
            label, call = configs[(k + r) % len(configs)]
            t0 = time.perf_counter()
            call(snap, la.weight, la.bias, eps)
            dt = time.perf_counter() - t0
            if r >= warmup:
                res[label]["times"].append(dt)
    ref = res[REFERENCE]["decrease"]
    for v in res.values():
        v["fraction"] = v["decrease"] / ref if ref > 0 else float("nan")
        v["ms"] = 1e3 * statistics.median(v["times"])
    return res


# ----------------------------------------------------------------------------- report


def fmt_frac(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.2f}%"


def fmt_ms(x: float) -> str:
    return f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms"


def eps_table(eps: float, rows: list[tuple[str, dict]], labels: list[str]) -> list[str]:
    lines = [f"### eps = {eps:g}", "",
             "Cells: attained fraction of pgd-15's total decrease / median ms per call.",
             ""]
    head = ["model @ step", "pgd-15 sum(before-after)", *labels]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |")
    for name, res in rows:
        cells = [name, f"{res[REFERENCE]['decrease']:.4g}"]
        cells += [f"{fmt_frac(res[lab]['fraction'])} / {fmt_ms(res[lab]['ms'])}"
                  for lab in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_table(all_rows: dict[float, list[tuple[str, dict]]], labels: list[str]) -> list[str]:
    lines = ["### Summary over all models, points and eps", "",
             "min / median attained fraction; median over cases of (median ms of the "
             "configuration / median ms of pgd-15 in the same case).", "",
             "| configuration | min fraction | median fraction | time vs pgd-15 "
             "| steps taken (min / median / max) |",
             "| --- | ---: | ---: | ---: | --- |"]
    for lab in labels:
        fr, ratio, evals = [], [], []
        for rows in all_rows.values():
            for _, res in rows:
                if res[lab].get("evals"):
                    evals.append(res[lab]["evals"] - 1)
                if math.isfinite(res[lab]["fraction"]):
                    fr.append(res[lab]["fraction"])
                ratio.append(res[lab]["ms"] / res[REFERENCE]["ms"])
        lines.append(f"| {lab} | {fmt_frac(min(fr)) if fr else 'n/a'} | "
                     f"{fmt_frac(statistics.median(fr)) if fr else 'n/a'} | "
                     f"{statistics.median(ratio):.2f}x | "
                     + (f"{min(evals)} / {statistics.median(evals):g} / {max(evals)} |"
                        if evals else "fixed |"))
    return lines


def git_state() -> str:
    """``git HEAD <sha>`` plus whether the work tree has changes, or ``no git``."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return f"git HEAD {head}" + (" (work tree modified)" if dirty else "")


def cpu_description() -> str:
    """``<usable CPUs> CPUs, <model name>`` (what nproc and lscpu would say)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 0
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{n} CPUs ({name})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get(
        "TORCHDHT_DATA", str(REPO.parent / "shared" / "data")),
        help="folder holding MNIST/raw/ and cifar10-jpeg/ (default: $TORCHDHT_DATA or "
             "../shared/data relative to the repository)")
    parser.add_argument("--out", default="runs/solver_attainment.md",
                        help="markdown file for the tables (default: runs/solver_attainment.md)")
    parser.add_argument("--models", default="mlp,cnn3,resnet18",
                        help="comma-separated subset of mlp, cnn3, resnet18")
    parser.add_argument("--early", default="0,20",
                        help="early measuring points in training steps (default: 0,20)")
    parser.add_argument("--late", default=None,
                        help="late points as model=steps,... (default: mlp=3000, cnn3=300, "
                             "resnet18=150)")
    parser.add_argument("--repeats", type=int, default=25, help="timed rounds (default: 25)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: few training steps, 3 timed rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_total = time.perf_counter()
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in RECIPES:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(RECIPES)}")
    late = {m: (RECIPES[m].quick_late if args.quick else RECIPES[m].late) for m in models}
    if args.late:
        for item in args.late.split(","):
            k, v = item.split("=")
            late[k.strip()] = int(v)
    early = [int(s) for s in args.early.split(",") if s.strip()]
    if args.quick:
        early = [p for p in early if p == 0] + [2]
        args.repeats, args.warmup = min(args.repeats, 3), min(args.warmup, 1)
    root = Path(args.data_root)

    header = [
        "# Line-search cap solver vs pgd: attained objective decrease on real features",
        "",
        f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}",
        f"- machine: {cpu_description()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), float32",
        f"- eta = each model's lr; target = linear_lookahead(lr=eta, steps={LOOKAHEAD_STEPS}); "
        f"reference = {REFERENCE}; eps in {list(EPS_VALUES)}",
        f"- timing: median of {args.repeats} interleaved rounds after {args.warmup} warm-up "
        "rounds; closure / ops construction included",
        "- solver sources (sha256[:12] as imported): "
        + ", ".join(f"{k} {v}" for k, v in SOURCE_HASHES.items()) + f"; {git_state()}",
        f"- quick mode: {'yes (numbers mean little)' if args.quick else 'no'}",
        "",
    ]
    for line in header:
        log(line)

    # ---- data (only what is needed)
    data: dict[str, tuple[Tensor, Tensor]] = {}
    if "mlp" in models:
        data["mnist"] = load_mnist(root)
    cifar_models = [m for m in models if RECIPES[m].data == "cifar10"]
    if cifar_models:
        need = max(RECIPES[m].batch * (late[m] + 1) for m in cifar_models)
        per_class = min(5000, math.ceil(need / 10))
        t0 = time.perf_counter()
        data["cifar10"] = load_cifar10(root, per_class)
        log(f"CIFAR-10: decoded {len(data['cifar10'][1])} training JPEGs in "
            f"{time.perf_counter() - t0:.0f} s")

    # ---- train and snapshot
    snaps: list[Snapshot] = []
    context = ["### Learners", "",
               "| model | recipe | points (steps) | D | rows | train loss at late point "
               "(mean of last 20 steps) | train time |",
               "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for m in models:
        recipe = RECIPES[m]
        points = sorted(set(early + [late[m]]))
        log(f"training {m} to step {max(points)} ({recipe.note})")
        x_all, y_all = data[recipe.data]
        s, info = train_and_snapshot(recipe, points, x_all, y_all, args.seed, log)
        snaps += s
        dropped = sum(sn.dropped for sn in s)
        context.append(
            f"| {m} | {recipe.note} | {', '.join(map(str, points))} | {info['dim']} | "
            f"{info['rows']}{f' ({dropped} zero rows dropped)' if dropped else ''} | "
            f"{info['final_loss']:.4f} | {info['train_s']:.0f} s |")
    late_note = ("- late points: " + ", ".join(f"{m} {late[m]}" for m in models)
                 + ("" if args.quick or all(late[m] == RECIPES[m].late for m in models)
                    else " (reduced from the defaults: " + ", ".join(
                        f"{m} {RECIPES[m].late}" for m in models) + ")"))

    # ---- solve
    labels = [lab for lab, _ in solver_configs()]
    all_rows: dict[float, list[tuple[str, dict]]] = {}
    t0 = time.perf_counter()
    for eps in EPS_VALUES:
        rows = []
        for sn in snaps:
            res = measure(sn, eps, args.warmup, args.repeats)
            rows.append((f"{sn.model} @ {sn.step}", res))
        all_rows[eps] = rows
        table = eps_table(eps, rows, labels)
        log("")
        for line in table:
            log(line)
        lines += table + [""]
    solve_s = time.perf_counter() - t0
    summary = summary_table(all_rows, labels)
    log("")
    for line in summary:
        log(line)
    total = time.perf_counter() - t_total
    footer = [f"- solver measurements: {solve_s:.0f} s; total run time: {total:.0f} s"]
    for line in ["", late_note, *footer]:
        log(line)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = header + [late_note, *footer, ""] + context + [""] + lines + summary + [""]
    out.write_text("\n".join(doc))
    log(f"written: {out}")


if __name__ == "__main__":
    main()
