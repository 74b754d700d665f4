"""The networks of the unrolled teachers, and helpers to build, freeze and fingerprint them.

* :func:`policy_mlp` -- the paper's MLP policies (transformation, black-box, VAE codes).
* GAN: :class:`MLPGenerator`, :class:`MLPDiscriminator` (half-moon, appendix
  C.5) and :class:`ConvGenerator`, :class:`ConvDiscriminator` (a conditional
  DCGAN on 28x28 images, appendix C.7); :class:`Projection` maps images to the
  learner's projected features.
* VAE: :class:`ConditionalVAE` and its two architectures, :class:`MLPVAE`
  (half-moon) and :class:`ConvVAE` (MNIST); :func:`check_vae`.
* Helpers: :func:`build_seeded` (initialise under a forked, seeded global
  RNG), :func:`frozen_copy`, :func:`feature_map`, and the checkpoint
  fingerprints :func:`digest`, :func:`signature`, :func:`describe`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..._checks import check_int
from ...errors import TeacherTypeError

__all__ = [
    "ConditionalVAE",
    "ConvDiscriminator",
    "ConvGenerator",
    "ConvVAE",
    "MLPDiscriminator",
    "MLPGenerator",
    "MLPVAE",
    "Projection",
    "build_seeded",
    "check_vae",
    "describe",
    "digest",
    "feature_map",
    "frozen_copy",
    "policy_mlp",
    "signature",
]


def policy_mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (32, 16),
    batch_norm: bool = False,
) -> nn.Sequential:
    """An MLP policy: ``Linear (+ BatchNorm1d) + ReLU`` per hidden layer, then a ``Linear``.

    The paper's policies: half-moon ``hidden=(32, 16)``; MNIST 3/5
    ``hidden=(128, 256, 512, 512, 1024), batch_norm=True``.

    Example:
        >>> policy_mlp(8, 2)
        Sequential(
          (0): Linear(in_features=8, out_features=32, bias=True)
          (1): ReLU()
          (2): Linear(in_features=32, out_features=16, bias=True)
          (3): ReLU()
          (4): Linear(in_features=16, out_features=2, bias=True)
        )
    """
    in_features = check_int(in_features, "in_features", 1)
    out_features = check_int(out_features, "out_features", 1)
    hidden = tuple(check_int(h, "hidden sizes", 1) for h in hidden)
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


# ===================================================================== helpers
def digest(*tensors: Tensor) -> str:
    """A short content hash of tensors (dtype, shape and bytes)."""
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def signature(module: nn.Module) -> dict[str, Any]:
    """Class name and the names/shapes of its parameters and buffers (a checkpoint check)."""
    shapes = [[n, list(t.shape)] for n, t in module.state_dict().items()]
    return {"class": type(module).__name__, "tensors": shapes}


def frozen_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A private copy of ``module`` in ``dtype``: eval mode, no gradients (the original is kept)."""
    m = copy.deepcopy(module).to(dtype)
    m.requires_grad_(False)
    return m.eval()


def feature_map(
    fn: Callable[[Tensor], Tensor] | None, dtype: torch.dtype
) -> Callable[[Tensor], Tensor] | None:
    """``to_features`` checked: None, the callable, or a frozen copy of it if a module."""
    if fn is not None and not callable(fn):
        raise TeacherTypeError("to_features must be callable (samples -> (N, D) features) or None")
    return frozen_copy(fn, dtype) if isinstance(fn, nn.Module) else fn


def describe(fn: Callable[..., Any] | None) -> Any:
    """A checkpoint-comparable description of a feature map: class and weights digest, or name."""
    if fn is None:
        return None
    if isinstance(fn, nn.Module):
        sd = fn.state_dict()
        return {"class": type(fn).__name__, "digest": digest(*sd.values()) if sd else ""}
    return getattr(fn, "__qualname__", type(fn).__name__)


