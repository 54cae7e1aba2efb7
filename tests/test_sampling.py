"""Sampler math: schedule values, Euler and ping-pong on analytic denoisers, CFG and CFG++."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from lmdm_export.sampling import (  # noqa: E402
    Velocity,
    cfg_combine,
    euler_update,
    logsnr_schedule,
    pingpong_update,
    sample_ab2,
    sample_euler,
    sample_pingpong,
)


def test_schedule_endpoints_and_values():
    t = logsnr_schedule(6, dtype=torch.float64)
    # The ARC-Forcing schedule printed in lmdm-reference §4.2 (K_max = 6).
    expected = [1.0, 0.9907, 0.9656, 0.8808, 0.6608, 0.3392, 0.0]
    assert t[0] == 1.0 and t[-1] == 0.0
    assert torch.allclose(t, torch.tensor(expected, dtype=torch.float64), atol=5e-5)
    inner = torch.sigmoid(-torch.linspace(-6, 2, 7, dtype=torch.float64))[1:-1]
    assert torch.equal(t[1:-1], inner)
    assert (t[1:] < t[:-1]).all()


def test_schedule_follows_requested_device_and_dtype():
    t = logsnr_schedule(3, dtype=torch.bfloat16, device=torch.device("cpu"))
    assert t.dtype == torch.bfloat16 and t.device.type == "cpu" and len(t) == 4


def _point_mass(x0):
    """Exact RF velocity when all data is ``x0``: v = (x_t - x0) / t."""
    calls = []

    def denoise(x, t):
        calls.append((x.clone(), t.clone()))
        v = (x - x0) / t[:, None, None]
        return Velocity(v, v)

    return denoise, calls


def test_euler_is_exact_on_a_point_mass():
    x0 = torch.randn(2, 3, 5, dtype=torch.float64)
    denoise, calls = _point_mass(x0)
    out = sample_euler(denoise, torch.randn(2, 3, 5, dtype=torch.float64),
                       logsnr_schedule(5, dtype=torch.float64))
    assert len(calls) == 5
    assert torch.allclose(out, x0, atol=1e-12)


def test_pingpong_renoises_with_fresh_noise_from_the_generator():
    x0 = torch.randn(1, 2, 4, dtype=torch.float64)
    ts = logsnr_schedule(4, dtype=torch.float64)
    start = torch.randn(1, 2, 4, dtype=torch.float64)
    denoise, calls = _point_mass(x0)
    out = sample_pingpong(denoise, start, ts, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, x0, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    for i in range(1, len(ts) - 1):
        eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        expected = (1 - ts[i]) * x0 + ts[i] * eps
        assert torch.allclose(calls[i][0], expected, atol=1e-12)


def test_euler_transports_noise_to_a_gaussian():
    """Data N(mu, sigma^2): the exact velocity is E[eps - x0 | x_t]; 200 Euler steps must map
    N(0, 1) samples to N(mu, sigma^2) (statistics of 20k samples within 2%)."""
    mu, sigma = 1.5, 0.4

    def denoise(x, t):
        tt = t[:, None, None]
        var = (1 - tt) ** 2 * sigma**2 + tt**2
        resid = x - (1 - tt) * mu
        x0 = mu + (1 - tt) * sigma**2 / var * resid
        eps = tt / var * resid
        v = eps - x0
        return Velocity(v, v)

    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, 1, 1, generator=gen, dtype=torch.float64)
    out = sample_euler(denoise, noise, logsnr_schedule(200, logsnr_min=-12, logsnr_max=12,
                                                       dtype=torch.float64))
    assert math.isclose(out.mean().item(), mu, rel_tol=0.02)
    assert math.isclose(out.std().item(), sigma, rel_tol=0.02)


def _gaussian_velocity(mu: float, sigma: float):
    """The exact rectified-flow velocity E[eps - x0 | x_t] for data N(mu, sigma^2)."""

    def denoise(x, t):
        tt = t[:, None, None]
        var = (1 - tt) ** 2 * sigma**2 + tt**2
        resid = x - (1 - tt) * mu
        v = tt / var * resid - (mu + (1 - tt) * sigma**2 / var * resid)
        return Velocity(v, v)

    return denoise


def test_ab2_is_second_order_and_beats_euler_at_the_same_calls():
    """For Gaussian data the flow maps noise eps to mu + sigma eps exactly; halving the step
    quarters AB2's error (second order) but only halves Euler's, and at 8 calls AB2 is the
    closer of the two."""
    mu, sigma = 1.5, 0.4
    denoise = _gaussian_velocity(mu, sigma)
    eps = torch.linspace(-2, 2, 9, dtype=torch.float64).reshape(9, 1, 1)
    exact = mu + sigma * eps

    def error(sampler, steps):
        grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        return float((sampler(denoise, eps, grid) - exact).abs().max())

    assert error(sample_euler, 16) / error(sample_euler, 32) == pytest.approx(2, rel=0.2)
    assert error(sample_ab2, 16) / error(sample_ab2, 32) == pytest.approx(4, rel=0.25)
    assert error(sample_ab2, 8) < error(sample_euler, 8) / 2
    # a point mass has a constant velocity along each path: AB2 is exact there, as Euler is
    x0 = torch.randn(2, 3, 5, dtype=torch.float64)
    point, calls = _point_mass(x0)
    out = sample_ab2(point, torch.randn(2, 3, 5, dtype=torch.float64),
                     logsnr_schedule(5, dtype=torch.float64))
    assert len(calls) == 5 and torch.allclose(out, x0, atol=1e-12)


def test_cfg_combination():
    vc, vu = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(cfg_combine(vc, vu, 1.0), vc)
    assert torch.equal(cfg_combine(vc, vu, 0.0), vu)
    assert torch.equal(cfg_combine(vc, vu, 3.0), torch.tensor([4.0, -5.0]))
    # Rescale: phi = 1 matches the std of the conditional prediction.
    vc2, vu2 = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    r = cfg_combine(vc2, vu2, 5.0, rescale_phi=1.0)
    assert torch.allclose(r.std(dim=(1, 2)), vc2.std(dim=(1, 2)), rtol=1e-5)


def test_cfgpp_updates():
    gen = torch.Generator().manual_seed(1)
    x, vg, vu, eps = (torch.randn(1, 2, 3, generator=gen, dtype=torch.float64) for _ in range(4))
    t, tn = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    vel = Velocity(vg, vu)
    x0g = x - t * vg
    # textbook: (1 - t') x0_lambda + t' eps_u with eps_u = x + (1 - t) v_u
    assert torch.allclose(euler_update(x, vel, t, tn, "textbook"),
                          (1 - tn) * x0g + tn * (x + (1 - t) * vu))
    # reference code: x0_lambda + t' v_u
    assert torch.allclose(euler_update(x, vel, t, tn, "lmdm-code"), x0g + tn * vu)
    assert torch.allclose(pingpong_update(x, vel, t, tn, eps, "lmdm-code"),
                          x0g + tn * (eps - (x - t * vu)))
    assert torch.allclose(pingpong_update(x, vel, t, tn, eps, "textbook"),
                          (1 - tn) * x0g + tn * eps)
    # Without guidance (v_u = v_lambda) textbook CFG++ is plain Euler.
    same = Velocity(vg, vg)
    assert torch.allclose(euler_update(x, same, t, tn, "textbook"), euler_update(x, same, t, tn))


def test_unknown_cfgpp_variant_is_rejected():
    with pytest.raises(ValueError, match="cfg_pp"):
        sample_euler(lambda x, t: Velocity(x, x), torch.zeros(1, 1, 1), logsnr_schedule(2),
                     cfg_pp="nope")
