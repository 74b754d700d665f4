"""Two-process DDP run with PerformativeTeacher (spawned by tests/test_reliability.py)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from torchdht import PerformativeTeacher

STEPS = 4


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    return model


def rank_batch(step: int, rank: int):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (8,), generator=g)
    return x, y


def run(rank: int, world: int, port: int, out: str, policy: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = make_model()
    head = model[-1]
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    teacher = PerformativeTeacher(
        head, optimizer=opt, policy=policy, seed=rank
    )  # attach, then wrap
    ddp = DDP(model)
    for step in range(STEPS):
        x, y = rank_batch(step, rank)
        teacher.set_targets(y)
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(torch.stack(gathered), out)
    teacher.remove()
    dist.barrier()
    dist.destroy_process_group()
    # gloo's threads can abort the interpreter's teardown ("terminate called
    # without an active exception"); everything is written, so leave at once.
    sys.stdout.flush()
    os._exit(0)


def reference(world: int, policy: str) -> torch.Tensor:
    """One process: the teacher on each rank's local batch, gradients averaged."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    teachers = [None] * world
    rngs = {}
    for step in range(STEPS):
        grads = []
        for rank in range(world):
            t = PerformativeTeacher(model[-1], optimizer=opt, policy=policy, seed=rank)
            if rank in rngs:
                t.load_state_dict(rngs[rank])
            x, y = rank_batch(step, rank)
            t.set_targets(y)
            loss = F.cross_entropy(model(x), y)
            grads.append(torch.autograd.grad(loss, list(model.parameters())))
            rngs[rank] = t.state_dict()
            t.remove()
        opt.zero_grad()
        for p, *gs in zip(model.parameters(), *grads):
            p.grad = sum(gs) / world
        opt.step()
    del teachers
    return torch.cat([p.detach().flatten() for p in model.parameters()])


if __name__ == "__main__":
    rank_, world_, port_, out_, policy_ = sys.argv[1:6]
    run(int(rank_), int(world_), int(port_), out_, policy_)
