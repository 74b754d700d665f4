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

* **``--parts informed``**, run on its own: do informed teaching targets
  (``PerformativeTeacher(target="ema" | "buffer" | "heldout")``) beat a tuned
  plain SGD? The pre-registered protocol of ``benchmarks/RESULTS.md``, with
  its selection on a validation split; see
  :mod:`torchdht.experiments._informed_study` (default ``--out``:
  ``runs/informed``; ``--report-only`` reports the saved runs).

For a given seed every condition starts from the same initialisation and
sees the same batches. Runs parallelise over ``--workers`` processes with one
torch thread each (default: the CPU count). Every finished run is saved at once under
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
``--iters`` sets both parts' iterations, ``--mnist-iters`` and ``--cifar-iters`` one
part's; ``--seeds`` the number of seeds. The statistics and the generated conclusion
are in :mod:`torchdht.experiments._attribution_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import resolve_root
from ..functional.solve import default_solve_lr
from ..models import build_model
from ..performative import PerformativeTeacher
from . import _core as core
from ._attribution_report import comparisons, conclusion, paired_comparison, plot, summarise, table
from ._informed_study import run_informed

__all__ = [
    "CIFAR_CONDITIONS",
    "DESCRIPTION",
    "MNIST_CONDITIONS",
    "AttributionConfig",
    "Condition",
    "PartSettings",
    "add_arguments",
    "config_from_args",
    "main",
    "paired_comparison",
    "run",
]

DESCRIPTION = (
    "What causes performative teaching's gain: the extra encoder gradient of the released "
    "code, the greedy teacher, or an under-tuned lr? MNIST MLP (5 seeds) and CIFAR-10 CNN-3."
)
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

_DATA: dict[tuple, Any] = {}  # per-process cache of the CIFAR part


def _mnist(root: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST, normalised and flattened (:func:`~torchdht.experiments._core.load_mnist`)."""
    return core.load_mnist(root)


def _read_jpeg_split(folder: Path, per_class: int | None) -> tuple[Tensor, Tensor]:
    """The images of an ImageFolder tree (the first ``per_class`` of each class, or all)."""
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
    x = core.decode_images([path for path, _ in samples])
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
    return core.cifar_to_float(x_u8)


# ----------------------------------------------------------------------------- one run


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
    start = time.perf_counter()
    with core.seeded(seed):  # same initialisation for every condition
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
        points = core.eval_points(s.iters, s.eval_every)
        curve: list[float] = []
        state: dict[str, Any] = {"order": torch.empty(0, dtype=torch.int64)}

        def test() -> float:
            return core.accuracy(model, x_te, y_te, chunk=500,
                                 transform=core.cifar_to_float if cifar else None)

        def fetch(it: int) -> tuple[Tensor, Tensor]:
            if len(state["order"]) < s.batch_size:
                state["order"] = torch.cat([state["order"],
                                            torch.randperm(len(y_tr), generator=gen)])
            idx, state["order"] = state["order"][: s.batch_size], state["order"][s.batch_size :]
            return (_cifar_batch(x_tr[idx], True, aug_gen) if cifar else x_tr[idx]), y_tr[idx]

        # a diverged run is stopped; the rest of its curve is the model's accuracy as it is
        watch = core.RunWatch(s.iters, teacher, on_diverge=lambda it, _: curve.extend(
            [test()] * (len(points) - len(curve))))

        model.train()
        try:
            stats = core.train_loop(s.iters, core.cross_entropy_step(
                model, opt, None if teacher is None else teacher.set_targets), fetch=fetch,
                eval_at=set(points), evaluate=lambda it, _: curve.append(test()),
                callbacks=[watch])
        finally:
            if teacher is not None:
                teacher.remove()
    return {
        "part": part,
        "condition": cond.name,
        "seed": seed,
        "final_acc": curve[-1],
        "curve": curve,
        "eval_points": points,
        "ms_per_step": 1000.0 * stats.step_seconds / max(s.iters, 1),
        "run_seconds": time.perf_counter() - start,
        "final_loss": watch.last_loss,
        "diverged": watch.diverged,
        "angle_mean": watch.angle_mean,
    }


def _init_worker() -> None:
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- driver


@dataclass
class AttributionConfig:
    """The study's settings (checked on creation: ``ValueError``).

    Attributes:
        parts: ``"mnist"`` and/or ``"cifar"``, in that order of the tables.
        conditions: a subset of the conditions' names (default: None, all of the mode).
        quick: the reduced smoke run (:data:`QUICK`, 8 MNIST conditions) instead of
            :data:`FULL`.
        workers: parallel processes, one torch thread each (default: 1).
        seeds: number of seeds, overriding the mode's (default: None).
        iters: iterations of every part, overriding the mode's (default: None).
        mnist_iters, cifar_iters: one part's iterations, overriding ``iters``.
        data_root: holding ``MNIST/raw/`` and ``cifar10-jpeg/`` (default: None, the
            default data root).
        fake_data: the CIFAR part on random images of the same shape.
        out: output folder (default: None, ``runs/attribution`` or, with ``quick``,
            ``runs/attribution-quick``).
        resume: reuse the runs saved in ``out`` with the same settings (default: True).
        report_only: run nothing, write the report from the saved runs (``informed``
            only; default: False).
        progress: progress bars (default: True).
        echo: print the report (default: True).
    """

    parts: Sequence[str] = ("mnist", "cifar")
    conditions: Sequence[str] | None = None
    quick: bool = False
    workers: int = 1
    seeds: int | None = None
    iters: int | None = None
    mnist_iters: int | None = None
    cifar_iters: int | None = None
    data_root: str | os.PathLike[str] | None = None
    fake_data: bool = False
    out: str | os.PathLike[str] | None = None
    resume: bool = True
    report_only: bool = False
    progress: bool = True
    echo: bool = True

    def __post_init__(self) -> None:
        self.parts = list(self.parts)
        bad = [p for p in self.parts if p not in (*FULL, "informed")]
        if bad or not self.parts:
            raise ValueError(f"--parts must name mnist and/or cifar, or informed, got "
                             f"{self.parts!r}")
        if "informed" in self.parts and len(self.parts) > 1:
            raise ValueError("--parts informed is a study of its own: run it alone")
        if self.report_only and self.parts != ["informed"]:
            raise ValueError("--report-only is an option of --parts informed")
        for flag, value in (("--workers", self.workers), ("--seeds", self.seeds),
                            ("--iters", self.iters), ("--mnist-iters", self.mnist_iters),
                            ("--cifar-iters", self.cifar_iters)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        known = {c.name for c in MNIST_CONDITIONS + CIFAR_CONDITIONS}
        unknown = sorted(set(self.conditions or ()) - known)
        if unknown:
            raise ValueError(f"unknown conditions {unknown}; known: {sorted(known)}")
        if self.out is None:
            name = "informed" if self.parts == ["informed"] else "attribution"
            self.out = f"runs/{name}-quick" if self.quick else f"runs/{name}"

    def settings(self) -> dict[str, PartSettings]:
        """Each part's :class:`PartSettings`: the mode's, with the overrides."""
        settings = dict(QUICK if self.quick else FULL)
        for part, override in (("mnist", self.mnist_iters or self.iters),
                               ("cifar", self.cifar_iters or self.iters)):
            if override is not None:
                every = max(1, min(settings[part].eval_every, override))
                settings[part] = dataclasses.replace(settings[part], iters=override,
                                                     eval_every=every)
        if self.seeds is not None:
            settings = {k: dataclasses.replace(v, seeds=self.seeds) for k, v in settings.items()}
        return settings

    def part_conditions(self, part: str) -> list[Condition]:
        """The conditions run in ``part``."""
        return [c for c in (MNIST_CONDITIONS if part == "mnist" else CIFAR_CONDITIONS)
                if (self.conditions is None or c.name in self.conditions)
                and (not self.quick or part != "mnist" or c.name in _QUICK_MNIST)]


def _run_part(jobs: list[dict], out: Path, workers: int, resume: bool, progress: bool,
              desc: str, run: Any = None, saved_only: bool = False
              ) -> tuple[list[dict], float, int]:
    """Run the jobs through ``run`` (default: this study's run; reusing saved ones; with
    ``saved_only``, only those); returns records, wall seconds, runs reused."""
    run = _run_job if run is None else run
    import json

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
        if not saved_only:
            todo.append((job, f))
    reused = len(records)
    # Longest first (teachers, then plain), for a balanced pool; a given run keeps its order.
    if run is _run_job:
        todo.sort(key=lambda jf: (jf[0]["condition"]["teacher"] is None,
                                  jf[0]["condition"]["teacher"] is not None
                                  and jf[0]["condition"]["teacher"]["policy"] != "greedy"))
    start = time.perf_counter()
    bar = core.progress_bar(len(todo), progress, desc, unit="run")

    def save(job_file: Path, job: dict, result: dict) -> None:
        job_file.write_text(json.dumps({"job": job, "result": result}))
        records.append(result)
        bar.set_postfix_str(f"{result['condition']} s{result['seed']}: "
                            f"{result['final_acc']:.2f}%")
        bar.update()

    try:
        if workers <= 1 or len(todo) <= 1:
            with core.torch_threads(1):
                for job, f in todo:
                    save(f, job, run(job))
        elif todo:
            import multiprocessing as mp

            by_key = {(j["condition"]["name"], j["seed"]): (j, f) for j, f in todo}
            ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                for result in pool.imap_unordered(run, [j for j, _ in todo]):
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


def _jobs(part: str, conds: Sequence[Condition], s: PartSettings, root: Path, fake: bool,
          out: Path) -> list[dict]:
    return [{"version": STUDY_VERSION, "part": part, "condition": dataclasses.asdict(c),
             "seed": seed, "settings": dataclasses.asdict(s), "data_root": str(root),
             "fake": bool(fake and part == "cifar"), "cache_dir": str(out / "cache")}
            for seed in range(s.seeds) for c in conds]


def _data_root(cfg: AttributionConfig) -> Path:
    """The data root, checked for what the parts need (``FileNotFoundError``, one line)."""
    mnist = "mnist" in cfg.parts or "informed" in cfg.parts
    root = resolve_root(cfg.data_root, need="MNIST/raw" if mnist else None)
    if "cifar" in cfg.parts and not cfg.fake_data:
        try:
            resolve_root(root, need="cifar10-jpeg/train")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc}; or pass --fake-data, or --parts mnist") from None
    return root


def run(cfg: AttributionConfig) -> dict[str, Any]:
    """Run the study and write its files (see the module's docstring).

    Returns:
        ``{"mnist": summary rows, "cifar": summary rows, "comparisons": [...],
        "conclusion": [lines], "timings": {...}, "out": folder}``.

    Raises:
        FileNotFoundError: a part's data set is not under the data root.
    """
    root = _data_root(cfg)
    out = Path(cfg.out or "runs/attribution")
    out.mkdir(parents=True, exist_ok=True)
    settings = cfg.settings()
    if cfg.parts == ["informed"]:
        s = settings["mnist"]
        return run_informed(
            {"iters": s.iters, "batch_size": s.batch_size, "lr": s.lr,
             "weight_decay": s.weight_decay, "eval_every": s.eval_every},
            root, out, quick=cfg.quick, seeds=s.seeds, run_part=_run_part,
            workers=cfg.workers, resume=cfg.resume, progress=cfg.progress, echo=cfg.echo,
            report_only=cfg.report_only)
    results: dict[str, Any] = {"out": str(out), "timings": {}}
    summaries: dict[str, list[dict]] = {"mnist": [], "cifar": []}
    all_records: list[dict] = []
    comps: list[dict] = []
    for part in cfg.parts:
        conds = cfg.part_conditions(part)
        if not conds:
            continue
        s = settings[part]
        if part == "cifar" and not cfg.fake_data and s.train_subset is None:
            _cifar(str(root), s, False, str(out / "cache"))  # decode + cache once, here
        records, wall, reused = _run_part(_jobs(part, conds, s, root, cfg.fake_data, out), out,
                                          cfg.workers, cfg.resume, cfg.progress, part)
        all_records += records
        summaries[part] = summarise(records, conds)
        if part == "mnist":
            comps = comparisons(records, summaries[part])
        results["timings"][part] = {
            "wall_seconds": wall, "runs": len(records), "runs_reused": reused,
            "run_seconds_total": sum(r["run_seconds"] for r in records),
            "workers": cfg.workers, "settings": dataclasses.asdict(s),
        }
    lines = conclusion(summaries["mnist"], comps, summaries["cifar"])
    writer = core.Writer(out)
    writer.csv("results.csv", sorted(all_records, key=lambda r: (r["part"], r["seed"])),
               ("part", "condition", "seed", "final_acc", "ms_per_step", "run_seconds",
                "final_loss", "diverged", "angle_mean"), float_format=".4f")
    writer.csv("summary.csv", [{"part": p, **r} for p in ("mnist", "cifar") for r in summaries[p]],
               ("part", "condition", "group", "n_seeds", "acc_mean", "acc_std", "acc_per_seed",
                "early_iter", "early_acc_mean", "ms_per_step", "run_seconds", "angle_mean",
                "diverged", "note"), float_format=".4f")
    writer.csv("comparisons.csv", comps, ("a", "b", "question", "n", "diff_mean", "diff_std",
                                          "wins", "t", "p", "significant", "statement"),
               float_format=".4f")
    plot(writer, summaries["mnist"], summaries["cifar"])
    text = ["# Attribution study" + (" (quick mode: numbers are meaningless)" if cfg.quick
                                      else ""), ""]
    for part, title in (("mnist", "MNIST, MLP"), ("cifar", "CIFAR-10, CNN-3")):
        if summaries[part]:
            s = settings[part]
            text += [f"## {title}: {s.iters} iterations, batch {s.batch_size}, lr {s.lr:g}, "
                     f"momentum {s.momentum:g}, wd {s.weight_decay:g}, {s.seeds} seed(s)",
                     "", "```", table(summaries[part]), "```", ""]
    if comps:
        text += ["## Paired comparisons (MNIST, same seeds)", "", "```"]
        text += [f"{c['a']} − {c['b']} ({c['question']}): {c['statement']}" for c in comps]
        text += ["```", ""]
    text += ["## Conclusion", "", *lines, "", "## Time taken", ""]
    text += [f"- {part}: {t['runs']} runs ({t['runs_reused']} reused from an earlier "
             f"invocation), {t['wall_seconds'] / 60:.1f} min wall on {t['workers']} worker(s); "
             f"sum of run times {t['run_seconds_total'] / 60:.1f} min."
             for part, t in results["timings"].items()]
    writer.text("conclusion.md", "\n".join([*text, ""]))
    writer.json("config.json", {
        "quick": bool(cfg.quick), "parts": cfg.parts, "workers": cfg.workers,
        "data_root": str(root), "fake_data": bool(cfg.fake_data),
        "lookahead_steps": LOOKAHEAD_STEPS, "solve_steps": SOLVE_STEPS,
        "timings": results["timings"], "torch": torch.__version__,
    })
    if cfg.echo:
        print("\n".join([*text, ""]))
        print(f"Wrote {out}/results.csv, summary.csv, comparisons.csv, attribution.png, "
              f"conclusion.md, config.json")
    results.update(mnist=summaries["mnist"], cifar=summaries["cifar"], comparisons=comps,
                   conclusion=lines)
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The study's options: the common ones and its own.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--quick"]).quick, len(MNIST_CONDITIONS), len(CIFAR_CONDITIONS)
        (True, 21, 6)
    """
    f, q = FULL, QUICK
    core.add_common_arguments(
        p, data="folder holding MNIST/raw/ and cifar10-jpeg/",
        out=None, out_help="(default: runs/attribution; --quick: runs/attribution-quick)",
        seeds=f"per condition (default: mnist {f['mnist'].seeds}, cifar {f['cifar'].seeds}; "
        f"--quick: {q['mnist'].seeds}, {q['cifar'].seeds})",
        iters=f"of every part (default: mnist {f['mnist'].iters}, cifar {f['cifar'].iters}; "
        f"--quick: {q['mnist'].iters}, {q['cifar'].iters})",
        quick="a reduced smoke run of the whole pipeline (well under a minute)",
        workers="parallel processes, one torch thread each",
    )
    p.add_argument("--parts", action=core.ListAction, default=["mnist", "cifar"], metavar="P,P",
                   help="comma-separated: mnist, cifar (default: mnist,cifar); or informed "
                   "alone: the informed-targets study against tuned SGD")
    p.add_argument("--conditions", action=core.ListAction, default=None, metavar="C,C,...",
                   help="comma-separated subset of the conditions (default: all of the mode)")
    p.add_argument("--mnist-iters", type=int, default=None,
                   help="the MNIST part's iterations (default: --iters, else the mode's)")
    p.add_argument("--cifar-iters", type=int, default=None,
                   help="the CIFAR part's iterations (default: --iters, else the mode's)")
    p.add_argument("--fake-data", action="store_true",
                   help="CIFAR part on random images of the same shape (no data needed)")
    p.add_argument("--no-resume", action="store_true", help="rerun runs already saved in --out")
    p.add_argument("--report-only", action="store_true",
                   help="with --parts informed: run nothing, report the runs saved in --out")


def config_from_args(args: argparse.Namespace) -> AttributionConfig:
    """The :class:`AttributionConfig` of parsed options (``ValueError`` if they do not check)."""
    return AttributionConfig(
        parts=args.parts, conditions=args.conditions, quick=args.quick, workers=args.workers,
        seeds=args.seeds, iters=args.iters, mnist_iters=args.mnist_iters,
        cifar_iters=args.cifar_iters, data_root=args.data_root, fake_data=args.fake_data,
        out=args.out, resume=not args.no_resume, progress=not args.no_progress,
        report_only=args.report_only,
    )


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments attribution") -> int:
    """``python -m torchdht.experiments attribution [options]``: run the study; returns the
    exit status (0, or 1 when it cannot run, e.g. no MNIST under the data root)."""
    return core.run_main(sys.modules[__name__], argv, prog)


if __name__ == "__main__":
    from torchdht.experiments.attribution import main as _main  # the importable module's copy

    sys.exit(_main(prog="python -m torchdht.experiments.attribution"))
