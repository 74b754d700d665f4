"""The parameterized experiment's report: its files, its printed summary and its pictures
(see :mod:`torchdht.experiments.parameterized` for what each holds)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..linear.omniscient import LR, History
from . import _core as core
from . import _linear as lin
from ._parameterized_config import ParameterizedConfig
from ._parameterized_teachers import Built, mnist_images, reseed

__all__ = ["ParameterizedResult", "checkpoints", "config_extras", "panel_iters", "plot",
           "print_report", "write_fit", "write_privacy"]


@dataclass
class ParameterizedResult:
    """What :func:`~torchdht.experiments.parameterized.run` returns.

    Attributes:
        table: the summary rows: ``teacher``, ``wall_s``, and ``dist_C`` / ``acc_C``
            (mean, std) pairs for C in 0 and the checkpoints.
        checkpoints: the table's iterations.
        wall: table row -> seconds of teaching.
        teacher_seconds: the teacher's training time (0.0 when loaded).
        fit_loss: the outer loss ``(start, end)`` of training, or None when loaded.
        histories: table row -> one :class:`~torchdht.linear.History` per seed.
        teacher: the learned teacher.
        w_star: the target (float32).
        config: what config.json holds.
        privacy: config.json's ``privacy`` block (``--teacher privacy``), else None.
        privacy_distances: the emitted examples' distances to the privacy set, (seeds,
            iters) (``--teacher privacy``), else None.
        out: the output folder.
    """

    table: list[dict[str, Any]]
    checkpoints: list[int]
    wall: dict[str, float]
    teacher_seconds: float
    fit_loss: tuple[float, float] | None
    histories: dict[str, list[History]]
    teacher: Any
    w_star: Tensor
    config: dict[str, Any]
    privacy: dict[str, Any] | None
    privacy_distances: Tensor | None
    out: Path


def checkpoints(iters: int) -> list[int]:
    """The table's iterations: 50, 100, 300 where reached, and always the last.

    Example:
        >>> checkpoints(300), checkpoints(30), checkpoints(200)
        ([50, 100, 300], [30], [50, 100, 200])
    """
    return sorted({c for c in lin.CHECKPOINTS if c <= iters} | {iters})


def panel_iters(iters: int) -> list[int]:
    """The picture's iterations: the paper's 10, 150, 290, scaled down for short runs.

    Example:
        >>> panel_iters(300), panel_iters(30)
        ([10, 150, 290], [1, 15, 29])
    """
    if iters >= 290:
        return [10, 150, 290]
    return sorted({min(iters, max(1, round(iters * f / 300))) for f in (10, 150, 290)})


# ----------------------------------------------------------------------------- files


def write_fit(writer: core.Writer, fit: Any) -> None:
    """``teacher_fit.csv``: the outer loss per training iteration, with the extra term,
    the privacy hinge and the discriminator loss where the teacher has them."""
    cols = ["loss", "final", "aux"] + [c for c in ("extra", "penalty", "discriminator")
                                       if hasattr(fit, c)]
    rows = ({"outer_iter": i, **{c: float(getattr(fit, c)[i]) for c in cols}}
            for i in range(len(fit.loss)))
    writer.csv("teacher_fit.csv", rows, ["outer_iter", *cols], float_format=".8g")


def write_privacy(writer: core.Writer, dists: Tensor, eps: float) -> None:
    """``privacy.csv``: seed, iter, distance to the privacy set, violation (0 or 1)."""
    rows = ({"seed": seed, "iter": it + 1, "distance": float(dists[seed, it]),
             "violation": int(float(dists[seed, it]) < eps)}
            for seed in range(dists.shape[0]) for it in range(dists.shape[1]))
    writer.csv("privacy.csv", rows, ["seed", "iter", "distance", "violation"],
               float_format=".8g")


# ----------------------------------------------------------------------------- printed


def print_report(cfg: ParameterizedConfig, res: ParameterizedResult) -> None:
    """The printed summary: the teacher's training, the VAE, the GAN, ``w*``, the table,
    the privacy accounting and where the files went."""
    c = res.config
    print(lin.headline(f"parameterized teaching ({cfg.teacher})", cfg.dataset, LR, c["dim"],
                       cfg.seeds, cfg.iters, cfg.lr))
    if cfg.load is None:
        per = res.teacher_seconds / max(cfg.outer_iters, 1)
        loss_txt = "" if res.fit_loss is None else \
            f"; outer loss {res.fit_loss[0]:.4g} -> {res.fit_loss[1]:.4g}"
        print(f"teacher: {cfg.outer_iters} outer iterations x {cfg.unroll} unrolled steps in "
              f"{res.teacher_seconds:.1f} s ({1000 * per:.1f} ms each){loss_txt}")
    else:
        print(f"teacher: loaded from {cfg.load} ({c['teacher_outer_iters_done']} outer "
              "iterations)")
    if "vae_pretraining" in c:
        v = c["vae_pretraining"]
        took = "" if v["train_seconds"] is None else \
            f" (trained earlier in {v['train_seconds']:.1f} s)"
        how = (f"read from the cache {v['path']} in {v['seconds']:.1f} s{took}" if v["cached"]
               else f"trained in {v['seconds']:.1f} s, cached to {v['path']}")
        print(f"VAE ({v['architecture']}, latent {v['latent']}, {v['epochs']} epochs): {how}; "
              f"final loss {v['final_loss']:.4g} (recon {v['final_recon']:.4g}, "
              f"KL {v['final_kl']:.4g})")
    if "gan" in c:
        gan = c["gan"]
        print(f"GAN: final discriminator loss {gan['final_discriminator_loss']:.4g} (2 ln 2 = "
              f"{2 * math.log(2):.4g} at equilibrium), adversarial term "
              f"{gan['final_adversarial_term']:.4g}")
    print(lin.target_line(cfg.l2, res.w_star, c["w_star_test_accuracy"], res.table))
    print(lin.format_summary(res.table, res.checkpoints))
    if res.privacy is not None:
        p, st = res.privacy, res.privacy["repair_stats"]
        print(f"privacy: {p['size']} private examples, eps {p['eps']:.4g} ({p['eps_rule']}); "
              f"{p['violations']} violations among {p['emitted']} emitted examples (min "
              f"distance {p['min_distance']:.4g} = {p['min_distance_over_eps']:.3g} eps); "
              f"repairs {p['repairs']} (resampled {st.get('resampled', 0)}, projected "
              f"{st.get('projected', 0)}, fallback {st.get('fallback', 0)})")
    print(f"wrote {res.out}")


# ----------------------------------------------------------------------------- pictures


def plot(writer: core.Writer, cfg: ParameterizedConfig, res: ParameterizedResult,
         data: lin.LinearData, built: Built) -> None:
    """The PNGs: ``convergence.png``; ``halfmoon_points.png`` or ``mnist_samples.png``;
    ``privacy_distance.png`` (``--teacher privacy``)."""
    name = cfg.row
    lin.plot_convergence(
        writer, res.histories,
        f"parameterized teaching ({cfg.teacher}), {cfg.dataset}, LR learner, lr {cfg.lr:g}, "
        f"mean ± std over {cfg.seeds} seeds",
        dashed=lambda row: not (row.startswith("DHT-") and row != "DHT-greedy"))
    h = res.histories[name][0]
    if data.projection is None:
        _plot_halfmoon(writer, res.teacher, h, data, res.w_star, name, cfg.iters,
                       built.privacy_set)
    elif cfg.teacher in ("gan", "vae"):
        images = built.images if built.images is not None else mnist_images(data,
                                                                            cfg.data_root)
        _plot_mnist_samples(writer, res.teacher, h, images, data.classes, name, cfg.iters)
    else:
        _plot_mnist(writer, res.teacher, h, data, name, cfg.iters)
    if res.privacy_distances is not None:
        _plot_privacy(writer, res.privacy_distances, float(res.teacher.eps), name, cfg.dataset)


def _generated(teacher: Any, w: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` of the teacher's proposals at the learner state ``w`` (fixed draws)."""
    reseed(teacher, seed)
    pairs = [teacher.propose(w) for _ in range(n)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1].reshape(1) for p in pairs])


