"""Our side of the cross-check: five arms of the MNIST MLP, trained in lockstep.

One process per (protocol, seed) trains ``sgd``, ``dht``, ``dht-released``,
``random-released`` and ``sgd-enc-x6`` (the definitions of the attribution
study, ``torchdht/experiments/attribution.py``) from the same initialisation
on the same batches, using only the public API (``PerformativeTeacher``,
``torchdht.models``, ``torchdht.data.resolve_root``):

* ``--protocol ours``: the attribution study's MNIST protocol -- MLP
  784-128-10, plain SGD lr 1e-3, weight decay 5e-4, batch 128 drawn from
  consecutive random permutations, inputs ``(x - 0.1307) / 0.3081``;
* ``--protocol matched``: the authors' MNIST MLP set-up -- their training
  transform (``RandomHorizontalFlip`` + ``RandomResizedCrop(28)`` with the
  default scale 0.08-1, ``Normalize((0.5,), (0.5,))``, applied per image as
  in their ``DataLoader``), no weight decay, SGD lr 1e-3 without momentum,
  batch 128 in shuffled epochs of 469 batches (the last one 96 images, no
  ``drop_last``), test inputs ``Normalize((0.5,), (0.5,))``.

* ``--protocol matched-model``: ``matched``, and the model made like theirs:
  the encoder's bias removed and the head re-initialised with
  ``kaiming_uniform_`` and a zero bias (their ``initialize_weights``).

Otherwise the architecture is our ``build_model("mlp")`` (the authors' encoder
has no bias and their head a Kaiming-uniform init with zero bias; ours has a
bias and PyTorch's default init).

Test accuracy (all 10,000 test images) is recorded at ``--eval-every``
iterations and at the end. Written: ``--record`` (JSON).

Example::

    OMP_NUM_THREADS=1 python benchmarks/authors_crosscheck/ours.py \\
        --protocol matched --seed 0 --iters 3283 --eval-every 469 --record /tmp/r.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch
import torch.nn.functional as F

ARMS = ("sgd", "dht", "dht-released", "random-released", "sgd-enc-x6")
LOOKAHEAD_STEPS = 5  # the paper's n_w (the released code's n_weight_update)
SOLVE_STEPS = 15  # the paper's m (the released code's n_z_update)
PROTOCOLS = {
    "ours": {"lr": 1e-3, "weight_decay": 5e-4, "batch": 128, "mean": 0.1307, "std": 0.3081,
             "augment": False, "epochs": False},
    "matched": {"lr": 1e-3, "weight_decay": 0.0, "batch": 128, "mean": 0.5, "std": 0.5,
                "augment": True, "epochs": True},
    "matched-model": {"lr": 1e-3, "weight_decay": 0.0, "batch": 128, "mean": 0.5, "std": 0.5,
                      "augment": True, "epochs": True, "authors_model": True},
}


def _arm_config(arm: str) -> tuple[float, dict | None]:
    """(encoder lr multiplier, teacher kwargs or None) of an arm."""
    if arm == "sgd":
        return 1.0, None
    if arm == "sgd-enc-x6":
        return 1.0 + LOOKAHEAD_STEPS, None
    if arm == "dht":
        return 1.0, {"policy": "greedy", "lookahead_encoder_grad": False}
    if arm == "dht-released":
        return 1.0, {"policy": "greedy", "lookahead_encoder_grad": True}
    if arm == "random-released":
        return 1.0, {"policy": "random", "lookahead_encoder_grad": True}
    raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")


def _load_mnist(root, n_train: int | None):
    from torchvision.datasets import MNIST

    tr = MNIST(str(root), train=True, download=False)
    te = MNIST(str(root), train=False, download=False)
    x_tr, y_tr = tr.data, tr.targets
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    return x_tr, y_tr.long(), te.data, te.targets.long()


def _batches(n: int, batch: int, epochs: bool, gen: torch.Generator):
    """Index batches: shuffled epochs (last batch short) or consecutive permutations."""
    if epochs:
        while True:
            yield from torch.randperm(n, generator=gen).split(batch)
    order = torch.empty(0, dtype=torch.int64)
    while True:
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch], order[batch:]
        yield idx


def _augmenter():
    """The authors' MNIST training transform, as in their DataLoader (per PIL image)."""
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomResizedCrop(28),
        transforms.ToTensor(),
        transforms.Normalize((0.5,), (0.5,)),
    ])

    def apply(x_u8: torch.Tensor) -> torch.Tensor:
        return torch.stack([tf(Image.fromarray(img.numpy(), mode="L")) for img in x_u8])

    return apply


@torch.no_grad()
def _make_like_authors(model) -> None:
    """Their MNIST MLP: ``Linear(784, 128, bias=False)`` encoder, Kaiming-uniform head, bias 0."""
    linear = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1, linear
    linear[0].bias = None
    torch.nn.init.kaiming_uniform_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000),
                                                                          y.split(1000)))
    model.train()
    return 100.0 * correct / len(y)


