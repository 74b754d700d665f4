"""The informed-targets study: ``python -m torchdht.experiments attribution --parts informed``.

Does a performative teacher whose ``theta*`` carries information from beyond
the batch (``PerformativeTeacher(target="ema" | "buffer" | "heldout")``) beat a
well-tuned plain SGD? The protocol is pre-registered in ``benchmarks/RESULTS.md``
("Informed targets: pre-registered protocol"); this module runs it in four
stages, each resumable (every finished run is saved under ``<out>/runs/`` and
reused), and rewrites the report after each stage:

1. **selection, global lr and knobs** (seed 100, validation accuracy): plain
   SGD at lr x1 .. x16; each informed target's configurations at eps 0.1 and
   the paper's lr;
2. **selection, head lr** (seed 100, validation): plain SGD with the head's lr
   x2 .. x32 at the paper's and at the tuned global lr;
3. **reported arms at the paper's lr** (seeds 0-4, test accuracy): SGD, the
   best head-lr SGD, the random cap and the four targets at eps 0.02 and 0.1;
4. the same **at the tuned global lr**.

Data: MNIST's training images 0-54,999 train (the ``heldout`` arms train on
0-53,999 and use 54,000-54,999 as their held-out split); 55,000-59,999 are the
validation split; the test images are read only by the reported arms.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import build_model
from ..performative import PerformativeTeacher
from . import _core as core
from ._attribution_report import paired_comparison

__all__ = ["Arm", "Plan", "run_informed"]

STUDY_VERSION = 1
TRAIN_ROWS = 55_000  # images 0 .. 54,999 train; 55,000 .. 59,999 validate
HELDOUT_ROWS = 1_000  # the heldout target's split: 54,000 .. 54,999
SELECT_SEED = 100
LOOKAHEAD_STEPS = 5
SOLVE_STEPS = 15
EPS = (0.02, 0.1)
TARGETS = ("lookahead", "ema", "buffer", "heldout")
LR_MULTS = (1, 2, 4, 8, 16)
HEAD_MULTS = (2, 4, 8, 16, 32)
KNOBS: dict[str, list[dict[str, Any]]] = {
    "lookahead": [{}],
    "ema": [{"target_decay": d} for d in (0.5, 0.9, 0.99, 0.999)],
    "buffer": [{"buffer_batches": b, "refit_every": r, "refit_l2": l2}
               for b in (20, 50) for r in (50, 200) for l2 in (1e-4, 1e-3)],
    "heldout": [{"heldout_batch": hb, "lookahead_steps": k} for hb in (128, 1000) for k in (5, 20)],
}
"""Each target's configurations tried on the validation split (at most 8)."""
QUICK_KNOBS = {k: v[:1] for k, v in KNOBS.items()}


@dataclass(frozen=True)
class Arm:
    """One trained configuration.

    Attributes:
        name: identifier in the tables and file names.
        split: ``"val"`` (selection: the validation split is evaluated, the
            test set is not read) or ``"test"`` (a reported arm).
        lr_mult: multiplier of the paper's lr 1e-3 for every parameter.
        head_lr_mult: further multiplier of the head's lr.
        teacher: ``PerformativeTeacher`` keyword arguments (None: plain SGD).
    """

    name: str
    split: str
    lr_mult: float = 1.0
    head_lr_mult: float = 1.0
    teacher: dict[str, Any] | None = None


def _knob_name(knobs: dict[str, Any]) -> str:
    short = {"target_decay": "d", "buffer_batches": "b", "refit_every": "r", "refit_l2": "l2",
             "heldout_batch": "hb", "lookahead_steps": "k"}
    return "".join(f"-{short[k]}{v:g}" for k, v in knobs.items())


def _lr_tag(mult: float) -> str:
    return f"@lr-x{mult:g}"


def teacher_arm(target: str, eps: float, lr_mult: float, knobs: dict[str, Any],
                split: str, tag: str = "") -> Arm:
    """The arm of ``target`` at ``eps`` and the global lr ``lr_mult``."""
    kw: dict[str, Any] = {"policy": "greedy", "eps": eps, "target": target, **knobs}
    return Arm(f"{target}{tag}-eps{eps:g}{_lr_tag(lr_mult)}", split, lr_mult, teacher=kw)


