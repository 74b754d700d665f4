"""TeachingSampler on MNIST: greedy (IMT) selection against loss-based and random batches.

Run: ``python -m torchdht.experiments sampler --data-root PATH`` (a folder holding
``MNIST/raw``; default ``$TORCHDHT_DATA``, else ``../shared/data`` beside the
repository). It trains the paper's MNIST MLP (784-128-10) with plain SGD on batches
chosen by :class:`~torchdht.sampler.TeachingSampler` with ``score="greedy"``,
``"loss"`` and ``"random"`` (plain shuffled batches, the baseline), from the
same initial weights per seed, and reports test accuracy at equal iterations
and at equal wall time (training plus sampling, evaluation excluded), and the
sampler's cost per step. A second, short part is a control in IMT's own
setting: a linear softmax learner with a known target ``w*`` (greedy given
``w_star``), reporting ``|w - w*|``. Writes ``curves.csv``, ``summary.csv``,
``summary_linear.csv`` and ``accuracy.png`` to ``--out`` (default
``runs/sampler``) and prints the tables.

The paper's MNIST protocol (Sec. 4.2 / App. B) is 39k iterations of SGD with
lr 1e-3, batch 128. The defaults here are cut to fit about ten minutes on two
CPU cores: 5000 iterations at lr 0.05 (weight decay 5e-4, no momentum), three
seeds, one thread; the output says so. ``--quick`` runs 200 iterations (100 for
the control) on 2 seeds; ``--synthetic`` trains on Gaussian classes instead of
MNIST. Older spellings still accepted: ``--root`` (``--data-root``),
``--iterations`` (``--iters``), ``--linear-iterations`` (``--linear-iters``),
``--methods a b`` (``--methods a,b``).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from torchdht.sampler import TeachingSampler

from . import _core as core
from ._core import load_mnist as _load_mnist

__all__ = ["DESCRIPTION", "METHODS", "SamplerConfig", "add_arguments", "config_from_args",
           "load_mnist", "main", "run", "synthetic"]

DESCRIPTION = (
    "TeachingSampler on MNIST (MLP 784-128-10): greedy IMT selection vs loss-based vs "
    "random batches, test accuracy at equal iterations and equal wall time"
)
METHODS = ("random", "loss", "greedy", "greedy-sample")
"""``greedy``: eq. 4 with each example's share ``eta / B`` of the batch step (the
sampler's default); ``greedy-sample``: eq. 4 with the raw ``eta``, as the paper
writes it for one example per step."""
PAPER = "paper: 39k iterations, SGD lr 1e-3, batch 128"
DEFAULTS = {"iters": 5000, "seeds": 3, "eval_every": 500, "linear_iters": 1000}
"""The default run's length."""
QUICK = {"iters": 200, "seeds": 2, "eval_every": 50, "linear_iters": 100}
"""``--quick``: seconds on MNIST."""


