"""The paper's MNIST learner: a two-layer MLP (appendix B)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Two-layer perceptron ``in_features -> hidden -> num_classes`` with a ReLU.

    The learner of the paper's MNIST experiment (appendix B: "input dimension
    - 128 - output dimension"). Inputs of any shape ``(B, ...)`` are flattened
    to ``(B, in_features)``, so MNIST batches of shape ``(B, 1, 28, 28)`` and
    ``(B, 784)`` both work.

    Choices the paper leaves open, made here:

    * both linear layers have biases (PyTorch's default; the paper does not
      say, and a bias in the head is what :class:`~torchdht.PerformativeTeacher`
      teaches together with the weights);
    * PyTorch's default initialisation of ``nn.Linear`` (Kaiming-uniform with
      ``a = sqrt(5)``, bias uniform in ``+-1/sqrt(fan_in)``); the paper names
      none.

    Args:
        num_classes: outputs of the classifier (default: 10).
        in_features: flattened input size (default: 784, MNIST).
        hidden: width of the hidden layer, which is also the feature
            dimension the teacher works in (default: 128).

    Attributes:
        encoder: ``Flatten -> Linear -> ReLU``, the features ``z``.
        head: the final ``nn.Linear`` (``hidden -> num_classes``), the layer a
            :class:`~torchdht.PerformativeTeacher` is attached to.
        feature_dim: ``hidden``.

    Example:
        >>> import torch
        >>> model = MLP(num_classes=10)
        >>> model(torch.randn(4, 1, 28, 28)).shape
        torch.Size([4, 10])
        >>> model.features(torch.randn(4, 784)).shape
        torch.Size([4, 128])
        >>> model.head
        Linear(in_features=128, out_features=10, bias=True)
    """

    def __init__(self, num_classes: int = 10, in_features: int = 784, hidden: int = 128) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_features", in_features),
                            ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.feature_dim = hidden
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The ``(B, hidden)`` features that reach the head."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(B, num_classes)``."""
        return self.head(self.encoder(x))
