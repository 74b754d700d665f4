"""The parameterized-teaching experiment, end to end in --quick mode."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from torchdht.experiments import EXPERIMENTS, parameterized
from torchdht.experiments.__main__ import main as cli

ROWS = {t: f"DHT-{t}" for t in ("transform", "blackbox", "gan", "vae", "privacy")}
BASE_ROWS = ("SGD", "IMT", "DHT-greedy")


def _args(argv):
    p = argparse.ArgumentParser()
    parameterized.add_arguments(p)
    return p.parse_args(argv)


def _config(argv):
    """The config of ``argv`` as the command line makes it (``ValueError`` if it does not
    check, where the command line reports a usage error)."""
    return parameterized.config_from_args(_args(argv))


def _run(argv):
    return parameterized.run(_config(["--quick", "--no-progress", *argv]))


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _check_results(out, teacher, seeds=2, iters=30, baselines=BASE_ROWS):
    rows = _rows(out / "results.csv")
    names = {*baselines, ROWS[teacher]}
    assert {r["teacher"] for r in rows} == names
    assert len(rows) == len(names) * seeds * (iters + 1)
    for name in names:
        got = {(r["seed"], r["iter"]) for r in rows if r["teacher"] == name}
        assert got == {(str(s), str(i)) for s in range(seeds) for i in range(iters + 1)}
    assert all(math.isfinite(float(r["distance"])) for r in rows)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    # every teacher starts from the same w0 for a given seed
    assert len({(r["seed"], r["distance"]) for r in rows if r["iter"] == "0"}) == seeds
    return rows


@pytest.fixture(scope="module")
def halfmoon_transform(tmp_path_factory):
    out = tmp_path_factory.mktemp("hm-transform")
    return out, _run(["--out", str(out)])


def test_quick_halfmoon_transform(halfmoon_transform, capsys):
    out, res = halfmoon_transform
    _check_results(out, "transform")
    for name in ("results.csv", "summary.csv", "teacher.pt", "teacher_fit.csv", "config.json"):
        assert (out / name).stat().st_size > 0
    for png in ("convergence.png", "halfmoon_points.png"):
        assert (out / png).stat().st_size > 1000
    summary = _rows(out / "summary.csv")
    assert {r["iter"] for r in summary} == {"0", "30"}
    assert all(math.isfinite(float(r[k])) for r in summary
               for k in ("dist_mean", "dist_std", "acc_mean", "acc_std"))
    assert len(_rows(out / "teacher_fit.csv")) == 40
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_train_seconds"] > 0 and cfg["teacher_train_seconds"] == \
        res.teacher_seconds
    assert cfg["teacher_loaded_from"] is None
    assert math.isfinite(cfg["fit_loss_start"]) and math.isfinite(cfg["fit_loss_end"])
    assert cfg["dtype"] == "float32" and cfg["lr"] == 1e-3 and cfg["alpha"] == 0.0
    assert cfg["teacher_config"]["in_features"] == 8  # [w, w - w*, x, onehot(y)]
    assert cfg["teacher_config"]["unroll"] == 10 and cfg["teacher_seed"] == 10_000
    assert 0.5 < cfg["w_star_test_accuracy"] <= 1.0
    assert set(cfg["wall_seconds"]) == {*BASE_ROWS, "DHT-transform"}
    # the returned result carries the summary rows and timings
    assert [r["teacher"] for r in res.table] == [*BASE_ROWS, "DHT-transform"]
    assert res.checkpoints == [30]
    assert all(len(r["dist_30"]) == 2 for r in res.table)
    assert res.fit_loss == (cfg["fit_loss_start"], cfg["fit_loss_end"])
    assert res.out == out and cfg == json.loads(json.dumps(res.config))
    assert list(res.histories) == [*BASE_ROWS, "DHT-transform"] and res.privacy is None


def test_quick_halfmoon_blackbox_via_cli(tmp_path, capsys):
    out = tmp_path / "bb"
    assert cli(["parameterized", "--teacher", "blackbox", "--quick", "--no-progress",
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "\nDHT-blackbox " in printed and "|w-w*| @30" in printed and "wall s" in printed
    _check_results(out, "blackbox")
    cfg = json.loads((out / "config.json").read_text())
    # the last 20 % of the 800 training points are the validation set, never the test set
    assert cfg["pool_size"] == 640 and cfg["validation_size"] == 160
    assert cfg["teacher_config"]["kind"] == "blackbox"
    assert cfg["teacher_config"]["in_features"] == 6  # [w, x, onehot(y)]
    assert cfg["teacher_train_seconds"] > 0
    assert (out / "halfmoon_points.png").stat().st_size > 1000


def test_quick_mnist35_transform(tmp_path, mnist_root):
    out = tmp_path / "mn"
    res = _run(["--dataset", "mnist35", "--data-root", str(mnist_root), "--seeds", "1",
                "--iters", "6", "--outer-iters", "5", "--unroll", "4", "--hidden", "32,32",
                "--out", str(out)])
    _check_results(out, "transform", seeds=1, iters=6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_config"]["in_features"] == 2 * 24 + 24 + 2
    assert cfg["teacher_config"]["policy"] == {"hidden": [32, 32], "batch_norm": True}
    assert res.teacher_seconds > 0
    assert (out / "mnist_samples.png").stat().st_size > 1000


def test_load_reproduces_teacher_rows(halfmoon_transform, tmp_path, capsys):
    out, _ = halfmoon_transform
    again = tmp_path / "loaded"
    res = _run(["--load", str(out / "teacher.pt"), "--baselines", "", "--no-plots",
                "--out", str(again)])
    assert "loaded from" in capsys.readouterr().out
    assert res.teacher_seconds == 0.0 and res.fit_loss is None
    assert not (again / "teacher_fit.csv").exists()
    first = [r for r in _rows(out / "results.csv") if r["teacher"] == "DHT-transform"]
    second = _rows(again / "results.csv")
    assert {r["teacher"] for r in second} == {"DHT-transform"}
    assert second == first
    cfg = json.loads((again / "config.json").read_text())
    assert cfg["teacher_loaded_from"] == str(out / "teacher.pt")


def test_bad_load_names_the_differing_key(halfmoon_transform, tmp_path, capsys):
    out, _ = halfmoon_transform
    ckpt = str(out / "teacher.pt")
    with pytest.raises(ValueError, match="unroll"):
        _run(["--load", ckpt, "--unroll", "3", "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="kind"):
        _run(["--load", ckpt, "--teacher", "blackbox", "--out", str(tmp_path / "b")])
    # on the command line: one line and exit status 1
    assert cli(["parameterized", "--quick", "--no-progress", "--load", ckpt, "--unroll", "3",
                "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unroll" in err
    assert err.startswith("python -m torchdht.experiments parameterized: error: ")


def test_options_checked(tmp_path, capsys):
    with pytest.raises(ValueError, match="teacher-seed"):
        _run(["--teacher-seed", "1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown"):
        _run(["--baselines", "SGD,GAN", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--lr must be > 0"):
        _run(["--lr", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:  # the command line: a usage error
        cli(["parameterized", "--quick", "--lr", "0", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--lr must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli(["parameterized", "--quick", "--teacher-seed", "1", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--teacher-seed 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_registry_and_defaults():
    assert EXPERIMENTS["parameterized"] == "torchdht.experiments.parameterized"
    assert set(parameterized.TEACHERS) >= {"transform", "blackbox", "gan", "vae", "privacy"}
    a = _config(["--dataset", "mnist35"])
    # the paper's setting
    assert (a.seeds, a.iters, a.outer_iters, a.unroll, a.lr, a.teacher_lr) == (
        10, 300, 1000, 40, 1e-3, 2e-3)
    assert a.hidden == [128, 256, 512, 512, 1024] and a.batch_norm is True
    assert a == parameterized.ParameterizedConfig(dataset="mnist35")  # the defaults
    b = _config(["--quick", "--unroll", "3"])
    assert b.unroll == 3 and b.hidden == [32, 16] and b.batch_norm is False
    assert b.horizon == b.iters == 30 and b.baselines == list(parameterized.BASELINES)
    # the generative and privacy teachers' options: filled for their teacher only
    v = _config(["--dataset", "mnist35", "--teacher", "vae"])
    assert (v.vae_epochs, v.vae_latent, v.kl_weight, v.cache_dir) == (
        100, 16, 1.0, str(Path("runs") / "vae-cache"))
    assert v.adv_weight is None and v.eps is None and v.privacy_fraction is None
    g = _config(["--quick", "--teacher", "gan"])
    assert (g.adv_weight, g.d_steps, g.vae_epochs, g.cache_dir) == (1.0, 1, None, None)
    q = _config(["--quick", "--teacher", "privacy"])
    assert dataclasses.replace(q) == q  # filling again: idempotent
    assert (q.vae_epochs, q.vae_latent, q.privacy_fraction, q.penalty, q.eps) == (
        2, 2, 0.1, 1.0, None)
    # the baselines keep their table order; '' is none
    assert _config(["--baselines", "DHT,SGD"]).baselines == ["SGD", "DHT"]
    assert _config(["--baselines", ""]).baselines == []


# ------------------------------------------------- generative and privacy teachers
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh VAE cache for this module (never the default runs/vae-cache)."""
    return tmp_path_factory.mktemp("vae-cache")


