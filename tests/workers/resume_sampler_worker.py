"""Train with a TeachingSampler, stop mid-epoch and checkpoint, resume
(run by tests/test_resume_more.py).

usage: resume_sampler_worker.py first|resume DIR K [K ...]

Two epochs of 8 steps each. ``first``: the uninterrupted run (DIR/full.pt),
and for each K a run that stops after K batches and saves a checkpoint
(DIR/ckpt_K.pt; what it did in DIR/first_K.pt). ``resume`` (a fresh
process): for each K, loads the checkpoint with ``torch.load(weights_only=True)``
and runs the usual epoch loop to the end (DIR/rest_K.pt). Each result holds
the model's parameters and the batches of dataset indices trained on, in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from torchdht import TeachingSampler

EPOCHS = 2


def run(stop_after: int | None, load: Path | None, save: Path | None) -> dict:
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(120, 6, generator=g), torch.randint(0, 4, (120,), generator=g)
    ds = TensorDataset(xs, ys)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sampler = TeachingSampler(
        ds, model=model, head=model[2], batch_size=5, pool_factor=3, score="greedy", lr=0.2, seed=4
    )
    if load is not None:
        ckpt = torch.load(load, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sampler.load_state_dict(ckpt["sampler"])
    batches: list[list[int]] = []
    for epoch in range(sampler.epoch, EPOCHS):
        sampler.set_epoch(epoch)
        for idx in sampler:
            batches.append(list(idx))
            loss = F.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if len(batches) == stop_after:
                break
        if len(batches) == stop_after:
            break
    if save is not None:
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "sampler": sampler.state_dict()},
            save,
        )
    return {
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "batches": torch.tensor(batches, dtype=torch.long).reshape(-1, 5),
        "steps_per_epoch": len(sampler),
        "sampler": sampler.state_dict() if save is not None else {},
    }


def main() -> None:
    mode, out, stops = sys.argv[1], Path(sys.argv[2]), [int(k) for k in sys.argv[3:]]
    torch.set_num_threads(1)
    if mode == "first":
        torch.save(run(None, None, None), out / "full.pt")
        for k in stops:
            torch.save(run(k, None, out / f"ckpt_{k}.pt"), out / f"first_{k}.pt")
    elif mode == "resume":
        for k in stops:
            torch.save(run(None, out / f"ckpt_{k}.pt", None), out / f"rest_{k}.pt")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
