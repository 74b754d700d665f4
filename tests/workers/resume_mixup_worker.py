"""Train with a MixupTeacher, checkpoint, resume (run by tests/test_resume_more.py).

usage: resume_mixup_worker.py first|resume DIR POLICY [POLICY ...]

``first``: for each policy, the uninterrupted run (steps 0-20, DIR/full_POLICY.pt)
and a run that stops after step 10 and saves a checkpoint (DIR/ckpt_POLICY.pt,
its parameters in DIR/half_POLICY.pt). ``resume`` (a fresh process): loads
each checkpoint with ``torch.load(weights_only=True)`` and runs steps 10-20
(DIR/part_POLICY.pt).

Every step mixes the batch, trains, and calls observe(train_loss=); every
4th step ends an episode with reward(val_loss=, val_acc=), so a "reinforce"
policy and its Adam change during the run and the checkpoint at step 10
falls mid-episode.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchdht import MixupTeacher

TOTAL, HALF = 20, 10


def run(policy: str, start: int, stop: int, load: Path | None, save: Path | None) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    mixup = MixupTeacher(4, policy, total_steps=TOTAL, alpha=0.4, seed=11)
    gv = torch.Generator().manual_seed(1234)
    xv, yv = torch.randn(32, 6, generator=gv), torch.randint(0, 4, (32,), generator=gv)
    if load is not None:
        ckpt = torch.load(load, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        mixup.load_state_dict(ckpt["mixup"])
    lambdas = []
    for step in range(start, stop):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
        xm, ym = mixup(x, y)
        lambdas.append(mixup.last_lambda)
        loss = F.cross_entropy(model(xm), ym)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mixup.observe(train_loss=loss.item())
        if (step + 1) % 4 == 0:
            with torch.no_grad():
                out = model(xv)
                val_loss = F.cross_entropy(out, yv).item()
                val_acc = (out.argmax(1) == yv).float().mean().item()
            mixup.reward(val_loss=val_loss, val_acc=val_acc)
    if save is not None:
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "mixup": mixup.state_dict()},
            save,
        )
    result: dict[str, Any] = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    if mixup.net is not None:
        result.update({f"policy.{k}": v.clone() for k, v in mixup.net.state_dict().items()})
    result["lambdas"] = torch.tensor(lambdas, dtype=torch.float64)
    result["counts"] = torch.tensor([mixup.step, mixup.episodes])
    return result


def main() -> None:
    mode, out, policies = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(1)
    for p in policies:
        if mode == "first":
            torch.save(run(p, 0, TOTAL, None, None), out / f"full_{p}.pt")
            torch.save(run(p, 0, HALF, None, out / f"ckpt_{p}.pt"), out / f"half_{p}.pt")
        elif mode == "resume":
            torch.save(run(p, HALF, TOTAL, out / f"ckpt_{p}.pt", None), out / f"part_{p}.pt")
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