def _seeded(seed: int | None, salt: int) -> int:
    """A module-initialisation seed derived from ``seed`` (random when None)."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed) * 1000003 + salt)
    return int(torch.randint(0, 2**62, (1,), generator=g))


def build_seeded(seed: int | None, salt: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a module under a forked global RNG seeded from ``seed`` (the caller's RNG is kept)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeded(seed, salt))
        return make()


# ===================================================================== modules
class Projection(nn.Module):
    """``to_features`` for image generators: ``images.flatten(1) @ P``, (N, 1, 28, 28) -> (N, 24).

    Holds its own copy of ``P`` (a buffer), so the caller's tensor is never touched.

    Example:
        >>> proj = Projection(torch.ones(4, 2))
        >>> proj(torch.ones(3, 1, 2, 2))
        tensor([[4., 4.],
                [4., 4.],
                [4., 4.]])
    """

    def __init__(self, projection: Tensor) -> None:
        super().__init__()
        if not isinstance(projection, Tensor) or projection.dim() != 2 or \
                not projection.is_floating_point():
            raise TeacherTypeError("projection must be a floating-point tensor (pixels, features)")
        self.matrix: Tensor
        self.register_buffer("matrix", projection.detach().clone())

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(1) @ self.matrix.to(images.dtype)


class MLPGenerator(nn.Module):
    """A conditional MLP generator: ``net(cat(h, onehot))`` with ``h = [state, (x), z]``.

    The paper's half-moon generator is ``in_features=6, classes=2, out_features=2``
    (input 8 = ``w``, ``w - w*``, ``z`` in 2-d and the one-hot label; hidden 32 - 16, ReLU).

    Example:
        >>> g = MLPGenerator(6, 2, 2)
        >>> g(torch.zeros(3, 6), torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(self, in_features: int, classes: int, out_features: int,
                 hidden: Sequence[int] = (32, 16)) -> None:
        super().__init__()
        self.net = policy_mlp(in_features + classes, out_features, hidden)

    def forward(self, h: Tensor, onehot: Tensor) -> Tensor:
        return self.net(torch.cat([h, onehot], dim=1))


class MLPDiscriminator(nn.Module):
    """A conditional MLP discriminator on ``cat(x, onehot)``: Linear - LeakyReLU - Dropout - Linear.

    The paper's half-moon discriminator: input 4 (``x`` and the one-hot label)
    - 8 - 1, LeakyReLU(0.2), Dropout(0.3). Returns one logit per row, (N,).

    Example:
        >>> MLPDiscriminator(2, 2)(torch.zeros(5, 2), torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, in_features: int, classes: int, hidden: int = 8,
                 negative_slope: float = 0.2, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features + classes, hidden), nn.LeakyReLU(negative_slope),
            nn.Dropout(dropout), nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor, onehot: Tensor) -> Tensor:
        return self.net(torch.cat([x, onehot], dim=1)).reshape(-1)


class ConvGenerator(nn.Module):
    """A conditional DCGAN generator making 28x28 images in [-1, 1] (appendix C.7).

    Block ``x`` lifts ``h`` (N, in_features) to (N, width, 3, 3), block ``y``
    the one-hot label to (N, width, 3, 3) (each a transposed convolution,
    BatchNorm and ReLU); the concatenation goes through block ``xy``
    (transposed convolutions 3x3 -> 7x7 -> 14x14 -> 28x28 with BatchNorm and
    ReLU, then tanh).

    Example:
        >>> g = ConvGenerator(10, 2, width=8).eval()
        >>> img = g(torch.zeros(2, 10), torch.zeros(2, 2))
        >>> img.shape, bool(img.abs().max() <= 1)
        (torch.Size([2, 1, 28, 28]), True)
    """

    def __init__(self, in_features: int, classes: int, width: int = 128,
                 channels: int = 1) -> None:
        super().__init__()

        def block(i: int, o: int, k: int, s: int, p: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(i, o, k, s, p, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        half = max(width // 2, 1)
        self.x_block = nn.Sequential(*block(in_features, width, 3, 1, 0))
        self.y_block = nn.Sequential(*block(classes, width, 3, 1, 0))
        self.xy_block = nn.Sequential(
            *block(2 * width, width, 3, 2, 0),            # 3 -> 7
            *block(width, half, 4, 2, 1),                 # 7 -> 14
            nn.ConvTranspose2d(half, channels, 4, 2, 1),  # 14 -> 28
            nn.Tanh(),
        )

    def forward(self, h: Tensor, onehot: Tensor) -> Tensor:
        a = self.x_block(h[:, :, None, None])
        b = self.y_block(onehot[:, :, None, None])
        return self.xy_block(torch.cat([a, b], dim=1))


class ConvDiscriminator(nn.Module):
    """A conditional conv discriminator on 28x28 images and label maps (appendix C.7).

    Block ``x``: the image (N, 1, 28, 28) to (N, width, 14, 14); block ``y``:
    the one-hot label broadcast to (N, classes, 28, 28) to (N, width, 14, 14)
    (each a strided convolution and LeakyReLU(0.2)); block ``xy``: a strided
    convolution to 7x7, LeakyReLU, Dropout, a linear layer to one logit (N,).

    Example:
        >>> d = ConvDiscriminator(2, width=4)
        >>> d(torch.zeros(3, 1, 28, 28), torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, classes: int, width: int = 32, channels: int = 1,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.x_block = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.y_block = nn.Sequential(nn.Conv2d(classes, width, 4, 2, 1), nn.LeakyReLU(0.2))
        self.xy_block = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1),
        )

    def forward(self, images: Tensor, onehot: Tensor) -> Tensor:
        maps = onehot[:, :, None, None].expand(-1, -1, *images.shape[-2:])
        h = torch.cat([self.x_block(images), self.y_block(maps)], dim=1)
        return self.xy_block(h).reshape(-1)


