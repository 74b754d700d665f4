"""Kernels (CUDA) or dispatched ATen ops (CPU) per teaching step, from ``torch.profiler``.

Run: ``python benchmarks/kernel_count.py`` (``--help`` for options). For the
MNIST-MLP shapes (batch 128, 784-128-10) it profiles one training step
without the teacher and one with it, for each solver, after warm-up steps,
and prints a markdown table: on CUDA the number of GPU kernels launched per
step (``torch.profiler`` CUDA activity), on the CPU the number of ATen
operators recorded. Measures only; asserts nothing.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from torchdht import PerformativeTeacher


def count(device: torch.device, solver: str | None, warmup: int) -> int:
    """Kernels (CUDA) or ATen ops (CPU) of one training step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(128, 784, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    teacher = None if solver is None else PerformativeTeacher(model[-1], optimizer=opt,
                                                              solver=solver)

    def step() -> None:
        if teacher is not None:
            teacher.set_targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        n = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    else:
        n = sum(1 for e in events if e.name.startswith("aten::"))
    if teacher is not None:
        teacher.remove()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    what = "GPU kernels" if device.type == "cuda" else "ATen ops (profiler)"
    plain = count(device, None, args.warmup)
    print(f"device {device}; {what} per training step, MNIST MLP shapes\n")
    print("| step | count | teacher's share |")
    print("|---|---:|---:|")
    print(f"| plain | {plain} | - |")
    for solver in ("pgd", "linesearch"):
        n = count(device, solver, args.warmup)
        print(f"| taught, solver={solver} | {n} | {n - plain} |")


if __name__ == "__main__":
    main()