def run(protocol: str, seed: int, iters: int, eval_every: int, data_root, arms=ARMS,
        n_train: int | None = None) -> dict:
    from torchdht import PerformativeTeacher
    from torchdht.models import build_model

    cfg = PROTOCOLS[protocol]
    x_tr, y_tr, x_te, y_te = _load_mnist(data_root, n_train)
    x_te = ((x_te.float() / 255 - cfg["mean"]) / cfg["std"]).reshape(len(x_te), 1, 28, 28)
    if not cfg["augment"]:
        x_tr = ((x_tr.float() / 255 - cfg["mean"]) / cfg["std"]).reshape(len(x_tr), 1, 28, 28)
    augment = _augmenter() if cfg["augment"] else None

    torch.manual_seed(seed)  # one initialisation for every arm
    init = build_model("mlp", num_classes=10)
    if cfg.get("authors_model"):
        _make_like_authors(init)
    runs = {}
    for arm in arms:
        model = copy.deepcopy(init)
        enc_mult, teach = _arm_config(arm)
        opt = torch.optim.SGD(
            [{"params": model.encoder.parameters(), "lr": cfg["lr"] * enc_mult},
             {"params": model.head.parameters(), "lr": cfg["lr"]}],
            lr=cfg["lr"], momentum=0.0, weight_decay=cfg["weight_decay"])
        teacher = None
        if teach is not None:
            teacher = PerformativeTeacher(model.head, optimizer=opt, seed=seed,
                                          lookahead_steps=LOOKAHEAD_STEPS,
                                          solve_steps=SOLVE_STEPS, **teach)
        runs[arm] = {"model": model, "opt": opt, "teacher": teacher, "curve": [],
                     "step_s": 0.0, "angle": 0.0, "angle_n": 0}

    gen = torch.Generator().manual_seed(seed)  # the same batches for every arm
    torch.manual_seed(10_000 + seed)  # the augmentation's stream (torchvision uses the global RNG)
    batches = _batches(len(y_tr), cfg["batch"], cfg["epochs"], gen)
    points = sorted({0, iters, *range(eval_every, iters, eval_every)})
    t_start = time.perf_counter()
    aug_s = 0.0
    for it in range(iters + 1):
        if it in points:
            for r in runs.values():
                r["curve"].append(_accuracy(r["model"], x_te, y_te))
        if it == iters:
            break
        idx = next(batches)
        t0 = time.perf_counter()
        xb = augment(x_tr[idx]) if augment is not None else x_tr[idx]
        aug_s += time.perf_counter() - t0
        yb = y_tr[idx]
        for r in runs.values():
            t0 = time.perf_counter()
            if r["teacher"] is not None:
                r["teacher"].set_targets(yb)
            loss = F.cross_entropy(r["model"](xb), yb)
            r["opt"].zero_grad(set_to_none=True)
            loss.backward()
            r["opt"].step()
            r["step_s"] += time.perf_counter() - t0
            if r["teacher"] is not None and it % 50 == 0:
                r["angle"] += r["teacher"].stats["angle_mean"]
                r["angle_n"] += 1
    wall = time.perf_counter() - t_start
    out = {"program": "ours", "protocol": protocol, "seed": seed, "iters": iters,
           "eval_iters": points, "settings": cfg, "wall_s": wall, "augment_s": aug_s,
           "n_train": len(y_tr), "arms": {}}
    for arm, r in runs.items():
        if r["teacher"] is not None:
            r["teacher"].remove()
        out["arms"][arm] = {
            "test_acc": r["curve"], "final_acc": r["curve"][-1],
            "ms_per_step": 1000.0 * r["step_s"] / max(iters, 1),
            "angle_mean": r["angle"] / r["angle_n"] if r["angle_n"] else None,
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Our side of the authors' cross-check: five MNIST MLP arms in lockstep.",
        epilog=__doc__.split("Example::")[1] if "Example::" in __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=3283)
    p.add_argument("--eval-every", type=int, default=469)
    p.add_argument("--data", default=None, help="folder holding MNIST/raw (default: the "
                   "project's data root, TORCHDHT_DATA)")
    p.add_argument("--n-train", type=int, default=None, help="keep the first N training images")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--record", required=True, help="JSON file to write")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from torchdht.data import resolve_root

    root = resolve_root(a.data, need="MNIST/raw")
    rec = run(a.protocol, a.seed, a.iters, a.eval_every, root,
              arms=tuple(s for s in a.arms.split(",") if s), n_train=a.n_train)
    with open(a.record, "w") as f:
        json.dump(rec, f, indent=1)
    print(json.dumps({k: v["final_acc"] for k, v in rec["arms"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