@dataclass
class SamplerConfig:
    """The experiment's settings (checked on creation: ``ValueError``).

    Attributes:
        data_root: a folder holding ``MNIST/raw`` (default: None, ``$TORCHDHT_DATA``
            or ``../shared/data`` beside the repository).
        out: output folder (default: "runs/sampler").
        iters: SGD steps per MLP run (default: 5000).
        seeds: number of seeds ``first_seed ..``; each fixes the initial weights (shared
            by the methods) and the sampler's permutations (default: 3).
        first_seed: the first seed (default: 0).
        methods: selection methods to compare (default: :data:`METHODS`).
        batch_size: batch size (default: 128).
        pool_factor: candidates per step are ``pool_factor * batch_size`` (default: 4).
        lr: the MLP's SGD learning rate, also the greedy teacher's ``eta`` (default: 0.05).
        weight_decay: the MLP's SGD weight decay (default: 5e-4).
        eval_every: iterations between test evaluations (default: 500; the linear
            control evaluates every ``linear_iters // 10``).
        linear_iters: SGD steps per run of the linear control, 0 to skip it
            (default: 1000).
        linear_lr: the linear learner's SGD learning rate (default: 0.01).
        threads: torch threads for the run, None to leave them (default: 1, steadier
            timings on a shared machine).
        synthetic: Gaussian classes in place of MNIST, for a dry run (default: False).
        plot: write ``accuracy.png`` (needs matplotlib) (default: True).
        verbose: print the protocol and the tables (default: True).
        progress: print a line per finished run (default: True).
    """

    data_root: str | os.PathLike[str] | None = None
    out: str | os.PathLike[str] = "runs/sampler"
    iters: int = DEFAULTS["iters"]
    seeds: int = DEFAULTS["seeds"]
    first_seed: int = 0
    methods: Sequence[str] = METHODS
    batch_size: int = 128
    pool_factor: int = 4
    lr: float = 0.05
    weight_decay: float = 5e-4
    eval_every: int = DEFAULTS["eval_every"]
    linear_iters: int = DEFAULTS["linear_iters"]
    linear_lr: float = 0.01
    threads: int | None = 1
    synthetic: bool = False
    plot: bool = True
    verbose: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be among {METHODS}, got {list(self.methods)}")
        for name in ("iters", "seeds", "batch_size", "pool_factor", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.linear_iters < 0:
            raise ValueError(f"linear_iters must be >= 0, got {self.linear_iters}")
        for name in ("lr", "linear_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def seed_list(self) -> list[int]:
        """``first_seed .. first_seed + seeds - 1``."""
        return list(range(self.first_seed, self.first_seed + self.seeds))


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def load_mnist(root: str | os.PathLike[str] | None = None) -> tuple[TensorDataset, TensorDataset]:
    """MNIST as flattened, normalised float tensors (no download).

    Args:
        root: a folder holding ``MNIST/raw`` (torchvision's layout; default: None, the
            default data root).

    Returns:
        ``(train, test)`` TensorDatasets of 60000 and 10000 ``(x (784,), y)``.
    """
    x_train, y_train, x_test, y_test = _load_mnist(root)
    return TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)


def synthetic(n_train: int = 2048, n_test: int = 512, seed: int = 0) -> tuple[Any, Any]:
    """Ten Gaussian classes in 784 dimensions, for a quick dry run without MNIST."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 784, generator=g) * 0.15

    def draw(n: int) -> TensorDataset:
        y = torch.randint(0, 10, (n,), generator=g)
        return TensorDataset(centres[y] + torch.randn(n, 784, generator=g), y)

    return draw(n_train), draw(n_test)


def _train_one(method: str, seed: int, model: nn.Module, head: nn.Linear, train: TensorDataset,
               test: TensorDataset, cfg: SamplerConfig, *, iters: int, lr: float,
               weight_decay: float, eval_every: int,
               w_star: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    greedy = method.startswith("greedy")
    sampler = TeachingSampler(
        train, model=model, head=head, batch_size=cfg.batch_size, pool_factor=cfg.pool_factor,
        score="greedy" if greedy else method, optimizer=opt if greedy else None,
        w_star=w_star if greedy else None,
        objective_eta="sample" if method == "greedy-sample" else "batch", seed=seed,
    )
    loader = DataLoader(train, batch_sampler=sampler, generator=torch.Generator())
    state: dict[str, Any] = {"epoch": 0, "batches": None}

    def fetch(it: int) -> Any:  # epoch after epoch of the sampler's batches
        while True:
            if state["batches"] is None:
                sampler.set_epoch(state["epoch"])
                state["epoch"] += 1
                state["batches"] = iter(loader)
            try:
                return next(state["batches"])
            except StopIteration:
                state["batches"] = None

    def dist() -> float:
        if w_star is None:
            return math.nan
        with torch.no_grad():
            sq = (head.weight - w_star[0]).pow(2).sum() + (head.bias - w_star[1]).pow(2).sum()
        return float(sq.sqrt())

    curve: list[tuple[int, float, float, float]] = []
    x_test, y_test = test.tensors
    stats = core.train_loop(
        iters, core.cross_entropy_step(model, opt), fetch=fetch,
        eval_at=set(core.eval_points(iters, eval_every)),
        evaluate=lambda it, s: curve.append(
            (it, s.fetch_seconds + s.step_seconds,
             core.accuracy(model, x_test, y_test, chunk=2000), dist())),
    )
    return {
        "method": method,
        "seed": seed,
        "curve": curve,
        "sample_ms": 1000.0 * stats.fetch_seconds / iters,
        "train_ms": 1000.0 * stats.step_seconds / iters,
        "epochs": state["epoch"],
    }


def _fit_target(init: nn.Linear, train: TensorDataset, seed: int) -> tuple[Tensor, Tensor]:
    """``w*``: the learner's initial weights trained by plain SGD (lr 0.1, 3 epochs of full
    batches of 128)."""
    target = copy.deepcopy(init)
    opt = torch.optim.SGD(target.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x, y = train.tensors
    per_epoch = len(range(0, len(y) - 127, 128))
    perm = torch.empty(0, dtype=torch.int64)

    def fetch(it: int) -> tuple[Tensor, Tensor]:
        nonlocal perm
        if it % per_epoch == 0:
            perm = torch.randperm(len(y), generator=gen)
        idx = perm[(it % per_epoch) * 128 : (it % per_epoch + 1) * 128]
        return x[idx], y[idx]

    core.train_loop(3 * per_epoch, core.cross_entropy_step(target, opt), fetch=fetch)
    return target.weight.detach().clone(), target.bias.detach().clone()


def _acc_at_time(curve: list[tuple[int, float, float, float]],
                 budget: float) -> tuple[float, int]:
    """Accuracy at the last evaluation whose wall time is within the budget."""
    best = curve[0]
    for point in curve:
        if point[1] <= budget * (1 + 1e-9):
            best = point
    return best[2], best[0]


def run(cfg: SamplerConfig) -> dict[str, Any]:
    """Train with each selection method and seed; write CSV/PNG, print the tables.

    Part 1, the MLP: the paper's MNIST MLP trained by SGD on batches chosen
    by each method; greedy uses the lookahead target. Part 2, a control in
    IMT's own setting (skipped with ``linear_iters=0``): a softmax-regression
    learner (``nn.Linear(784, 10)``) with a known target ``w*`` (its initial
    weights trained by plain SGD, lr 0.1, 3 epochs), greedy given ``w_star``;
    reports ``|w - w*|`` and test accuracy.

    Returns:
        A dict with ``rows`` (one summary dict per method, MLP), ``linear_rows``
        (the control's, empty when skipped), ``runs`` (all raw runs, with a
        ``learner`` key) and ``budget_s`` (the equal wall-time budget per seed).

    Raises:
        FileNotFoundError: no ``MNIST/raw`` under the data root.

    Example:
        >>> import tempfile
        >>> res = run(SamplerConfig(synthetic=True, iters=6, seeds=1, eval_every=3,
        ...           linear_iters=4, batch_size=16, out=tempfile.mkdtemp(),
        ...           plot=False, verbose=False))
        >>> [r["method"] for r in res["rows"]], len(res["linear_rows"])
        (['random', 'loss', 'greedy', 'greedy-sample'], 4)
    """
    t_start = time.perf_counter()
    seeds = cfg.seed_list
    say = print if cfg.verbose else (lambda *a, **k: None)
    tell = say if cfg.progress else (lambda *a, **k: None)
    with core.torch_threads(cfg.threads) as threads:
        if cfg.synthetic:
            train, test = synthetic()
            data_name = "synthetic Gaussian classes (dry run)"
        else:
            train, test = load_mnist(cfg.data_root)
            data_name = "MNIST (60k train / 10k test)"
        say(f"TeachingSampler experiment on {data_name}: MLP 784-128-10, SGD lr {cfg.lr}, "
            f"weight decay {cfg.weight_decay}, no momentum, batch {cfg.batch_size}, "
            f"{cfg.iters} iterations, pool_factor {cfg.pool_factor}, seeds {seeds}, "
            f"{threads} thread(s).\nCut relative to the {PAPER}: {cfg.iters} iterations "
            f"instead of 39k, lr {cfg.lr} instead of 1e-3 (so that the shorter run "
            f"converges), {len(seeds)} seeds.", flush=True)
        runs = []
        for seed in seeds:  # methods interleaved per seed, so machine load drifts alike
            for method in cfg.methods:
                t0 = time.perf_counter()
                with core.seeded(seed):
                    mlp = _mlp()
                    head = mlp[-1]
                    assert isinstance(head, nn.Linear)
                    r = _train_one(method, seed, mlp, head, train, test, cfg, iters=cfg.iters,
                                   lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   eval_every=cfg.eval_every)
                r["learner"] = "mlp"
                runs.append(r)
                tell(f"  mlp    seed {seed} {method:>6}: {r['curve'][-1][2]:.2f} % after "
                     f"{cfg.iters} it, {time.perf_counter() - t0:.1f} s", flush=True)
        if cfg.linear_iters > 0:
            say(f"Control, IMT's setting: softmax regression 784->10 with a known w* (same "
                f"init, plain SGD lr 0.1, 3 epochs), taught by SGD lr {cfg.linear_lr}, no "
                f"weight decay, {cfg.linear_iters} iterations; greedy given w_star.",
                flush=True)
        for seed in seeds if cfg.linear_iters > 0 else ():
            with core.seeded(seed):
                init = nn.Linear(784, 10)
                w_star = _fit_target(init, train, seed)
                for method in cfg.methods:
                    lin = copy.deepcopy(init)
                    r = _train_one(method, seed, lin, lin, train, test, cfg,
                                   iters=cfg.linear_iters, lr=cfg.linear_lr, weight_decay=0.0,
                                   eval_every=max(cfg.linear_iters // 10, 1), w_star=w_star)
                    r["learner"] = "linear"
                    runs.append(r)
                    tell(f"  linear seed {seed} {method:>6}: |w - w*| {r['curve'][0][3]:.3f} "
                         f"-> {r['curve'][-1][3]:.3f}, {r['curve'][-1][2]:.2f} %", flush=True)

    mlp_runs = [r for r in runs if r["learner"] == "mlp"]
    lin_runs = [r for r in runs if r["learner"] == "linear"]
    budget = {s: min(r["curve"][-1][1] for r in mlp_runs if r["seed"] == s) for s in seeds}
    rows, linear_rows = [], []
    for method in cfg.methods:
        mine = [r for r in mlp_runs if r["method"] == method]
        at_time = [_acc_at_time(r["curve"], budget[r["seed"]]) for r in mine]
        rows.append({
            "method": method,
            "acc_equal_iters": core.format_mean_std([r["curve"][-1][2] for r in mine]),
            "acc_equal_time": core.format_mean_std([a for a, _ in at_time]),
            "iters_in_budget": round(statistics.mean([i for _, i in at_time])),
            "ms_per_step": statistics.mean([r["sample_ms"] + r["train_ms"] for r in mine]),
            "sampler_ms": statistics.mean([r["sample_ms"] for r in mine]),
            "train_ms": statistics.mean([r["train_ms"] for r in mine]),
            "wall_s": statistics.mean([r["curve"][-1][1] for r in mine]),
        })
        lin_rs = [r for r in lin_runs if r["method"] == method]
        if lin_rs:
            half = len(lin_rs[0]["curve"]) // 2
            linear_rows.append({
                "method": method,
                "dist_start": core.format_mean_std([r["curve"][0][3] for r in lin_rs], 3),
                "dist_half": core.format_mean_std([r["curve"][half][3] for r in lin_rs], 3),
                "dist_end": core.format_mean_std([r["curve"][-1][3] for r in lin_rs], 3),
                "acc_end": core.format_mean_std([r["curve"][-1][2] for r in lin_rs]),
                "ms_per_step": statistics.mean([r["sample_ms"] + r["train_ms"] for r in lin_rs]),
                "half_iteration": lin_rs[0]["curve"][half][0],
            })
    writer = core.Writer(cfg.out)
    _write(writer, runs, rows, linear_rows, cfg.methods, budget, cfg.plot)
    if cfg.verbose:
        _print_tables(rows, linear_rows, cfg.iters, cfg.linear_iters, budget, writer)
        total = time.perf_counter() - t_start
        print(f"Total wall time {total:.0f} s ({total / 60:.1f} min)")
    return {"rows": rows, "linear_rows": linear_rows, "runs": runs, "budget_s": budget}


def _write(writer: core.Writer, runs: list[dict], rows: list[dict], linear_rows: list[dict],
           methods: Sequence[str], budget: dict[int, float], plot: bool) -> None:
    curves = [{"learner": r["learner"], "method": r["method"], "seed": r["seed"],
               "iteration": it, "wall_s": t, "test_acc": acc, "dist_w_star": dist}
              for r in runs for it, t, acc, dist in r["curve"]]
    writer.csv("curves.csv", curves, list(curves[0]), formats={
        "wall_s": ".4f", "test_acc": ".2f",
        "dist_w_star": lambda v: "" if math.isnan(v) else f"{v:.5f}"})
    writer.csv("summary.csv", [{"learner": "mlp", **r} for r in rows], ["learner", *rows[0]])
    if linear_rows:
        writer.csv("summary_linear.csv", linear_rows, list(linear_rows[0]))
    if not plot or writer.out is None:
        return
    n_axes = 3 if linear_rows else 2
    with writer.figure("accuracy.png", n_axes, figsize=(5.5 * n_axes, 4)) as axes:

        def mean_curve(mine: list[dict], col: int, first: int = 1) -> list[float]:
            n = min(len(r["curve"]) for r in mine)
            return [statistics.mean(r["curve"][k][col] for r in mine) for k in range(first, n)]

        for method in methods:
            mine = [r for r in runs if r["method"] == method and r["learner"] == "mlp"]
            axes[0].plot(mean_curve(mine, 0), mean_curve(mine, 2), label=method)
            axes[1].plot(mean_curve(mine, 1), mean_curve(mine, 2), label=method)
            if linear_rows:
                lin = [r for r in runs if r["method"] == method and r["learner"] == "linear"]
                n = min(len(r["curve"]) for r in lin)
                axes[2].plot([lin[0]["curve"][k][0] for k in range(n)],
                             mean_curve(lin, 3, first=0), label=method)
        labels = ("iteration", "wall time (s): training + sampling", "iteration")
        ylabels = ("test accuracy (%)", "test accuracy (%)", "|w - w*|")
        for ax, xlabel, ylabel in zip(axes, labels, ylabels):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend()
        axes[1].axvline(statistics.mean(budget.values()), color="grey", ls=":", lw=1)
        axes[0].set_title("MLP: equal iterations (mean over seeds)")
        axes[1].set_title("MLP: equal wall time (dotted: budget)")
        if linear_rows:
            axes[2].set_title("control: linear learner, known w*")


def _print_tables(rows: list[dict], linear_rows: list[dict], iters: int, linear_iters: int,
                  budget: dict[int, float], writer: core.Writer) -> None:
    t = statistics.mean(budget.values())
    print()
    print(core.format_table(
        ("MLP method", f"acc @ {iters} it (%)", f"acc @ {t:.0f} s (%)", f"it in {t:.0f} s",
         "ms/step", "of which sampler", "wall (s)"),
        [(r["method"], r["acc_equal_iters"], r["acc_equal_time"], str(r["iters_in_budget"]),
          f"{r['ms_per_step']:.2f}", f"{r['sampler_ms']:.2f}", f"{r['wall_s']:.1f}")
         for r in rows], markdown=True))
    base = next((r for r in rows if r["method"] == "random"), None)
    for r in rows:
        if base is not None and r["method"] != "random":
            ratio = (r["sampler_ms"] - base["sampler_ms"]) / max(base["ms_per_step"], 1e-9)
            print(f"{r['method']}: selection adds {r['sampler_ms'] - base['sampler_ms']:.2f} "
                  f"ms/step = {ratio:.1f}x a plain step (fetch + train)")
    print("Equal wall time: each seed's budget is its fastest method's total training + "
          "sampling time (evaluation excluded); accuracy at the last evaluation within it.")
    if linear_rows:
        half = linear_rows[0]["half_iteration"]
        print()
        print(core.format_table(
            ("linear control", "dist(w, w*) @ 0", f"@ {half} it", f"@ {linear_iters} it",
             f"acc @ {linear_iters} it (%)", "ms/step"),
            [(r["method"], r["dist_start"], r["dist_half"], r["dist_end"], r["acc_end"],
              f"{r['ms_per_step']:.2f}") for r in linear_rows], markdown=True))
    if writer.out is not None:
        print(f"Files under {writer.out}: "
              f"{', '.join(sorted(f.name for f in writer.out.iterdir()))}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this experiment's options to ``p``: the common ones (older spellings
    ``--root``, ``--iterations`` kept as hidden aliases) and its own.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--iterations", "7"]).iters, p.parse_args([]).iters  # then presets
        (7, None)
    """
    d, q = DEFAULTS, QUICK
    core.add_common_arguments(
        p, data="folder holding MNIST/raw", out="runs/sampler", first_seed=True,
        seeds=f"(default: {d['seeds']}; --quick: {q['seeds']})",
        iters=f"of the MLP (default: {d['iters']}; --quick: {q['iters']})",
        quick=f"{q['iters']} iterations (control: {q['linear_iters']}), {q['seeds']} seeds, "
        f"evaluated every {q['eval_every']}",
    )
    c = SamplerConfig
    p.add_argument("--methods", nargs="+", action=core.ListAction, default=list(METHODS),
                   metavar="M,M,...",
                   help=f"comma-separated, from {','.join(METHODS)} (default: all)")
    p.add_argument("--batch-size", type=int, default=c.batch_size, help="batch size")
    p.add_argument("--pool-factor", type=int, default=c.pool_factor,
                   help="candidates per step: pool factor x batch size")
    p.add_argument("--lr", type=float, default=c.lr, help="SGD lr = greedy eta")
    p.add_argument("--weight-decay", type=float, default=c.weight_decay, help="SGD weight decay")
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"iterations between test evaluations (default: {d['eval_every']}; "
                   f"--quick: {q['eval_every']})")
    p.add_argument("--linear-iters", type=int, default=None,
                   help=f"steps of the linear control with a known w*, 0 to skip (default: "
                   f"{d['linear_iters']}; --quick: {q['linear_iters']})")
    p.add_argument("--linear-lr", type=float, default=c.linear_lr,
                   help="SGD lr of the linear control")
    p.add_argument("--threads", type=int, default=1, help="torch threads, 0: leave")
    p.add_argument("--synthetic", action="store_true",
                   help="Gaussian classes instead of MNIST (a dry run without data)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG")
    core.add_aliases(p, {"data_root": ["--root"], "iters": ["--iterations"],
                    "linear_iters": ["--linear-iterations"]})


def config_from_args(args: argparse.Namespace) -> SamplerConfig:
    """The :class:`SamplerConfig` of parsed options (``ValueError`` if they do not check)."""
    core.fill_presets(args, QUICK if args.quick else DEFAULTS)
    return SamplerConfig(
        data_root=args.data_root, out=args.out, iters=args.iters, seeds=args.seeds,
        first_seed=args.first_seed, methods=args.methods, batch_size=args.batch_size,
        pool_factor=args.pool_factor, lr=args.lr, weight_decay=args.weight_decay,
        eval_every=args.eval_every, linear_iters=args.linear_iters, linear_lr=args.linear_lr,
        threads=args.threads or None, synthetic=args.synthetic, plot=not args.no_plots,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m torchdht.experiments sampler") -> int:
    """``python -m torchdht.experiments sampler [options]``; returns the exit status (0, or 1
    when it cannot run, e.g. no MNIST under the data root)."""
    return core.run_main(sys.modules[__name__], argv, prog)


if __name__ == "__main__":
    from torchdht.experiments.sampler import main as _main  # the importable module's copy

    sys.exit(_main(prog="python -m torchdht.experiments.sampler"))
