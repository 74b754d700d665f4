"""PerformativeTeacher on real timm models (random weights, nothing downloaded)."""

from __future__ import annotations

import copy
import importlib.util
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchdht

timm = pytest.importorskip("timm")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "timm_any_model.py"


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def _batch(n: int = 8, size: int = 32):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, teach: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    teacher = torchdht.PerformativeTeacher(model.get_classifier(), optimizer=opt) if teach else None
    try:
        model.train()
        if teacher is not None:
            teacher.set_targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if teacher is not None:
            assert teacher.stats["n_rows"] == x.shape[0]
    finally:
        if teacher is not None:
            teacher.remove()
    return loss, {n: p.grad for n, p in model.named_parameters()}


# ----------------------------------------------------------------- example
def test_example_runs():
    spec = importlib.util.spec_from_file_location("timm_any_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--steps", "3", "--batch-size", "4", "--log-every", "1"])
    assert out["steps"] == 3
    assert torch.isfinite(torch.tensor(out["loss"]))
    assert 0.0 < out["stats"]["angle_mean"] <= 0.1001


# ---------------------------------------------------------------- resnet18
def test_resnet18_encoder_grads_match_presence():
    base = _resnet18()
    plain, taught = base, copy.deepcopy(base)
    x, y = _batch()
    loss0, g0 = _grads(plain, x, y, teach=False)
    loss1, g1 = _grads(taught, x, y, teach=True)
    assert torch.isfinite(loss0) and torch.isfinite(loss1)
    head_names = {"fc.weight", "fc.bias"}
    encoder = [n for n, g in g0.items() if g is not None and n not in head_names]
    assert len(encoder) > 50
    for name in encoder:
        assert g1[name] is not None, name
        assert torch.isfinite(g1[name]).all(), name
    # The teacher moved the features, so the encoder's gradient differs somewhere.
    assert any(not torch.equal(g0[n], g1[n]) for n in encoder)


def test_resnet18_batchnorm_stats_bit_identical():
    base = _resnet18()
    plain, taught = base, copy.deepcopy(base)
    x, y = _batch()
    opt = torch.optim.SGD(taught.parameters(), lr=0.1)
    plain.train()
    taught.train()
    plain(x)
    with torchdht.PerformativeTeacher(taught.get_classifier(), optimizer=opt) as teacher:
        teacher.set_targets(y)
        taught(x)
        assert teacher.steps_taught == 1
    bufs0 = dict(plain.named_buffers())
    bufs1 = dict(taught.named_buffers())
    checked = 0
    for name, b0 in bufs0.items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(b0, bufs1[name]), name
            checked += 1
    assert checked >= 3 * 20


def test_resnet18_eval_output_bit_identical():
    model = _resnet18()
    x, _ = _batch()
    model.eval()
    with torch.no_grad():
        ref = model(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchdht.PerformativeTeacher(model.get_classifier(), optimizer=opt) as teacher:
        with torch.no_grad():
            out = model(x)
        out_grad = model(x)  # eval mode with grad enabled: still untouched
        assert teacher.steps_taught == 0
    assert torch.equal(ref, out)
    assert torch.equal(ref, out_grad.detach())


def test_resnet18_policy_none_bit_identical():
    base = _resnet18()
    plain, taught = base, copy.deepcopy(base)
    x, y = _batch()
    plain.train()
    taught.train()
    ref = plain(x)
    opt = torch.optim.SGD(taught.parameters(), lr=0.1)
    with torchdht.PerformativeTeacher(taught.get_classifier(), optimizer=opt,
                                      policy="none") as teacher:
        teacher.set_targets(y)
        out = taught(x)
        assert teacher.stats["angle_max"] == 0.0
    assert torch.equal(ref, out)


# --------------------------------------------------------------------- ViT
def test_vit_training_step():
    torch.manual_seed(0)
    # A real timm ViT, shrunk to 32x32 inputs and 4 blocks to stay fast on CPU.
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10,
                              img_size=32, patch_size=4, depth=4)
    x, y = _batch(n=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear)
    seen = []
    spy = head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    try:
        with torchdht.PerformativeTeacher(head, optimizer=opt) as teacher:
            model.train()
            teacher.set_targets(y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            stats = teacher.stats
    finally:
        spy.remove()
    assert torch.isfinite(loss)
    assert seen == [torch.Size([4, model.num_features])]
    assert 0.0 < stats["angle_mean"] <= 0.1001
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------- head type errors
def test_identity_head_raises_typeerror():
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    head = model.get_classifier()
    assert isinstance(head, nn.Identity)
    with pytest.raises(TypeError, match=r"Identity.*get_classifier\(\)"):
        torchdht.PerformativeTeacher(head, lr=0.1)


def test_whole_model_raises_typeerror():
    model = _resnet18()
    with pytest.raises(TypeError, match=r"ResNet.*get_classifier\(\)"):
        torchdht.PerformativeTeacher(model, lr=0.1)
    # Nothing was attached: the real head is still free.
    torchdht.PerformativeTeacher(model.get_classifier(), lr=0.1).remove()


# ------------------------------------------------------ (B, T, D) token head
class TinyTokenModel(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 16, classes: int = 7) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_token_head_btd(soft: bool):
    torch.manual_seed(0)
    model = TinyTokenModel()
    B, T, C = 4, 5, 7
    tokens = torch.randint(0, 50, (B, T))
    if soft:
        y = torch.softmax(torch.randn(B, T, C), dim=-1)
    else:
        y = torch.randint(0, C, (B, T))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    spy = model.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    embed_before = model.embed.weight.detach().clone()
    try:
        with torchdht.PerformativeTeacher(model.head, optimizer=opt) as teacher:
            model.train()
            teacher.set_targets(y)
            logits = model(tokens)
            assert logits.shape == (B, T, C)
            # cross_entropy takes the class dim second, for hard and soft targets alike.
            target = y.transpose(1, 2) if soft else y
            loss = F.cross_entropy(logits.transpose(1, 2), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            stats = teacher.stats
    finally:
        spy.remove()
    assert seen == [torch.Size([B, T, 16])]
    assert torch.isfinite(loss)
    assert stats["n_rows"] == B * T
    assert 0.0 < stats["angle_mean"] <= 0.1001
    assert model.embed.weight.grad is not None
    assert torch.isfinite(model.embed.weight.grad).all()
    assert not torch.equal(model.embed.weight.detach(), embed_before)
