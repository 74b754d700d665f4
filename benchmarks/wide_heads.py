"""Wide linear heads: a plain training step against the two lookahead forms.

Run: ``python benchmarks/wide_heads.py`` (``--help`` for the options). Prints
markdown tables; measures only and asserts nothing about time.

Cases (a linear head on the features of a small body):

* ``classifier``: C = 10,000 classes, B = N = 128 rows, body
  ``Linear(256, 512) + ReLU`` (D = 512).
* ``token``: a 32,000-way token head on B = 8 sequences of T = 128 tokens
  (N = B * T = 1024 rows), body ``Linear(128, 128) + ReLU`` per token (D = 128).

Per case and method:

* ``train step``: forward, mean cross-entropy, backward, SGD step of body and
  head (``zero_grad(set_to_none=True)`` first, so the gradients are allocated
  inside the step).
* ``linear_lookahead``: :func:`torchdht.functional.linear_lookahead`, ``--steps``
  steps on the detached features and the head's weights (returns ``W*``).
* ``gram_lookahead``: :func:`torchdht.functional.gram.gram_lookahead`, the same
  steps (returns the (N, C) coefficients of ``W - W*``; ``W*`` is not formed).
* ``taught step``: the train step with a :class:`torchdht.PerformativeTeacher`
  on the head (default solver, line search; the Gram form where the shapes
  favour it), ``--steps`` lookahead steps; ``taught step (pgd)`` the same with
  the projected-gradient solver (15 iterations).

Time: the median over ``--repeats`` runs after one warm-up run, in this
process, with ``torch.set_num_threads(--threads)`` (1 by default).

Peak memory: each (case, method) runs in a fresh subprocess started with
``MALLOC_MMAP_THRESHOLD_=65536``. A fixed threshold turns off glibc's dynamic
one, so every block of 64 KiB or more (every tensor that matters here) is
mmapped on allocation and unmapped on free, and the resident set size follows
the live tensors instead of what malloc keeps cached. The subprocess builds
the inputs, runs the operation once as a warm-up (kernels, thread pools and
library workspaces), drops its result, reads ``VmRSS``, resets the
high-water mark ``VmHWM`` by writing ``5`` to ``/proc/self/clear_refs``
(Linux >= 4.0), runs the operation again while keeping its result, and reports
``VmHWM - VmRSS`` before: the peak of the extra resident memory during the
operation, its outputs included. ``tracemalloc`` does not see torch's
allocations, and ``getrusage(RUSAGE_SELF).ru_maxrss`` cannot be reset after a
warm-up; where ``clear_refs`` is not writable the subprocess falls back to the
``ru_maxrss`` delta without the warm-up (the table says which was used).

Precision (skip with ``--no-precision``): ``W*`` in float32 from both forms
(the Gram one formed as ``W - coef^T z`` in float32) against each other and
against ``linear_lookahead`` in float64 on the same inputs, as the largest
absolute difference divided by ``max |W*|`` and by ``max |W - W*|`` (the
lookahead's own change, which is what the teacher uses).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchdht import PerformativeTeacher  # noqa: E402
from torchdht.functional import linear_lookahead  # noqa: E402
from torchdht.functional.gram import gram_is_cheaper, gram_lookahead  # noqa: E402

# name -> (classes C, batch B, tokens per row T (0: none), input width, features D)
CASES: dict[str, tuple[int, int, int, int, int]] = {
    "classifier": (10_000, 128, 0, 256, 512),
    "token": (32_000, 8, 128, 128, 128),
}
METHODS = [
    "train step", "linear_lookahead", "gram_lookahead", "taught step", "taught step (pgd)"
]


class Setup:
    """A case's model, batch, detached features and head parameters."""

    def __init__(
        self, case: str, dtype: torch.dtype = torch.float32, seed: int = 0, device: str = "cpu"
    ) -> None:
        c, b, t, d_in, d = CASES[case]
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(d_in, d), nn.ReLU()).to(dtype)
        self.head = nn.Linear(d, c).to(dtype)
        self.model = nn.Sequential(self.body, self.head).to(device)
        shape = (b, t, d_in) if t else (b, d_in)
        self.x = torch.randn(*shape, dtype=dtype).to(device)
        self.n = b * t if t else b
        self.c, self.d = c, d
        self.y = torch.randint(0, c, (self.n,)).to(device)
        with torch.no_grad():
            self.z = self.body(self.x).reshape(self.n, d)
        self.w = self.head.weight.detach()
        self.b = self.head.bias.detach()


