"""PerformativeTeachingCallback in a real transformers.Trainer (tiny BERT, CPU)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch

from conftest import worker_env

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from torchdht.errors import MissingTargetsError  # noqa: E402
from torchdht.integrations.transformers import (  # noqa: E402
    TEACHER_STATE_NAME,
    PerformativeTeachingCallback,
)

CONFIG = dict(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    num_labels=3,
)


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**CONFIG))


def _data(n: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 64, (12,), generator=g),
            "attention_mask": torch.ones(12, dtype=torch.long),
            "labels": torch.tensor(i % 3),
        }
        for i in range(n)
    ]


def _args(out: Any, **kw: Any) -> TrainingArguments:
    base: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        learning_rate=1e-3,
    )
    base.update(kw)
    return TrainingArguments(**base)


class _Probe(TrainerCallback):
    """Records what the teacher saw, from after the PerformativeTeachingCallback."""

    def __init__(self, dht: PerformativeTeachingCallback) -> None:
        self.dht = dht
        self.lr_at_step: list[float] = []
        self.eta_at_step: list[float] = []
        self.taught_at_begin: int | None = None
        self.taught_at_evaluate: list[tuple[int, int]] = []

    def on_train_begin(self, args, state, control, **kw):
        assert self.dht.teacher is not None
        self.taught_at_begin = self.dht.teacher.steps_taught

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        self.lr_at_step.append(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kw):
        self.eta_at_step.append(self.dht.teacher.stats["eta"])

    def on_evaluate(self, args, state, control, **kw):
        self.taught_at_evaluate.append((state.global_step, self.dht.teacher.steps_taught))


# ---------------------------------------------------------------- 1. teaching and logs
class _Reporter(TrainerCallback):
    """Stands in for a report_to integration: records the logs it is handed."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kw):
        self.seen.append(dict(logs))


def test_every_training_forward_taught_logged_and_eval_untaught(tmp_path):
    model = _model()
    dht = PerformativeTeachingCallback("classifier", eps=0.1, seed=0)
    probe = _Probe(dht)
    reporter = _Reporter()
    accumulation = 2
    trainer = Trainer(
        model=model,
        args=_args(
            tmp_path,
            max_steps=3,
            gradient_accumulation_steps=accumulation,
            eval_strategy="steps",
            eval_steps=2,
        ),
        train_dataset=_data(),
        eval_dataset=_data(16, seed=1),
        callbacks=[reporter, probe],
    )
    # first, as documented, so that reporters (which run before user callbacks) see dht/
    trainer.callback_handler.callbacks.insert(0, dht)
    trainer.train()
    teacher = dht.teacher
    assert teacher is not None
    assert teacher.steps_taught == 3 * accumulation  # every micro-batch forward, nothing more
    # the evaluations at step 2 and at the end ran with the teacher attached, taught nothing
    assert probe.taught_at_evaluate == [(2, 2 * accumulation), (3, 3 * accumulation)]
    # eta is the Trainer's lr at each step, following the linear-decay scheduler
    assert len(set(probe.lr_at_step)) == 3
    assert probe.eta_at_step == pytest.approx(probe.lr_at_step, rel=1e-6)

    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2, 3]
    for h in train_logs:
        assert h["dht/steps_taught"] == h["step"] * accumulation
        for key in ("angle_mean", "angle_max", "objective_drop", "theta_dist", "eta"):
            assert math.isfinite(h[f"dht/{key}"])
        assert 0 < h["dht/angle_max"] <= 2 * math.asin(0.1 / 2) + 1e-6
        assert h["dht/loss_untaught"] > 0 and h["dht/loss_taught"] > 0
        assert h["dht/eta"] == pytest.approx(h["learning_rate"], rel=1e-6)
    assert [h for h in reporter.seen if "loss" in h] == [
        {k: v for k, v in h.items() if k != "step"} for h in train_logs
    ]
    others = [h for h in trainer.state.log_history if "loss" not in h]
    assert any("eval_loss" in h for h in others)
    assert not any(k.startswith("dht/") for h in others for k in h)

    # after training the hooks are gone, and a later evaluate() teaches nothing
    assert len(model.classifier._forward_pre_hooks) == 0
    assert len(model._forward_pre_hooks) == 0
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and teacher.steps_taught == 3 * accumulation


