"""torchdht.integrations.lightning: PerformativeTeaching in a real Lightning Trainer (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402

from torchdht import (  # noqa: E402
    HeadTypeError,
    MixupTeacher,
    PerformativeTeacher,
    TeachingSampler,
)
from torchdht.integrations.lightning import PerformativeTeaching  # noqa: E402

from conftest import worker_env  # noqa: E402

N_TRAIN, N_VAL, BATCH = 64, 32, 16  # 4 training and 2 validation batches per epoch

README_EXAMPLE = """\
import torch
import torch.nn.functional as F
import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchdht.integrations.lightning import PerformativeTeaching

class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU())
        self.head = nn.Linear(64, 4)  # the final nn.Linear: the one taught

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.head(self.body(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

x, y = torch.randn(256, 20), torch.randint(0, 4, (256,))
loader = DataLoader(TensorDataset(x, y), batch_size=32)
teaching = PerformativeTeaching(head="head", eps=0.1)  # targets: batch[1] by default
trainer = pl.Trainer(max_epochs=1, accelerator="cpu", callbacks=[teaching], logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)
trainer.fit(Classifier(), loader)
print(teaching.teacher.steps_taught, teaching.teacher.stats["angle_max"])  # 8 batches taught
"""


@pytest.fixture(autouse=True)
def _global_flags_kept():
    """Trainer(deterministic=True) switches torch's deterministic mode on for the process."""
    det, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


class _Module(pl.LightningModule):
    """SGD with momentum, halved every epoch by StepLR (so eta changes)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.model = _MLP()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": sched}


class _MemoryLogger(Logger):
    """Keeps every log_metrics call."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.records.append((step, dict(metrics)))


def _loaders():
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(N_TRAIN + N_VAL, 8, generator=g),
        torch.randint(0, 3, (N_TRAIN + N_VAL,), generator=g),
    )
    train = DataLoader(TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=False)
    val = DataLoader(TensorDataset(x[N_TRAIN:], y[N_TRAIN:]), batch_size=BATCH)
    return train, val


def _trainer(tmp_path, max_epochs, callbacks, logger=False, **kwargs):
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        deterministic=True,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _fit(tmp_path, module, teaching, max_epochs=2, **kwargs):
    train, val = _loaders()
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = _trainer(tmp_path, max_epochs, [teaching, *kwargs.pop("extra", [])], **kwargs)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer


# ------------------------------------------------------------------ 1. a plain fit
def test_every_training_batch_taught_and_logged(tmp_path):
    module = _Module()
    calls = {"train": 0, "eval": 0}

    def count(mod, args):
        calls["train" if mod.training else "eval"] += 1

    module.model.head.register_forward_pre_hook(count)
    logger = _MemoryLogger()
    teaching = PerformativeTeaching(head="model.head", eps=0.1, seed=0)
    trainer = _trainer(tmp_path, 2, [teaching], logger=logger, num_sanity_val_steps=2)
    train, val = _loaders()
    trainer.fit(module, train, val)

    n_train = 2 * N_TRAIN // BATCH
    teacher = teaching.teacher
    assert isinstance(teacher, PerformativeTeacher)
    assert teacher.steps_taught == n_train == calls["train"]
    # the sanity check and both validation epochs ran through the head, untaught
    assert calls["eval"] == 2 + 2 * (N_VAL // BATCH)
    # the stats of every step reached the logger, eta following StepLR of the Trainer's optimizer
    steps = [m for _, m in logger.records if "dht/angle_max" in m]
    assert len(steps) == n_train
    for i, m in enumerate(steps):
        assert {"dht/angle_mean", "dht/objective_drop", "dht/theta_dist", "dht/n_rows"} <= set(m)
        assert 0 < m["dht/angle_max"] <= 0.1001
        assert m["dht/n_rows"] == BATCH
        assert m["dht/eta"] == pytest.approx(0.1 if i < n_train // 2 else 0.05)
    assert "dht/angle_max" in trainer.logged_metrics
    # detached at teardown: a training-mode forward without targets is not refused
    module.model.train()
    module.model(torch.randn(4, 8))
    assert teacher.steps_taught == n_train
    PerformativeTeacher(module.model.head, lr=0.1).remove()  # the head is free again


# --------------------------------------------------------------- 2. resume bit for bit
def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    kwargs = dict(head="model.head", policy="random", eps=0.3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    full = _Module(seed=0)
    teaching = PerformativeTeaching(seed=0, **kwargs)
    _fit(tmp_path / "full", full, teaching, extra=[ckpt], enable_checkpointing=True)
    first = tmp_path / "ckpt" / "epoch=0-step=4.ckpt"
    assert first.exists()
    saved = torch.load(first, weights_only=True)["callbacks"][teaching.state_key]["teacher"]
    assert saved["steps_taught"] == N_TRAIN // BATCH and saved["rng"] is not None

    # another init and another seed: everything comes from the checkpoint
    resumed_teaching = PerformativeTeaching(seed=123, **kwargs)
    resumed = _Module(seed=7)
    _fit(tmp_path / "resumed", resumed, resumed_teaching, ckpt_path=str(first))
    assert resumed_teaching.teacher.steps_taught == teaching.teacher.steps_taught == 8
    assert resumed_teaching.teacher.seed == 0
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)

    # control: the same resume without the teacher's state (its generator restarts) differs
    state = torch.load(first, weights_only=True)
    del state["callbacks"][teaching.state_key]
    stripped = tmp_path / "stripped.ckpt"
    torch.save(state, stripped)
    control = _Module(seed=7)
    control_teaching = PerformativeTeaching(seed=0, **kwargs)
    _fit(tmp_path / "control", control, control_teaching, ckpt_path=str(stripped))
    assert control_teaching.teacher.steps_taught == N_TRAIN // BATCH
    assert not all(torch.equal(a, b) for a, b in zip(_params(full), _params(control)))


def test_state_loaded_before_fit_is_applied_and_carried_over(tmp_path):
    first = PerformativeTeaching(head="model.head", policy="random", seed=5)
    module = _Module()
    _fit(tmp_path, module, first, max_epochs=1)
    state = first.state_dict()
    assert state["teacher"]["steps_taught"] == 4
    second = PerformativeTeaching(head="model.head", policy="random", seed=9)
    second.load_state_dict(state)
    assert second.teacher is None and second.state_dict() == state  # pending until fit start
    _fit(tmp_path, _Module(), second, max_epochs=1)
    assert second.teacher.steps_taught == 8 and second.teacher.seed == 5
    # a second fit with the same callback continues its teacher's state
    _fit(tmp_path, module, first, max_epochs=1)
    assert first.teacher.steps_taught == 8


# ------------------------------------------------------------------ 3. bad inputs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(optimizer=object()), "optimizer="),
        (dict(lr=0.1), "lr="),
        (dict(head=3), "head must be"),
        (dict(head="model..head"), "head must be"),
        (dict(head=nn.Linear(2, 2)), "head must be"),
        (dict(targets=1), "targets must be a function"),
        (dict(eps=5.0), "eps"),
    ],
)
def test_bad_arguments_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerformativeTeaching(**kwargs)


def test_construction_draws_nothing_from_the_global_rng():
    state = torch.get_rng_state()
    PerformativeTeaching(head="model.head", policy="random", eps=0.2)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("head", "error", "match"),
    [
        ("model.fc", ValueError, r"head='model\.fc' does not resolve.*'model\.head'"),
        ("model.body", HeadTypeError, "must be an nn.Linear.*Sequential"),
        ("model.body", ValueError, "must be an nn.Linear"),
        (lambda m: m.model.body[1], ValueError, "must be an nn.Linear.*ReLU"),
    ],
)
def test_bad_head_refused_at_fit_start(tmp_path, head, error, match):
    module = _Module()
    with pytest.raises(error, match=match):
        _fit(tmp_path, module, PerformativeTeaching(head=head), max_epochs=1)


