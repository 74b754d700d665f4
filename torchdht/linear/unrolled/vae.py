"""The VAE teacher (paper section 3.3.2, appendix C.5, C.7) and the VAE it decodes with.

* :func:`pretrain_vae` -- a conditional VAE (:class:`~.networks.MLPVAE` on
  half-moon, :class:`~.networks.ConvVAE` on MNIST images) trained on the
  data, optionally cached on disk (:class:`VAEPretraining`).
* :class:`VAETeacher` -- an unrolled teacher whose policy maps
  ``[w, w - w*, x, onehot(y)]`` to a latent mean and log-variance; a code is
  sampled with the reparameterisation trick (noise from the teacher's
  generator) and decoded by the frozen VAE (and mapped with
  ``to_features``); the outer loss gets ``kl_weight`` times the mean
  ``KL(q || N(0, I))`` of the codes it wrote in the unroll (or, with
  ``kl_reduction="sum"``, that KL summed over the unrolled steps).
* :func:`vae_phi` -- the VAE encoder's means as a fixed feature map (the
  privacy teacher's default ``phi``).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_float, check_int
from ...errors import TargetsError, TeacherError, TeacherTypeError
from ..omniscient.checks import Pool, check_learner, check_pool
from ..omniscient.learners import LinearLearner, check_lr
from .base import UnrolledTeacher, call_module
from .networks import (
    MLPVAE,
    ConvVAE,
    build_seeded,
    check_vae,
    describe,
    digest,
    feature_map,
    frozen_copy,
    policy_mlp,
    signature,
)
from .unroll import one_hot_labels

__all__ = ["VAEPretraining", "VAETeacher", "pretrain_vae", "vae_phi"]


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
    from ...data import default_root

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
        dataset: ``"halfmoon"`` (:class:`~.networks.MLPVAE`) or ``"mnist"``
            (:class:`~.networks.ConvVAE`); with ``vae`` given, only a name for the cache file.
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
        vae: a :class:`~.networks.ConditionalVAE`-like module to train instead of the
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
    model: Any = check_vae(vae) if vae is not None else None
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
            model = build_seeded(seed, 11, lambda: MLPVAE(samples.shape[1], num_classes, size))
        else:
            model = build_seeded(seed, 11, lambda: ConvVAE(num_classes, size))
    else:
        if model.latent != latent:
            raise TeacherError(f"vae has latent size {model.latent} but latent={latent}")
        model = copy.deepcopy(model)
    vae = model = model.to(dtype)

    path = None
    if cache_dir is not None:
        folder = _check_cache_dir(cache_dir)
        meta = [str(signature(vae)), batch_size, lr, beta, num_classes, str(dtype)]
        key = hashlib.sha1((digest(samples, classes) + repr(meta)).encode()).hexdigest()[:10]
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
    :class:`~torchdht.linear.unrolled.privacy.PrivacyTeacher`. ``lift`` maps the
    learner's features to the VAE's input (e.g. un-projecting MNIST features
    to images); default identity. The VAE is copied and frozen.

    Example:
        >>> phi = vae_phi(MLPVAE(2, 2, latent=3))
        >>> phi(torch.zeros(5, 2)).shape
        torch.Size([5, 6])
    """
    check_vae(vae)
    return _VAEPhi(vae, lift)


class _VAEPhi(nn.Module):
    def __init__(self, vae: nn.Module, lift: Callable[[Tensor], Tensor] | None) -> None:
        super().__init__()
        self.vae: Any = frozen_copy(vae, next(vae.parameters()).dtype)
        self.lift = lift
        self.classes = int(getattr(vae, "classes", 2))

    def forward(self, x: Tensor) -> Tensor:
        self.vae.eval()
        h = self.lift(x) if self.lift is not None else x
        n = x.shape[0]
        eye = torch.eye(self.classes, dtype=h.dtype, device=h.device)
        mus = [self.vae.encode(h, eye[c].expand(n, -1))[0] for c in range(self.classes)]
        return torch.cat(mus, dim=1)



