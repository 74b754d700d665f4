"""The teacher's own time per training step, timed around its hook.

Differences of whole-step medians are noisy when a step takes seconds and
only a few rounds run; this times ``PerformativeTeacher._teach`` itself
(synchronising CUDA around it on a GPU) next to the whole step, for the
cases of ``test_step_overhead.py``. Measures only.

Run: python benchmarks/teacher_share.py [--cases mlp-mnist,resnet18] [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_step_overhead import CASES, DEVICE, _sync, training_step  # noqa: E402


def measure(case: str, steps: int) -> tuple[float, float]:
    """Median teacher time and median step time in ms, over the last 3/4 of ``steps``."""
    step, teacher = training_step(case, "greedy")
    assert teacher is not None
    inner = teacher._teach
    teach_times: list[float] = []

    def timed(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _sync()
        t0 = time.perf_counter()
        out = inner(z, targets)
        _sync()
        teach_times.append(time.perf_counter() - t0)
        return out

    teacher._teach = timed  # type: ignore[method-assign]
    step_times = []
    for _ in range(steps):
        _sync()
        t0 = time.perf_counter()
        step()  # ends with a CUDA sync
        step_times.append(time.perf_counter() - t0)
    teacher.remove()
    skip = steps // 4
    return (
        1e3 * statistics.median(teach_times[skip:]),
        1e3 * statistics.median(step_times[skip:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per case (default: 300 for the MLP, 40 otherwise)")
    args = parser.parse_args()
    print(f"device: {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print("| case | teacher per step (ms) | whole step (ms) | teacher share |")
    print("| --- | --- | --- | --- |")
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        steps = args.steps or (300 if case == "mlp-mnist" else 40)
        try:
            teach, step = measure(case, steps)
        except pytest.skip.Exception as skipped:  # e.g. timm not installed
            print(f"| {case} | skipped: {skipped} | - | - |", flush=True)
            continue
        print(f"| {case} | {teach:.3f} | {step:.2f} | {100 * teach / step:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
