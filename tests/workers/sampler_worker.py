"""Two ranks of a real gloo process group each draw TeachingSampler batches
(spawned by tests/test_reliability.py); rank 0 saves every rank's picks."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from torchdht import TeachingSampler


def run(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(96, 6, generator=g), torch.randint(0, 3, (96,), generator=g))
    torch.manual_seed(0)  # the same model on every rank, as DDP would broadcast it
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    # No num_replicas / rank: they come from the initialised process group.
    sampler = TeachingSampler(
        ds, model=model, head=model[-1], batch_size=4, pool_factor=3, score="greedy", lr=0.1, seed=7
    )
    picks = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        picks.append(torch.tensor([i for batch in sampler for i in batch]))
    flat = torch.stack(picks)
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save({"picks": torch.stack(gathered), "ranks": sampler.num_replicas}, out)
    dist.barrier()
    dist.destroy_process_group()
    # gloo's threads can abort the interpreter's teardown ("terminate called
    # without an active exception"); everything is written, so leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
