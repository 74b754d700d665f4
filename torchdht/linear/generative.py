"""Generative teaching policies: GAN- and VAE-based teachers (section 3.3.2, appendix C.5-C.7).

Both teachers are trained like :class:`~torchdht.linear.TransformTeacher`:
unroll ``v`` SGD steps of ``K`` learners on the policy's examples, score the
learners on ``|w_v - w*|^2`` (plus ``alpha`` times the auxiliary loss), one
Adam step; the learners carry over between outer iterations. What differs is
how an example is made and what is added to the outer loss:

* :class:`GANTeacher` -- a conditional generator ``G(w, w - w*, z, y)``
  (``z ~ N(0, I)``) makes a *sample*; ``to_features`` maps it to the
  learner's input (identity on half-moon, ``image.flatten(1) @ P`` on
  MNIST). A discriminator ``D(sample, y)`` is trained on real versus
  generated samples (``d_steps`` steps per generator step), and the
  generator's outer loss gets ``adv_weight`` times the non-saturating
  adversarial term ``mean softplus(-D(G(z), y))`` over the examples it made in
  the unroll. :func:`halfmoon_gan` and :func:`mnist_gan` build the paper's two
  settings.
* :class:`VAETeacher` -- a conditional VAE pretrained on the data
  (:func:`pretrain_vae`, cached on disk) is frozen; the policy maps
  ``[w, w - w*, x, onehot(y)]`` to a latent mean and log-variance, a code is
  sampled with the reparameterisation trick and decoded (and mapped with
  ``to_features``); the outer loss gets ``kl_weight`` times the mean
  ``KL(q || N(0, I))`` of the codes it wrote in the unroll (or, with
  ``kl_reduction="sum"``, that KL summed over the unrolled steps).

The per-step noise (``z`` or the reparameterisation noise) comes from the
teacher's own ``torch.Generator`` (``teacher.generator``: a random number
generator, not the GAN's generator network, which is ``teacher.policy``), is
drawn once per step before the unroll, and is shared by the two policy calls
of a step (the example and its auxiliary-loss copy). Dropout inside the fit
loop draws from the global RNG under ``torch.random.fork_rng`` seeded from the
teacher's generator, so training is reproducible and the caller's global RNG
is left as it was.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import check_float, check_int
from ..errors import TargetsError, TeacherError, TeacherTypeError
from .learners import LinearLearner, check_lr
from .parameterized import TransformTeacher, _UnrolledTeacher, policy_mlp
from .teachers import Pool, _check_learner, _check_pool
from .unroll import UnrollResult, one_hot_labels, unroll

__all__ = [
    "ConditionalVAE",
    "ConvDiscriminator",
    "ConvGenerator",
    "ConvVAE",
    "GANTeacher",
    "GenerativeFitHistory",
    "MLPDiscriminator",
    "MLPGenerator",
    "MLPVAE",
    "Projection",
    "VAEPretraining",
    "VAETeacher",
    "halfmoon_gan",
    "load_mnist35_images",
    "mnist_gan",
    "pretrain_vae",
    "vae_phi",
]

Step = Callable[[Any, Tensor, Tensor, Tensor, "Tensor | None"],
                "tuple[Tensor, Tensor, Tensor | None]"]
"""``step(params, w, x, y, noise) -> (sample, features, extra)`` for K learners."""
Penalty = Callable[[Tensor], Tensor]
"""``penalty(features (K, D)) -> (K,)``, added per unrolled step as its mean over K."""


# ===================================================================== helpers
def _digest(*tensors: Tensor) -> str:
    """A short content hash of tensors (dtype, shape and bytes)."""
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _signature(module: nn.Module) -> dict[str, Any]:
    """Class name and the names/shapes of its parameters and buffers (a checkpoint check)."""
    shapes = [[n, list(t.shape)] for n, t in module.state_dict().items()]
    return {"class": type(module).__name__, "tensors": shapes}


def _frozen_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A private copy of ``module`` in ``dtype``: eval mode, no gradients (the original is kept)."""
    m = copy.deepcopy(module).to(dtype)
    m.requires_grad_(False)
    return m.eval()


def _to_features(
    fn: Callable[[Tensor], Tensor] | None, dtype: torch.dtype
) -> Callable[[Tensor], Tensor] | None:
    """``to_features`` checked: None, the callable, or a frozen copy of it if a module."""
    if fn is not None and not callable(fn):
        raise TeacherTypeError("to_features must be callable (samples -> (N, D) features) or None")
    return _frozen_copy(fn, dtype) if isinstance(fn, nn.Module) else fn


def _describe(fn: Callable[..., Any] | None) -> Any:
    if fn is None:
        return None
    if isinstance(fn, nn.Module):
        sd = fn.state_dict()
        return {"class": type(fn).__name__, "digest": _digest(*sd.values()) if sd else ""}
    return getattr(fn, "__qualname__", type(fn).__name__)


