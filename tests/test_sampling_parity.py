"""The runtime's numpy sampler math equals the torch side's (lmdm_export.sampling).

Schedules: float32 (what the engine uses) bit-exact everywhere; float64 bit-exact for the step
counts and logSNR ranges the samplers use, and within 2 ulp otherwise: torch's sigmoid over 8 or
more values runs SLEEF's vectorised exp, whose last bit can differ from the C library's.
Updates: float32 on random inputs, within 1e-6 (same formulas, same operation order; only the
rounding of fused vs separate multiply-adds can differ).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lmdm_bridge import sampling as ns  # noqa: E402
from lmdm_export import sampling as ts  # noqa: E402

TOL = 1e-6


@pytest.mark.parametrize("steps", [1, 2, 4, 6, 8, 12, 16])
@pytest.mark.parametrize("bounds", [(-6.0, 2.0), (-5.0, 3.0), (-8.0, 2.5)])
def test_schedule_float64_is_bit_exact(steps, bounds):
    lo, hi = bounds
    got = ns.logsnr_schedule(steps, logsnr_min=lo, logsnr_max=hi)
    want = ts.logsnr_schedule(steps, logsnr_min=lo, logsnr_max=hi, dtype=torch.float64).numpy()
    assert got.dtype == np.float64
    assert np.array_equal(got, want)
    assert got[0] == 1.0 and got[-1] == 0.0


def test_schedule_float64_within_two_ulp_and_float32_exact_on_random_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        steps = int(rng.integers(1, 100))
        lo, hi = sorted(rng.uniform(-12, 12, 2))
        got = ns.logsnr_schedule(steps, logsnr_min=lo, logsnr_max=hi)
        want = ts.logsnr_schedule(steps, logsnr_min=lo, logsnr_max=hi,
                                  dtype=torch.float64).numpy()
        np.testing.assert_allclose(got, want, rtol=4.5e-16, atol=0)
        got32 = ns.logsnr_schedule(steps, logsnr_min=lo, logsnr_max=hi, dtype=np.float32)
        want32 = ts.logsnr_schedule(steps, logsnr_min=lo, logsnr_max=hi).numpy()
        assert np.array_equal(got32, want32), (steps, lo, hi)


def test_schedule_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        ns.logsnr_schedule(0)


def _inputs(seed, shape=(2, 8, 6)):
    rng = np.random.default_rng(seed)
    x, vc, vu, noise = (rng.standard_normal(shape, dtype=np.float32) for _ in range(4))
    return x, vc, vu, noise


def _err(a, b):
    return float(np.abs(a - b.numpy()).max())


@pytest.mark.parametrize("phi", [0.0, 0.7])
def test_cfg_combine(phi):
    _, vc, vu, _ = _inputs(1)
    got = ns.cfg_combine(vc, vu, 3.5, rescale_phi=phi)
    want = ts.cfg_combine(torch.from_numpy(vc), torch.from_numpy(vu), 3.5, rescale_phi=phi)
    assert got.dtype == np.float32
    assert _err(got, want) <= TOL


@pytest.mark.parametrize("cfg_pp", [None, "textbook", "lmdm-code"])
@pytest.mark.parametrize("i", [0, 3, 7])
def test_updates(cfg_pp, i):
    x, vc, vu, noise = _inputs(2 + i)
    sched32 = ns.logsnr_schedule(8, dtype=np.float32)
    sched_t = ts.logsnr_schedule(8)
    vel_n = ns.Velocity(ns.cfg_combine(vc, vu, 2.0), vu)
    vel_t = ts.Velocity(ts.cfg_combine(torch.from_numpy(vc), torch.from_numpy(vu), 2.0),
                        torch.from_numpy(vu))
    xt = torch.from_numpy(x)
    got = ns.euler_update(x, vel_n, sched32[i], sched32[i + 1], cfg_pp)
    want = ts.euler_update(xt, vel_t, sched_t[i], sched_t[i + 1], cfg_pp)
    assert got.dtype == np.float32 and _err(got, want) <= TOL
    got = ns.pingpong_update(x, vel_n, sched32[i], sched32[i + 1], noise, cfg_pp)
    want = ts.pingpong_update(xt, vel_t, sched_t[i], sched_t[i + 1], torch.from_numpy(noise),
                              cfg_pp)
    assert got.dtype == np.float32 and _err(got, want) <= TOL


@pytest.mark.parametrize(("name", "cfg_pp"), [("euler", None), ("euler", "lmdm-code"),
                                               ("pingpong", None), ("pingpong", "lmdm-code"),
                                               ("ab2", None)])
def test_whole_samplers_with_replayed_noise(name, cfg_pp):
    """A fixed linear 'denoiser' with guidance; the numpy draws are replayed into torch."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((8, 8), dtype=np.float32) * np.float32(0.3)
    x = rng.standard_normal((1, 8, 6), dtype=np.float32)
    draws = []

    def noise(shape):
        draws.append(rng.standard_normal(shape, dtype=np.float32))
        return draws[-1]

    def den_n(x, t):
        vc = np.einsum("ij,bjf->bif", a, x) * t
        return ns.Velocity(ns.cfg_combine(vc, x, 1.5), x)

    def den_t(x, t):
        vc = torch.einsum("ij,bjf->bif", torch.from_numpy(a), x) * t[:, None, None]
        return ts.Velocity(ts.cfg_combine(vc, x, 1.5), x)

    got = ns.SAMPLERS[name](den_n, x, ns.logsnr_schedule(8, dtype=np.float32), noise=noise,
                            cfg_pp=cfg_pp)
    replay = iter(draws)
    want = ts.SAMPLERS[name](den_t, torch.from_numpy(x), ts.logsnr_schedule(8),
                             generator=lambda shape, like: torch.from_numpy(next(replay)),
                             cfg_pp=cfg_pp)
    assert len(draws) == (7 if name == "pingpong" else 0)
    assert next(replay, None) is None
    assert _err(got, want) <= 1e-5  # 8 steps of accumulated float32 rounding


def test_bad_cfg_pp_is_named():
    with pytest.raises(ValueError, match="cfg_pp"):
        ns.sample_euler(lambda x, t: ns.Velocity(x, x), np.zeros((1, 1, 1), np.float32),
                        ns.logsnr_schedule(2, dtype=np.float32), cfg_pp="nope")


def test_ab2_refuses_cfg_pp_on_both_sides():
    for module, zeros in ((ns, np.zeros((1, 1, 1), np.float32)), (ts, torch.zeros(1, 1, 1))):
        with pytest.raises(ValueError, match="no CFG\\+\\+ variant"):
            module.sample_ab2(lambda x, t, m=module: m.Velocity(x, x), zeros,
                              module.logsnr_schedule(2), cfg_pp="textbook")
