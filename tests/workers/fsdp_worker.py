"""Two-process FSDP2 (``fully_shard``) runs with PerformativeTeacher (run by tests/test_fsdp.py).

One invocation runs every configuration of :data:`CONFIGS` in turn, each on a
fresh model, and rank 0 saves ``{name: result}``: the parameters of both ranks
after :data:`STEPS` steps (gathered in full), the teacher's step count, or the
error the configuration raised. The expected parameters come from
:func:`reference`, the per-rank reference of the DDP test (``ddp_worker``): each
rank teaches on its own local batch with the full head weights, the gradients
are averaged over the ranks, one optimizer step.

Configurations (``shard``/``attach``/``optim``):

* shard ``head``: ``fully_shard(head)`` and then ``fully_shard(model)`` (the
  root); ``model``: ``fully_shard(model)`` only.
* attach ``after``: the usual FSDP2 recipe, ``fully_shard``, then the optimizer,
  then ``PerformativeTeacher(head, optimizer=opt)``. ``before``: the teacher
  is built on the plain model, then the model is sharded and the optimizer
  built; the optimizer does not exist when the teacher is, so the teacher
  reads ``eta`` through ``lr=lambda: opt.param_groups[0]["lr"]``.
  ``before-stale``: the DDP recipe carried over, ``optimizer=`` an optimizer
  built before sharding; ``fully_shard`` replaces the parameters, so that
  optimizer no longer trains the head and the teacher would follow the ``lr``
  of a dead optimizer. Expected: an error naming the optimizer.
* optim ``sgd``: SGD, constant lr (exactly the DDP test's reference); ``adam``:
  Adam with a LambdaLR scheduler, so that ``eta`` changes every step.
* a fourth part ``accum``: gradient accumulation over :data:`MICRO` micro-batches
  per step, FSDP2's way (``set_requires_gradient_sync(False)`` and
  ``set_reshard_after_backward(False)`` on all but the last), so that between
  micro-batches ``head.weight`` stays the plain unsharded parameter.
"""

from __future__ import annotations

import os
import sys
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F

try:  # imported by the test
    from workers.ddp_worker import make_model, rank_batch
except ImportError:  # run as a script from tests/workers
    from ddp_worker import make_model, rank_batch

from torchdht import PerformativeTeacher

STEPS = 4
POLICY = "greedy"
SHARDS = ("head", "model")
ATTACHES = ("before", "after")
OPTIMS = ("sgd", "adam")
MICRO = 2
CONFIGS = (
    [f"{s}/{a}/{o}" for s in SHARDS for a in ATTACHES for o in OPTIMS]
    + [f"{s}/after/sgd/accum" for s in SHARDS]
    + [f"{s}/before-stale/adam" for s in SHARDS]
)


def make_opt(params, optim: str):
    """The optimizer and its scheduler (None for SGD)."""
    if optim == "sgd":
        return torch.optim.SGD(params, lr=0.3), None
    opt = torch.optim.Adam(params, lr=0.05)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))


def run_config(name: str, rank: int, world: int, mesh) -> dict:
    from torch.distributed.fsdp import fully_shard

    shard, attach, optim, *accum = name.split("/")
    micro = MICRO if accum else 1
    model = make_model()
    head = model[-1]
    teacher = None
    opt = None
    if attach == "before":
        teacher = PerformativeTeacher(
            head, lr=lambda: opt.param_groups[0]["lr"], policy=POLICY, seed=rank
        )
    elif attach == "before-stale":
        stale, _ = make_opt(model.parameters(), optim)
        teacher = PerformativeTeacher(head, optimizer=stale, policy=POLICY, seed=rank)
    if shard == "head":
        fully_shard(head, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt, sched = make_opt(model.parameters(), optim)
    if attach == "after":
        teacher = PerformativeTeacher(head, optimizer=opt, policy=POLICY, seed=rank)
    assert teacher is not None
    for step in range(STEPS):
        opt.zero_grad()
        for m in range(micro):
            last = m == micro - 1
            if micro > 1:
                model.set_requires_gradient_sync(last)
                model.set_reshard_after_backward(last)
            x, y = rank_batch(micro * step + m, rank)
            teacher.set_targets(y)
            F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
    full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in full])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    taught = torch.tensor([teacher.steps_taught])
    all_taught = [torch.empty_like(taught) for _ in range(world)]
    dist.all_gather(all_taught, taught)
    teacher.remove()
    return {"params": torch.stack(gathered), "steps_taught": torch.cat(all_taught).tolist()}


def run(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for name in CONFIGS:
        try:
            results[name] = run_config(name, rank, world, mesh)
        except Exception as exc:  # recorded; the test reports it for this configuration
            # Both ranks run the same code on the same shapes, so an error is
            # raised on both before any mismatched collective.
            results[name] = {
                "error": "".join(traceback.format_exception(exc)),
                "error_type": type(exc).__name__,
                "error_message": str(exc),
            }
        dist.barrier()
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()
    # gloo's threads can abort the interpreter's teardown; everything is written.
    sys.stdout.flush()
    os._exit(0)


def reference(world: int, optim: str, micro: int = 1) -> torch.Tensor:
    """One process: the teacher on each rank's local batch, gradients averaged.

    With ``optim="sgd"`` this is ``ddp_worker.reference(world, "greedy")``. With
    ``micro > 1`` each rank's gradient is the sum over its micro-batches, all
    taught with the weights of the step.
    """
    model = make_model()
    opt, sched = make_opt(model.parameters(), optim)
    for step in range(STEPS):
        grads = []
        for rank in range(world):
            t = PerformativeTeacher(model[-1], optimizer=opt, policy=POLICY, seed=rank)
            for m in range(micro):
                x, y = rank_batch(micro * step + m, rank)
                t.set_targets(y)
                loss = F.cross_entropy(model(x), y)
                grads.append(torch.autograd.grad(loss, list(model.parameters())))
            t.remove()
        opt.zero_grad()
        for p, *gs in zip(model.parameters(), *grads):
            p.grad = sum(gs) / world
        opt.step()
        if sched is not None:
            sched.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


if __name__ == "__main__":
    rank_, world_, port_, out_ = sys.argv[1:5]
    run(int(rank_), int(world_), int(port_), out_)