def test_callable_head_and_failed_fit_detaches(tmp_path):
    class DictBatches(_Module):
        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch["x"]), batch["y"])

    module = DictBatches()
    ds = [{"x": torch.randn(8), "y": torch.tensor(i % 3)} for i in range(32)]
    teaching = PerformativeTeaching(head=lambda m: m.model.head)  # default targets: batch[1]
    trainer = _trainer(tmp_path, 1, [teaching])
    with pytest.raises(TypeError, match=r"batch\['labels'\]"):
        trainer.fit(module, DataLoader(ds, batch_size=8))
    PerformativeTeacher(module.model.head, lr=0.1).remove()  # on_exception detached it
    # with targets= the same batches are taught
    teaching = PerformativeTeaching(head=lambda m: m.model.head, targets=lambda b: b["y"])
    _trainer(tmp_path, 1, [teaching]).fit(module, DataLoader(ds, batch_size=8))
    assert teaching.teacher.steps_taught == 4


def test_batch_not_reaching_the_head_warns_once_and_is_disarmed(tmp_path):
    class Headless(_Module):
        def training_step(self, batch, batch_idx):
            return self.model.body(batch[0]).pow(2).mean()  # the head is never called

    logger = _MemoryLogger()
    teaching = PerformativeTeaching(head="model.head")
    with pytest.warns(UserWarning, match="was not taught") as record:
        _fit(tmp_path, Headless(), teaching, max_epochs=1, logger=logger)
    assert sum("was not taught" in str(w.message) for w in record) == 1
    assert teaching.teacher.steps_taught == 0 and teaching.teacher._queue == []
    assert not any(k.startswith("dht/") for _, m in logger.records for k in m)