def _fit_columns(out):
    rows = _rows(out / "teacher_fit.csv")
    assert rows and set(rows[0]) == {"outer_iter", "loss", "final", "aux", "extra", "penalty",
                                     "discriminator"}
    return rows


def test_quick_halfmoon_gan(tmp_path, capsys):
    out = tmp_path / "gan"
    res = _run(["--teacher", "gan", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "\nDHT-gan " in printed and "final discriminator loss" in printed
    _check_results(out, "gan")
    for png in ("convergence.png", "halfmoon_points.png"):
        assert (out / png).stat().st_size > 1000
    rows = _fit_columns(out)
    assert len(rows) == 40
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "extra",
                                                                 "discriminator"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_config"]["kind"] == "gan"
    assert cfg["teacher_config"]["in_features"] == 8  # [w, w - w*, z, onehot(y)], as the paper
    assert cfg["teacher_config"]["adv_weight"] == 1.0 and cfg["teacher_config"]["d_steps"] == 1
    gan = cfg["gan"]
    assert math.isfinite(gan["final_discriminator_loss"]) and gan["final_discriminator_loss"] > 0
    assert math.isclose(gan["final_discriminator_loss"], float(rows[-1]["discriminator"]),
                        rel_tol=1e-6)
    assert "vae_pretraining" not in cfg and "privacy" not in cfg and res.privacy is None


def test_quick_halfmoon_vae_and_load_from_cache(tmp_path, cache, capsys):
    out = tmp_path / "vae"
    _run(["--teacher", "vae", "--cache-dir", str(cache), "--out", str(out)])
    assert "VAE (MLPVAE, latent 2, 2 epochs): trained in" in capsys.readouterr().out
    _check_results(out, "vae")
    assert (out / "halfmoon_points.png").stat().st_size > 1000
    rows = _fit_columns(out)
    assert all(math.isfinite(float(r["extra"])) and float(r["extra"]) >= 0 for r in rows)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_config"]["kind"] == "vae" and cfg["teacher_config"]["kl_weight"] == 1.0
    assert cfg["teacher_config"]["in_features"] == 8  # [w, w - w*, x, onehot(y)]
    pre = cfg["vae_pretraining"]
    assert pre["cached"] is False and pre["seconds"] > 0 and pre["train_seconds"] > 0
    assert pre["epochs"] == 2 and pre["latent"] == 2 and math.isfinite(pre["final_loss"])
    assert Path(pre["path"]).parent == cache.resolve()
    # --load: the VAE comes from the cache and the teacher's rows are reproduced
    again = tmp_path / "vae-loaded"
    res = _run(["--teacher", "vae", "--cache-dir", str(cache), "--load",
                str(out / "teacher.pt"), "--baselines", "", "--no-plots", "--out", str(again)])
    assert "read from the cache" in capsys.readouterr().out
    pre2 = json.loads((again / "config.json").read_text())["vae_pretraining"]
    assert pre2["cached"] is True and pre2["path"] == pre["path"]
    assert pre2["train_seconds"] == pre["train_seconds"]
    assert res.teacher_seconds == 0.0
    first = [r for r in _rows(out / "results.csv") if r["teacher"] == "DHT-vae"]
    assert _rows(again / "results.csv") == first


def test_quick_halfmoon_privacy(tmp_path, cache, capsys):
    out = tmp_path / "privacy"
    res = _run(["--teacher", "privacy", "--cache-dir", str(cache), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "\nDHT-privacy " in printed and " 0 violations among 60 emitted" in printed
    _check_results(out, "privacy")
    for png in ("convergence.png", "halfmoon_points.png", "privacy_distance.png"):
        assert (out / png).stat().st_size > 1000
    rows = _fit_columns(out)
    assert all(math.isfinite(float(r["penalty"])) and float(r["penalty"]) >= 0 for r in rows)
    cfg = json.loads((out / "config.json").read_text())
    priv = cfg["privacy"]
    assert res.privacy == priv
    assert res.privacy_distances is not None and res.privacy_distances.shape == (2, 30)
    # a 10 % privacy set of the 800 training points; the teacher's pool is the rest
    assert priv["size"] == 80 and priv["pool_size"] == 720 and cfg["pool_size"] == 720
    assert priv["eps"] > 0 and math.isfinite(priv["eps"]) and cfg["eps"] is None
    assert priv["eps"] == priv["nearest_pool_distance_quantiles"]["0.5"]
    assert 0 < priv["pool_within_eps_fraction"] < 0.5
    assert priv["emitted"] == 60 and priv["violations"] == 0
    assert priv["min_distance"] >= priv["eps"] and priv["min_distance_over_eps"] >= 1
    assert priv["repairs"] == sum(priv["repairs_per_seed"]) >= 0
    assert len(priv["repairs_per_seed"]) == 2
    st = priv["repair_stats"]
    assert st["proposals"] >= 60 and st["violations"] == priv["repairs"]
    assert st["resampled"] + st["projected"] + st["fallback"] == st["violations"]
    assert cfg["teacher_config"]["kind"] == "privacy"
    assert cfg["teacher_config"]["teacher"]["kind"] == "transform"
    assert cfg["vae_pretraining"]["epochs"] == 2
    # the per-example distances, recomputed from phi, all clear eps
    dist = _rows(out / "privacy.csv")
    assert len(dist) == 60 and {r["iter"] for r in dist} == {str(i) for i in range(1, 31)}
    assert all(float(r["distance"]) >= priv["eps"] and r["violation"] == "0" for r in dist)


def test_quick_mnist35_gan(tmp_path, mnist_root):
    out = tmp_path / "mn-gan"
    res = _run(["--dataset", "mnist35", "--teacher", "gan", "--data-root", str(mnist_root),
                "--seeds", "1", "--iters", "6", "--outer-iters", "3", "--unroll", "3",
                "--trajectories", "4", "--out", str(out)])
    _check_results(out, "gan", seeds=1, iters=6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_config"]["kind"] == "gan" and cfg["teacher_config"]["real_size"] == 1000
    assert cfg["teacher_config"]["policy"]["class"] == "ConvGenerator"
    assert math.isfinite(cfg["gan"]["final_discriminator_loss"])
    assert res.teacher_seconds > 0
    assert (out / "mnist_samples.png").stat().st_size > 1000


def test_quick_mnist35_vae(tmp_path, mnist_root):
    out = tmp_path / "mn-vae"
    _run(["--dataset", "mnist35", "--teacher", "vae", "--data-root", str(mnist_root),
          "--seeds", "1", "--iters", "6", "--outer-iters", "3", "--unroll", "3",
          "--trajectories", "4", "--hidden", "32,32", "--vae-epochs", "1",
          "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    _check_results(out, "vae", seeds=1, iters=6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher_config"]["in_features"] == 2 * 24 + 24 + 2
    assert cfg["teacher_config"]["vae"]["class"] == "ConvVAE"
    assert cfg["teacher_config"]["vae"]["latent"] == 16
    pre = cfg["vae_pretraining"]
    assert pre["architecture"] == "ConvVAE" and pre["samples"] == 1000 and not pre["cached"]
    assert (out / "mnist_samples.png").stat().st_size > 1000


def test_generative_options_checked(tmp_path):
    with pytest.raises(ValueError, match="--adv-weight applies to --teacher gan"):
        _run(["--teacher", "vae", "--adv-weight", "0.5", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--eps applies to --teacher privacy"):
        _run(["--teacher", "gan", "--eps", "0.1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--residual"):
        _run(["--teacher", "gan", "--residual", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="privacy-fraction"):
        _run(["--teacher", "privacy", "--privacy-fraction", "1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--eps must be > 0"):
        _run(["--teacher", "privacy", "--eps", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--kl-weight must be >= 0"):
        _run(["--teacher", "vae", "--kl-weight", "-1", "--out", str(tmp_path)])
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="inside the data root"):
        _run(["--teacher", "vae", "--data-root", str(root), "--cache-dir", str(root / "vae"),
              "--out", str(tmp_path / "o")])
    assert not (root / "vae").exists()


def test_quick_halfmoon_transform_in_the_data_box(tmp_path, capsys):
    """--box: the learned teacher's examples stay in greedy DHT's feasible set."""
    import torch

    from torchdht.data import load_halfmoon
    from torchdht.linear import LR, TransformTeacher

    out = tmp_path / "box"
    assert cli(["parameterized", "--quick", "--box", "--no-progress", "--no-plots",
                "--out", str(out)]) == 0
    capsys.readouterr()
    cfg = json.loads((out / "config.json").read_text())
    lo, hi = (torch.tensor(b) for b in cfg["teacher_config"]["box"])
    x = load_halfmoon().x_train
    torch.testing.assert_close(lo, x.min(0).values)
    torch.testing.assert_close(hi, x.max(0).values)
    state = torch.load(out / "teacher.pt", weights_only=False)
    t = TransformTeacher(LR, (x, LR.targets(load_halfmoon().y_train).float()), 1e-3,
                         w_star=torch.zeros(2), box=(lo, hi),
                         **{k: state["config"][k] for k in ("unroll", "trajectories", "horizon")})
    t.load_state_dict(state)  # the same configuration, box included
    for _ in range(30):
        xt, _ = t.propose(torch.randn(2) * 3)
        assert bool(((xt >= lo) & (xt <= hi)).all())