def make_op(
    s: Setup, method: str, steps: int, lr: float, feature_grad: bool
) -> Callable[[], object]:
    """A zero-argument callable running one ``method`` on ``s``; returns its outputs."""
    if method == "train step" or method.startswith("taught step"):
        opt = torch.optim.SGD(s.model.parameters(), lr=lr)
        teacher = None
        if method != "train step":
            solver = "pgd" if "pgd" in method else "linesearch"
            teacher = PerformativeTeacher(s.head, optimizer=opt, solver=solver,
                                          lookahead_steps=steps)
        arm = s.y.view(s.x.shape[:-1])

        def train() -> object:
            if teacher is not None:
                teacher.set_targets(arm)
            opt.zero_grad(set_to_none=True)
            logits = s.model(s.x).reshape(s.n, s.c)
            loss = F.cross_entropy(logits, s.y)
            loss.backward()
            opt.step()
            return loss.detach()

        return train  # its closure keeps the teacher alive
    if method == "linear_lookahead":

        def direct() -> object:
            with torch.no_grad():
                return linear_lookahead(s.z, s.y, s.w, s.b, lr, steps, feature_grad=feature_grad)

        return direct
    if method == "gram_lookahead":

        def gram() -> object:
            with torch.no_grad():
                return gram_lookahead(s.z, s.y, s.w, s.b, lr, steps, feature_grad=feature_grad)

        return gram
    raise ValueError(f"unknown method {method!r}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(op: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    op()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        op()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def cuda_peak_mib(op: Callable[[], object], device: str) -> tuple[float, str]:
    """Peak extra CUDA memory of one call after a warm-up (allocator statistics)."""
    op()
    torch.cuda.synchronize(device)
    gc.collect()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = op()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    how = "torch.cuda.max_memory_allocated minus the allocated before, warm-up run first"
    return (peak - before) / 2**20, how


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(case: str, method: str, steps: int, lr: float, feature_grad: bool) -> None:
    """Run in a fresh subprocess: print the peak extra memory of one operation as JSON."""
    s = Setup(case)
    op = make_op(s, method, steps, lr, feature_grad)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        how = "VmHWM after clear_refs, warm-up run first"
    except OSError:
        how = "ru_maxrss delta, no warm-up"
    if how.startswith("VmHWM"):
        op()
        s.model.zero_grad(set_to_none=True)
        gc.collect()
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        out = op()
        peak = _status_kib("VmHWM")
    else:
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = op()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    print(json.dumps({"mib": (peak - before) / 1024.0, "how": how}))


def peak_mib(case: str, method: str, args: argparse.Namespace) -> tuple[float, str]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        method,
        "--steps",
        str(args.steps),
        "--lr",
        str(args.lr),
        "--threads",
        str(args.threads),
    ]
    if args.feature_grad:
        cmd.append("--feature-grad")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return got["mib"], got["how"]


def precision(case: str, steps: int, lr: float) -> dict[str, tuple[float, float]]:
    """Float32 ``W*`` of both forms against float64 ``linear_lookahead``."""
    s32 = Setup(case, torch.float32)
    z, y, w, b = s32.z, s32.y, s32.w, s32.b
    with torch.no_grad():
        ref = linear_lookahead(z.double(), y, w.double(), b.double(), lr, steps).weight
        direct = linear_lookahead(z, y, w, b, lr, steps).weight.double()
        coef = gram_lookahead(z, y, w, b, lr, steps).coef
        gram = (w - coef.T @ z).double()  # W* formed in float32, as a caller would
    big, change = ref.abs().max().item(), (w.double() - ref).abs().max().item()

    def err(a: torch.Tensor, bb: torch.Tensor) -> float:
        return (a - bb).abs().max().item()

    return {
        "gram f32 vs direct f32": (err(gram, direct) / big, err(gram, direct) / change),
        "direct f32 vs direct f64": (err(direct, ref) / big, err(direct, ref) / change),
        "gram f32 vs direct f64": (err(gram, ref) / big, err(gram, ref) / change),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS,
                    help="methods to run (default: all)")
    ap.add_argument("--steps", type=int, default=5, help="lookahead steps (default 5)")
    ap.add_argument("--lr", type=float, default=0.1, help="lookahead and SGD lr (default 0.1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per method (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--feature-grad", action="store_true", help="lookaheads return feature_grad")
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory runs")
    ap.add_argument("--no-precision", action="store_true", help="skip the float32 precision runs")
    ap.add_argument("--device", default="cpu",
                    help="cpu or cuda[:i]; on CUDA memory is read from the allocator in-process "
                    "(default cpu)")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], args.child[1], args.steps, args.lr, args.feature_grad)
        return

    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} torch thread(s), float32, "
        f"steps={args.steps}, lr={args.lr}, feature_grad={args.feature_grad}, "
        f"median of {args.repeats}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda")
           else "")
    )
    print()
    print("| case | N | C | D | gram_is_cheaper | method | median ms | peak extra MiB |")
    print("|---|---:|---:|---:|:---:|---|---:|---:|")
    hows = set()
    for case in args.cases:
        s = Setup(case, device=args.device)
        cheaper = gram_is_cheaper(s.n, s.c, s.d, steps=args.steps, feature_grad=args.feature_grad)
        for method in args.methods:
            op = make_op(s, method, args.steps, args.lr, args.feature_grad)
            ms = median_ms(op, args.repeats, args.device)
            mem = "-"
            if not args.no_memory:
                if args.device.startswith("cuda"):
                    mib, how = cuda_peak_mib(op, args.device)
                else:
                    mib, how = peak_mib(case, method, args)
                mem = f"{mib:.1f}"
                hows.add(how)
            print(
                f"| {case} | {s.n} | {s.c} | {s.d} | {'yes' if cheaper else 'no'} | {method} "
                f"| {ms:.1f} | {mem} |",
                flush=True,
            )
        del s
        gc.collect()
    if hows:
        print(f"\nPeak memory: {'; '.join(sorted(hows))}.")
    if not args.no_precision:
        print("\nW* in float32: max abs difference / max abs W* and / max abs (W - W*) (float64)\n")
        print("| case | comparison | / max abs W* | / max abs (W - W*) |")
        print("|---|---|---:|---:|")
        for case in args.cases:
            for what, (rel_w, rel_change) in precision(case, args.steps, args.lr).items():
                print(f"| {case} | {what} | {rel_w:.2e} | {rel_change:.2e} |", flush=True)


if __name__ == "__main__":
    main()