def _seeded(seed: int | None, salt: int) -> int:
    """A module-initialisation seed derived from ``seed`` (random when None)."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed) * 1000003 + salt)
    return int(torch.randint(0, 2**62, (1,), generator=g))


def _build(seed: int | None, salt: int, make: Callable[[], nn.Module]) -> nn.Module:
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


def _check_vae(vae: object) -> Any:
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


# ============================================================== VAE pretraining
class VAEPretraining(NamedTuple):
    """What :func:`pretrain_vae` returns."""

    vae: nn.Module
    """The trained VAE, frozen: eval mode, ``requires_grad`` False."""
    loss: Tensor
    """Mean training loss (reconstruction + beta KL) per epoch, shape (epochs,)."""
    recon: Tensor
    """Mean reconstruction loss (sum of squared errors per example) per epoch."""
    kl: Tensor
    """Mean KL(q(u | x, y) || N(0, I)) per epoch."""
    path: Path | None
    """The cache file, or None without ``cache_dir``."""
    cached: bool
    """True when the VAE was read from ``path`` instead of trained."""


def _forbidden_dirs() -> list[Path]:
    from ..data import default_root

    out = [default_root().resolve()]
    shared = (Path.cwd().parent / "shared").resolve()
    out.append(shared)
    return out


def _check_cache_dir(cache_dir: str | os.PathLike[str]) -> Path:
    path = Path(cache_dir).expanduser().resolve()
    for bad in _forbidden_dirs():
        if path == bad or bad in path.parents:
            raise TeacherError(
                f"cache_dir {str(cache_dir)!r} is inside the shared data folder {bad}; choose a "
                "folder of your own (the shared folder is read-only for this library)"
            )
    return path


def pretrain_vae(
    samples: Tensor,
    classes: Tensor,
    *,
    dataset: str = "halfmoon",
    latent: int | None = None,
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float | None = None,
    num_classes: int = 2,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    vae: nn.Module | None = None,
    progress: bool = False,
) -> VAEPretraining:
    """Train a conditional VAE on ``(samples, classes)``; cache it to ``cache_dir``.

    The loss per example is ``|x - decode(u, y)|^2 + beta KL(q(u | x, y) || N(0, I))``
    (a Gaussian decoder of variance ``beta / 2``), minimised with Adam over
    shuffled mini-batches.
    Everything random (initialisation, batches, codes) is drawn from ``seed``;
    the caller's global RNG is left as it was.

    With ``cache_dir`` the result is stored in
    ``vae-{dataset}-latent{latent}-epochs{epochs}-seed{seed}-{hash}.pt``, where
    the hash covers the data, the architecture and the other settings, and is
    read back instead of retraining when that file exists.

    Args:
        samples: training samples: (N, D) for ``dataset="halfmoon"``,
            (N, 1, 28, 28) images in [-1, 1] for ``dataset="mnist"``.
        classes: class indices (N,) in ``[0, num_classes)``.
        dataset: ``"halfmoon"`` (:class:`MLPVAE`) or ``"mnist"``
            (:class:`ConvVAE`); with ``vae`` given, only a name for the cache file.
        latent: code size (default: ``vae.latent`` when ``vae`` is given, else 2).
        epochs: passes over the data (default 100).
        batch_size: mini-batch size (default 64).
        lr: Adam's step (default 1e-3).
        beta: weight of the KL term (default 0.1 for half-moon, whose noise is
            0.2: with 1 the codes collapse to the prior; 1 otherwise).
        num_classes: number of classes (default 2).
        seed: seed of everything random (default 0).
        cache_dir: folder for the cache file (created if needed; not inside
            the shared data folder), or None for no caching.
        vae: a :class:`ConditionalVAE`-like module to train instead of the
            default architecture; it is copied, the original is not changed.
        progress: show a tqdm bar.

    Returns:
        A :class:`VAEPretraining`; its ``vae`` is frozen.

    Example:
        >>> x = torch.randn(32, 2); c = (x[:, 0] > 0).long()
        >>> out = pretrain_vae(x, c, epochs=2, batch_size=16)
        >>> out.loss.shape, out.vae.training, out.cached
        (torch.Size([2]), False, False)
    """
    if dataset not in ("halfmoon", "mnist") and vae is None:
        raise TeacherError(f"dataset must be 'halfmoon' or 'mnist' (or pass vae=), got {dataset!r}")
    if not isinstance(dataset, str) or not dataset.replace("-", "").replace("_", "").isalnum():
        raise TeacherError(f"dataset must be a short alphanumeric name, got {dataset!r}")
    if not isinstance(samples, Tensor) or not samples.is_floating_point() or samples.dim() < 2:
        raise TeacherTypeError("samples must be a floating-point tensor (N, ...)")
    if samples.shape[0] < 1:
        raise TeacherError("samples is empty")
    if not bool(torch.isfinite(samples).all()):
        raise TeacherError("samples contains NaN or inf")
    if dataset == "mnist" and vae is None and tuple(samples.shape[1:]) != (1, 28, 28):
        raise TeacherError(f"samples must be images (N, 1, 28, 28) for dataset='mnist', got "
                           f"{tuple(samples.shape)}")
    if dataset == "halfmoon" and vae is None and samples.dim() != 2:
        raise TeacherError(f"samples must be (N, D) for dataset='halfmoon', got "
                           f"{tuple(samples.shape)}")
    num_classes = check_int(num_classes, "num_classes", 1)
    if not isinstance(classes, Tensor) or classes.is_floating_point() or \
            tuple(classes.shape) != (samples.shape[0],):
        raise TeacherTypeError(f"classes must be an integer tensor of shape ({samples.shape[0]},)")
    if classes.numel() and not bool(((classes >= 0) & (classes < num_classes)).all()):
        raise TargetsError(f"classes must lie in [0, {num_classes})")
    model: Any = _check_vae(vae) if vae is not None else None
    if latent is None:
        latent = int(model.latent) if model is not None else 2
    latent = check_int(latent, "latent", 1)
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    lr = check_lr(lr)
    if beta is None:
        beta = 0.1 if dataset == "halfmoon" else 1.0
    beta = check_float(beta, "beta", 0.0)
    seed = check_int(seed, "seed")
    dtype = samples.dtype
    size = int(latent)
    if model is None:
        if dataset == "halfmoon":
            model = _build(seed, 11, lambda: MLPVAE(samples.shape[1], num_classes, size))
        else:
            model = _build(seed, 11, lambda: ConvVAE(num_classes, size))
    else:
        if model.latent != latent:
            raise TeacherError(f"vae has latent size {model.latent} but latent={latent}")
        model = copy.deepcopy(model)
    vae = model = model.to(dtype)

    path = None
    if cache_dir is not None:
        folder = _check_cache_dir(cache_dir)
        meta = [str(_signature(vae)), batch_size, lr, beta, num_classes, str(dtype)]
        key = hashlib.sha1((_digest(samples, classes) + repr(meta)).encode()).hexdigest()[:10]
        path = folder / f"vae-{dataset}-latent{latent}-epochs{epochs}-seed{seed}-{key}.pt"
        if path.is_file():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            vae.load_state_dict(blob["vae"])
            vae.requires_grad_(False)
            return VAEPretraining(vae.eval(), blob["loss"], blob["recon"], blob["kl"], path, True)

    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(classes.long(), num_classes).to(dtype)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    n = samples.shape[0]
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="VAE pretraining", unit="epoch", dynamic_ncols=True,
                   disable=None)  # None: no bar when stderr is not a terminal
    vae.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        tot = torch.zeros(3, dtype=torch.float64)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = samples[idx], onehot[idx]
            mu, logvar = model.encode(xb, yb)
            u = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g, dtype=dtype)
            rec = (model.decode(u, yb) - xb).pow(2).flatten(1).sum(1).mean()
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
            loss = rec + beta * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += torch.stack([loss.detach(), rec.detach(), kl.detach()]).double() * len(idx)
        rows.append(tot / n)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(rows[-1][0]):.4g}")
    if bar is not None:
        bar.close()
    vae.zero_grad(set_to_none=True)
    vae.requires_grad_(False)
    vae.eval()
    table = torch.stack(rows)
    out = VAEPretraining(vae, table[:, 0], table[:, 1], table[:, 2], path, False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save({"vae": vae.state_dict(), "loss": out.loss, "recon": out.recon,
                    "kl": out.kl}, tmp)
        os.replace(tmp, path)
    return out


def vae_phi(vae: nn.Module, lift: Callable[[Tensor], Tensor] | None = None) -> nn.Module:
    """A fixed feature map from a VAE's encoder: ``x -> cat_c mu(lift(x), onehot(c))``.

    The encoder mean for every class, concatenated (so it needs no label):
    the default perceptual feature ``phi`` of
    :class:`~torchdht.linear.privacy.PrivacyTeacher`. ``lift`` maps the
    learner's features to the VAE's input (e.g. un-projecting MNIST features
    to images); default identity. The VAE is copied and frozen.

    Example:
        >>> phi = vae_phi(MLPVAE(2, 2, latent=3))
        >>> phi(torch.zeros(5, 2)).shape
        torch.Size([5, 6])
    """
    _check_vae(vae)
    return _VAEPhi(vae, lift)


class _VAEPhi(nn.Module):
    def __init__(self, vae: nn.Module, lift: Callable[[Tensor], Tensor] | None) -> None:
        super().__init__()
        self.vae: Any = _frozen_copy(vae, next(vae.parameters()).dtype)
        self.lift = lift
        self.classes = int(getattr(vae, "classes", 2))

    def forward(self, x: Tensor) -> Tensor:
        self.vae.eval()
        h = self.lift(x) if self.lift is not None else x
        n = x.shape[0]
        eye = torch.eye(self.classes, dtype=h.dtype, device=h.device)
        mus = [self.vae.encode(h, eye[c].expand(n, -1))[0] for c in range(self.classes)]
        return torch.cat(mus, dim=1)


# ===================================================================== MNIST
def load_mnist35_images(
    root: str | os.PathLike[str] | None = None,
    n_train: int = 1000,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """The MNIST 3/5 training images behind :func:`~torchdht.data.load_mnist35`, in [-1, 1].

    The same images in the same order as ``load_mnist35(root, n_train).x_train``
    (whose features are ``images.flatten(1) @ P``): what the MNIST
    discriminator and VAE see.

    Returns:
        ``(images (N, 1, 28, 28), classes (N,))``, class 0 the digit 3.

    Raises:
        FileNotFoundError: if MNIST is not under ``root``.

    Example:
        >>> from torchdht.data import default_root
        >>> found = (default_root() / "MNIST" / "raw").is_dir()
        >>> imgs, c = load_mnist35_images(n_train=4) if found else (torch.zeros(4, 1, 28, 28), 0)
        >>> imgs.shape
        torch.Size([4, 1, 28, 28])
    """
    from ..data.mnist35 import _select, default_root

    root = Path(root) if root is not None else default_root()
    if not (root / "MNIST" / "raw").is_dir():
        raise FileNotFoundError(
            f"root: MNIST not found under {root} (expected {root / 'MNIST' / 'raw'}); pass "
            "root= or set TORCHDHT_DATA to a folder holding MNIST/raw"
        )
    n_train = check_int(n_train, "n_train", 1)
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=True, download=False)
    imgs, classes = _select(ds.data, ds.targets, n_train, "train")
    pixels = imgs.to(torch.float64) / 255.0 * 2.0 - 1.0
    return pixels.unsqueeze(1).to(dtype), classes


# ======================================================= the unrolling engine
class GenerativeFitHistory(NamedTuple):
    """What the generative teachers' ``fit`` records, one entry per outer iteration.

    ``loss = final + alpha * aux + extra + penalty``.
    """

    loss: Tensor
    """The outer loss."""
    final: Tensor
    """``mean_k |w_v - w*|^2`` (or the black-box validation loss)."""
    aux: Tensor
    """The auxiliary sum (before ``alpha``)."""
    extra: Tensor
    """The teacher's own term: ``adv_weight`` times the adversarial term (GAN),
    ``kl_weight`` times the KL term (VAE), zero otherwise."""
    penalty: Tensor
    """The privacy hinge (summed over the unrolled steps; zero without a privacy constraint)."""
    discriminator: Tensor
    """The discriminator's mean loss over its steps (GAN), NaN otherwise."""
    seconds: float
    """Wall time of the call."""


