"""TeachingSampler on MNIST: greedy (IMT) selection against loss-based and random batches.

Run: ``python -m torchdht.experiments.sampler --root PATH`` (a folder holding
``MNIST/raw``; default ``$TORCHDHT_DATA``, else ``../shared/data``). It trains the
paper's MNIST MLP (784-128-10) with plain SGD on batches chosen by
:class:`~torchdht.sampler.TeachingSampler` with ``score="greedy"``,
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
seeds, one thread; the output says so.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from torchdht.sampler import TeachingSampler

__all__ = ["DESCRIPTION", "add_arguments", "main", "run"]

DESCRIPTION = (
    "TeachingSampler on MNIST (MLP 784-128-10): greedy IMT selection vs loss-based vs "
    "random batches, test accuracy at equal iterations and equal wall time"
)
METHODS = ("random", "loss", "greedy", "greedy-sample")
"""``greedy``: eq. 4 with each example's share ``eta / B`` of the batch step (the
sampler's default); ``greedy-sample``: eq. 4 with the raw ``eta``, as the paper
writes it for one example per step."""
PAPER = "paper: 39k iterations, SGD lr 1e-3, batch 128"


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def load_mnist(root: str | os.PathLike) -> tuple[TensorDataset, TensorDataset]:
    """MNIST as flattened, normalised float tensors (no download).

    Args:
        root: a folder holding ``MNIST/raw`` (torchvision's layout).

    Returns:
        ``(train, test)`` TensorDatasets of 60000 and 10000 ``(x (784,), y)``.
    """
    import torchvision

    out = []
    for train in (True, False):
        m = torchvision.datasets.MNIST(str(root), train=train, download=False)
        x = ((m.data.float() / 255.0 - 0.1307) / 0.3081).reshape(len(m.data), 784)
        out.append(TensorDataset(x, m.targets.clone()))
    return out[0], out[1]


def synthetic(n_train: int = 2048, n_test: int = 512, seed: int = 0) -> tuple[Any, Any]:
    """Ten Gaussian classes in 784 dimensions, for a quick dry run without MNIST."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 784, generator=g) * 0.15

    def draw(n: int) -> TensorDataset:
        y = torch.randint(0, 10, (n,), generator=g)
        return TensorDataset(centres[y] + torch.randn(n, 784, generator=g), y)

    return draw(n_train), draw(n_test)


@torch.no_grad()
def _accuracy(model: nn.Module, test: TensorDataset) -> float:
    model.eval()
    x, y = test.tensors
    correct = sum(
        int((model(x[i : i + 2000]).argmax(-1) == y[i : i + 2000]).sum())
        for i in range(0, len(y), 2000)
    )
    model.train()
    return 100.0 * correct / len(y)


def _train_one(
    method: str,
    seed: int,
    model: nn.Module,
    head: nn.Linear,
    train: TensorDataset,
    test: TensorDataset,
    iterations: int,
    batch_size: int,
    pool_factor: int,
    lr: float,
    weight_decay: float,
    eval_every: int,
    w_star: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    greedy = method.startswith("greedy")
    sampler = TeachingSampler(
        train,
        model=model,
        head=head,
        batch_size=batch_size,
        pool_factor=pool_factor,
        score="greedy" if greedy else method,
        optimizer=opt if greedy else None,
        w_star=w_star if greedy else None,
        objective_eta="sample" if method == "greedy-sample" else "batch",
        seed=seed,
    )
    loader = DataLoader(train, batch_sampler=sampler, generator=torch.Generator())

    def dist() -> float:
        if w_star is None:
            return math.nan
        with torch.no_grad():
            sq = (head.weight - w_star[0]).pow(2).sum() + (head.bias - w_star[1]).pow(2).sum()
        return float(sq.sqrt())

    curve = [(0, 0.0, _accuracy(model, test), dist())]
    it_done, t_train, t_sample, epoch = 0, 0.0, 0.0, 0
    while it_done < iterations:
        sampler.set_epoch(epoch)
        batches = iter(loader)
        while it_done < iterations:
            t0 = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            t_sample += t1 - t0
            t_train += t2 - t1
            it_done += 1
            if it_done % eval_every == 0 or it_done == iterations:
                curve.append((it_done, t_sample + t_train, _accuracy(model, test), dist()))
        epoch += 1
    return {
        "method": method,
        "seed": seed,
        "curve": curve,
        "sample_ms": 1000.0 * t_sample / iterations,
        "train_ms": 1000.0 * t_train / iterations,
        "epochs": epoch,
    }


def _fit_target(init: nn.Linear, train: TensorDataset, seed: int) -> tuple[Tensor, Tensor]:
    """``w*``: the learner's initial weights trained by plain SGD (lr 0.1, 3 epochs)."""
    target = copy.deepcopy(init)
    opt = torch.optim.SGD(target.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x, y = train.tensors
    for _ in range(3):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y) - 127, 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(target(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return target.weight.detach().clone(), target.bias.detach().clone()


def _acc_at_time(curve: list[tuple[int, float, float]], budget: float) -> tuple[float, int]:
    """Accuracy at the last evaluation whose wall time is within the budget."""
    best = curve[0]
    for point in curve:
        if point[1] <= budget * (1 + 1e-9):
            best = point
    return best[2], best[0]


def _mean_sd(values: Sequence[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def run(
    root: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike = "runs/sampler",
    iterations: int = 5000,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = METHODS,
    batch_size: int = 128,
    pool_factor: int = 4,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    eval_every: int = 500,
    linear_iterations: int = 1000,
    linear_lr: float = 0.01,
    threads: int | None = 1,
    use_synthetic: bool = False,
    plot: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train with each selection method and seed; write CSV/PNG, print the tables.

    Part 1, the MLP: the paper's MNIST MLP trained by SGD on batches chosen
    by each method; greedy uses the lookahead target. Part 2, a control in
    IMT's own setting (skipped with ``linear_iterations=0``): a softmax-regression
    learner (``nn.Linear(784, 10)``) with a known target ``w*`` (its initial
    weights trained by plain SGD, lr 0.1, 3 epochs), greedy given ``w_star``;
    reports ``|w - w*|`` and test accuracy.

    Args:
        root: a folder holding ``MNIST/raw`` (default: None, ``$TORCHDHT_DATA``
            or ``../shared/data`` beside the repository).
        out: output folder (default: "runs/sampler").
        iterations: SGD steps per MLP run (default: 5000).
        seeds: seeds; each fixes the initial weights (shared by the methods)
            and the sampler's permutations (default: (0, 1, 2)).
        methods: selection methods to compare (default: ``METHODS``, i.e.
            "random", "loss", "greedy", "greedy-sample").
        batch_size: batch size (default: 128).
        pool_factor: candidates per step are ``pool_factor * batch_size``
            (default: 4).
        lr: the MLP's SGD learning rate, also the greedy teacher's ``eta``
            (default: 0.05).
        weight_decay: the MLP's SGD weight decay (default: 5e-4).
        eval_every: iterations between test evaluations (default: 500; the
            linear control evaluates every ``linear_iterations // 10``).
        linear_iterations: SGD steps per run of the linear control, 0 to skip
            it (default: 1000).
        linear_lr: the linear learner's SGD learning rate (default: 0.01).
        threads: ``torch.set_num_threads`` for the run, None to leave it
            (default: 1, steadier timings on a shared machine).
        use_synthetic: Gaussian classes in place of MNIST, for a dry run
            (default: False).
        plot: write ``accuracy.png`` (needs matplotlib) (default: True).
        verbose: print the protocol and the tables (default: True).

    Returns:
        A dict with ``rows`` (one summary dict per method, MLP), ``linear_rows``
        (the control's, empty when skipped), ``runs`` (all raw runs, with a
        ``learner`` key) and ``budget_s`` (the equal wall-time budget per seed).

    Example:
        >>> import tempfile
        >>> res = run(use_synthetic=True, iterations=6, seeds=(0,), eval_every=3,
        ...           linear_iterations=4, batch_size=16, out=tempfile.mkdtemp(),
        ...           plot=False, verbose=False)
        >>> [r["method"] for r in res["rows"]], len(res["linear_rows"])
        (['random', 'loss', 'greedy', 'greedy-sample'], 4)
    """
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods must be among {METHODS}, got {m!r}")
    if threads is not None:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        if use_synthetic:
            train, test = synthetic()
            data_name = "synthetic Gaussian classes (dry run)"
        else:
            from ..data import resolve_root

            root = resolve_root(root, need="MNIST/raw")
            train, test = load_mnist(root)
            data_name = "MNIST (60k train / 10k test)"
        if verbose:
            print(
                f"TeachingSampler experiment on {data_name}: MLP 784-128-10, SGD lr {lr}, "
                f"weight decay {weight_decay}, no momentum, batch {batch_size}, "
                f"{iterations} iterations, pool_factor {pool_factor}, seeds {list(seeds)}, "
                f"{torch.get_num_threads()} thread(s).\nCut relative to the {PAPER}: "
                f"{iterations} iterations instead of 39k, lr {lr} instead of 1e-3 (so that "
                f"the shorter run converges), {len(seeds)} seeds.",
                flush=True,
            )
        runs = []
        common = dict(train=train, test=test, batch_size=batch_size, pool_factor=pool_factor)
        for seed in seeds:  # methods interleaved per seed, so machine load drifts alike
            for method in methods:
                t0 = time.perf_counter()
                torch.manual_seed(seed)
                mlp = _mlp()
                head = mlp[-1]
                assert isinstance(head, nn.Linear)
                r = _train_one(
                    method, seed, mlp, head, iterations=iterations, lr=lr,
                    weight_decay=weight_decay, eval_every=eval_every, **common,
                )  # fmt: skip
                r["learner"] = "mlp"
                runs.append(r)
                if verbose:
                    print(
                        f"  mlp    seed {seed} {method:>6}: {r['curve'][-1][2]:.2f} % after "
                        f"{iterations} it, {time.perf_counter() - t0:.1f} s",
                        flush=True,
                    )
        if linear_iterations > 0:
            if verbose:
                print(
                    f"Control, IMT's setting: softmax regression 784->10 with a known w* "
                    f"(same init, plain SGD lr 0.1, 3 epochs), taught by SGD lr {linear_lr}, "
                    f"no weight decay, {linear_iterations} iterations; greedy given w_star.",
                    flush=True,
                )
            for seed in seeds:
                torch.manual_seed(seed)
                init = nn.Linear(784, 10)
                w_star = _fit_target(init, train, seed)
                for method in methods:
                    lin = copy.deepcopy(init)
                    r = _train_one(
                        method, seed, lin, lin, iterations=linear_iterations, lr=linear_lr,
                        weight_decay=0.0, eval_every=max(linear_iterations // 10, 1),
                        w_star=w_star, **common,
                    )  # fmt: skip
                    r["learner"] = "linear"
                    runs.append(r)
                    if verbose:
                        print(
                            f"  linear seed {seed} {method:>6}: |w - w*| "
                            f"{r['curve'][0][3]:.3f} -> {r['curve'][-1][3]:.3f}, "
                            f"{r['curve'][-1][2]:.2f} %",
                            flush=True,
                        )
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)

    mlp_runs = [r for r in runs if r["learner"] == "mlp"]
    lin_runs = [r for r in runs if r["learner"] == "linear"]
    budget = {s: min(r["curve"][-1][1] for r in mlp_runs if r["seed"] == s) for s in seeds}
    rows, linear_rows = [], []
    for method in methods:
        mine = [r for r in mlp_runs if r["method"] == method]
        at_time = [_acc_at_time(r["curve"], budget[r["seed"]]) for r in mine]
        rows.append(
            {
                "method": method,
                "acc_equal_iters": _mean_sd([r["curve"][-1][2] for r in mine]),
                "acc_equal_time": _mean_sd([a for a, _ in at_time]),
                "iters_in_budget": round(statistics.mean([i for _, i in at_time])),
                "ms_per_step": statistics.mean([r["sample_ms"] + r["train_ms"] for r in mine]),
                "sampler_ms": statistics.mean([r["sample_ms"] for r in mine]),
                "train_ms": statistics.mean([r["train_ms"] for r in mine]),
                "wall_s": statistics.mean([r["curve"][-1][1] for r in mine]),
            }
        )
        lin_rs = [r for r in lin_runs if r["method"] == method]
        if lin_rs:
            half = len(lin_rs[0]["curve"]) // 2
            linear_rows.append(
                {
                    "method": method,
                    "dist_start": _mean_sd([r["curve"][0][3] for r in lin_rs], 3),
                    "dist_half": _mean_sd([r["curve"][half][3] for r in lin_rs], 3),
                    "dist_end": _mean_sd([r["curve"][-1][3] for r in lin_rs], 3),
                    "acc_end": _mean_sd([r["curve"][-1][2] for r in lin_rs]),
                    "ms_per_step": statistics.mean(
                        [r["sample_ms"] + r["train_ms"] for r in lin_rs]
                    ),
                    "half_iteration": lin_rs[0]["curve"][half][0],
                }
            )
    _write(Path(out), runs, rows, linear_rows, methods, budget, plot)
    if verbose:
        _print_tables(rows, linear_rows, iterations, linear_iterations, budget, Path(out))
    return {"rows": rows, "linear_rows": linear_rows, "runs": runs, "budget_s": budget}


def _write(
    out: Path,
    runs: list[dict],
    rows: list[dict],
    linear_rows: list[dict],
    methods: Sequence[str],
    budget: dict[int, float],
    plot: bool,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["learner", "method", "seed", "iteration", "wall_s", "test_acc", "dist_w_star"])
        for r in runs:
            for it, t, acc, dist in r["curve"]:
                w.writerow(
                    [r["learner"], r["method"], r["seed"], it, f"{t:.4f}", f"{acc:.2f}",
                     "" if math.isnan(dist) else f"{dist:.5f}"]
                )  # fmt: skip
    with open(out / "summary.csv", "w", newline="") as f:
        dw = csv.DictWriter(f, fieldnames=["learner", *rows[0]])
        dw.writeheader()
        dw.writerows({"learner": "mlp", **r} for r in rows)
    if linear_rows:
        with open(out / "summary_linear.csv", "w", newline="") as f:
            dw = csv.DictWriter(f, fieldnames=list(linear_rows[0]))
            dw.writeheader()
            dw.writerows(linear_rows)
    if not plot:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_axes = 3 if linear_rows else 2
    fig, axes = plt.subplots(1, n_axes, figsize=(5.5 * n_axes, 4))

    def mean_curve(mine: list[dict], col: int) -> list[float]:
        n = min(len(r["curve"]) for r in mine)
        return [statistics.mean(r["curve"][k][col] for r in mine) for k in range(1, n)]

    for method in methods:
        mine = [r for r in runs if r["method"] == method and r["learner"] == "mlp"]
        its = mean_curve(mine, 0)
        axes[0].plot(its, mean_curve(mine, 2), label=method)
        axes[1].plot(mean_curve(mine, 1), mean_curve(mine, 2), label=method)
        if linear_rows:
            lin = [r for r in runs if r["method"] == method and r["learner"] == "linear"]
            n = min(len(r["curve"]) for r in lin)
            axes[2].plot(
                [lin[0]["curve"][k][0] for k in range(n)],
                [statistics.mean(r["curve"][k][3] for r in lin) for k in range(n)],
                label=method,
            )
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
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)


def _print_tables(
    rows: list[dict],
    linear_rows: list[dict],
    iterations: int,
    linear_iterations: int,
    budget: dict[int, float],
    out: Path,
) -> None:
    t = statistics.mean(budget.values())
    print()
    print(
        f"| MLP method | acc @ {iterations} it (%) | acc @ {t:.0f} s (%) | it in {t:.0f} s "
        f"| ms/step | of which sampler | wall (s) |"
    )
    print("|" + "---|" * 7)
    for r in rows:
        print(
            f"| {r['method']} | {r['acc_equal_iters']} | {r['acc_equal_time']} | "
            f"{r['iters_in_budget']} | {r['ms_per_step']:.2f} | {r['sampler_ms']:.2f} | "
            f"{r['wall_s']:.1f} |"
        )
    base = next((r for r in rows if r["method"] == "random"), None)
    if base is not None:
        for r in rows:
            if r["method"] != "random":
                ratio = (r["sampler_ms"] - base["sampler_ms"]) / max(base["ms_per_step"], 1e-9)
                print(
                    f"{r['method']}: selection adds {r['sampler_ms'] - base['sampler_ms']:.2f} "
                    f"ms/step = {ratio:.1f}x a plain step (fetch + train)"
                )
    print(
        "Equal wall time: each seed's budget is its fastest method's total training + "
        "sampling time (evaluation excluded); accuracy at the last evaluation within it."
    )
    if linear_rows:
        half = linear_rows[0]["half_iteration"]
        print()
        print(
            f"| linear control | dist(w, w*) @ 0 | @ {half} it | @ {linear_iterations} it "
            f"| acc @ {linear_iterations} it (%) | ms/step |"
        )
        print("|" + "---|" * 6)
        for r in linear_rows:
            print(
                f"| {r['method']} | {r['dist_start']} | {r['dist_half']} | {r['dist_end']} | "
                f"{r['acc_end']} | {r['ms_per_step']:.2f} |"
            )
    print(f"Files under {out}: {', '.join(sorted(f.name for f in out.iterdir()))}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this experiment's options to ``p`` (the ``sampler`` subcommand's parser).

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args([]).iterations
        5000
    """
    p.add_argument(
        "--root",
        default=None,
        help="folder holding MNIST/raw (default: $TORCHDHT_DATA or ../shared/data)",
    )
    p.add_argument("--out", default="runs/sampler", help="output folder (default: runs/sampler)")
    p.add_argument("--iterations", type=int, default=5000, help="SGD steps (default: 5000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: 0 1 2)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    p.add_argument("--pool-factor", type=int, default=4, help="(default: 4)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD lr = greedy eta (default: 0.05)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="(default: 5e-4)")
    p.add_argument("--eval-every", type=int, default=500, help="(default: 500)")
    p.add_argument(
        "--linear-iterations", type=int, default=1000,
        help="steps of the linear control with a known w*, 0 to skip (default: 1000)",
    )  # fmt: skip
    p.add_argument("--linear-lr", type=float, default=0.01, help="(default: 0.01)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, 0: leave (default: 1)")
    p.add_argument("--synthetic", action="store_true", help="dry run on Gaussian classes")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG")


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Entry point: parsed ``args`` (the ``sampler`` subcommand) or an argv list.

    ``python -m torchdht.experiments.sampler [--root PATH] ...`` or, where the
    package dispatcher lists it, ``python -m torchdht.experiments sampler``.
    Returns the exit status.
    """
    if not isinstance(args, argparse.Namespace):
        p = argparse.ArgumentParser(
            prog="python -m torchdht.experiments.sampler", description=DESCRIPTION
        )
        add_arguments(p)
        args = p.parse_args(args)
    for name in ("iterations", "batch_size", "pool_factor", "eval_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.linear_iterations < 0:
        raise SystemExit("--linear-iterations must be >= 0")
    for name in ("lr", "linear_lr"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    t0 = time.perf_counter()
    try:
        run(
            args.root,
            out=args.out,
            iterations=args.iterations,
            seeds=args.seeds,
            methods=args.methods,
            batch_size=args.batch_size,
            pool_factor=args.pool_factor,
            lr=args.lr,
            weight_decay=args.weight_decay,
            eval_every=args.eval_every,
            linear_iterations=args.linear_iterations,
            linear_lr=args.linear_lr,
            threads=args.threads or None,
            use_synthetic=args.synthetic,
            plot=not args.no_plots,
        )
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = time.perf_counter() - t0
    print(f"Total wall time {total:.0f} s ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
