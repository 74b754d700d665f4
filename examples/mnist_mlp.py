"""Train the paper's MNIST MLP with or without performative teaching.

The protocol of the paper's Table 2, first row: an MLP 784-128-10 (ReLU),
plain SGD with lr 1e-3 and weight decay 5e-4, batch 128, 39,000 iterations,
inputs normalised with MNIST's mean and std, no augmentation::

    python examples/mnist_mlp.py --method sgd
    python examples/mnist_mlp.py --method dht            # the clean Algorithm 1
    python examples/mnist_mlp.py --method dht-released   # + the released code's extra gradient
    python examples/mnist_mlp.py --method random --iters 3000 --data-root ../shared/data

The teacher is one object and one line per step (``teacher.set_targets(y)``).
Writes ``log.csv`` and ``accuracy.png`` to ``--out`` (default
``runs/mnist_mlp/<method>_seed<seed>``). MNIST is read with ``download=False``
from ``--data-root`` (default: ``$TORCHDHT_DATA`` or ``../shared/data``); add
``--download`` to fetch it there.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import torchdht
from torchdht.data import default_root
from torchdht.models import MLP

NEEDS = "torchvision, tqdm and matplotlib"
INSTALL = 'pip install -e ".[examples,vision]"'
try:  # optional packages: --help works without them, a run says what to install
    import matplotlib
    from torchvision.datasets import MNIST
    from tqdm.auto import tqdm
except ImportError as exc:
    _MISSING: str | None = (exc.name or str(exc)).split(".")[0]
else:
    _MISSING = None

METHODS = {  # --method -> PerformativeTeacher arguments (None: no teacher)
    "sgd": None,
    "random": {"policy": "random"},  # uniform draw from the same cap (the paper's ablation)
    "dht": {"policy": "greedy"},  # Algorithm 1, clean
    "dht-released": {"policy": "greedy", "lookahead_encoder_grad": True},  # as the authors' code
}
MEAN, STD = 0.1307, 0.3081


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=list(METHODS), default="dht")
    p.add_argument("--data-root", default=str(default_root()))
    p.add_argument("--download", action="store_true", help="download MNIST into --data-root")
    p.add_argument("--iters", type=int, default=39_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--eps", type=float, default=0.1, help="the teacher's cap (chord)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads; 1 is fastest for this small model (default: 1)")
    p.add_argument("--out", default=None, help="default: runs/mnist_mlp/<method>_seed<seed>")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def exit_if_missing() -> None:
    """Exit with status 2 and one line naming the extra when an optional package is missing."""
    if _MISSING is not None:
        print(f"{Path(__file__).name}: this example needs {NEEDS} (cannot import "
              f"{_MISSING}): {INSTALL}", file=sys.stderr)
        raise SystemExit(2)


def load_mnist(root: str, train: bool, download: bool, device: torch.device):
    ds = MNIST(root, train=train, download=download)
    x = (ds.data.float().div(255) - MEAN) / STD  # (N, 28, 28), normalised
    return x.reshape(len(x), -1).to(device), ds.targets.to(device)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in
                  zip(x.split(4096), y.split(4096)))
    model.train()
    return 100.0 * correct / len(y)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    exit_if_missing()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)  # more threads only add overhead on tiny matrices
    out = Path(args.out or f"runs/mnist_mlp/{args.method}_seed{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_mnist(args.data_root, True, args.download, device)
    x_test, y_test = load_mnist(args.data_root, False, args.download, device)

    torch.manual_seed(args.seed)  # same initialisation for every method
    model = MLP(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    teacher = None
    if METHODS[args.method] is not None:
        teacher = torchdht.PerformativeTeacher(
            model.head, optimizer=opt, eps=args.eps, seed=args.seed, **METHODS[args.method]
        )

    gen = torch.Generator().manual_seed(args.seed)  # same batches for every method
    order = torch.empty(0, dtype=torch.long)
    rows, train_time = [], 0.0
    loss_avg = data_avg = acc_avg = None  # train_loss: on the taught features
    # disable=None: no bar when stderr is not a terminal (no carriage returns in logs)
    bar = tqdm(range(1, args.iters + 1), disable=True if args.no_progress else None,
               desc=args.method)
    for it in bar:
        if len(order) < args.batch_size:  # a new epoch, reshuffled
            order = torch.cat([order, torch.randperm(len(y_train), generator=gen)])
        idx, order = order[: args.batch_size].to(device), order[args.batch_size :]
        x, y = x_train[idx], y_train[idx]

        t0 = time.perf_counter()
        if teacher is not None:
            teacher.set_targets(y)  # the one line performative teaching adds
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_time += time.perf_counter() - t0

        if it % 50 == 0 or it == args.iters:  # running train loss / accuracy (one sync)
            batch_acc = 100.0 * (logits.argmax(1) == y).float().mean().item()
            # `loss` is on the taught features; the teacher reports the one on the data
            data_loss = loss.item()
            if teacher is not None:
                data_loss = teacher.stats.get("loss_untaught", data_loss)
            loss_avg = loss.item() if loss_avg is None else 0.9 * loss_avg + 0.1 * loss.item()
            data_avg = data_loss if data_avg is None else 0.9 * data_avg + 0.1 * data_loss
            acc_avg = batch_acc if acc_avg is None else 0.9 * acc_avg + 0.1 * batch_acc
            bar.set_postfix(loss_taught=f"{loss_avg:.3f}", loss_data=f"{data_avg:.3f}",
                            acc=f"{acc_avg:.1f}")
        if it % args.eval_every == 0 or it == args.iters:
            test_acc = evaluate(model, x_test, y_test)
            rows.append({"iter": it, "train_loss": f"{loss_avg:.4f}",
                         "train_loss_untaught": f"{data_avg:.4f}",
                         "train_acc": f"{acc_avg:.2f}", "test_acc": f"{test_acc:.2f}",
                         "seconds": f"{train_time:.1f}"})
            bar.write(f"iter {it}: test accuracy {test_acc:.2f}%")
    bar.close()

    with open(out / "log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["iter"] for r in rows], [float(r["test_acc"]) for r in rows], marker=".")
    ax.set(xlabel="iteration", ylabel="test accuracy (%)",
           title=f"MNIST MLP, {args.method}, seed {args.seed}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    ms = 1000.0 * train_time / args.iters
    final = float(rows[-1]["test_acc"])
    print(f"{args.method}: test accuracy {final:.2f}% after {args.iters} iterations, "
          f"{ms:.3f} ms/step ({train_time:.1f} s of training); wrote {out}/log.csv, accuracy.png")
    return {"method": args.method, "test_acc": final, "ms_per_step": ms, "out": str(out)}


if __name__ == "__main__":
    main()
