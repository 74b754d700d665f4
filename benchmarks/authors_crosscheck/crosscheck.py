"""Cross-check the attribution study on the authors' own code.

Runs the authors' released MNIST MLP ``blackbox_implicit`` experiment
(GitHub ``Zeju1997/data_halucination_teaching``, commit f218fd3) as released
and again with ``n_z_update: 0`` (no feature updates at all), collecting the
test accuracy per epoch of their Student (teacher-trained), their SGD
student and their random Baseline; and our five arms (``sgd``, ``dht``,
``dht-released``, ``random-released``, ``sgd-enc-x6``) at the same
iterations, with our protocol, matched to theirs, and matched with their
model's init and bias-free encoder (``ours.py``).

The authors' checkout given by ``--authors`` is never modified: it is copied
to ``<out>/authors_src`` (without ``.git``), ``authors.patch`` (next to this
file) is applied to the copy, configs derived from
``configs/mnist_blackbox_implicit.yaml`` are written there, and every run
writes under ``--out``. Runs are separate processes with one torch thread,
at most ``--jobs`` at a time; a finished run's record is reused when the
command is repeated (``--force`` reruns). ``<out>/tables.md`` and
``<out>/summary.json`` are written at the end (``--report`` only rewrites
them from the records).

Examples::

    # the full cross-check (about 40 min on 2 CPU cores)
    python benchmarks/authors_crosscheck/crosscheck.py \\
        --authors /path/to/data_halucination_teaching --data ../shared/data \\
        --out runs/authors_crosscheck --seeds 2 --iters 3000

    # a smoke test of the whole pipeline on 1,280 training images (seconds; numbers mean nothing)
    python benchmarks/authors_crosscheck/crosscheck.py --authors /path/to/checkout --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATCH = HERE / "authors.patch"
DRIVER = HERE / "_authors_driver.py"
OURS = HERE / "ours.py"
AUTHORS_COMMIT = "f218fd3"
AUTHORS_CONFIG = "mnist_blackbox_implicit"
# The seeds of the authors' train.py (its ``seeds`` list; the first is the one left active).
AUTHORS_SEEDS = (95873, 10094, 20058, 27026, 48495)
AUTHORS_RUNS = (  # (label, experiment, n_z_update)
    ("student", "Student", None),  # None: as released (15)
    ("student-nz0", "Student", 0),
    ("sgd", "SGD", None),
    ("random", "Baseline", None),
)
OUR_ARMS = ("sgd", "dht", "dht-released", "random-released", "sgd-enc-x6")
PROTOCOLS = ("ours", "matched", "matched-model")
QUICK_TRAIN = 1280  # --quick: training images kept (10 batches of 128)
QUICK_TEST = 1000


class CrossCheckError(RuntimeError):
    """A problem with the inputs, explained in one line."""


# ----------------------------------------------------------------------------- authors' side


def check_checkout(path: Path) -> str | None:
    """Refuse a path that is not a checkout of the authors' repository; return its commit."""
    if not path.is_dir():
        raise CrossCheckError(
            f"--authors {path}: no such folder. Clone GitHub Zeju1997/data_halucination_teaching "
            f"and check out {AUTHORS_COMMIT}, then pass its path.")
    needed = ["teaching_policy/blackbox_implicit.py", "networks/blackbox_implicit.py",
              f"configs/{AUTHORS_CONFIG}.yaml", "options/options.py", "train.py", "baseconfig.py"]
    absent = [n for n in needed if not (path / n).is_file()]
    if absent:
        raise CrossCheckError(
            f"--authors {path} is not a checkout of Zeju1997/data_halucination_teaching "
            f"(missing {', '.join(absent)})")
    if (path / ".git").exists() and shutil.which("git"):
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                           text=True)
        if r.returncode == 0:
            return r.stdout.strip()
    return None