def _unrolled(
    t: _UnrolledTeacher,
    step: Step,
    noise_width: int,
    params: dict[str, Tensor] | None,
    w0: Tensor | None,
    index: Tensor | None,
    noise: Tensor | None,
    penalty: Penalty | None,
) -> tuple[UnrollResult, dict[int, Tensor], Tensor, Tensor]:
    """One unrolled objective; returns the result, the samples per step, the labels, the penalty."""
    if w0 is None:
        w0 = t._carried_weights()
    if index is None:
        index = torch.randint(0, t.x.shape[0], (t.unroll, w0.shape[0]), generator=t.generator)
    xs, ys = t.x[index], t.y[index]
    v, k = index.shape[0], index.shape[1]
    if noise is None and noise_width:
        noise = torch.randn(v, k, noise_width, generator=t.generator, dtype=t.dtype)
    samples: dict[int, Tensor] = {}
    pens: dict[int, Tensor] = {}

    def generate(w: Tensor, i: int) -> tuple[Tensor, Tensor | None]:
        sample, feats, extra = step(params, w, xs[i], ys[i], None if noise is None else noise[i])
        samples[i] = sample.detach()  # the auxiliary call of step i overwrites with the same
        if penalty is not None and torch.is_grad_enabled():
            p = penalty(feats).mean()
            pens[i] = p.detach()
            extra = p if extra is None else extra + p
        return feats, extra

    r = unroll(generate, t.learner, w0, ys, t.lr, t._final_loss(), alpha=t.alpha,
               truncate=t.truncate, state_grad=t.state_grad)
    pen = torch.stack(list(pens.values())).sum() if pens else r.loss.new_zeros(())
    return r, samples, ys, pen


