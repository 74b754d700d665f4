"""Train with a teacher, optionally checkpoint or resume (run by tests/test_reliability.py).

usage: resume_worker.py POLICY START STOP [--load CKPT] [--save CKPT] --out PARAMS
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from torchdht import PerformativeTeacher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("policy")
    ap.add_argument("start", type=int)
    ap.add_argument("stop", type=int)
    ap.add_argument("--load")
    ap.add_argument("--save")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    teacher = PerformativeTeacher(model[-1], optimizer=opt, policy=a.policy, seed=11)
    if a.load:
        ckpt = torch.load(a.load, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        teacher.load_state_dict(ckpt["teacher"])
    for step in range(a.start, a.stop):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
        teacher.set_targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if a.save:
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "teacher": teacher.state_dict()},
            a.save,
        )
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, a.out)


if __name__ == "__main__":
    main()
