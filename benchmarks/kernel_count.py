"""Kernels (CUDA) or dispatched ATen ops (CPU) per teaching step, from ``torch.profiler``.

Run: ``python benchmarks/kernel_count.py`` (``--help`` for options). On the
overhead suite's ``mlp-mnist`` case (``benchmarks/test_step_overhead.py``, on
its device) it profiles one training step without the teacher and one with
it, for each solver, after warm-up steps,
and prints a markdown table: on CUDA the number of GPU kernels launched per
step (``torch.profiler`` CUDA activity), on the CPU the number of ATen
operators recorded (nested calls included); and on either the number of ATen
ops that reach dispatch (a ``TorchDispatchMode``, no nesting: what eager mode
pays for). Measures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_step_overhead import DEVICE, training_step  # noqa: E402

POLICIES = {"plain": "off", "taught, solver=pgd": "greedy",
            "taught, solver=pgd, solve_tol=None": "greedy-fixed",
            "taught, solver=linesearch": "greedy-linesearch"}


class _Dispatched(TorchDispatchMode):
    """Counts the ATen ops that reach dispatch (no nesting: what eager mode pays for)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.n += 1
        return func(*args, **(kwargs or {}))


def dispatched(policy: str, warmup: int) -> int:
    """ATen ops dispatched by one MNIST-MLP training step of ``policy``."""
    step, teacher = training_step("mlp-mnist", policy)
    for _ in range(warmup):
        step()
    with _Dispatched() as mode:
        step()
    if teacher is not None:
        teacher.remove()
    return mode.n


def count(policy: str, warmup: int) -> int:
    """Kernels (CUDA) or ATen ops (CPU) of one MNIST-MLP training step of ``policy``."""
    step, teacher = training_step("mlp-mnist", policy)
    for _ in range(warmup):
        step()
    cuda = DEVICE.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        step()  # synchronises on CUDA
    if cuda:
        n = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    else:
        n = sum(1 for e in prof.events() if e.name.startswith("aten::"))
    if teacher is not None:
        teacher.remove()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    what = "GPU kernels" if DEVICE.type == "cuda" else "ATen ops (profiler)"
    print(f"device {DEVICE}; {what} per training step, the overhead suite's mlp-mnist case\n")
    print("| step | count | teacher's share | dispatched ATen ops | teacher's share |")
    print("|---|---:|---:|---:|---:|")
    plain = count("off", args.warmup)
    plain_d = dispatched("off", args.warmup)
    for label, policy in POLICIES.items():
        n = plain if policy == "off" else count(policy, args.warmup)
        d = plain_d if policy == "off" else dispatched(policy, args.warmup)
        share = "-" if policy == "off" else str(n - plain)
        share_d = "-" if policy == "off" else str(d - plain_d)
        print(f"| {label} | {n} | {share} | {d} | {share_d} |")


if __name__ == "__main__":
    main()