class ConditionalVAE(nn.Module):
    """Base of the conditional VAEs: ``encode(x, onehot) -> (mu, logvar)``, ``decode(u, onehot)``.

    Subclasses set ``latent`` (the code size) and ``classes``. ``forward``
    returns ``(reconstruction, mu, logvar)`` with a reparameterised code
    (``noise`` given, or drawn from the global RNG).
    """

    latent: int
    classes: int

    def encode(self, x: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def decode(self, u: Tensor, onehot: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, onehot: Tensor,
                noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x, onehot)
        if noise is None:
            noise = torch.randn_like(mu)
        u = mu + torch.exp(0.5 * logvar) * noise
        return self.decode(u, onehot), mu, logvar


class MLPVAE(ConditionalVAE):
    """The half-moon VAE of appendix C.5: MLP encoder and decoder, both conditioned on the label.

    Encoder ``cat(x, onehot)`` (4) - 128 - 256 - 128 - ``2 * latent``;
    decoder ``cat(u, onehot)`` - 128 - 256 - 128 - ``in_features``; ReLU.

    Example:
        >>> vae = MLPVAE(2, 2, latent=2)
        >>> mu, logvar = vae.encode(torch.zeros(3, 2), torch.zeros(3, 2))
        >>> mu.shape, vae.decode(mu, torch.zeros(3, 2)).shape
        (torch.Size([3, 2]), torch.Size([3, 2]))
    """

    def __init__(self, in_features: int = 2, classes: int = 2, latent: int = 2,
                 hidden: Sequence[int] = (128, 256, 128)) -> None:
        super().__init__()
        self.latent, self.classes, self.in_features = int(latent), int(classes), int(in_features)
        self.encoder = policy_mlp(in_features + classes, 2 * latent, hidden)
        self.decoder = policy_mlp(latent + classes, in_features, hidden)

    def encode(self, x: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(torch.cat([x, onehot], dim=1))
        return out[:, : self.latent], out[:, self.latent :]

    def decode(self, u: Tensor, onehot: Tensor) -> Tensor:
        return self.decoder(torch.cat([u, onehot], dim=1))


class ConvVAE(ConditionalVAE):
    """The MNIST VAE of appendix C.7: two convolutions in, two transposed convolutions out.

    Encoder: the image (N, 1, 28, 28) with the label as constant maps, two
    strided convolutions (28 -> 14 -> 7, ReLU), a linear layer to
    ``2 * latent``. Decoder: ``cat(u, onehot)`` through a linear layer to
    (N, 2 width, 7, 7), two transposed convolutions (7 -> 14 -> 28), tanh, so
    images are in [-1, 1] like the data.

    Example:
        >>> vae = ConvVAE(2, latent=4, width=4)
        >>> rec, mu, logvar = vae(torch.zeros(2, 1, 28, 28), torch.zeros(2, 2))
        >>> rec.shape, mu.shape
        (torch.Size([2, 1, 28, 28]), torch.Size([2, 4]))
    """

    def __init__(self, classes: int = 2, latent: int = 16, width: int = 32,
                 channels: int = 1) -> None:
        super().__init__()
        self.latent, self.classes, self.width = int(latent), int(classes), int(width)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels + classes, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, 2 * latent),
        )
        self.lift = nn.Sequential(nn.Linear(latent + classes, 2 * width * 7 * 7), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh(),
        )

    def encode(self, x: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor]:
        maps = onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        out = self.encoder(torch.cat([x, maps], dim=1))
        return out[:, : self.latent], out[:, self.latent :]

    def decode(self, u: Tensor, onehot: Tensor) -> Tensor:
        h = self.lift(torch.cat([u, onehot], dim=1))
        return self.decoder(h.reshape(-1, 2 * self.width, 7, 7))


def check_vae(vae: object) -> Any:
    """``vae`` itself (typed loosely: it has ``encode``, ``decode``, ``latent``) once checked."""
    if not isinstance(vae, nn.Module) or not callable(getattr(vae, "encode", None)) or \
            not callable(getattr(vae, "decode", None)):
        raise TeacherTypeError(
            "vae must be an nn.Module with encode(x, onehot) -> (mu, logvar) and "
            f"decode(u, onehot) (e.g. MLPVAE, ConvVAE), got {type(vae).__name__}"
        )
    latent = getattr(vae, "latent", None)
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
        raise TeacherTypeError(f"vae must have an int attribute latent >= 1 (the code size), got "
                               f"{latent!r}")
    return vae