def test_teaching_sampler_follows_the_trainer_epoch(tmp_path):
    g = torch.Generator().manual_seed(2)
    ds = TensorDataset(
        torch.randn(N_TRAIN, 8, generator=g), torch.randint(0, 3, (N_TRAIN,)), torch.arange(N_TRAIN)
    )
    seen: list[list[int]] = []

    class Recording(_Module):
        def training_step(self, batch, batch_idx):
            seen.append(batch[2].tolist())
            return super().training_step(batch[:2], batch_idx)

    sampler = TeachingSampler(ds, batch_size=BATCH, score="random", seed=3)
    teaching = PerformativeTeaching(head="model.head")
    trainer = _trainer(tmp_path, 2, [teaching], limit_train_batches=2)  # partial epochs
    trainer.fit(Recording(), DataLoader(ds, batch_sampler=sampler))
    # without set_epoch(1) the second epoch would repeat the first one's batches
    want = [p.tolist() for e in (0, 1) for p in sampler.candidate_pools(e)[:2]]
    assert seen == want and teaching.teacher.steps_taught == 4


def test_mixup_rearmed_in_training_step(tmp_path):
    class Mixing(_Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixup = MixupTeacher(num_classes=3, policy="beta", seed=0)

        def training_step(self, batch, batch_idx):
            x, y = batch
            x, y_soft = self.mixup(x, y)
            self.teaching.teacher.set_targets(y_soft)  # replaces what the callback armed
            return F.cross_entropy(self(x), y_soft)

    module = Mixing()
    module.teaching = PerformativeTeaching(head="model.head")
    _fit(tmp_path, module, module.teaching, max_epochs=1)
    assert module.teaching.teacher.steps_taught == N_TRAIN // BATCH == module.mixup.step


# ------------------------------------------------------------------ 4. import hygiene
def test_import_without_lightning():
    code = (
        "import sys\n"
        "import torchdht, torchdht.integrations\n"
        "assert not any(m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning'))"
        " for m in sys.modules), 'import torchdht imported lightning'\n"
        "sys.modules['lightning'] = None\n"
        "try:\n"
        "    import torchdht.integrations.lightning\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=worker_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    assert 'pip install "torchdht[lightning]"' in message and "\n" not in message


# ------------------------------------------------------------------ the README example
def test_readme_example_runs():
    assert len(README_EXAMPLE.splitlines()) <= 30
    ns: dict = {"__name__": "readme_example"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(README_EXAMPLE, "README-example", "exec"), ns)
    teacher = ns["teaching"].teacher
    assert teacher.steps_taught == 8 and 0 < teacher.stats["angle_max"] <= 0.1001
