"""The paper's CIFAR learners: CNN-3, CNN-6, CNN-9 and CNN-15 (Table 3).

Three stages of ``n`` 3x3 convolutions at 64, 128 and 256 channels (``n`` =
1, 2, 3, 5 for CNN-3/6/9/15), each followed by a 2x2 max-pool of stride 2,
then a 256-d fully connected feature layer and a linear classifier ``head``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CNN", "CNN_DEPTHS", "cnn3", "cnn6", "cnn9", "cnn15"]

CNN_DEPTHS: dict[str, int] = {"cnn3": 1, "cnn6": 2, "cnn9": 3, "cnn15": 5}
"""Architecture name -> 3x3 convolutions per stage (Table 3)."""

_WIDTHS = (64, 128, 256)


def _conv_bn_relu(c_in: int, c_out: int, kernel_size: int, padding: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift.
    return [
        nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class _Flatten1x1(nn.Module):
    """``(B, C, 1, 1) -> (B, C)``, with a clear error for other spatial sizes."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (1, 1):
            raise ValueError(
                f"the CNN's 4x4 feature convolution expects a 4x4 map, i.e. a 32x32 input "
                f"image; got a feature map of spatial size {tuple(x.shape[-2:])} (input of "
                f"{8 * (x.shape[-2] + 3)}x{8 * (x.shape[-1] + 3)} or so). Resize inputs to 32x32."
            )
        return x.flatten(1)


class CNN(nn.Module):
    """A CNN of Table 3 for 32x32 images, with its classifier exposed as ``head``.

    ``stage1 -> pool -> stage2 -> pool -> stage3 -> pool -> fc -> head``, where
    stage ``s`` is ``convs_per_stage`` layers of (3x3 conv, padding 1) +
    BatchNorm + ReLU at ``(64, 128, 256)[s]`` channels, pool is a 2x2 max-pool
    of stride 2 (32 -> 16 -> 8 -> 4), and ``fc`` is the 256-d "Fully
    Connected" layer of Table 3.

    Choices the paper leaves open, made here:

    * ``fc`` is a 4x4 convolution without padding from 256 to 256 channels on
      the 4x4 map + BatchNorm + ReLU, as in the authors' released code: a fully
      connected layer over the flattened 4x4x256 map, with BatchNorm. Hence the
      network takes 32x32 inputs only (another size raises a ``ValueError``).
    * Convolutions have no bias (each is followed by BatchNorm, whose shift
      plays that role); the ``head`` has one.
    * PyTorch's default initialisation everywhere (Kaiming-uniform with
      ``a = sqrt(5)`` for convolutions and linear layers, BatchNorm weight 1
      and bias 0); the paper names none.
    * The features reaching the head are post-ReLU (non-negative), 256-d.

    Args:
        convs_per_stage: 3x3 convolutions per stage: 1, 2, 3 and 5 give
            CNN-3/6/9/15 (any positive int is accepted).
        num_classes: outputs of the classifier (default: 10).
        in_channels: channels of the input image (default: 3).
        feature_dim: width of the feature layer (default: 256, the paper's).

    Attributes:
        encoder: everything before the head; ``encoder(x)`` is ``(B, feature_dim)``.
        head: the final ``nn.Linear``, where a
            :class:`~torchdht.PerformativeTeacher` is attached.
        feature_dim: width of the features.

    Example:
        >>> import torch
        >>> model = CNN(convs_per_stage=1, num_classes=100)  # CNN-3
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 100])
        >>> model.features(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 256])
        >>> sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
        3
    """

    def __init__(
        self,
        convs_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        feature_dim: int = 256,
    ) -> None:
        super().__init__()
        for name, value in (("convs_per_stage", convs_per_stage), ("num_classes", num_classes),
                            ("in_channels", in_channels), ("feature_dim", feature_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.convs_per_stage = convs_per_stage
        self.feature_dim = feature_dim
        layers: list[nn.Module] = []
        c_in = in_channels
        for width in _WIDTHS:
            for _ in range(convs_per_stage):
                layers += _conv_bn_relu(c_in, width, kernel_size=3, padding=1)
                c_in = width
            layers.append(nn.MaxPool2d(2, 2))
        layers += _conv_bn_relu(c_in, feature_dim, kernel_size=4, padding=0)
        layers.append(_Flatten1x1())
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The ``(B, feature_dim)`` features that reach the head."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(B, num_classes)`` for images of shape ``(B, C, 32, 32)``."""
        return self.head(self.encoder(x))


def cnn3(num_classes: int = 10, in_channels: int = 3) -> CNN:
    """CNN-3 of Table 3: one 3x3 convolution per stage.

    Example:
        >>> cnn3(100).head.out_features
        100
    """
    return CNN(1, num_classes, in_channels)


def cnn6(num_classes: int = 10, in_channels: int = 3) -> CNN:
    """CNN-6 of Table 3: two 3x3 convolutions per stage.

    Example:
        >>> cnn6().convs_per_stage
        2
    """
    return CNN(2, num_classes, in_channels)


def cnn9(num_classes: int = 10, in_channels: int = 3) -> CNN:
    """CNN-9 of Table 3: three 3x3 convolutions per stage.

    Example:
        >>> cnn9().convs_per_stage
        3
    """
    return CNN(3, num_classes, in_channels)


def cnn15(num_classes: int = 10, in_channels: int = 3) -> CNN:
    """CNN-15 of Table 3: five 3x3 convolutions per stage.

    Example:
        >>> cnn15().convs_per_stage
        5
    """
    return CNN(5, num_classes, in_channels)
