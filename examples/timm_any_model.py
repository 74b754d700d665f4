"""Performative teaching on any timm model: three added lines.

The training loop below is an ordinary one (timm model, SGD with momentum,
cosine LR schedule). The lines marked ``# torchdht`` are all it takes to add
the teacher: build it on the model's classifier, give it the targets before
each forward, and remove it at the end (plus ``import torchdht``).

    python examples/timm_any_model.py                     # resnet18
    python examples/timm_any_model.py --model vit_tiny_patch16_224 --steps 10

Random weights and FakeData only: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import torchdht

NEEDS = "timm and torchvision"
INSTALL = 'pip install -e ".[vision]"'
try:  # optional packages: --help works without them, a run says what to install
    import timm
    from torchvision import datasets, transforms
except ImportError as exc:
    _MISSING: str | None = (exc.name or str(exc)).split(".")[0]
else:
    _MISSING = None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PerformativeTeacher on a timm model")
    parser.add_argument("--model", default="resnet18", help="any timm model name")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def exit_if_missing() -> None:
    """Exit with status 2 and one line naming the extra when an optional package is missing."""
    if _MISSING is not None:
        print(f"{Path(__file__).name}: this example needs {NEEDS} (cannot import "
              f"{_MISSING}): {INSTALL}", file=sys.stderr)
        raise SystemExit(2)


def build_model(name: str) -> torch.nn.Module:
    kwargs = {}
    if name.startswith(("vit_", "deit_")):
        kwargs = {"img_size": 32, "patch_size": 4}  # ViTs default to 224x224 inputs
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    exit_if_missing()
    torch.manual_seed(args.seed)

    data = datasets.FakeData(
        size=args.steps * args.batch_size,
        image_size=(3, 32, 32),
        num_classes=10,
        transform=transforms.ToTensor(),
    )
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)

    model = build_model(args.model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)

    teacher = torchdht.PerformativeTeacher(model.get_classifier(), optimizer=opt)  # torchdht

    model.train()
    step = 0
    loss = torch.tensor(float("nan"))
    for x, y in loader:
        teacher.set_targets(y)  # torchdht
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % args.log_every == 0 or step == 1 or step == args.steps:
            s = teacher.stats
            print(
                # `loss` is on the taught features; loss_untaught is the one on the data
                f"step {step:3d}  loss (taught) {loss.item():.4f}  "
                f"loss_untaught {s['loss_untaught']:.4f}  lr {sched.get_last_lr()[0]:.4f}  "
                f"angle_mean {s['angle_mean']:.4f}  objective_drop {s['objective_drop']:.3e}"
            )
        if step >= args.steps:
            break

    teacher.remove()  # torchdht
    return {"steps": step, "loss": loss.item(), "stats": teacher.stats}


if __name__ == "__main__":
    main()
