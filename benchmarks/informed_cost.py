"""What each informed target costs per training step, on the informed study's shapes.

MNIST MLP 784-128-10, batch 128, plain SGD, one torch thread, the teacher's
default solver. Each arm trains ``--steps`` steps on random inputs (the cost
does not depend on the data); the arms take turns over ``--rounds`` rounds so
that a machine's load falls on all of them alike, and the median round is
reported. Also times the buffer target's refit alone and reports its memory.
Measures only; asserts nothing.

Run: python benchmarks/informed_cost.py [--steps 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from torchdht import PerformativeTeacher
from torchdht.functional.informed import refit_head
from torchdht.models import build_model

ARMS = {
    "sgd": None,
    "lookahead": {},
    "ema": {"target": "ema", "target_decay": 0.9},
    "buffer b50 r100": {"target": "buffer", "buffer_batches": 50, "refit_every": 100},
    "buffer b50 r50": {"target": "buffer", "buffer_batches": 50, "refit_every": 50},
    "heldout hb128": {"target": "heldout", "heldout_batch": 128},
    "heldout hb1000": {"target": "heldout", "heldout_batch": 1000},
}


def time_arm(kw: dict | None, steps: int, batch: int = 128) -> float:
    """Seconds per training step of one arm, after 20 warm-up steps."""
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, weight_decay=5e-4)
    teacher = None
    if kw is not None:
        extra = dict(kw)
        if extra.get("target") == "heldout":
            extra.update(heldout=(torch.randn(1000, 784), torch.randint(0, 10, (1000,))),
                         heldout_encoder=model.encoder)
        teacher = PerformativeTeacher(model.head, opt, eps=0.1, solve_steps=15, seed=0, **extra)
    xs = torch.randn(8, batch, 784)
    ys = torch.randint(0, 10, (8, batch))
    t0 = 0.0
    for i in range(20 + steps):
        if i == 20:
            t0 = time.perf_counter()
        if teacher is not None:
            teacher.set_targets(ys[i % 8])
        loss = F.cross_entropy(model(xs[i % 8]), ys[i % 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = (time.perf_counter() - t0) / steps
    if teacher is not None:
        teacher.remove()
    return seconds


def refit_seconds(batches: int = 50, batch: int = 128, repeats: int = 5) -> float:
    """Median seconds of one refit (200 L-BFGS iterations at most) on a full buffer of
    MLP features, warm-started from a fitted head as in training."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batches * batch, 128, generator=g).relu()
    y = torch.randint(0, 10, (batches * batch,), generator=g)
    w, b = torch.zeros(10, 128), torch.zeros(10)
    w, b = refit_head(z, y, w, b, l2=1e-4, max_iter=200)
    out = []
    for _ in range(repeats):
        z2 = z + 0.05 * torch.randn(z.shape, generator=g)  # the encoder moved a little
        t0 = time.perf_counter()
        refit_head(z2, y, w, b, l2=1e-4, max_iter=200)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {k: [] for k in ARMS}
    for _ in range(args.rounds):
        for name, kw in ARMS.items():
            times[name].append(time_arm(kw, args.steps))
    sgd = statistics.median(times["sgd"])
    print(f"torch {torch.__version__}, 1 thread, {args.steps} steps x {args.rounds} rounds "
          "(median round)")
    print("| arm | ms/step | x plain SGD step | teacher ms/step |")
    print("| --- | --- | --- | --- |")
    for name in ARMS:
        t = statistics.median(times[name])
        print(f"| {name} | {1e3 * t:.2f} | {t / sgd:.2f} | {1e3 * (t - sgd):.2f} |")
    refit = refit_seconds()
    mib = 50 * 128 * (128 * 4 + 8) / 2**20  # float32 features + int64 labels
    print(f"\nbuffer refit (50 batches of 128, 200 L-BFGS iterations at most): "
          f"{1e3 * refit:.0f} ms; buffer memory {mib:.2f} MiB")


if __name__ == "__main__":
    main()