def _plot_halfmoon(writer: core.Writer, teacher: Any, h: History, data: lin.LinearData,
                   w_star: Tensor, name: str, iters: int, private: Tensor | None) -> None:
    """Like the paper's Figure 6: the teacher's points at ``w_t`` for a few ``t``."""
    x, classes = data.x, data.classes
    marks = panel_iters(iters)
    colors = {-1: "tab:blue", 1: "tab:red"}
    with writer.figure("halfmoon_points.png", len(marks),
                       figsize=(5 * len(marks), 4.6)) as axes:
        for ax, t in zip(axes, marks):
            w = h.weights[t]
            gx, gy = _generated(teacher, w, 200, seed=12345)
            for c, lab in ((0, -1), (1, 1)):
                sel = classes == c
                ax.scatter(x[sel, 0], x[sel, 1], color=colors[lab], s=6, alpha=0.12)
                sel = gy == lab
                ax.scatter(gx[sel, 0], gx[sel, 1], color=colors[lab], s=14, alpha=0.85,
                           label=f"generated, y={lab:+d}")
            if private is not None:
                ax.scatter(private[:, 0], private[:, 1], color="black", marker="x", s=16,
                           lw=0.8, alpha=0.7, label="privacy set")
            pts = torch.cat([x, gx])
            span = (pts.max(0).values - pts.min(0).values).clamp_min(1e-3)
            lo, hi = pts.min(0).values - 0.08 * span, pts.max(0).values + 0.08 * span
            lim = (float(lo[0]), float(hi[0]))
            lin.decision_line(ax, w_star, lim, color="tab:orange", lw=2.2, label="w*")
            lin.decision_line(ax, w, lim, color="tab:green", lw=1.8, ls="--", label=f"w_{t}")
            ax.set_xlim(*lim)
            ax.set_ylim(float(lo[1]), float(hi[1]))
            ax.set_title(f"iteration {t}")
            ax.grid(alpha=0.2)
        axes[0].legend(fontsize=7, loc="best")
        axes[0].figure.suptitle(f"{name} on half-moon (seed 0): 200 generated points at w_t; "
                                "faded: training data", fontsize=10)