# ------------------------------------------------------------------------ 2. resume
class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


def _run(out, *, stop=None, resume=None, **cb_kwargs):
    model = _model()
    dht = PerformativeTeachingCallback(eps=0.5, policy="random", seed=3, **cb_kwargs)
    probe = _Probe(dht)
    callbacks: list[TrainerCallback] = [dht, probe]
    if stop is not None:
        callbacks.append(_StopAt(stop))
    trainer = Trainer(
        model=model,
        args=_args(out, max_steps=4, save_strategy="steps", save_steps=2),
        train_dataset=_data(),
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, dht, probe, trainer


def _same_params(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _same_teacher(a: dict, b: dict) -> bool:
    return (
        a["steps_taught"] == b["steps_taught"]
        and a["seed"] == b["seed"]
        and a["enabled"] == b["enabled"]
        and a["rng"][0] == b["rng"][0]
        and torch.equal(a["rng"][1], b["rng"][1])
    )


def test_resume_restores_the_teacher_bit_identically(tmp_path):
    full_model, full, _, full_trainer = _run(tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoint-2"
    saved = torch.load(ckpt / TEACHER_STATE_NAME, weights_only=True)
    assert saved["global_step"] == 2 and saved["teacher"]["steps_taught"] == 2

    # interrupted at step 2, resumed with resume_from_checkpoint=True: the callback finds
    # output_dir/checkpoint-2 itself
    _, part, _, _ = _run(tmp_path / "part", stop=2)
    assert part.teacher is not None and part.teacher.steps_taught == 2
    model, dht, probe, trainer = _run(tmp_path / "part", resume=True)
    assert probe.taught_at_begin == 2  # restored before the first resumed step
    assert dht.teacher is not None and dht.teacher.steps_taught == 4
    assert _same_teacher(dht.teacher.state_dict(), full.teacher.state_dict())
    # Trainer restores model, optimizer, scheduler, data order and the global RNG (dropout);
    # the callback restores the teacher's generator: the run is bit-identical
    assert _same_params(model, full_model)
    assert trainer.state.log_history[:-1] == full_trainer.state.log_history[:-1]  # with dht/

    # a checkpoint outside output_dir: pass its folder to the callback
    model, dht, probe, _ = _run(tmp_path / "other", resume=str(ckpt), resume_from_checkpoint=ckpt)
    assert probe.taught_at_begin == 2
    assert _same_params(model, full_model)

    # ... without it the teacher starts afresh, with a warning, and the run differs
    with pytest.warns(UserWarning, match="resume_from_checkpoint"):
        model, dht, probe, _ = _run(tmp_path / "other2", resume=str(ckpt))
    assert probe.taught_at_begin == 0
    assert not _same_params(model, full_model)

    # a folder given to the callback that holds no teacher state is refused
    with pytest.raises(FileNotFoundError, match="resume_from_checkpoint"):
        _run(tmp_path / "other3", resume=str(ckpt), resume_from_checkpoint=tmp_path / "part")


# -------------------------------------------------------------------- 3. bad inputs
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(head=3), TypeError, "head must be a dotted attribute path"),
        (dict(head=""), ValueError, "head must be a dotted attribute path"),
        (dict(head="classifier..w"), ValueError, "head must be a dotted attribute path"),
        (dict(label_key=0), TypeError, "label_key"),
        (dict(optimizer=object()), ValueError, "optimizer="),
        (dict(lr=0.1), ValueError, "lr="),
        (dict(eps=5.0), ValueError, "eps"),
        (dict(policy="best"), ValueError, "policy"),
        (dict(epsilon=0.1), TypeError, "epsilon"),
        (dict(resume_from_checkpoint=3), TypeError, "resume_from_checkpoint"),
    ],
)
def test_bad_arguments_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        PerformativeTeachingCallback(**kwargs)


