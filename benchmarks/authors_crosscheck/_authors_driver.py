"""Run one arm of the authors' MNIST MLP ``blackbox_implicit`` experiment.

Copied by ``crosscheck.py`` into the patched scratch copy of the authors'
repository and run there (``cwd`` = that copy), once per (seed, experiment,
config). It does what the authors' ``train.py`` does for one entry of its
``combination`` list -- load the yaml config into their ``Options`` parser,
set ``seed``/``model``/``experiment``, seed torch/numpy/random, import
``teaching_policy.blackbox_implicit`` and call ``Trainer(args).main()`` --
with the seed, model and experiment taken from the command line instead of
the hard-coded lists (the released ``train.py`` lists CNN models only; its
``models = ['MLP']`` line is commented out).

Besides that it only

* points the authors' ``CONF.PATH.DATA`` at a local MNIST root;
* provides inert stand-ins for packages of the authors' ``environment.yml``
  that are imported on this path but not installed (``easydict``, ``six``,
  ``tensorboardX``, ``tensorboard`` (for ``torch.utils.tensorboard``),
  ``imageio``, ``seaborn``); an installed package is used as is;
* optionally (``--probe-every N``) measures, every N-th training step of the
  Student, the encoder gradient that reaches the optimizer against the plain
  SGD gradient of the same batch, with ``torch.autograd.grad`` (which reads
  the graph and writes no ``.grad``, no RNG, no parameter): an added
  measurement that leaves the run's numbers unchanged.

Writes ``--record`` (JSON): the test accuracy per epoch from the authors' own
CSV, the wall time, and the probe's statistics.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
import time
import types


def _stub_missing_packages() -> list[str]:
    import importlib.util

    stubbed = []

    def missing(name: str) -> bool:
        return importlib.util.find_spec(name) is None

    if missing("easydict"):
        mod = types.ModuleType("easydict")

        class EasyDict(dict):
            def __getattr__(self, key):
                try:
                    return self[key]
                except KeyError as exc:
                    raise AttributeError(key) from exc

            def __setattr__(self, key, value):
                self[key] = value

        mod.EasyDict = EasyDict
        sys.modules["easydict"] = mod
        stubbed.append("easydict")
    if missing("six"):
        import urllib

        six = types.ModuleType("six")
        moves = types.ModuleType("six.moves")
        moves.urllib = urllib
        six.moves = moves
        sys.modules["six"] = six
        sys.modules["six.moves"] = moves
        stubbed.append("six")
    if missing("tensorboardX"):
        mod = types.ModuleType("tensorboardX")

        class SummaryWriter:  # the authors log scalars to TensorBoard; nothing here reads them
            def __init__(self, *args, **kwargs):
                pass

            def __getattr__(self, name):
                return lambda *args, **kwargs: None

        mod.SummaryWriter = SummaryWriter
        sys.modules["tensorboardX"] = mod
        stubbed.append("tensorboardX")
    if missing("tensorboard"):  # torch.utils.tensorboard (imported by networks.policy_gradient)
        mod = types.ModuleType("torch.utils.tensorboard")
        mod.SummaryWriter = sys.modules["tensorboardX"].SummaryWriter if "tensorboardX" in \
            stubbed else __import__("tensorboardX").SummaryWriter
        sys.modules["torch.utils.tensorboard"] = mod
        stubbed.append("tensorboard")
    for name in ("imageio", "seaborn"):  # imported by plotting helpers that this run never calls
        if missing(name):
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    return stubbed


def _install_probe(trainer, every: int, out: list) -> None:
    """Measure the Student's encoder gradient against the plain one (read only)."""
    import networks.blackbox_implicit as bbi
    import torch
    import torch.nn.functional as F

    orig_forward = bbi.UnrolledBlackBoxOptimizer.forward
    orig_random = bbi.UnrolledBlackBoxOptimizer.forward_random
    calls = {"student": 0, "baseline": 0}

    def forward(self, z0, inputs, targets):
        k = calls["student"]
        calls["student"] += 1
        if k % every:
            return orig_forward(self, z0, inputs, targets)
        w = trainer.student.features.weight  # the MLP encoder's only parameter (no bias)
        fc = trainer.student_fc
        before = None if w.grad is None else w.grad.detach().clone()
        plain = torch.autograd.grad(F.cross_entropy(fc(z0), targets), w, retain_graph=True)[0]
        z = orig_forward(self, z0, inputs, targets)
        after = torch.zeros_like(w) if w.grad is None else w.grad.detach().clone()
        lookahead = after if before is None else after - before
        final = torch.autograd.grad(F.cross_entropy(fc(z), targets), w, retain_graph=True)[0]
        total = lookahead + final  # what the optimizer steps with after loss.backward()

        def cos(a, b):
            return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))

        pn = float(plain.norm())
        out.append({
            "step": k,
            "ratio_total_plain": float(total.norm()) / pn if pn else float("nan"),
            "cos_total_plain": cos(total, plain),
            "ratio_final_plain": float(final.norm()) / pn if pn else float("nan"),
            "cos_final_plain": cos(final, plain),
            "feature_move_max": float((z - z0).detach().norm(dim=1).max()),
        })
        return z

    def forward_random(self, z0):
        k = calls["baseline"]
        calls["baseline"] += 1
        if k % every:
            return orig_random(self, z0)
        w = trainer.baseline.features.weight
        before = None if w.grad is None else float(w.grad.norm())
        z = orig_random(self, z0)
        after = None if w.grad is None else float(w.grad.norm())
        out.append({"step": k, "baseline_extra_grad": after is not None and after != before})
        return z

    bbi.UnrolledBlackBoxOptimizer.forward = forward
    bbi.UnrolledBlackBoxOptimizer.forward_random = forward_random


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="yaml name in configs/, without .yaml")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--experiment", required=True, choices=["Student", "SGD", "Baseline"])
    p.add_argument("--model", default="MLP")
    p.add_argument("--data", required=True, help="folder holding MNIST/raw")
    p.add_argument("--record", required=True, help="JSON file to write")
    p.add_argument("--probe-every", type=int, default=0, help="0: no gradient probe")
    a = p.parse_args()

    stubbed = _stub_missing_packages()
    root = os.getcwd()
    sys.path.insert(0, root)
    import numpy as np
    import torch

    torch.set_num_threads(1)

    import baseconfig

    baseconfig.CONF.PATH.DATA = os.path.abspath(a.data)
    from options.options import Options
    from train import load_config  # importing train.py runs only its module level (lists)

    # --- as train.py's __main__, with seed/model/experiment from the command line
    sys.argv = [sys.argv[0], "--config", a.config, "--teaching_policy", "blackbox_implicit"]
    opts = Options().parse()
    opts.set_defaults(**load_config(a.config + ".yaml"))
    args = opts.parse_args()
    args.init_data = True
    args.seed = a.seed
    args.model = a.model
    args.experiment = a.experiment
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    import importlib

    module = importlib.import_module("teaching_policy.blackbox_implicit")
    t0 = time.perf_counter()
    trainer = module.Trainer(args)
    for old in glob.glob(os.path.join(args.log_path, "results_*.csv")):
        os.remove(old)  # the authors' CSV is appended to: start it afresh
    probe: list = []
    if a.probe_every > 0:
        _install_probe(trainer, a.probe_every, probe)
    trainer.main()
    wall = time.perf_counter() - t0
    # --- collect the authors' own per-epoch test accuracies
    csvs = glob.glob(os.path.join(args.log_path, f"results_{a.experiment}_*.csv"))
    if len(csvs) != 1:
        print(f"expected one results CSV in {args.log_path}, found {csvs}", file=sys.stderr)
        return 1
    with open(csvs[0]) as f:
        rows = [line.strip().split(",") for line in f][1:]
    acc = [float(r[1]) for r in rows]
    n_batches = len(trainer.loader)
    record = {
        "program": "authors",
        "config": a.config,
        "n_z_update": args.n_z_update,
        "n_weight_update": args.n_weight_update,
        "experiment": a.experiment,
        "seed": a.seed,
        "epochs": [int(r[0]) for r in rows],
        "eval_iters": [int(r[0]) * n_batches for r in rows],
        "test_acc": [100.0 * x for x in acc],
        "final_acc": 100.0 * acc[-1],
        "iters": (args.n_epochs - 1) * n_batches,
        "batches_per_epoch": n_batches,
        "wall_s": wall,
        "cuda": torch.cuda.is_available(),
        "stubbed_packages": stubbed,
        "authors_csv": os.path.relpath(csvs[0], root),
        "probe": probe,
    }
    with open(a.record, "w") as f:
        json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
