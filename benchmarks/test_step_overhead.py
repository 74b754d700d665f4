"""Cost of one training step with PerformativeTeacher against plain training.

Run: python -m pytest benchmarks/test_step_overhead.py --benchmark-enable
(add --benchmark-json=out.json to keep the figures). Runs on CUDA when it is
available, else on the CPU. Measures only; asserts nothing about time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchdht import PerformativeTeacher

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def _cnn3(num_classes=10):
    def block(cin, cout):
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(3, 64),
        *block(64, 128),
        *block(128, 256),
        nn.Flatten(),
        nn.Linear(256 * 4 * 4, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


CASES = {
    "mlp-mnist": (_mlp, (128, 1, 28, 28), 10),
    "cnn3-cifar": (_cnn3, (128, 3, 32, 32), 10),
}


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("policy", ["off", "none", "random", "greedy", "greedy-released"])
def test_train_step(benchmark, case, policy):
    if case == "cnn3-cifar" and DEVICE.type == "cpu" and policy in ("none",):
        pytest.skip("same cost as 'off' on the CPU; skipped to keep the CPU run short")
    build, shape, classes = CASES[case]
    torch.manual_seed(0)
    model = build().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(shape, device=DEVICE)
    y = torch.randint(0, classes, (shape[0],), device=DEVICE)
    teacher = None
    if policy != "off":
        teacher = PerformativeTeacher(
            model[-1],
            optimizer=opt,
            policy=policy.split("-")[0],
            seed=0,
            lookahead_encoder_grad=policy.endswith("released"),
        )

    def step():
        if teacher is not None:
            teacher.set_targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync()

    for _ in range(3):
        step()
    benchmark.extra_info.update(device=str(DEVICE), case=case, policy=policy)
    benchmark.pedantic(step, rounds=20 if DEVICE.type == "cpu" else 100, iterations=1)
    if teacher is not None:
        teacher.remove()