# ========================================================================= VAE
class VAETeacher(UnrolledTeacher):
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
        vae: a :class:`~.networks.ConditionalVAE`-like module (``encode``, ``decode``,
            ``latent``), e.g. from :func:`pretrain_vae`.
        to_features: maps decoded samples to (N, D) features (default
            identity), e.g. :class:`~.networks.Projection` for MNIST images.
        kl_weight: weight of the KL term (default 1).
        kl_reduction: ``"mean"`` over the unrolled steps (default) or ``"sum"``.
        policy: a custom policy, (N, in_features) -> (N, 2 * vae.latent);
            default an MLP with ``hidden`` and ``batch_norm``.
        hidden: the default policy's hidden sizes (default (32, 16)).
        batch_norm: BatchNorm1d in the default policy.
        **kwargs: as for :class:`~torchdht.linear.TransformTeacher`.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> x = torch.randn(64, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> vae = pretrain_vae(x, (y > 0).long(), epochs=2).vae
        >>> t = VAETeacher(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]), vae=vae, unroll=5,
        ...                seed=0)
        >>> h = t.fit(iters=3)
        >>> t.propose(torch.zeros(2))[0].shape, h.extra.shape
        (torch.Size([1, 2]), torch.Size([3]))
    """

    kind = "vae"
    isolate_rng = True
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
        check_learner(learner)
        px, _ = check_pool(learner, pool)
        for bad in ("residual", "box"):
            if bad in kwargs:
                raise TeacherTypeError(f"VAETeacher's policy outputs latent codes; {bad}= "
                                       "does not apply")
        checked = check_vae(vae)
        self.to_features = feature_map(to_features, px.dtype)
        dtype = px.dtype
        classes = learner.num_outputs if learner.num_outputs > 1 else 2
        vae_classes = getattr(vae, "classes", classes)
        if vae_classes != classes:
            raise TeacherError(f"vae is conditioned on {vae_classes} classes but the learner has "
                               f"{classes}")
        self.vae: Any = frozen_copy(vae, dtype)
        self.latent = int(checked.latent)
        self.noise_width = self.latent
        self.kl_weight = check_float(kl_weight, "kl_weight", 0.0)
        if kl_reduction not in ("mean", "sum"):
            raise TeacherError(f"kl_reduction must be 'mean' or 'sum', got {kl_reduction!r}")
        self.kl_reduction = kl_reduction
        self._vae_digest = digest(*self.vae.state_dict().values())
        d = px.shape[1]
        in_features = 2 * int(torch.Size(learner.weight_shape(d)).numel()) + d + classes
        if policy is None:
            hidden = tuple(hidden)
            policy = build_seeded(seed, 3, lambda: policy_mlp(in_features, 2 * self.latent, hidden,
                                                        batch_norm))
            arch: dict[str, Any] = {"hidden": list(hidden), "batch_norm": bool(batch_norm)}
        elif not isinstance(policy, nn.Module):
            raise TeacherTypeError(f"policy must be an nn.Module, got {type(policy).__name__}")
        else:
            arch = signature(policy)
        super().__init__(learner, pool, lr, w_star=w_star, policy=policy, seed=seed, **kwargs)
        self.policy_arch = {**arch, "out": 2 * self.latent}

    def policy_contract(self) -> str:
        return (f"policy must map (N, {self.in_features}) inputs [w, w - w*, x, onehot(y)] to "
                f"(N, {2 * self.latent}): a mean and a log-variance for the vae's latent size "
                f"{self.latent}")

    def check_policy(self) -> None:
        try:
            out = self.probe_policy()
        except RuntimeError as err:
            raise TeacherError(f"VAETeacher: {self.policy_contract()}; it failed: {err}") from err
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != 2 * self.latent:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TeacherError(
                f"vae: latent size {self.latent} does not match the policy, which returns "
                f"{shape}; {self.policy_contract()}"
            )
        self.check_step()

    def _codes(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor,
               y: Tensor) -> tuple[Tensor, Tensor]:
        out = call_module(self.policy, params, self.features(w, x, y))
        mu, raw = out[:, : self.latent], out[:, self.latent :]
        b = self.LOGVAR_BOUND
        return mu, b * torch.tanh(raw / b)

    def step(self, params: dict[str, Tensor] | None, w: Tensor, x: Tensor, y: Tensor,
             noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """The decoded code the policy writes for ``[w, w - w*, x, onehot(y)]``; the KL term."""
        mu, logvar = self._codes(params, w, x, y)
        u = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise
        sample = self.vae.decode(u, one_hot_labels(self.learner, y, self.dtype))
        feats = self.to_features(sample) if self.to_features is not None else sample
        extra = None
        if self.kl_weight and torch.is_grad_enabled():
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
            extra = self.kl_weight * kl.mean()
            if self.kl_reduction == "mean":
                extra = extra / self.graph_steps
        return sample, feats, extra

    def extra_config(self) -> dict[str, Any]:
        return {
            "noise_width": self.noise_width,
            "kl_weight": self.kl_weight,
            "kl_reduction": self.kl_reduction,
            "vae": {"latent": self.latent, **signature(self.vae), "digest": self._vae_digest},
            "to_features": describe(self.to_features),
        }