def _outer_step(
    t: _UnrolledTeacher,
    step: Step,
    noise_width: int,
    penalty: Penalty | None,
    after: Callable[[dict[int, Tensor], Tensor], Tensor] | None,
) -> Tensor:
    """One Adam step of the policy (then ``after``, e.g. the discriminator's); a history row."""
    r, samples, ys, pen = _unrolled(t, step, noise_width, None, None, None, None, penalty)
    t.optimizer.zero_grad(set_to_none=True)
    r.loss.backward()
    if t.grad_clip is not None:
        nn.utils.clip_grad_norm_(list(t.policy.parameters()), t.grad_clip)
    t.optimizer.step()
    t._carry(r.w)
    d = after(samples, ys) if after is not None else r.loss.new_tensor(float("nan"))
    return torch.stack([r.loss.detach(), r.final, r.aux, r.extra - pen, pen,
                        d.detach().to(r.final.dtype)])


def _fit(t: _UnrolledTeacher, iters: int, progress: bool,
         one: Callable[[], Tensor]) -> GenerativeFitHistory:
    iters = check_int(iters, "iters", 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iters, desc=f"{t.kind} teacher", unit="it", dynamic_ncols=True,
                   disable=None)  # None: no bar when stderr is not a terminal
    start = time.perf_counter()
    rows: list[Tensor] = []
    t.policy.train()
    try:
        for it in range(iters):
            seed = int(torch.randint(0, 2**62, (1,), generator=t.generator))
            with torch.random.fork_rng(devices=[]):  # dropout: reproducible, caller's RNG kept
                torch.manual_seed(seed)
                rows.append(one())
            if bar is not None:
                bar.update(1)
                if it % 25 == 0 or it == iters - 1:
                    bar.set_postfix(loss=f"{float(rows[-1][0]):.4g}",
                                    final=f"{float(rows[-1][1]):.4g}")
    finally:
        if bar is not None:
            bar.close()
        t.policy.eval()
    table = torch.stack(rows) if rows else torch.zeros(0, 6, dtype=t.dtype)
    return GenerativeFitHistory(table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4],
                                table[:, 5], time.perf_counter() - start)


def _plain_step(t: _UnrolledTeacher) -> Step:
    """The :class:`Step` of a transformation teacher (no noise, no extra term)."""
    def step(params: Any, w: Tensor, x: Tensor, y: Tensor,
             noise: Tensor | None) -> tuple[Tensor, Tensor, None]:
        out = t._transform(params, w, x, y)
        return out, out, None

    return step


