"""The paper's learners: the MNIST MLP and CNN-3/6/9/15 (appendix B, Table 3).

Every model exposes its final ``nn.Linear`` as ``model.head`` (where a
:class:`~torchdht.PerformativeTeacher` goes), everything before it as
``model.encoder`` and ``model.features(x)``, and the width of the features as
``model.feature_dim``.
"""

from __future__ import annotations

from .cnn import CNN, CNN_DEPTHS, cnn3, cnn6, cnn9, cnn15
from .mlp import MLP

__all__ = ["ARCHITECTURES", "CNN", "CNN_DEPTHS", "MLP", "build_model", "cnn3", "cnn6", "cnn9",
           "cnn15"]

ARCHITECTURES = ("mlp", *CNN_DEPTHS)
"""Names accepted by :func:`build_model`."""


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> MLP | CNN:
    """Build one of the paper's learners by name.

    Args:
        name: ``"mlp"`` (784-128-C, for MNIST; ``in_channels`` is ignored) or
            one of ``"cnn3"``, ``"cnn6"``, ``"cnn9"``, ``"cnn15"`` (32x32 inputs).
        num_classes: outputs of the classifier (default: 10).
        in_channels: image channels of the CNNs (default: 3).

    Returns:
        The model, with ``.head``, ``.encoder``, ``.features()`` and ``.feature_dim``.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> build_model("cnn9", num_classes=100).feature_dim
        256
        >>> build_model("mlp").head.in_features
        128
    """
    if name == "mlp":
        return MLP(num_classes=num_classes)
    if name not in CNN_DEPTHS:
        raise ValueError(f"unknown architecture {name!r}; choose from {list(ARCHITECTURES)}")
    return CNN(CNN_DEPTHS[name], num_classes=num_classes, in_channels=in_channels)