def _plot_mnist(writer: core.Writer, teacher: Any, h: History, data: lin.LinearData, name: str,
                iters: int) -> None:
    """The teacher's examples at a few iterations (seed 0), mapped back with ``P^+``."""
    from ..data.mnist35 import DIGITS, unproject

    assert data.projection is not None
    projection, k = data.projection.double(), 8
    rows = [("train, P^+ P x", data.x[:k], data.y[:k])]
    for t in sorted({0, *panel_iters(iters)}):
        gx, gy = _generated(teacher, h.weights[t], k, seed=12345)
        rows.append((f"t={t}", gx, gy))
    lin.image_grid(
        writer, "mnist_samples.png",
        [(label, unproject(feats.double(), projection),
          [f"'{DIGITS[int(ys[j] > 0)]}'" for j in range(k)]) for label, feats, ys in rows],
        f"MNIST 3/5, {name} (seed 0): examples generated at w_t, mapped back with P^+ (each on "
        "its own grey scale)", figsize=(1.3 * k, 1.45 * len(rows)), grey=None)


def _plot_mnist_samples(writer: core.Writer, teacher: Any, h: History, images: Tensor,
                        classes: Tensor, name: str, iters: int) -> None:
    """Figure 7: the GAN's / VAE's raw 28x28 samples at a few iterations (seed 0), real on top."""
    from ..data.mnist35 import DIGITS

    k = 8
    want = torch.arange(k) % 2  # alternate 3, 5
    ys = LR.targets(want).to(images.dtype)
    firsts = {c: (classes == c).nonzero().flatten() for c in (0, 1)}
    real_idx = [int(firsts[int(c)][j // 2]) for j, c in enumerate(want)]
    rows: list[tuple[str, Tensor]] = [("real", images[real_idx])]
    for t in sorted({0, *panel_iters(iters)}):
        reseed(teacher, 12345)
        w = h.weights[t].to(images.dtype)
        samples, _ = teacher.sample(w.expand(k, *w.shape), ys)
        rows.append((f"t={t}", samples.reshape(k, 28, 28)))
    titles = [f"'{DIGITS[int(c)]}'" for c in want]
    lin.image_grid(
        writer, "mnist_samples.png", [(label, imgs, titles) for label, imgs in rows],
        f"MNIST 3/5, {name} (seed 0): raw 28x28 samples generated at w_t (top: real training "
        "images; grey scale [-1, 1])", figsize=(1.3 * k, 1.45 * len(rows)))


def _plot_privacy(writer: core.Writer, dists: Tensor, eps: float, name: str,
                  dataset: str) -> None:
    """Figure 10: the private perceptual distance of the emitted examples over the iterations."""
    with writer.figure("privacy_distance.png", 1, figsize=(7, 4)) as (ax,):
        it = torch.arange(1, dists.shape[1] + 1).numpy()
        m, sd = dists.mean(0).numpy(), dists.std(0, unbiased=False).numpy()
        ax.plot(it, dists[0].numpy(), lw=0.8, alpha=0.7, label="seed 0")
        line = ax.plot(it, m, lw=1.6, label=f"mean over {dists.shape[0]} seeds")[0]
        ax.fill_between(it, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        ax.axhline(eps, color="tab:red", ls="--", lw=1.4, label=f"eps = {eps:.3g}")
        lo, hi = min(float(dists.min()), eps), max(float(dists.max()), eps)
        if lo > 0 and hi / lo > 100:  # eps and the distances far apart: both on a log scale
            ax.set_yscale("log")
        ax.set_xlabel("teaching iteration")
        ax.set_ylabel("min_j |phi(x~) - phi(p_j)|")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{name}, {dataset}: private perceptual distance of the emitted examples",
                     fontsize=9)


def config_extras(cfg: ParameterizedConfig, built: Built, fit: Any) -> dict[str, Any]:
    """The blocks of config.json that only some teachers have: ``gan``, ``vae_pretraining``."""
    extras: dict[str, Any] = {}
    if fit is not None and cfg.teacher == "gan" and len(fit.loss):
        extras["gan"] = {"final_discriminator_loss": float(fit.discriminator[-1]),
                         "final_adversarial_term": float(fit.extra[-1]),
                         "discriminator_loss_at_equilibrium": 2 * math.log(2)}
    if built.vae_info is not None:
        extras["vae_pretraining"] = built.vae_info
    return extras
