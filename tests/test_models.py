"""The paper's architectures: shapes, the 256-d features, the exposed head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchdht
from torchdht.models import ARCHITECTURES, CNN, CNN_DEPTHS, MLP, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _n_convs(model: nn.Module, k: int) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (k, k) for m in model.modules())


@pytest.mark.parametrize("name", list(CNN_DEPTHS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_cnn_forward_backward_shapes(name: str, num_classes: int) -> None:
    model = build_model(name, num_classes=num_classes)
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, num_classes, (2,))
    z = model.features(x)
    assert z.shape == (2, 256) and model.feature_dim == 256
    assert bool((z >= 0).all())  # post-ReLU features
    logits = model(x)
    assert logits.shape == (2, num_classes)
    F.cross_entropy(logits, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, pname
        assert torch.isfinite(p.grad).all(), pname
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 256
    # Table 3: 1/2/3/5 3x3 convs per stage, three stages, three max-pools.
    assert _n_convs(model, 3) == 3 * CNN_DEPTHS[name]
    assert _n_convs(model, 4) == 1
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3 * CNN_DEPTHS[name] + 1
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    d = CNN_DEPTHS[name]
    assert widths == [64] * d + [128] * d + [256] * d + [256]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_cnn_rejects_other_sizes() -> None:
    with pytest.raises(ValueError, match="32x32"):
        build_model("cnn3")(torch.randn(1, 3, 64, 64))


def test_cnn_single_channel() -> None:
    assert CNN(1, num_classes=10, in_channels=1)(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_mlp_shapes() -> None:
    model = MLP(num_classes=10)
    for x in (torch.randn(3, 784), torch.randn(3, 1, 28, 28)):
        assert model.features(x).shape == (3, 128)
        out = model(x)
        assert out.shape == (3, 10)
    F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    assert model.encoder[1].weight.grad.shape == (128, 784)
    assert model.head.weight.shape == (10, 128) and model.head.bias is not None


def test_build_model_errors() -> None:
    assert set(ARCHITECTURES) == {"mlp", "cnn3", "cnn6", "cnn9", "cnn15"}
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet18")
    with pytest.raises(ValueError, match="positive int"):
        MLP(num_classes=0)
    with pytest.raises(ValueError, match="positive int"):
        CNN(0)


@pytest.mark.parametrize("name", ["mlp", "cnn3"])
def test_teacher_attaches_to_head(name: str) -> None:
    model = build_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 1, 28, 28) if name == "mlp" else torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    with torchdht.PerformativeTeacher(model.head, optimizer=opt, seed=0) as teacher:
        teacher.set_targets(y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert teacher.stats["n_rows"] == 4
        assert 0 < teacher.stats["angle_max"] <= 0.1001