def prepare_copy(authors: Path, out: Path) -> Path:
    """Copy the checkout to ``<out>/authors_src`` and apply ``authors.patch`` to the copy."""
    dst = out / "authors_src"
    if dst.exists():
        shutil.rmtree(dst)
    ignore = shutil.ignore_patterns(".git", "results", "figures", "checkpoint", "log", "data",
                                    "__pycache__")
    shutil.copytree(authors, dst, ignore=ignore)
    if shutil.which("git"):
        cmd = ["git", "apply", "--whitespace=nowarn", str(PATCH)]
    elif shutil.which("patch"):
        cmd = ["patch", "-p1", "--forward", "-i", str(PATCH)]
    else:
        raise CrossCheckError("neither git nor patch is installed: cannot apply authors.patch")
    # The copy may lie inside another git work tree (e.g. runs/ of this project): stop git
    # from finding it, or `git apply` would read the patch's paths relative to that tree.
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(dst.parent))
    r = subprocess.run(cmd, cwd=dst, capture_output=True, text=True, env=env)
    patched = (dst / "teaching_policy" / "blackbox_implicit.py").read_text()
    if r.returncode != 0 or "def save_model(self, model, name):  # crosscheck" not in patched:
        raise CrossCheckError(
            f"authors.patch does not apply to {authors} (expected commit {AUTHORS_COMMIT}): "
            f"{(r.stderr or r.stdout).strip() or 'nothing was patched'}")
    return dst


def write_configs(src: Path, epochs: int, quick: bool) -> dict[int | None, str]:
    """Configs next to the released one: ``n_epochs`` (and ``n_z_update``) overridden.

    ``num_workers: 0`` loads MNIST in the training process (the Options default
    is 10 worker processes; nothing else depends on it).
    """
    import yaml

    with open(src / "configs" / f"{AUTHORS_CONFIG}.yaml") as f:
        base = yaml.safe_load(f)
    names: dict[int | None, str] = {}
    for nz in (None, 0):
        cfg = dict(base, n_epochs=epochs, num_workers=0)
        if nz is not None:
            cfg["n_z_update"] = nz
        name = f"crosscheck_{AUTHORS_CONFIG}_nz{cfg['n_z_update']}{'_quick' if quick else ''}"
        with open(src / "configs" / f"{name}.yaml", "w") as f:
            f.write(f"# {AUTHORS_CONFIG}.yaml with n_epochs={epochs}, num_workers=0"
                    + (f", n_z_update={nz}" if nz is not None else "") + " (crosscheck.py)\n")
            yaml.safe_dump(cfg, f, sort_keys=False)
        names[nz] = name
    return names