@dataclass
class Plan:
    """The stages' arms, filled in as the selections are made."""

    quick: bool
    tuned_lr: float | None = None
    head: dict[float, float] = dataclasses.field(default_factory=dict)  # global lr -> head mult
    knobs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def knob_grid(self) -> dict[str, list[dict[str, Any]]]:
        return QUICK_KNOBS if self.quick else KNOBS

    def lr_mults(self) -> tuple[int, ...]:
        return LR_MULTS[:2] if self.quick else LR_MULTS

    def head_mults(self) -> tuple[int, ...]:
        return HEAD_MULTS[:1] if self.quick else HEAD_MULTS

    def stage1(self) -> list[Arm]:
        arms = [Arm(f"sgd{_lr_tag(m)}", "val", float(m)) for m in self.lr_mults()]
        for target, grid in self.knob_grid().items():
            if target == "lookahead":
                continue
            arms += [teacher_arm(target, 0.1, 1.0, k, "val", _knob_name(k)) for k in grid]
        return arms

    def global_lrs(self) -> list[float]:
        assert self.tuned_lr is not None
        return [1.0] if self.tuned_lr == 1.0 else [1.0, self.tuned_lr]

    def stage2(self) -> list[Arm]:
        return [Arm(f"sgd-head-x{h:g}{_lr_tag(m)}", "val", m, float(h))
                for m in self.global_lrs() for h in self.head_mults()]

    def reported(self, lr_mult: float) -> list[Arm]:
        arms = [Arm(f"sgd{_lr_tag(lr_mult)}", "test", lr_mult)]
        h = self.head.get(lr_mult)
        if h is not None:
            arms.append(Arm(f"sgd-head-x{h:g}{_lr_tag(lr_mult)}", "test", lr_mult, h))
        for eps in EPS:
            arms.append(Arm(f"random-eps{eps:g}{_lr_tag(lr_mult)}", "test", lr_mult,
                            teacher={"policy": "random", "eps": eps}))
            arms += [teacher_arm(t, eps, lr_mult, self.knobs.get(t, {}), "test")
                     for t in TARGETS]
        return arms


