"""The angular cap: projection, uniform sampling, angle and chord."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdht.functional import angle, chord, chord_to_angle, normalize, project_cap, sample_cap

DT = torch.float64
eps_st = st.floats(min_value=1e-3, max_value=2.0)
dims = st.integers(min_value=2, max_value=40)


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(n, d, generator=g, dtype=DT))


@settings(max_examples=60, deadline=None)
@given(d=dims, eps=eps_st, seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_projection_is_feasible_and_idempotent(d, eps, seed, scale):
    c = _unit(16, d, seed)
    x = scale * torch.randn(16, d, generator=torch.Generator().manual_seed(seed + 1), dtype=DT)
    p = project_cap(x, c, eps)
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(16, dtype=DT))
    assert (chord(p, c) <= eps * (1 + 1e-9) + 1e-12).all()
    torch.testing.assert_close(project_cap(p, c, eps), p, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(d=dims, eps=eps_st, seed=st.integers(0, 2**31 - 1))
def test_projection_is_the_closest_cap_point(d, eps, seed):
    """No sampled cap point is closer to x than its projection."""
    c = _unit(8, d, seed)
    x = torch.randn(8, d, generator=torch.Generator().manual_seed(seed + 7), dtype=DT)
    p = project_cap(x, c, eps)
    v = normalize(x)
    best = (p - v).norm(dim=-1)
    g = torch.Generator().manual_seed(seed + 3)
    for _ in range(20):
        s = sample_cap(c, eps, generator=g)
        assert ((s - v).norm(dim=-1) >= best - 1e-9).all()


def test_projection_moves_along_the_geodesic():
    c = torch.tensor([[1.0, 0.0, 0.0]], dtype=DT)
    x = torch.tensor([[0.0, 2.0, 0.0]], dtype=DT)
    p = project_cap(x, c, eps=0.5)
    a = chord_to_angle(0.5)
    torch.testing.assert_close(p, torch.tensor([[math.cos(a), math.sin(a), 0.0]], dtype=DT))


def test_projection_of_antipodal_point_is_on_the_rim():
    c = _unit(4, 5, 0)
    p = project_cap(-c, c, eps=0.3)
    torch.testing.assert_close(chord(p, c), torch.full((4,), 0.3, dtype=DT))


@settings(max_examples=40, deadline=None)
@given(d=dims, eps=eps_st, seed=st.integers(0, 2**31 - 1))
def test_samples_lie_in_the_cap(d, eps, seed):
    c = _unit(32, d, seed)
    s = sample_cap(c, eps, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(32, dtype=DT))
    assert (chord(s, c) <= eps * (1 + 1e-9) + 1e-12).all()


def _ks(sample: torch.Tensor, cdf) -> float:
    x, _ = torch.sort(sample)
    n = x.numel()
    f = cdf(x)
    hi = torch.arange(1, n + 1, dtype=DT) / n
    lo = torch.arange(0, n, dtype=DT) / n
    return float(torch.maximum(hi - f, f - lo).max())


def test_sampling_is_uniform_on_the_2_sphere():
    """On S^2 the height cos(theta) of a uniform cap point is uniform (Archimedes)."""
    n, eps = 20000, 1.2
    c = _unit(n, 3, 1)
    s = sample_cap(c, eps, generator=torch.Generator().manual_seed(2))
    h = (s * c).sum(-1)
    lo = math.cos(chord_to_angle(eps))
    d = _ks(h, lambda t: (t - lo) / (1 - lo))
    assert d < 1.63 / math.sqrt(n)  # KS test at the 1% level
    # the direction around the axis is uniform too: the azimuth in a fixed frame
    c0 = torch.tensor([[0.0, 0.0, 1.0]], dtype=DT).expand(n, 3).contiguous()
    s0 = sample_cap(c0, eps, generator=torch.Generator().manual_seed(3))
    phi = torch.atan2(s0[:, 1], s0[:, 0])
    assert _ks(phi, lambda t: (t + math.pi) / (2 * math.pi)) < 1.63 / math.sqrt(n)


@pytest.mark.parametrize("d", [5, 12])
def test_sampling_matches_rejection_from_the_whole_sphere(d):
    """Compare the polar angle law with rejection sampling of uniform sphere points."""
    eps = 1.4
    g = torch.Generator().manual_seed(4)
    c = torch.zeros(1, d, dtype=DT)
    c[0, 0] = 1.0
    pts = normalize(torch.randn(400000, d, generator=g, dtype=DT))
    ref = pts[chord(pts, c.expand_as(pts)) <= eps][:, 0]
    ours = sample_cap(c.expand(ref.numel(), d).contiguous(), eps, generator=g)[:, 0]
    # two-sample KS at the 1% level
    n = ref.numel()
    both = torch.cat([ref, ours])
    order = torch.argsort(both)
    sign = torch.cat([torch.full((n,), 1.0 / n), torch.full((n,), -1.0 / n)]).to(DT)[order]
    assert float(torch.cumsum(sign, 0).abs().max()) < 1.63 * math.sqrt(2.0 / n)


def test_high_dimension_mass_is_near_the_rim():
    c = _unit(2000, 512, 5)
    a = angle(sample_cap(c, 0.1, generator=torch.Generator().manual_seed(6)), c)
    alpha = chord_to_angle(0.1)
    assert float(a.median()) > 0.99 * alpha
    assert float(a.max()) <= alpha + 1e-9


def test_angle_and_chord():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=DT)
    b = torch.tensor([[0.0, 5.0], [-1.0, 1e-9], [3.0, 1e-8]], dtype=DT)
    torch.testing.assert_close(angle(a, b)[0], torch.tensor(math.pi / 2, dtype=DT))
    assert abs(float(angle(a, b)[1]) - math.pi) < 1e-8
    torch.testing.assert_close(angle(a, b)[2], torch.tensor(1e-8 / 3, dtype=DT), rtol=1e-6, atol=0)
    torch.testing.assert_close(chord(a, b)[0], torch.tensor(math.sqrt(2), dtype=DT))
    # chord and angle agree through the formula chord = 2 sin(angle / 2)
    x, y = _unit(50, 7, 8), _unit(50, 7, 9)
    torch.testing.assert_close(chord(x, y), 2 * torch.sin(angle(x, y) / 2))


@pytest.mark.parametrize("bad", [0.0, -0.1, 2.0001, float("nan"), float("inf")])
def test_eps_outside_range_is_rejected(bad):
    with pytest.raises(ValueError, match="eps"):
        project_cap(torch.ones(1, 3), normalize(torch.ones(1, 3)), bad)
    with pytest.raises(ValueError, match="eps"):
        sample_cap(normalize(torch.ones(1, 3)), bad)


def test_eps_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="eps"):
        chord_to_angle("0.1")  # type: ignore[arg-type]
