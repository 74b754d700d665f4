"""Cost of one training step with PerformativeTeacher against plain training.

Run: python -m pytest benchmarks/test_step_overhead.py --benchmark-enable
--benchmark-json=out.json, then python benchmarks/report.py out.json for the
overhead table. Runs on CUDA when it is available, else on the CPU (where the
large cases take fewer rounds and skip the minor policies). Measures only;
asserts nothing about time.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchdht import PerformativeTeacher
from torchdht.models import MLP, cnn15

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, num_classes=10, **kw)

    return build


# name -> (builder, input shape, classes, large); the head is model.head or get_classifier()
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, bool]] = {
    "mlp-mnist": (lambda: MLP(num_classes=10), (128, 1, 28, 28), 10, False),
    "cnn15-cifar100": (lambda: cnn15(num_classes=100), (128, 3, 32, 32), 100, True),
    "resnet18": (_timm("resnet18"), (128 if ON_GPU else 16, 3, 32, 32), 10, True),
    "vit_tiny": (
        _timm("vit_tiny_patch16_224", img_size=32, patch_size=4),
        (128 if ON_GPU else 16, 3, 32, 32),
        10,
        True,
    ),
}
POLICIES = [
    "off", "none", "random", "greedy", "greedy-released", "greedy-compiled", "greedy-cudagraphs",
    "greedy-linesearch", "greedy-linesearch-compiled", "greedy-fixed",
]
"""``greedy-cudagraphs`` is ``compile={"mode": "reduce-overhead"}`` (CUDA graphs): GPU only;
``-linesearch`` uses ``solver="linesearch"`` instead of the default ``"pgd"``; ``greedy-fixed``
is the default solver without its early exit (``solve_tol=None``: always ``solve_steps``)."""


def _head(model: nn.Module) -> nn.Module:
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model.head


def _sync() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def training_step(
    case: str, policy: str
) -> tuple[Callable[[], None], PerformativeTeacher | None]:
    """One SGD step of ``case`` with the teacher of ``policy`` (see POLICIES), and the teacher."""
    build, shape, classes, _ = CASES[case]
    torch.manual_seed(0)
    model = build().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(shape, device=DEVICE)
    y = torch.randint(0, classes, (shape[0],), device=DEVICE)
    teacher = None
    if policy != "off":
        extra = {"solve_tol": None} if policy.endswith("fixed") else {}
        teacher = PerformativeTeacher(
            _head(model),
            optimizer=opt,
            policy=policy.split("-")[0],
            seed=0,
            lookahead_encoder_grad=policy.endswith("released"),
            solver="linesearch" if "linesearch" in policy else "pgd",
            compile={"mode": "reduce-overhead"}
            if policy.endswith("cudagraphs")
            else policy.endswith("compiled"),
            **extra,
        )

    def step() -> None:
        if teacher is not None:
            teacher.set_targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync()

    return step, teacher


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("policy", POLICIES)
def test_train_step(benchmark, case, policy):
    large = CASES[case][3]
    if policy.endswith("cudagraphs") and not ON_GPU:
        pytest.skip("CUDA graphs need a GPU")
    if large and not ON_GPU and policy not in ("off", "greedy"):
        pytest.skip("large case on the CPU: only 'off' and 'greedy', to keep the run short")
    step, teacher = training_step(case, policy)
    for _ in range(3):
        step()
    benchmark.group = case
    benchmark.extra_info.update(device=str(DEVICE), case=case, policy=policy)
    rounds = 100 if ON_GPU else (5 if large else 30)
    benchmark.pedantic(step, rounds=rounds, iterations=1)
    if teacher is not None:
        teacher.remove()