# ----------------------------------------------------------------------------- one run


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one arm for one seed and return its record. Picklable entry point."""
    arm = Arm(**job["condition"])
    seed = job["seed"]
    s = job["settings"]
    x, y, x_te, y_te = core.load_mnist(job["data_root"])
    teacher_kw = dict(arm.teacher or {})
    heldout = teacher_kw.get("target") == "heldout"
    n_train = TRAIN_ROWS - (HELDOUT_ROWS if heldout else 0)
    x_tr, y_tr = x[:n_train], y[:n_train]
    x_ev, y_ev = (x[TRAIN_ROWS:], y[TRAIN_ROWS:]) if arm.split == "val" else (x_te, y_te)
    start = time.perf_counter()
    with core.seeded(seed):  # the same initialisation for every arm
        model = build_model("mlp", num_classes=10)
        lr = s["lr"] * arm.lr_mult
        opt = torch.optim.SGD(
            [{"params": model.encoder.parameters(), "lr": lr},
             {"params": model.head.parameters(), "lr": lr * arm.head_lr_mult}],
            lr=lr, momentum=0.0, weight_decay=s["weight_decay"],
        )
        teacher = None
        if arm.teacher is not None:
            teacher_kw.setdefault("lookahead_steps", LOOKAHEAD_STEPS)
            if heldout:
                teacher_kw.update(heldout=(x[n_train:TRAIN_ROWS], y[n_train:TRAIN_ROWS]),
                                  heldout_encoder=model.encoder)
            teacher = PerformativeTeacher(model.head, optimizer=opt, seed=seed,
                                          solve_steps=SOLVE_STEPS, **teacher_kw)
        gen = torch.Generator().manual_seed(seed)  # the same batches for every arm
        points = core.eval_points(s["iters"], s["eval_every"])
        curve: list[float] = []
        at_seconds: list[float] = []
        state: dict[str, Any] = {"order": torch.empty(0, dtype=torch.int64)}

        def evaluate(it: int, stats: core.LoopStats) -> None:
            curve.append(core.accuracy(model, x_ev, y_ev, chunk=1000))
            at_seconds.append(stats.step_seconds)

        def fetch(it: int) -> tuple[torch.Tensor, torch.Tensor]:
            if len(state["order"]) < s["batch_size"]:
                state["order"] = torch.cat([state["order"],
                                            torch.randperm(n_train, generator=gen)])
            idx = state["order"][: s["batch_size"]]
            state["order"] = state["order"][s["batch_size"]:]
            return x_tr[idx], y_tr[idx]

        def diverged(it: int, stats: core.LoopStats) -> None:
            """The rest of a diverged run's curve: the model's accuracy as it is."""
            rest = len(points) - len(curve)
            curve.extend([core.accuracy(model, x_ev, y_ev, chunk=1000)] * rest)
            at_seconds.extend([stats.step_seconds] * rest)

        watch = core.RunWatch(s["iters"], teacher, on_diverge=diverged)

        model.train()
        try:
            stats = core.train_loop(s["iters"], core.cross_entropy_step(
                model, opt, None if teacher is None else teacher.set_targets), fetch=fetch,
                eval_at=set(points), evaluate=evaluate, callbacks=[watch])
            buffer_bytes = 0
            if teacher is not None and teacher.target == "buffer":
                buffer_bytes = sum(t.numel() * t.element_size()
                                   for pair in teacher.state_dict()["target"]["buffer"]
                                   for t in pair)
        finally:
            if teacher is not None:
                teacher.remove()
        val_acc = (curve[-1] if arm.split == "val"
                   else core.accuracy(model, x[TRAIN_ROWS:], y[TRAIN_ROWS:], chunk=1000))
    return {
        "part": "informed", "condition": arm.name, "seed": seed, "split": arm.split,
        "final_acc": curve[-1], "val_acc": val_acc, "curve": curve, "eval_points": points,
        "step_seconds_at": at_seconds,
        "ms_per_step": 1000.0 * stats.step_seconds / max(s["iters"], 1),
        "run_seconds": time.perf_counter() - start, "final_loss": watch.last_loss,
        "diverged": watch.diverged,
        "angle_mean": watch.angle_mean,
        "buffer_bytes": buffer_bytes,
    }


# ----------------------------------------------------------------------------- driver


def _best(records: dict[str, float], names: Sequence[str]) -> str:
    """The name with the highest validation accuracy (ties: the first, the smaller step)."""
    return max(names, key=lambda n: (records[n], -names.index(n)))


def run_informed(
    settings: dict[str, Any], root: Path, out: Path, *, quick: bool, seeds: int,
    run_part: Callable[..., tuple[list[dict], float, int]], workers: int, resume: bool,
    progress: bool, echo: bool, report_only: bool = False,
) -> dict[str, Any]:
    """Run the four stages (see the module's docstring) and write ``informed.md``,
    ``informed_results.csv`` and ``informed_selection.json`` under ``out``.

    Args:
        settings: iterations, batch size, lr, weight decay, eval_every.
        root: the data root (holding ``MNIST/raw``).
        out: the output folder.
        quick: the smoke-test grid (one configuration per target, two lrs).
        seeds: reported seeds ``0 .. seeds-1``.
        run_part: the attribution runner's pool (records, wall seconds, reused).
        workers, resume, progress, echo: as the attribution study's.
        report_only: run nothing; report the saved runs (the selection's must all be
            saved: ``ValueError`` otherwise).

    Returns:
        ``{"selection": ..., "rows": [...], "tests": [...], "out": folder}``.
    """
    plan = Plan(quick)
    records: list[dict[str, Any]] = []
    timings: dict[str, float] = {}

    def stage(name: str, arms: list[Arm], seed_list: Sequence[int]) -> list[dict]:
        jobs = [{"version": STUDY_VERSION, "part": "informed",
                 "condition": dataclasses.asdict(a), "seed": sd, "settings": settings,
                 "data_root": str(root), "cache_dir": str(out / "cache")}
                for sd in seed_list for a in arms]
        recs, wall, _ = run_part(jobs, out, workers, resume, progress, f"informed {name}",
                                 run=run_job, saved_only=report_only)
        if report_only and name.startswith("selection") and len(recs) < len(jobs):
            raise ValueError(f"{len(jobs) - len(recs)} runs of {name} are not saved under "
                             f"{out}; run the study without --report-only first")
        if not report_only:  # a report from saved runs times nothing
            timings[name] = wall
        records.extend(recs)
        return recs

    def val(recs: list[dict]) -> dict[str, float]:
        return {r["condition"]: r["final_acc"] for r in recs}

    v1 = val(stage("selection 1", plan.stage1(), [SELECT_SEED]))
    sgd = [f"sgd{_lr_tag(m)}" for m in plan.lr_mults()]
    plan.tuned_lr = float(plan.lr_mults()[sgd.index(_best(v1, sgd))])
    for target, grid in plan.knob_grid().items():
        if target == "lookahead":
            continue
        names = [teacher_arm(target, 0.1, 1.0, k, "val", _knob_name(k)).name for k in grid]
        plan.knobs[target] = grid[names.index(_best(v1, names))]
    v2 = val(stage("selection 2", plan.stage2(), [SELECT_SEED]))
    baseline: dict[float, str] = {}  # the better of plain and head-lr SGD on validation
    for m in plan.global_lrs():
        heads = [f"sgd-head-x{h:g}{_lr_tag(m)}" for h in plan.head_mults()]
        best = _best(v2, heads)
        plan.head[m] = float(plan.head_mults()[heads.index(best)])
        plain = f"sgd{_lr_tag(m)}"
        baseline[m] = "head" if v2[best] > v1[plain] else "plain"
    selection = {"validation_accuracy": {**v1, **v2}, "tuned_lr_mult": plan.tuned_lr,
                 "head_lr_mult": {f"{k:g}": v for k, v in plan.head.items()},
                 "baseline": {f"{k:g}": v for k, v in baseline.items()}, "knobs": plan.knobs}
    result: dict[str, Any] = {"selection": selection, "out": str(out)}
    for m in plan.global_lrs():
        stage(f"lr x{m:g}", plan.reported(m), range(seeds))
        result.update(_report(out, plan, selection, baseline, records, timings, settings,
                              echo=False))
    result.update(_report(out, plan, selection, baseline, records, timings, settings,
                          echo=echo))
    return result


# ----------------------------------------------------------------------------- report


def _at_seconds(rec: dict[str, Any], seconds: float) -> float:
    """The run's accuracy at the last evaluation reached within ``seconds`` of steps."""
    acc = rec["curve"][0]
    for a, t in zip(rec["curve"], rec["step_seconds_at"]):
        if t <= seconds:
            acc = a
    return acc


def _paired(name: str, runs: dict[int, dict], base: str,
            base_runs: dict[int, dict]) -> dict[str, Any] | None:
    """``name`` against ``base`` on their common seeds (None under two): the paired
    test, the verdict of the protocol, and the accuracy at the baseline's wall time."""
    seeds = sorted(set(runs) & set(base_runs))
    if len(seeds) < 2:
        return None
    comp = paired_comparison([runs[k]["final_acc"] for k in seeds],
                             [base_runs[k]["final_acc"] for k in seeds])
    # equal wall time: the teacher's accuracy once it had spent the baseline's time
    wall = [_at_seconds(runs[k], base_runs[k]["step_seconds_at"][-1]) for k in seeds]
    beats = (comp["diff_mean"] > 0 and comp["p"] is not None and comp["p"] < 0.05
             and comp["wins"] >= math.ceil(0.8 * len(seeds)))
    loses = comp["diff_mean"] < 0 and comp["significant"]
    return {"arm": name, "baseline": base, **comp,
            "acc_at_baseline_time": statistics.fmean(wall),
            "verdict": "beats" if beats else ("loses" if loses else "ties")}


def _report(out: Path, plan: Plan, selection: dict[str, Any], baseline: dict[float, str],
            records: list[dict], timings: dict[str, float], settings: dict[str, Any],
            echo: bool) -> dict[str, Any]:
    test = [r for r in records if r["split"] == "test"]
    by: dict[str, dict[int, dict]] = {}
    for r in test:
        by.setdefault(r["condition"], {})[r["seed"]] = r
    rows: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    secondary: list[dict[str, Any]] = []
    for m in plan.global_lrs():
        base = (f"sgd-head-x{plan.head[m]:g}{_lr_tag(m)}" if baseline[m] == "head"
                else f"sgd{_lr_tag(m)}")
        for arm in plan.reported(m):
            runs = by.get(arm.name, {})
            if not runs:
                continue
            accs = [runs[k]["final_acc"] for k in sorted(runs)]
            row = {"lr_mult": m, "arm": arm.name, "n_seeds": len(accs),
                   "acc_mean": statistics.fmean(accs),
                   "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                   "val_mean": statistics.fmean(runs[k]["val_acc"] for k in runs),
                   "ms_per_step": statistics.fmean(runs[k]["ms_per_step"] for k in runs),
                   "angle_mean": statistics.fmean(runs[k]["angle_mean"] for k in runs),
                   "buffer_mb": max(runs[k].get("buffer_bytes", 0) for k in runs) / 2**20,
                   "diverged": sum(bool(runs[k]["diverged"]) for k in runs),
                   "baseline": base}
            rows.append(row)
            if (arm.teacher or {}).get("policy") != "greedy":
                continue
            # the pre-registered test, then (descriptive only) plain SGD at the same lr
            comp = _paired(arm.name, runs, base, by.get(base, {}))
            if comp is not None:
                tests.append(comp)
            plain = f"sgd{_lr_tag(m)}"
            comp = None if plain == base else _paired(arm.name, runs, plain, by.get(plain, {}))
            if comp is not None:
                secondary.append(comp)
    writer = core.Writer(out)
    writer.csv("informed_results.csv", sorted(test, key=lambda r: (r["condition"], r["seed"])),
               ("condition", "seed", "final_acc", "val_acc", "ms_per_step", "run_seconds",
                "angle_mean", "buffer_bytes", "diverged"), float_format=".4f")
    writer.json("informed_selection.json", {**selection, "settings": settings,
                                            "stage_wall_seconds": timings})
    lines = ["# Informed targets against tuned SGD (MNIST MLP)" + (
        " (quick mode: numbers are meaningless)" if plan.quick else ""), "",
        f"{settings['iters']} iterations, batch {settings['batch_size']}, paper lr "
        f"{settings['lr']:g}, weight decay {settings['weight_decay']:g}.", "",
        "## Selection (seed 100, validation accuracy %)", "", "```"]
    lines += [f"{k:<45} {v:7.2f}" for k, v in selection["validation_accuracy"].items()]
    lines += ["```", "", f"Tuned global lr: x{plan.tuned_lr:g}; head lr: "
              + ", ".join(f"x{h:g} at lr x{m:g}" for m, h in plan.head.items())
              + "; knobs: " + "; ".join(f"{t} {k}" for t, k in plan.knobs.items()), "",
              "## Reported arms (test accuracy %, mean ± std over seeds)", "", "```"]
    lines += [f"{r['arm']:<32} {r['acc_mean']:6.2f} ± {r['acc_std']:.2f} (n={r['n_seeds']})  "
              f"{r['ms_per_step']:6.2f} ms/step  angle {r['angle_mean']:.4f}"
              + (f"  buffer {r['buffer_mb']:.1f} MiB" if r["buffer_mb"] else "")
              + (f"  ({r['diverged']} diverged)" if r["diverged"] else "")
              for r in rows]
    lines += ["```", "", "## Paired tests against the best baseline at the same global lr", "",
              "```"]
    lines += [f"{t['arm']} − {t['baseline']}: {t['statement']} -> {t['verdict']}; at the "
              f"baseline's wall time {t['acc_at_baseline_time']:.2f}" for t in tests]
    lines += ["```", "", "## Descriptive only: against plain SGD at the same global lr", "",
              "```"]
    lines += [f"{t['arm']} − {t['baseline']}: {t['statement']}" for t in secondary]
    lines += ["```", ""]
    writer.text("informed.md", "\n".join(lines))
    if echo:
        print("\n".join(lines))
    return {"rows": rows, "tests": tests, "secondary": secondary}