@pytest.mark.parametrize(
    "head, error, match",
    [
        (
            "clasifier",
            ValueError,
            r"head='clasifier' does not resolve on "
            r"BertForSequenceClassification \(its submodules: bert, dropout, classifier\)",
        ),
        ("bert.pooler.nope", ValueError, "head='bert.pooler.nope' does not resolve"),
        (
            "bert.pooler",
            TypeError,
            r"head='bert.pooler' must give the model's final nn.Linear.*"
            r"its last nn.Linear is at 'dense'",
        ),
        (lambda m: m.dropout, TypeError, "the head callable must give"),
    ],
)
def test_bad_head_refused_at_trainer_init(tmp_path, head, error, match):
    with pytest.raises(error, match=match):
        Trainer(
            model=_model(),
            args=_args(tmp_path),
            train_dataset=_data(8),
            callbacks=[PerformativeTeachingCallback(head)],
        )


def test_callable_head_and_label_smoothing_limit(tmp_path):
    dht = PerformativeTeachingCallback(lambda m: m.classifier, eps=0.1)
    trainer = Trainer(
        model=_model(), args=_args(tmp_path, max_steps=1), train_dataset=_data(8), callbacks=[dht]
    )
    trainer.train()
    assert dht.teacher is not None and dht.teacher.steps_taught == 1
    # with label smoothing the Trainer pops the labels before the forward (documented limit)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, max_steps=1, label_smoothing_factor=0.1),
        train_dataset=_data(8),
        callbacks=[PerformativeTeachingCallback(eps=0.1)],
    )
    with pytest.raises(MissingTargetsError):
        trainer.train()


# ------------------------------------------------------------------- 4. import hygiene
def test_import_hygiene_without_transformers():
    code = textwrap.dedent(
        """
        import sys
        import torchdht, torchdht.integrations
        assert "transformers" not in sys.modules, "import torchdht imported transformers"
        assert "accelerate" not in sys.modules
        sys.modules["transformers"] = None  # as if not installed
        try:
            import torchdht.integrations.transformers
        except ImportError as err:
            print("ERR", err)
        else:
            raise SystemExit("the adapter imported without transformers")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=worker_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERR ")
    assert 'pip install "torchdht[transformers]"' in lines[0]


# ----------------------------------------------------------------- 5. README example
README_EXAMPLE = """\
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from torchdht.integrations.transformers import PerformativeTeachingCallback

config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32, num_labels=3)
model = BertForSequenceClassification(config)  # tiny and random: nothing to download
g = torch.Generator().manual_seed(0)
data = [{"input_ids": torch.randint(0, 64, (12,), generator=g),
         "attention_mask": torch.ones(12, dtype=torch.long),
         "labels": torch.tensor(i % 3)} for i in range(32)]

callback = PerformativeTeachingCallback(head="classifier", eps=0.1)  # eta: the Trainer's lr
args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8,
                         max_steps=4, logging_steps=2, save_steps=2, report_to=[],
                         use_cpu=True)
trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
trainer.train()  # to continue later: trainer.train(resume_from_checkpoint=True)

print(callback.teacher.steps_taught)  # 4: every training forward was taught
print({k: f"{v:.3g}" for k, v in trainer.state.log_history[-2].items() if "dht/" in k})
"""


def test_readme_example_runs(capsys):
    assert len(README_EXAMPLE.splitlines()) <= 30
    ns: dict[str, Any] = {}
    exec(compile(README_EXAMPLE, "README-transformers", "exec"), ns)
    assert ns["callback"].teacher.steps_taught == 4
    assert ns["trainer"].state.log_history[-2]["dht/steps_taught"] == 4
    out = capsys.readouterr().out
    assert "dht/angle_mean" in out
