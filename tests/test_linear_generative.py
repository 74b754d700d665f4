"""GAN- and VAE-based teachers (section 3.3.2): pretraining, freezing, GAN losses, checkpoints."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from torch import nn

from torchdht.data import load_halfmoon, load_mnist35, load_mnist35_images
from torchdht.linear import LR, fit_w_star, run
from torchdht.linear.unrolled import (
    MLPVAE,
    ConvVAE,
    GANTeacher,
    MLPDiscriminator,
    MLPGenerator,
    Projection,
    VAETeacher,
    halfmoon_gan,
    mnist_gan,
    pretrain_vae,
)

FAST = dict(unroll=6, trajectories=4)


@pytest.fixture(scope="module")
def moon():
    s = load_halfmoon(n=300, n_train=200)
    x, y = s.x_train, LR.targets(s.y_train)
    return x, y, s.y_train, fit_w_star(LR, x, y), (s.x_test, LR.targets(s.y_test))


@pytest.fixture(scope="module")
def vae(moon, tmp_path_factory):
    x, _, classes, _, _ = moon
    cache = tmp_path_factory.mktemp("vae")
    return pretrain_vae(x, classes, epochs=15, cache_dir=cache, seed=0)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# ------------------------------------------------------------------ VAE
def test_vae_pretraining_loss_falls_and_is_cached(moon, vae, tmp_path):
    x, _, classes, _, _ = moon
    assert vae.recon[-1] < vae.recon[0] and vae.loss[-1] < vae.loss[0]
    assert torch.isfinite(vae.loss).all() and vae.loss.shape == (15,)
    assert not vae.vae.training and not any(p.requires_grad for p in vae.vae.parameters())
    # a second call with the same settings reads the file instead of training
    assert vae.path is not None and vae.path.is_file() and not vae.cached
    assert re.fullmatch(r"vae-halfmoon-latent2-epochs15-seed0-[0-9a-f]{10}\.pt", vae.path.name)
    again = pretrain_vae(x, classes, epochs=15, cache_dir=vae.path.parent, seed=0)
    assert again.cached and again.path == vae.path
    assert _same(_state(again.vae), _state(vae.vae))
    assert torch.equal(again.loss, vae.loss)
    # other data (or settings) -> another file; no cache_dir -> nothing written
    other = pretrain_vae(x[:50], classes[:50], epochs=1, cache_dir=tmp_path, seed=0)
    assert other.path.parent == tmp_path and other.path != vae.path and not other.cached
    assert pretrain_vae(x[:50], classes[:50], epochs=1).path is None
    # the caller's global RNG is not consumed
    before = torch.random.get_rng_state()
    pretrain_vae(x[:50], classes[:50], epochs=1, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())


def test_vae_cache_refuses_the_shared_folder(moon):
    from torchdht.data import default_root

    x, _, classes, _, _ = moon
    with pytest.raises(ValueError, match="cache_dir"):
        pretrain_vae(x[:10], classes[:10], epochs=1, cache_dir=default_root() / "vae-cache")


def test_frozen_vae_is_unchanged_by_teacher_training(moon, vae):
    x, y, _, ws, _ = moon
    user_vae = copy.deepcopy(vae.vae)
    user_vae.requires_grad_(True)  # even a trainable module handed in is left alone
    before = _state(user_vae)
    t = VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=user_vae, seed=0, **FAST)
    policy_before = _state(t.policy)
    h = t.fit(iters=6)
    assert _same(_state(t.vae), before) and _same(_state(user_vae), before)
    assert not t.vae.training and not any(p.requires_grad for p in t.vae.parameters())
    assert all(p.requires_grad for p in user_vae.parameters())  # the caller's flags are kept
    assert all(p.grad is None for p in user_vae.parameters())
    assert not _same(_state(t.policy), policy_before)
    assert torch.isfinite(h.loss).all() and (h.extra > 0).all()  # the KL term is in the loss
    assert torch.allclose(h.loss, h.final + h.extra, atol=1e-4)  # alpha = 0, no penalty


def test_vae_kl_term_mean_over_the_unroll_or_sum(moon, vae):
    x, y, _, ws, _ = moon
    a = VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=vae.vae, seed=0, **FAST)
    b = VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=vae.vae, seed=0, kl_reduction="sum", **FAST)
    g = torch.Generator().manual_seed(0)
    w0, index = torch.zeros(4, 2), torch.randint(0, x.shape[0], (6, 4), generator=g)
    noise = torch.randn(6, 4, 2, generator=g)
    ra = a.unrolled_loss(w0=w0, index=index, noise=noise)
    rb = b.unrolled_loss(w0=w0, index=index, noise=noise)
    torch.testing.assert_close(ra.final, rb.final)
    torch.testing.assert_close(rb.extra, 6 * ra.extra)
    # the first step's KL by hand: 0.5 * sum(mu^2 + e^logvar - 1 - logvar), mean over learners
    mu, logvar = a._codes(None, w0, x[index[0]], y[index[0]])
    kl0 = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    c = VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=vae.vae, seed=0, unroll=1, trajectories=4)
    rc = c.unrolled_loss(w0=w0, index=index[:1], noise=noise[:1])
    torch.testing.assert_close(rc.extra, kl0.detach())


def test_vae_examples_are_decoded_codes(moon, vae):
    x, y, _, ws, _ = moon
    t = VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=vae.vae, seed=0, **FAST)
    w = torch.zeros(3, 2)
    samples, feats = t.sample(w, y[:3], x[:3])
    assert torch.equal(samples, feats)  # no to_features: the decoder's output is the example
    # a code of the policy's mean decodes to the same example as the teacher makes without noise
    mu, _ = t._codes(None, w, x[:3], y[:3])
    onehot = torch.nn.functional.one_hot((y[:3] > 0).long(), 2).float()
    with torch.no_grad():
        dec = t.vae.decode(mu, onehot)
        direct = t.step(None, w, x[:3], y[:3], None)[1]
    torch.testing.assert_close(dec, direct)


# ------------------------------------------------------------------ GAN
def test_gan_losses_are_finite_and_move(moon):
    x, y, _, ws, _ = moon
    t = halfmoon_gan(LR, (x, y), 0.05, w_star=ws, seed=0, d_steps=2, d_batch=32, **FAST)
    d0, g0 = _state(t.discriminator), _state(t.policy)
    h = t.fit(iters=12)
    for series in (h.loss, h.final, h.extra, h.discriminator):
        assert series.shape == (12,) and torch.isfinite(series).all()
    assert float(h.discriminator.std()) > 0 and float(h.extra.std()) > 0
    assert (h.extra > 0).all()  # softplus(-logit) > 0: the adversarial term is in the loss
    assert not _same(_state(t.discriminator), d0) and not _same(_state(t.policy), g0)


def test_gan_generator_step_leaves_the_discriminator_alone(moon):
    x, y, _, ws, _ = moon
    t = halfmoon_gan(LR, (x, y), 0.05, w_star=ws, seed=0, **FAST)
    r = t.unrolled_loss()
    r.loss.backward()
    assert all(p.grad is None for p in t.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.policy.parameters())
    # the adversarial term alone reaches the generator, and still not the discriminator
    t.policy.zero_grad(set_to_none=True)
    _, _, extra = t.step(None, torch.zeros(4, 2), x[:4], y[:4], torch.randn(4, 2))
    extra.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.policy.parameters())
    assert all(p.grad is None for p in t.discriminator.parameters())


def test_fit_is_reproducible_and_keeps_the_global_rng(moon):
    x, y, _, ws, _ = moon
    before = torch.random.get_rng_state()
    a = halfmoon_gan(LR, (x, y), 0.05, w_star=ws, seed=4, **FAST)
    ha = a.fit(iters=3)
    assert torch.equal(before, torch.random.get_rng_state())
    b = halfmoon_gan(LR, (x, y), 0.05, w_star=ws, seed=4, **FAST)
    hb = b.fit(iters=3)
    assert torch.equal(ha.loss, hb.loss) and torch.equal(ha.discriminator, hb.discriminator)


def test_engine_matches_the_base_fit(moon):
    # the one fit loop is its outer steps: driven by hand on a transformation policy (which
    # does not isolate the RNG), same starting learners (and restarts), same pool draws, same
    # Adam steps
    from torchdht.linear import TransformTeacher

    x, y, _, ws, _ = moon
    kw = dict(unroll=4, trajectories=3, horizon=8, alpha=0.1, seed=2)
    a = TransformTeacher(LR, (x, y), 0.05, w_star=ws, **kw)
    b = TransformTeacher(LR, (x, y), 0.05, w_star=ws, **kw)
    ha = a.fit(iters=5)
    rows = torch.stack([b.outer_step() for _ in range(5)])
    torch.testing.assert_close(rows[:, 0], ha.loss)
    assert _same(_state(a.policy), _state(b.policy)) and torch.equal(a._w, b._w)
    assert a.iterations == b.iterations == 5
    assert torch.equal(torch.as_tensor(a._age), torch.as_tensor(b._age))


# -------------------------------------------------------------- checkpoints
def _make(kind, moon, vae, **kw):
    x, y, _, ws, _ = moon
    if kind == "gan":
        return halfmoon_gan(LR, (x, y), 0.05, w_star=ws, **{**FAST, **kw})
    return VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=vae.vae, **{**FAST, **kw})


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_state_dict_round_trip(kind, moon, vae):
    a = _make(kind, moon, vae, seed=0)
    a.fit(iters=3)
    state = _roundtrip(a.state_dict())
    b = _make(kind, moon, vae, seed=1)  # another seed: other weights until loaded
    b.load_state_dict(state)
    w = torch.tensor([0.3, -0.2])
    for _ in range(4):
        xa, ya = a.propose(w)
        xb, yb = b.propose(w)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    if kind == "gan":
        assert _same(_state(a.discriminator), _state(b.discriminator))
    ha, hb = a.fit(iters=2), b.fit(iters=2)  # and training continues the same way
    assert torch.equal(ha.loss, hb.loss)


@pytest.mark.parametrize("kind,change", [
    ("gan", {"adv_weight": 0.5}), ("gan", {"d_steps": 3}), ("gan", {"noise_dim": 3}),
    ("vae", {"kl_weight": 0.5}), ("vae", {"kl_reduction": "sum"}), ("vae", {"hidden": (16,)}),
    ("vae", {"unroll": 7}),
])
def test_checkpoint_of_another_configuration_is_refused(kind, change, moon, vae):
    state = _make(kind, moon, vae, seed=0).state_dict()
    other = _make(kind, moon, vae, seed=0, **change)
    with pytest.raises(ValueError, match="another configuration"):
        other.load_state_dict(state)


def test_checkpoint_refused_across_kinds_and_vaes(moon, vae):
    x, y, classes, ws, _ = moon
    gan_state = _make("gan", moon, vae, seed=0).state_dict()
    with pytest.raises(ValueError, match="another configuration"):
        _make("vae", moon, vae, seed=0).load_state_dict(gan_state)
    other_vae = pretrain_vae(x, classes, epochs=1, seed=5).vae  # same shapes, other weights
    v = VAETeacher(LR, (x, y), 0.05, w_star=ws, vae=other_vae, seed=0, **FAST)
    with pytest.raises(ValueError, match="vae"):
        v.load_state_dict(_make("vae", moon, vae, seed=0).state_dict())


# --------------------------------------------------------------- end to end
@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_halfmoon_end_to_end(kind, moon, vae):
    x, y, _, ws, test = moon
    t = _make(kind, moon, vae, seed=0)
    h = t.fit(iters=5)
    assert h.loss.shape == (5,) and h.seconds > 0
    w0 = LR.init(2, torch.Generator().manual_seed(0))
    r = run(t, LR, w0, ws, 20, 0.05, test=test)
    assert r.distance.shape == (21,) and torch.isfinite(r.distance).all()
    assert r.xs.shape == (20, 2) and torch.isfinite(r.xs).all()
    assert set(r.ys.tolist()) <= {-1.0, 1.0}


def _mnist(root, n=64):
    d = load_mnist35(root, n_train=n, n_test=20)
    imgs, classes = load_mnist35_images(root, n_train=n)
    torch.testing.assert_close(imgs.flatten(1) @ d.projection, d.x_train, atol=1e-4, rtol=1e-4)
    assert torch.equal(classes, d.y_train)
    y = LR.targets(d.y_train)
    return d, imgs, classes, y, fit_w_star(LR, d.x_train, y)


def test_mnist_gan_quick(mnist_root):
    d, imgs, _, y, ws = _mnist(mnist_root)
    t = mnist_gan(LR, (d.x_train, y), 0.01, w_star=ws, projection=d.projection,
                  real=(imgs, y), width=16, d_width=8, noise_dim=4, unroll=3, trajectories=4,
                  d_batch=16, seed=0)
    h = t.fit(iters=2)
    assert torch.isfinite(h.loss).all() and torch.isfinite(h.discriminator).all()
    images, feats = t.sample(torch.zeros(2, 24), y[:2])
    assert images.shape == (2, 1, 28, 28) and images.abs().max() <= 1
    torch.testing.assert_close(feats, images.flatten(1) @ d.projection)
    r = run(t, LR, torch.zeros(24), ws, 20, 0.01, test=(d.x_test, LR.targets(d.y_test)))
    assert r.xs.shape == (20, 24) and torch.isfinite(r.distance).all()


def test_mnist_vae_quick(mnist_root, tmp_path):
    d, imgs, classes, y, ws = _mnist(mnist_root)
    pre = pretrain_vae(imgs, classes, dataset="mnist", epochs=2, cache_dir=tmp_path,
                       vae=ConvVAE(2, latent=4, width=8))
    assert isinstance(pre.vae, ConvVAE) and pre.path.name.startswith("vae-mnist-latent4-epochs2")
    t = VAETeacher(LR, (d.x_train, y), 0.01, w_star=ws, vae=pre.vae,
                   to_features=Projection(d.projection), unroll=3, trajectories=4, seed=0)
    h = t.fit(iters=2)
    assert torch.isfinite(h.loss).all()
    r = run(t, LR, torch.zeros(24), ws, 20, 0.01)
    assert r.xs.shape == (20, 24) and torch.isfinite(r.xs).all()


# --------------------------------------------------------------- bad inputs
def test_bad_inputs(moon, vae):
    x, y, classes, ws, _ = moon
    pool = (x, y)
    with pytest.raises(ValueError, match="latent size 2 does not match the policy"):
        VAETeacher(LR, pool, 0.1, w_star=ws, vae=vae.vae, policy=nn.Linear(8, 3))
    with pytest.raises(TypeError, match="vae must be an nn.Module with encode"):
        VAETeacher(LR, pool, 0.1, w_star=ws, vae=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="kl_weight"):
        VAETeacher(LR, pool, 0.1, w_star=ws, vae=vae.vae, kl_weight=-1.0)
    with pytest.raises(ValueError, match="kl_reduction"):
        VAETeacher(LR, pool, 0.1, w_star=ws, vae=vae.vae, kl_reduction="max")
    with pytest.raises(ValueError, match="classes"):
        VAETeacher(LR, pool, 0.1, w_star=ws, vae=MLPVAE(2, 3, latent=2))
    gen, disc = MLPGenerator(6, 2, 2), MLPDiscriminator(2, 2)
    with pytest.raises(ValueError, match="adv_weight"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=disc, adv_weight=-1)
    with pytest.raises(ValueError, match="noise_dim"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=disc, noise_dim=-1)
    with pytest.raises(ValueError, match="policy could not be evaluated|examples must be"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=disc, noise_dim=5)
    with pytest.raises(ValueError, match="real"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=disc,
                   to_features=lambda s: s)
    with pytest.raises(ValueError, match="real: samples have shape"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=disc,
                   real=(torch.zeros(4, 3), torch.ones(4)))
    with pytest.raises(TypeError, match="discriminator"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=lambda a, b: a)
    with pytest.raises(TypeError, match="generator= instead of policy="):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=disc, policy=gen)
    with pytest.raises(TypeError, match="wrong arguments"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=nn.Linear(8, 2), discriminator=disc)
    with pytest.raises(TypeError, match=r"discriminator\(samples, onehot\)"):
        GANTeacher(LR, pool, 0.1, w_star=ws, generator=gen, discriminator=nn.Linear(4, 1))
    with pytest.raises(ValueError, match="vae has latent size 2 but latent=3"):
        pretrain_vae(x, classes, epochs=1, vae=MLPVAE(2, 2, latent=2), latent=3)
    with pytest.raises(ValueError, match="dataset"):
        pretrain_vae(x, classes, dataset="cifar", epochs=1)
    with pytest.raises(TypeError, match="classes"):
        pretrain_vae(x, classes.float(), epochs=1)
    with pytest.raises(ValueError, match="classes must lie"):
        pretrain_vae(x, classes + 5, epochs=1)
    with pytest.raises(ValueError, match="images"):
        pretrain_vae(x, classes, dataset="mnist", epochs=1)
    with pytest.raises(ValueError, match="projection"):
        mnist_gan(LR, pool, 0.1, w_star=ws, projection=torch.zeros(784, 3),
                  real=(torch.zeros(2, 1, 28, 28), torch.ones(2)))