def write_quick_mnist(data: Path, dst: Path) -> Path:
    """A small MNIST (first QUICK_TRAIN / QUICK_TEST images) in torchvision's raw layout."""
    import numpy as np

    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", QUICK_TRAIN), ("t10k", QUICK_TEST)):
        with open(data / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", "rb") as f:
            img = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
        with open(data / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", "rb") as f:
            lab = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        with open(raw / f"{split}-images-idx3-ubyte", "wb") as f:
            f.write(np.array([2051, n, 28, 28], dtype=">i4").tobytes())
            f.write(img[: n * 784].tobytes())
        with open(raw / f"{split}-labels-idx1-ubyte", "wb") as f:
            f.write(np.array([2049, n], dtype=">i4").tobytes())
            f.write(lab[:n].tobytes())
    return dst


# ----------------------------------------------------------------------------- running


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], cwd: Path, log: Path, record: Path, force: bool) -> dict:
    if record.is_file() and not force:
        print(f"reuse {record}", flush=True)
        return json.loads(record.read_text())
    t0 = time.perf_counter()
    print(f"start {record.name}", flush=True)
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=_env())
    if r.returncode != 0 or not record.is_file():
        tail = log.read_text()[-2000:]
        raise CrossCheckError(f"{record.name} failed (exit {r.returncode}); log {log}:\n{tail}")
    print(f"done  {record.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(record.read_text())


def plan(args, out: Path, data: Path) -> list[tuple]:
    jobs: list[tuple] = []
    if args.side in ("both", "authors"):
        src = prepare_copy(args.authors, out)
        shutil.copy(DRIVER, src / DRIVER.name)
        names = write_configs(src, args.epochs, args.quick)
        rdir = out / "authors"
        rdir.mkdir(exist_ok=True)
        for seed in AUTHORS_SEEDS[: args.seeds]:
            for label, experiment, nz in AUTHORS_RUNS:
                stem = f"{label}_seed{seed}_it{args.iters}"
                cmd = [sys.executable, DRIVER.name, "--config", names[nz], "--seed", str(seed),
                       "--experiment", experiment, "--data", str(data),
                       "--record", str(rdir / f"{stem}.json")]
                if experiment in ("Student", "Baseline") and args.probe_every > 0:
                    cmd += ["--probe-every", str(args.probe_every)]
                jobs.append((cmd, src, rdir / f"{stem}.log", rdir / f"{stem}.json"))
    if args.side in ("both", "ours"):
        odir = out / "ours"
        odir.mkdir(exist_ok=True)
        for protocol in PROTOCOLS:
            for seed in range(args.seeds):
                stem = f"{protocol}_seed{seed}_it{args.iters}"
                cmd = [sys.executable, str(OURS), "--protocol", protocol, "--seed", str(seed),
                       "--iters", str(args.iters), "--eval-every", str(args.batches),
                       "--data", str(data), "--record", str(odir / f"{stem}.json")]
                if args.quick:
                    cmd += ["--n-train", str(QUICK_TRAIN)]
                jobs.append((cmd, Path.cwd(), odir / f"{stem}.log", odir / f"{stem}.json"))
    return jobs


# ----------------------------------------------------------------------------- report


def _fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def report(out: Path, iters: int) -> str:
    """Tables from the records under ``out`` (Markdown), also as ``summary.json``."""
    lines: list[str] = []
    summary: dict = {"iters_flag": iters, "authors": {}, "ours": {}}
    recs = sorted((out / "authors").glob(f"*_it{iters}.json")) if (out / "authors").is_dir() \
        else []
    auth: dict[int, dict[str, dict]] = {}
    for f in recs:
        r = json.loads(f.read_text())
        label = f.name.split("_seed")[0]
        auth.setdefault(r["seed"], {})[label] = r
    if auth:
        any_r = next(iter(next(iter(auth.values())).values()))
        pts = any_r["eval_iters"]
        lines += [
            f"**The authors' program** (MNIST MLP `blackbox_implicit`, {any_r['iters']} "
            f"iterations = {len(pts) - 1} epochs of {any_r['batches_per_epoch']} batches; "
            "test accuracy %, all 10,000 test images unless --quick)", "",
            "| seed | Student (released, n_z_update 15) | Student, n_z_update 0 | SGD student "
            "| random Baseline | Student − SGD | n_z 15 − n_z 0: max abs diff over epochs |",
            "|---|---|---|---|---|---|---|",
        ]
        cols: dict[str, list[float]] = {k: [] for k, _, _ in AUTHORS_RUNS}
        for seed in sorted(auth):
            a = auth[seed]
            fin = {k: a[k]["final_acc"] if k in a else None for k, _, _ in AUTHORS_RUNS}
            for k, v in fin.items():
                if v is not None:
                    cols[k].append(v)
            gap = (fin["student"] - fin["sgd"]) if None not in (fin["student"], fin["sgd"]) \
                else None
            mx = None
            if "student" in a and "student-nz0" in a:
                mx = max(abs(x - y) for x, y in zip(a["student"]["test_acc"],
                                                     a["student-nz0"]["test_acc"]))
            lines.append(f"| {seed} | {_fmt(fin['student'])} | {_fmt(fin['student-nz0'])} | "
                         f"{_fmt(fin['sgd'])} | {_fmt(fin['random'])} | "
                         f"{'-' if gap is None else f'{gap:+.2f}'} | {_fmt(mx)} |")
            summary["authors"][str(seed)] = {
                k: {"test_acc": a[k]["test_acc"], "final_acc": a[k]["final_acc"],
                    "wall_s": a[k]["wall_s"]} for k in a}
        lines.append(f"| mean ± sd | {_mean_sd(cols['student'])} | "
                     f"{_mean_sd(cols['student-nz0'])} | {_mean_sd(cols['sgd'])} | "
                     f"{_mean_sd(cols['random'])} | | |")
        lines += ["", f"Per epoch (iterations {', '.join(str(p) for p in pts)}):", "",
                  "| seed | run | " + " | ".join(f"it {p}" for p in pts) + " |",
                  "|---|---|" + "---|" * len(pts)]
        for seed in sorted(auth):
            for k, _, _ in AUTHORS_RUNS:
                if k in auth[seed]:
                    lines.append(f"| {seed} | {k} | "
                                 + " | ".join(f"{x:.2f}" for x in auth[seed][k]["test_acc"])
                                 + " |")
        probe = [p for s in auth.values() for k in ("student", "student-nz0") if k in s
                 for p in s[k].get("probe", []) if "ratio_total_plain" in p]
        if probe:
            lines += ["", "Encoder gradient the Student's optimizer steps with, against the "
                      "plain SGD gradient of the same batch and weights (every probed step, "
                      "all seeds):", "",
                      "| run | probed steps | ratio of norms (mean, min-max) | cosine (min) "
                      "| final-loss grad alone: ratio, cosine (mean) | largest feature move |",
                      "|---|---|---|---|---|---|"]
            for k in ("student", "student-nz0"):
                ps = [p for s in auth.values() if k in s for p in s[k].get("probe", [])
                      if "ratio_total_plain" in p]
                if not ps:
                    continue
                rt = [p["ratio_total_plain"] for p in ps]
                summary.setdefault("probe", {})[k] = {
                    "n": len(ps), "ratio_mean": statistics.fmean(rt), "ratio_min": min(rt),
                    "ratio_max": max(rt), "cos_min": min(p["cos_total_plain"] for p in ps),
                    "final_ratio_mean": statistics.fmean(p["ratio_final_plain"] for p in ps),
                    "final_cos_mean": statistics.fmean(p["cos_final_plain"] for p in ps),
                    "feature_move_max": max(p["feature_move_max"] for p in ps)}
                s_ = summary["probe"][k]
                lines.append(
                    f"| {k} | {s_['n']} | {s_['ratio_mean']:.3f} ({s_['ratio_min']:.3f}-"
                    f"{s_['ratio_max']:.3f}) | {s_['cos_min']:.6f} | {s_['final_ratio_mean']:.4f},"
                    f" {s_['final_cos_mean']:.6f} | {s_['feature_move_max']:.4f} |")
            bl = [p for s in auth.values() if "random" in s for p in s["random"].get("probe", [])]
            if bl:
                extra = sum(p["baseline_extra_grad"] for p in bl)
                lines.append(f"\nRandom Baseline: an encoder gradient before its loss's backward "
                             f"in {extra} of {len(bl)} probed steps.")
                summary.setdefault("probe", {})["random_extra_grad_steps"] = [extra, len(bl)]
        walls = {k: [a[k]["wall_s"] for a in auth.values() if k in a] for k, _, _ in AUTHORS_RUNS}
        lines += ["", "Wall time per run (s, mean over seeds): " + ", ".join(
            f"{k} {statistics.fmean(v):.0f}" for k, v in walls.items() if v)]
    ours: dict[str, dict[int, dict]] = {}
    if (out / "ours").is_dir():
        for f in sorted((out / "ours").glob(f"*_it{iters}.json")):
            r = json.loads(f.read_text())
            ours.setdefault(r["protocol"], {})[r["seed"]] = r
    for protocol in PROTOCOLS:
        if protocol not in ours:
            continue
        recs_p = ours[protocol]
        any_r = next(iter(recs_p.values()))
        s = any_r["settings"]
        what = {
            "ours": "our protocol: normalised MNIST (0.1307, 0.3081), no augmentation, weight "
                    "decay 5e-4",
            "matched": "matched to the authors: RandomHorizontalFlip + RandomResizedCrop(28), "
                       "Normalize(0.5, 0.5), no weight decay, epochs of 469 batches",
            "matched-model": "matched, and the model made like theirs: encoder without bias, "
                             "head kaiming_uniform_ with bias 0",
        }[protocol]
        seeds = sorted(recs_p)
        lines += ["", f"**Ours, {protocol} protocol** ({what}; MLP 784-128-10, SGD lr {s['lr']:g},"
                  f" batch {s['batch']}, {any_r['iters']} iterations; test accuracy %)", "",
                  "| arm | " + " | ".join(f"seed {x}" for x in seeds)
                  + " | mean | − sgd (mean) | ms/step |",
                  "|---|" + "---|" * (len(seeds) + 3)]
        base = {x: recs_p[x]["arms"]["sgd"]["final_acc"] for x in seeds if "sgd" in
                recs_p[x]["arms"]}
        summary["ours"][protocol] = {}
        for arm in OUR_ARMS:
            accs = [recs_p[x]["arms"][arm]["final_acc"] for x in seeds if arm in
                    recs_p[x]["arms"]]
            if not accs:
                continue
            d = [recs_p[x]["arms"][arm]["final_acc"] - base[x] for x in seeds if x in base]
            ms = statistics.fmean(recs_p[x]["arms"][arm]["ms_per_step"] for x in seeds)
            lines.append(f"| {arm} | " + " | ".join(f"{a:.2f}" for a in accs)
                         + f" | {statistics.fmean(accs):.2f} | "
                         f"{statistics.fmean(d):+.2f} | {ms:.2f} |")
            summary["ours"][protocol][arm] = {
                "per_seed": dict(zip(seeds, accs)), "curves": {
                    x: recs_p[x]["arms"][arm]["test_acc"] for x in seeds},
                "eval_iters": any_r["eval_iters"], "ms_per_step": ms}
        lines.append("\nWall time per process (5 arms): " + ", ".join(
            f"seed {x} {recs_p[x]['wall_s']:.0f} s" for x in seeds))
    text = "\n".join(lines) + "\n"
    (out / "tables.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return text


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Examples::" + __doc__.split("Examples::")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors", type=Path, default=None,
                   help="path to a checkout of Zeju1997/data_halucination_teaching at "
                   f"{AUTHORS_COMMIT} (read only; needed unless --side ours or --report)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/authors_crosscheck, "
                   "runs/authors_crosscheck-quick with --quick)")
    p.add_argument("--data", dest="data", default=None, help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--data-root", dest="data", default=None,
                   help="folder holding MNIST/raw (default: the "
                   "project's data root, TORCHDHT_DATA)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per program (default 2; 1 with --quick): the authors' first "
                   f"N of {list(AUTHORS_SEEDS)}, ours 0..N-1")
    p.add_argument("--iters", type=int, default=None,
                   help="at least this many training iterations, rounded up to whole epochs of "
                   "the authors' loader (default 3000 -> 3283 = 7 x 469)")
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time (default 2)")
    p.add_argument("--side", choices=("both", "authors", "ours"), default="both")
    p.add_argument("--probe-every", type=int, default=25,
                   help="measure the authors' encoder gradient every N steps (0: off; it never "
                   "changes their numbers)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: first {QUICK_TRAIN} training / {QUICK_TEST} test images, "
                   "one epoch (10 iterations), 1 seed")
    p.add_argument("--force", action="store_true", help="rerun runs whose record exists")
    p.add_argument("--report", action="store_true", help="only rewrite the tables from --out")
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.out = args.out or Path("runs/authors_crosscheck" + ("-quick" if args.quick else ""))
    if args.iters is None:
        args.iters = 10 if args.quick else 3000
    try:
        from torchdht.data import resolve_root

        n_train = QUICK_TRAIN if args.quick else 60_000
        args.batches = math.ceil(n_train / 128)  # the authors' batches per epoch (no drop_last)
        args.epochs = 1 + math.ceil(args.iters / args.batches)  # their epoch 0 only evaluates
        args.iters = (args.epochs - 1) * args.batches
        args.out.mkdir(parents=True, exist_ok=True)
        if args.report:
            print(report(args.out, args.iters))
            return 0
        if args.side != "ours":
            if args.authors is None:
                raise CrossCheckError("--authors PATH is required (a checkout of GitHub "
                                      f"Zeju1997/data_halucination_teaching at {AUTHORS_COMMIT})")
            args.authors = args.authors.resolve()
            commit = check_checkout(args.authors)
            if commit is not None and not commit.startswith(AUTHORS_COMMIT):
                print(f"warning: {args.authors} is at {commit[:7]}, not {AUTHORS_COMMIT}",
                      file=sys.stderr)
        data = resolve_root(args.data, need="MNIST/raw").resolve()
        if args.quick:
            data = write_quick_mnist(data, args.out.resolve() / "quick_data")
        args.out = args.out.resolve()
        jobs = plan(args, args.out, data)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(_run, *job, args.force) for job in jobs]
            for fut in futures:
                fut.result()
        info = {"iters": args.iters, "epochs": args.epochs, "seeds": args.seeds,
                "quick": args.quick, "data": str(data), "wall_s": time.perf_counter() - t0,
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
        (args.out / "config.json").write_text(json.dumps(info, indent=1))
        print(report(args.out, args.iters))
    except (CrossCheckError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