class _GenerativeTeacher(TransformTeacher):
    """Shared machinery: per-step noise, a sample/feature split, extra terms, the fit loop."""

    kind = "generative"
    noise_width = 0

    def _step(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
              noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        raise NotImplementedError

    def _call(self, module: nn.Module, params: dict[str, Tensor] | None, *args: Tensor) -> Tensor:
        return module(*args) if params is None else functional_call(module, params, args)

    def _transform(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
                   noise: Tensor | None = None) -> Tensor:
        if noise is None and self.noise_width:
            noise = torch.randn(x.shape[0], self.noise_width, generator=self.generator,
                                dtype=self.dtype)
        return self._step(params, w, x, y, noise)[1]

    def sample(self, w: Tensor, y: Tensor, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Samples (e.g. images) and learner features for learners ``w`` (N, *shape), labels ``y``.

        For inspection (no gradient, the policy in eval mode); ``x`` are the
        pool examples the policy is conditioned on where it uses them
        (default: random pool rows).

        Example:
            >>> from torchdht.linear.learners import LR
            >>> x = torch.randn(16, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
            >>> t = halfmoon_gan(LR, (x, y), 0.1, w_star=torch.ones(2), seed=0)
            >>> samples, feats = t.sample(torch.zeros(3, 2), y[:3])
            >>> samples.shape, torch.equal(samples, feats)
            (torch.Size([3, 2]), True)
        """
        n = w.shape[0]
        if x is None:
            x = self.x[torch.randint(0, self.x.shape[0], (n,), generator=self.generator)]
        noise = (torch.randn(n, self.noise_width, generator=self.generator, dtype=self.dtype)
                 if self.noise_width else None)
        was = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                s, f, _ = self._step(None, w.to(self.dtype), x.to(self.dtype), y, noise)
        finally:
            self.policy.train(was)
        return s, f

    def _graph_steps(self) -> int:
        return self.truncate if self.truncate is not None else self.unroll

    def _after(self) -> Callable[[dict[int, Tensor], Tensor], Tensor] | None:
        return None

    def unrolled_loss(  # type: ignore[override]
        self,
        params: dict[str, Tensor] | None = None,
        w0: Tensor | None = None,
        index: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> UnrollResult:
        """One unrolled objective, as :meth:`TransformTeacher.unrolled_loss`.

        Args:
            params: the policy's parameters to evaluate at (default its own).
            w0: starting weights (K, *shape); default the carried-over learners.
            index: pool rows (v, K); default drawn from the teacher's generator.
            noise: the per-step noise (v, K, noise_width); default drawn.

        Returns:
            An :class:`~torchdht.linear.unroll.UnrollResult`; ``extra`` holds
            the teacher's own term.
        """
        return _unrolled(self, self._step, self.noise_width, params, w0, index, noise, None)[0]

    def _fit(self, iters: int, progress: bool, penalty: Penalty | None) -> GenerativeFitHistory:
        after = self._after()
        return _fit(self, iters, progress,
                    lambda: _outer_step(self, self._step, self.noise_width, penalty, after))

    def fit(self, iters: int = 1000, progress: bool = False) -> GenerativeFitHistory:  # type: ignore[override]
        """Train for ``iters`` outer iterations (one Adam step of the policy each).

        Args:
            iters: outer iterations (default: 1000, the paper's).
            progress: show a tqdm progress bar.

        Returns:
            A :class:`GenerativeFitHistory`.
        """
        return self._fit(iters, progress, None)

    def _check_policy(self) -> None:
        n = 2
        w = torch.zeros(n, *self.learner.weight_shape(self.dim), dtype=self.dtype)
        x = self.x[:1].expand(n, -1)
        y = self.y[:1].expand(n, *self.y.shape[1:])
        noise = torch.zeros(n, self.noise_width, dtype=self.dtype) if self.noise_width else None
        was = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                sample, feats, _ = self._step(None, w, x, y, noise)
        except TypeError as err:
            raise TeacherTypeError(
                f"{type(self).__name__}: the policy was called with the wrong arguments: "
                f"{self._policy_contract()}; the call failed with: {err}"
            ) from err
        except (RuntimeError, ValueError, IndexError) as err:
            raise TeacherError(
                f"{type(self).__name__}: the policy could not be evaluated on a probe batch: "
                f"{self._policy_contract()}; the call failed with: {err}"
            ) from err
        finally:
            self.policy.train(was)
        if not isinstance(feats, Tensor) or tuple(feats.shape) != (n, self.dim):
            shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
            raise TeacherError(
                f"{type(self).__name__}: the examples must be (N, {self.dim}) learner features "
                f"(after to_features); got {shape} for N={n}. {self._policy_contract()}"
            )
        self._sample_shape = tuple(sample.shape[1:])

    def _policy_contract(self) -> str:
        return ""

    def _extra_config(self) -> dict[str, Any]:
        return {"noise_width": self.noise_width}


# ========================================================================= GAN
class GANTeacher(_GenerativeTeacher):
    """A GAN-based teacher: a conditional generator trained by unrolling plus a discriminator.

    The generator (the policy, ``teacher.policy``) is called as
    ``generator(h, onehot(y))`` with ``h = [w_t, w_t - w*, (x), z]``
    (``x`` the random pool example only with ``with_example=True``; ``z ~ N(0, I)``
    of size ``noise_dim``) and returns a *sample*; ``to_features(sample)`` is the
    learner's input (identity by default). The discriminator is called as
    ``discriminator(sample, onehot(y))`` and returns one logit per row.

    Each outer iteration: unroll ``v`` steps, one Adam step of the generator on
    ``mean |w_v - w*|^2 + alpha * aux + adv_weight * mean softplus(-D(G(z), y))``
    (the non-saturating generator loss over the examples made in the graph
    part of the unroll), then ``d_steps`` Adam steps of the discriminator on
    ``d_batch`` real samples (label 1) and as many generated ones from this
    unroll (detached; label 0), binary cross-entropy.

    The teacher owns ``generator`` and ``discriminator`` (it trains them in
    place); ``to_features``, when a module, is copied and frozen.

    Args:
        learner: the learner.
        pool: ``(x, y)`` learner features and labels; the labels (and, with
            ``with_example``, the examples) the generator is conditioned on
            are drawn from it.
        lr: the learner's SGD step.
        w_star: the target weights.
        generator: ``nn.Module``, ``(h, onehot) -> sample``.
        discriminator: ``nn.Module``, ``(sample, onehot) -> (N,)`` logits.
        noise_dim: size of ``z`` (default 2; 0 for none).
        to_features: ``sample -> (N, D)`` features (default identity), e.g.
            :class:`Projection`.
        real: ``(samples, labels)`` the discriminator sees as real (labels in
            the learner's format, like the pool's); default the pool. Required
            when ``to_features`` is given (then samples live in another space).
        adv_weight: weight of the adversarial term (default 1).
        d_steps: discriminator steps per generator step (default 1; 0 trains
            the generator on the teaching loss alone).
        d_lr: the discriminator's Adam step (default ``teacher_lr``).
        d_batch: real and generated samples per discriminator step (default 64).
        with_example: also condition the generator on a random pool example.
        **kwargs: as for :class:`~torchdht.linear.TransformTeacher`
            (``unroll``, ``alpha``, ``trajectories``, ``horizon``,
            ``teacher_lr``, ``betas``, ``grad_clip``, ``seed``, ...).

    Example:
        >>> from torchdht.linear.learners import LR
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 2, generator=g); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = halfmoon_gan(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]), unroll=5, seed=0)
        >>> h = t.fit(iters=3)
        >>> xt, yt = t.propose(torch.zeros(2))
        >>> h.discriminator.shape, xt.shape
        (torch.Size([3]), torch.Size([1, 2]))
    """

    kind = "gan"

    def __init__(
        self,
        learner: LinearLearner,
        pool: Pool,
        lr: float,
        *,
        w_star: Tensor,
        generator: nn.Module,
        discriminator: nn.Module,
        noise_dim: int = 2,
        to_features: Callable[[Tensor], Tensor] | None = None,
        real: Pool | None = None,
        adv_weight: float = 1.0,
        d_steps: int = 1,
        d_lr: float | None = None,
        d_batch: int = 64,
        with_example: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_learner(learner)
        px, py = _check_pool(learner, pool)
        for bad in ("policy", "hidden", "batch_norm", "residual"):
            if bad in kwargs:
                raise TeacherTypeError(f"GANTeacher takes generator= instead of {bad}=")
        if "box" in kwargs:
            raise TeacherTypeError("GANTeacher's examples come from its generator; "
                                   "box= does not apply")
        if not isinstance(generator, nn.Module):
            raise TeacherTypeError(f"generator must be an nn.Module, got "
                                   f"{type(generator).__name__}")
        if not isinstance(discriminator, nn.Module):
            raise TeacherTypeError(
                f"discriminator must be an nn.Module, got {type(discriminator).__name__}")
        self.to_features = _to_features(to_features, px.dtype)
        self.noise_width = check_int(noise_dim, "noise_dim", 0)
        self.adv_weight = check_float(adv_weight, "adv_weight", 0.0)
        self.d_steps = check_int(d_steps, "d_steps", 0)
        self.d_batch = check_int(d_batch, "d_batch", 1)
        self.with_example = bool(with_example)
        dtype = px.dtype
        if real is None:
            if to_features is not None:
                raise TeacherError(
                    "real: the discriminator sees samples in the generator's space, which is not "
                    "the pool's when to_features is given; pass real=(samples, labels)"
                )
            rx, ry = px, py
        else:
            if not isinstance(real, (tuple, list)) or len(real) != 2:
                raise TeacherTypeError("real must be a pair (samples, labels)")
            rx, ry = real
            if not isinstance(rx, Tensor) or not rx.is_floating_point() or rx.dim() < 2 or \
                    rx.shape[0] < 1:
                raise TeacherTypeError("real: samples must be a non-empty floating-point "
                                       "tensor (N, ...)")
            if not bool(torch.isfinite(rx).all()):
                raise TeacherError("real: samples contain NaN or inf")
            ry = learner.check_labels(ry, rx.shape[0], name="real labels")
        self.real = (rx.detach().to(dtype), ry)
        self.discriminator = discriminator.to(dtype)
        super().__init__(learner, pool, lr, w_star=w_star, policy=generator, **kwargs)
        self._arch = _signature(self.policy)
        if self._sample_shape != tuple(self.real[0].shape[1:]):
            raise TeacherError(
                f"real: samples have shape {tuple(self.real[0].shape[1:])} per example but the "
                f"generator makes {self._sample_shape}; the discriminator compares the two"
            )
        self._real_onehot = one_hot_labels(learner, self.real[1], dtype)
        with torch.no_grad():
            was = self.discriminator.training
            self.discriminator.eval()
            try:
                out = self.discriminator(self.real[0][:2], self._real_onehot[:2])
            except TypeError as err:
                raise TeacherTypeError(
                    "discriminator must be called as discriminator(samples, onehot) -> (N,) "
                    f"logits; calling it failed: {err}"
                ) from err
            except RuntimeError as err:
                raise TeacherError(f"discriminator could not score real samples: {err}") from err
            finally:
                self.discriminator.train(was)
        if not isinstance(out, Tensor) or out.numel() != min(2, self.real[0].shape[0]):
            raise TeacherError("discriminator must return one logit per sample, (N,) or (N, 1)")
        self.d_lr = check_lr(d_lr if d_lr is not None else self.teacher_lr, "d_lr")
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr,
                                            betas=tuple(self.optimizer.defaults["betas"]))

    def _input_width(self) -> int:
        ex = self.dim if self.with_example else 0
        return 2 * self.w_star.numel() + ex + self.noise_width + self.classes

    def _policy_contract(self) -> str:
        return (f"generator(h, onehot) with h of width {self.in_features - self.classes} "
                f"(w, w - w*{', x' if self.with_example else ''}, z of size {self.noise_width}) "
                f"and onehot of width {self.classes} must return samples that to_features maps "
                f"to (N, {self.dim})")

    def _d_params(self) -> dict[str, Tensor]:
        d = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        d.update(dict(self.discriminator.named_buffers()))
        return d

    def _step(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
              noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        oh = one_hot_labels(self.learner, y, self.dtype)
        parts = self._state_features(w)
        if self.with_example:
            parts.append(x)
        if noise is not None:
            parts.append(noise)
        h = torch.cat(parts, dim=1)
        sample = self._call(self.policy, params, h, oh)
        feats = self.to_features(sample) if self.to_features is not None else sample
        extra = None
        if self.adv_weight and torch.is_grad_enabled():
            logits = functional_call(self.discriminator, self._d_params(), (sample, oh))
            adv = F.softplus(-logits.reshape(-1)).mean()
            extra = self.adv_weight * adv / self._graph_steps()
        return sample, feats, extra

    def discriminator_step(self, fake: Tensor, fake_y: Tensor) -> Tensor:
        """``d_steps`` Adam steps of the discriminator on real rows versus ``fake`` (detached).

        Args:
            fake: generated samples (N, *sample_shape).
            fake_y: their labels (learner format).

        Returns:
            The mean discriminator loss over the steps (NaN when ``d_steps`` is 0).
        """
        fake = fake.detach()
        oh_f = one_hot_labels(self.learner, fake_y, self.dtype)
        rx, oh_r = self.real[0], self._real_onehot
        losses = []
        self.discriminator.train()
        for _ in range(self.d_steps):
            fi = torch.randint(0, fake.shape[0], (self.d_batch,), generator=self.generator)
            ri = torch.randint(0, rx.shape[0], (self.d_batch,), generator=self.generator)
            lr_ = self.discriminator(rx[ri], oh_r[ri]).reshape(-1)
            lf = self.discriminator(fake[fi], oh_f[fi]).reshape(-1)
            loss = F.softplus(-lr_).mean() + F.softplus(lf).mean()
            self.d_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.d_optimizer.step()
            losses.append(loss.detach())
        if not losses:
            return torch.tensor(float("nan"), dtype=self.dtype)
        return torch.stack(losses).mean()

    def _after(self) -> Callable[[dict[int, Tensor], Tensor], Tensor]:
        def after(samples: dict[int, Tensor], ys: Tensor) -> Tensor:
            keys = sorted(samples)
            fake = torch.cat([samples[i] for i in keys])
            fy = ys[keys].reshape(-1, *ys.shape[2:])
            return self.discriminator_step(fake, fy)

        return after

    def _extra_config(self) -> dict[str, Any]:
        return {
            **super()._extra_config(),
            "adv_weight": self.adv_weight,
            "d_steps": self.d_steps,
            "d_batch": self.d_batch,
            "d_lr": self.d_lr,
            "with_example": self.with_example,
            "discriminator": _signature(self.discriminator),
            "to_features": _describe(self.to_features),
            "real_size": self.real[0].shape[0],
        }

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`TransformTeacher.state_dict`, plus the discriminator and its optimizer."""
        out = super().state_dict()
        out["discriminator"] = self.discriminator.state_dict()
        out["d_optimizer"] = self.d_optimizer.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another configuration is refused.

        Raises:
            ValueError: another configuration, or not a GAN teacher checkpoint.
        """
        super().load_state_dict(state)
        if "discriminator" not in state or "d_optimizer" not in state:
            raise TeacherError("state: not a GANTeacher checkpoint (no discriminator)")
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])


def halfmoon_gan(
    learner: LinearLearner,
    pool: Pool,
    lr: float,
    *,
    w_star: Tensor,
    noise_dim: int = 2,
    hidden: Sequence[int] = (32, 16),
    d_hidden: int = 8,
    seed: int | None = None,
    **kwargs: Any,
) -> GANTeacher:
    """The paper's half-moon GAN teacher (appendix C.5).

    Generator: :class:`MLPGenerator`, input 8 (``w``, ``w - w*``, ``z`` in 2-d,
    the one-hot label) - 32 - 16 - 2, ReLU. Discriminator:
    :class:`MLPDiscriminator`, input 4 - 8 - 1, LeakyReLU(0.2), Dropout(0.3);
    it sees the pool as real data.

    Args:
        learner, pool, lr, w_star: as for :class:`GANTeacher`.
        noise_dim: size of ``z`` (default 2).
        hidden: the generator's hidden sizes (default (32, 16)).
        d_hidden: the discriminator's hidden size (default 8).
        seed: seed of the initialisation and of the teacher's generator.
        **kwargs: passed to :class:`GANTeacher`.

    Example:
        >>> from torchdht.linear.learners import LR
        >>> x = torch.randn(16, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> halfmoon_gan(LR, (x, y), 0.1, w_star=torch.ones(2), seed=0).in_features
        8
    """
    _check_learner(learner)
    px, _ = _check_pool(learner, pool)
    d = px.shape[1]
    classes = learner.num_outputs if learner.num_outputs > 1 else 2
    state = 2 * int(torch.Size(learner.weight_shape(d)).numel())
    ex = d if kwargs.get("with_example", False) else 0
    gen = _build(seed, 1, lambda: MLPGenerator(state + ex + noise_dim, classes, d, hidden))
    disc = _build(seed, 2, lambda: MLPDiscriminator(d, classes, d_hidden))
    return GANTeacher(learner, pool, lr, w_star=w_star, generator=gen, discriminator=disc,
                      noise_dim=noise_dim, seed=seed, **kwargs)


def mnist_gan(
    learner: LinearLearner,
    pool: Pool,
    lr: float,
    *,
    w_star: Tensor,
    projection: Tensor,
    real: Pool,
    noise_dim: int = 16,
    width: int = 128,
    d_width: int = 32,
    seed: int | None = None,
    **kwargs: Any,
) -> GANTeacher:
    """The paper's MNIST GAN teacher (appendix C.7): a conditional DCGAN in image space.

    The generator (:class:`ConvGenerator`) makes 28x28 images in [-1, 1]; the
    learner sees ``image.flatten(1) @ projection`` (:class:`Projection`); the
    discriminator (:class:`ConvDiscriminator`) sees real images
    (:func:`load_mnist35_images`) and generated ones with their label maps.

    Args:
        learner, pool, lr, w_star: as for :class:`GANTeacher` (the pool: the
            projected features).
        projection: ``P`` (784, D).
        real: ``(images (N, 1, 28, 28), labels)``, labels in the learner's
            format (``learner.targets(classes)``).
        noise_dim: size of ``z`` (default 16).
        width: the generator's base channel count (default 128, the paper's).
        d_width: the discriminator's (default 32, the paper's).
        seed: seed of the initialisation and of the teacher's generator.
        **kwargs: passed to :class:`GANTeacher`.

    Example:
        >>> from torchdht.linear.learners import LR
        >>> P = torch.randn(784, 4) / 28
        >>> imgs = torch.rand(8, 1, 28, 28) * 2 - 1; y = torch.tensor([1.0, -1.0] * 4)
        >>> t = mnist_gan(LR, (imgs.flatten(1) @ P, y), 0.1, w_star=torch.ones(4), projection=P,
        ...               real=(imgs, y), width=8, d_width=4, unroll=2, d_batch=4, seed=0)
        >>> t.propose(torch.zeros(4))[0].shape
        torch.Size([1, 4])
    """
    _check_learner(learner)
    px, _ = _check_pool(learner, pool)
    d = px.shape[1]
    if not isinstance(projection, Tensor) or projection.dim() != 2 or \
            tuple(projection.shape) != (784, d):
        shape = tuple(projection.shape) if isinstance(projection, Tensor) else projection
        raise TeacherError(f"projection must have shape (784, {d}) to match the pool, got {shape}")
    classes = learner.num_outputs if learner.num_outputs > 1 else 2
    state = 2 * int(torch.Size(learner.weight_shape(d)).numel())
    ex = d if kwargs.get("with_example", False) else 0
    gen = _build(seed, 1, lambda: ConvGenerator(state + ex + noise_dim, classes, width))
    disc = _build(seed, 2, lambda: ConvDiscriminator(classes, d_width))
    return GANTeacher(learner, pool, lr, w_star=w_star, generator=gen, discriminator=disc,
                      noise_dim=noise_dim, to_features=Projection(projection), real=real,
                      seed=seed, **kwargs)


# ========================================================================= VAE
class VAETeacher(_GenerativeTeacher):
    """A VAE-based teacher: the policy writes latent codes a frozen, pretrained VAE decodes.

    The policy maps ``[w_t, w_t - w*, x, onehot(y)]`` (a random pool example
    and its label, as in appendix C.5) to ``(mu, logvar)`` of size
    ``2 * vae.latent``; the code ``u = mu + exp(logvar / 2) * eps`` (``eps``
    from the teacher's generator) is decoded with the label,
    ``x~ = to_features(vae.decode(u, onehot(y)))``, and taught with label
    ``y``. The outer loss gets ``kl_weight`` times the KL divergence
    ``KL(N(mu, e^logvar) || N(0, I))`` averaged over the codes written in the
    (graph part of the) unroll, the paper's single ``KL(pi || p(u))`` term;
    ``kl_reduction="sum"`` sums the per-step mean over the steps instead (like
    the auxiliary loss), which weighs it ``v`` times more. ``logvar`` is
    softly bounded to (-8, 8).

    The teacher keeps a frozen private copy of ``vae`` (``teacher.vae``: eval
    mode, ``requires_grad`` False); neither it nor the caller's module is changed.

    Args:
        learner, pool, lr, w_star: as for :class:`~torchdht.linear.TransformTeacher`.
        vae: a :class:`ConditionalVAE`-like module (``encode``, ``decode``,
            ``latent``), e.g. from :func:`pretrain_vae`.
        to_features: maps decoded samples to (N, D) features (default
            identity), e.g. :class:`Projection` for MNIST images.
        kl_weight: weight of the KL term (default 1).
        kl_reduction: ``"mean"`` over the unrolled steps (default) or ``"sum"``.
        policy: a custom policy, (N, in_features) -> (N, 2 * vae.latent);
            default an MLP with ``hidden`` and ``batch_norm``.
        hidden: the default policy's hidden sizes (default (32, 16)).
        batch_norm: BatchNorm1d in the default policy.
        **kwargs: as for :class:`~torchdht.linear.TransformTeacher`.

    Example:
        >>> from torchdht.linear.learners import LR
        >>> x = torch.randn(64, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> vae = pretrain_vae(x, (y > 0).long(), epochs=2).vae
        >>> t = VAETeacher(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]), vae=vae, unroll=5,
        ...                seed=0)
        >>> h = t.fit(iters=3)
        >>> t.propose(torch.zeros(2))[0].shape, h.extra.shape
        (torch.Size([1, 2]), torch.Size([3]))
    """

    kind = "vae"
    LOGVAR_BOUND = 8.0

    def __init__(
        self,
        learner: LinearLearner,
        pool: Pool,
        lr: float,
        *,
        w_star: Tensor,
        vae: nn.Module,
        to_features: Callable[[Tensor], Tensor] | None = None,
        kl_weight: float = 1.0,
        kl_reduction: str = "mean",
        policy: nn.Module | None = None,
        hidden: Sequence[int] = (32, 16),
        batch_norm: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_learner(learner)
        px, _ = _check_pool(learner, pool)
        for bad in ("residual", "box"):
            if bad in kwargs:
                raise TeacherTypeError(f"VAETeacher's policy outputs latent codes; {bad}= "
                                       "does not apply")
        checked = _check_vae(vae)
        self.to_features = _to_features(to_features, px.dtype)
        dtype = px.dtype
        classes = learner.num_outputs if learner.num_outputs > 1 else 2
        vae_classes = getattr(vae, "classes", classes)
        if vae_classes != classes:
            raise TeacherError(f"vae is conditioned on {vae_classes} classes but the learner has "
                               f"{classes}")
        self.vae: Any = _frozen_copy(vae, dtype)
        self.latent = int(checked.latent)
        self.noise_width = self.latent
        self.kl_weight = check_float(kl_weight, "kl_weight", 0.0)
        if kl_reduction not in ("mean", "sum"):
            raise TeacherError(f"kl_reduction must be 'mean' or 'sum', got {kl_reduction!r}")
        self.kl_reduction = kl_reduction
        self._vae_digest = _digest(*self.vae.state_dict().values())
        d = px.shape[1]
        in_features = 2 * int(torch.Size(learner.weight_shape(d)).numel()) + d + classes
        if policy is None:
            hidden = tuple(hidden)
            policy = _build(seed, 3, lambda: policy_mlp(in_features, 2 * self.latent, hidden,
                                                        batch_norm))
            arch: dict[str, Any] = {"hidden": list(hidden), "batch_norm": bool(batch_norm)}
        elif not isinstance(policy, nn.Module):
            raise TeacherTypeError(f"policy must be an nn.Module, got {type(policy).__name__}")
        else:
            arch = _signature(policy)
        super().__init__(learner, pool, lr, w_star=w_star, policy=policy, seed=seed, **kwargs)
        self._arch = {**arch, "out": 2 * self.latent}

    def _policy_contract(self) -> str:
        return (f"policy must map (N, {self.in_features}) inputs [w, w - w*, x, onehot(y)] to "
                f"(N, {2 * self.latent}): a mean and a log-variance for the vae's latent size "
                f"{self.latent}")

    def _check_policy(self) -> None:
        probe = torch.zeros(2, self.in_features, dtype=self.dtype)
        was = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                out = self.policy(probe)
        except RuntimeError as err:
            raise TeacherError(f"VAETeacher: {self._policy_contract()}; it failed: {err}") from err
        finally:
            self.policy.train(was)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != 2 * self.latent:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TeacherError(
                f"vae: latent size {self.latent} does not match the policy, which returns "
                f"{shape}; {self._policy_contract()}"
            )
        super()._check_policy()

    def _codes(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor,
               y: Tensor) -> tuple[Tensor, Tensor]:
        out = self._call(self.policy, params, self.features(w, x, y))
        mu, raw = out[:, : self.latent], out[:, self.latent :]
        b = self.LOGVAR_BOUND
        return mu, b * torch.tanh(raw / b)

    def _step(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
              noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        mu, logvar = self._codes(params, w, x, y)
        u = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise
        sample = self.vae.decode(u, one_hot_labels(self.learner, y, self.dtype))
        feats = self.to_features(sample) if self.to_features is not None else sample
        extra = None
        if self.kl_weight and torch.is_grad_enabled():
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
            extra = self.kl_weight * kl.mean()
            if self.kl_reduction == "mean":
                extra = extra / self._graph_steps()
        return sample, feats, extra

    def _extra_config(self) -> dict[str, Any]:
        return {
            **super()._extra_config(),
            "kl_weight": self.kl_weight,
            "kl_reduction": self.kl_reduction,
            "vae": {"latent": self.latent, **_signature(self.vae), "digest": self._vae_digest},
            "to_features": _describe(self.to_features),
        }
