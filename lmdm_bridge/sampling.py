"""Rectified-flow schedule, guidance and samplers in numpy: the runtime's copy of
:mod:`lmdm_export.sampling`, pinned to it by ``tests/test_sampling_parity.py``.

Parametrisation (lmdm-reference §1): ``x_t = (1 - t) x0 + t eps``, the network predicts
``v = eps - x0``, so ``x0_hat = x_t - t v`` and ``eps_hat = x_t + (1 - t) v``.

Arithmetic happens in the dtype of the latents (float32 in the engine); noise levels are numpy
scalars of that dtype, so every product rounds as in the torch samplers. A denoiser maps
``(x, t)`` to a :class:`Velocity` and is called exactly once per step, in order (the engine's
first call of a block is the cache-building step). Noise comes from an injected callable
``noise(shape) -> float32 array``, never from a global generator.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import numpy as np

CFGPP_VARIANTS = ("textbook", "lmdm-code")

NoiseSource = Callable[[tuple[int, ...]], np.ndarray]


class Velocity(NamedTuple):
    """The guided velocity and the unconditional one (equal without guidance); CFG++ needs
    both. Each ``(B, C, frames)``."""

    guided: np.ndarray
    uncond: np.ndarray


Denoiser = Callable[[np.ndarray, np.floating], Velocity]


def logsnr_schedule(steps: int, *, logsnr_min: float = -6.0, logsnr_max: float = 2.0,
                    dtype: np.dtype | type = np.float64) -> np.ndarray:
    """``steps + 1`` noise levels from 1 to 0, uniform in logSNR: ``t = sigmoid(-logSNR)`` with
    ``logSNR = linspace(logsnr_min, logsnr_max, steps + 1)``; endpoints forced to exactly 1, 0.

    Computed in float64 as torch computes it: its ``linspace`` fills the first half forwards
    from the start and the second half backwards from the end, each value ``a + i step`` rounded
    once (a fused multiply-add); exact rational arithmetic reproduces that rounding here, so the
    schedules agree to the last bit. Then cast to ``dtype``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = steps + 1
    step = (logsnr_max - logsnr_min) / (n - 1) if n > 1 else 0.0
    lo, hi, q = Fraction(logsnr_min), Fraction(logsnr_max), Fraction(step)
    logsnr = np.array([float(lo + q * i) if i < n // 2 else float(hi - q * (n - 1 - i))
                       for i in range(n)], dtype=np.float64)
    t = 1.0 / (1.0 + np.exp(logsnr))
    t[0], t[-1] = 1.0, 0.0
    return t.astype(dtype)


def cfg_combine(v_cond: np.ndarray, v_uncond: np.ndarray, scale: float, *,
                rescale_phi: float = 0.0) -> np.ndarray:
    """Classifier-free guidance ``v_u + scale (v_c - v_u)``, ``(B, C, F)`` each; ``rescale_phi
    > 0`` blends in the std-rescaled result (Lin et al. 2023, the reference's ``scale_phi``).
    Standard deviations per item and unbiased, as torch's ``std``."""
    dtype = v_cond.dtype
    v = v_uncond + dtype.type(scale) * (v_cond - v_uncond)
    if rescale_phi > 0.0:
        axes = tuple(range(1, v.ndim))
        ratio = (v_cond.std(axis=axes, ddof=1, keepdims=True)
                 / np.maximum(v.std(axis=axes, ddof=1, keepdims=True), dtype.type(1e-12)))
        # Both factors rounded from float64, as torch does with Python scalars.
        v = dtype.type(rescale_phi) * v * ratio + dtype.type(1.0 - rescale_phi) * v
    return v


def _check(cfg_pp: str | None) -> None:
    if cfg_pp is not None and cfg_pp not in CFGPP_VARIANTS:
        raise ValueError(f"cfg_pp must be None or one of {CFGPP_VARIANTS}, got {cfg_pp!r}")


def euler_update(x: np.ndarray, vel: Velocity, t: np.floating, t_next: np.floating,
                 cfg_pp: str | None = None) -> np.ndarray:
    """One deterministic step from ``t`` to ``t_next``.

    * plain: ``x + (t_next - t) v``;
    * CFG++ ``"textbook"``: ``(1 - t') x0_lambda + t' eps_u`` (denoise with the guided,
      re-noise with the unconditional noise estimate);
    * CFG++ ``"lmdm-code"``: the reference code's ``x0_lambda + t' v_u`` (lmdm-reference §4.3).
    """
    if cfg_pp is None:
        return x + (t_next - t) * vel.guided
    x0_guided = x - t * vel.guided
    if cfg_pp == "textbook":
        eps_uncond = x + (1 - t) * vel.uncond
        return (1 - t_next) * x0_guided + t_next * eps_uncond
    return x0_guided + t_next * vel.uncond


def pingpong_update(x: np.ndarray, vel: Velocity, t: np.floating, t_next: np.floating,
                    noise: np.ndarray, cfg_pp: str | None = None) -> np.ndarray:
    """One ping-pong step: jump to ``x0_hat``, re-noise to ``t_next`` with fresh ``noise``.
    ``"textbook"`` CFG++ equals plain ping-pong here; ``"lmdm-code"`` is the reference's
    ``x0_lambda + t' (eps - x0_u)``."""
    x0_guided = x - t * vel.guided
    if cfg_pp == "lmdm-code":
        x0_uncond = x - t * vel.uncond
        return x0_guided + t_next * (noise - x0_uncond)
    return (1 - t_next) * x0_guided + t_next * noise


def sample_euler(denoiser: Denoiser, x: np.ndarray, ts: np.ndarray, *,
                 noise: NoiseSource | None = None, cfg_pp: str | None = None) -> np.ndarray:
    """Integrate from ``ts[0]`` (noise ``x``, ``(B, C, F)``) to ``ts[-1]``; draws no noise
    (``noise`` is accepted for a uniform signature). ``ts`` in ``x``'s dtype."""
    _check(cfg_pp)
    for i in range(len(ts) - 1):
        x = euler_update(x, denoiser(x, ts[i]), ts[i], ts[i + 1], cfg_pp)
    return x


def sample_pingpong(denoiser: Denoiser, x: np.ndarray, ts: np.ndarray, *,
                    noise: NoiseSource | None = None, cfg_pp: str | None = None) -> np.ndarray:
    """Ping-pong sampling: at every step predict ``x0_hat`` and, except after the last, re-noise
    it with a fresh draw ``noise(x.shape)``. Returns the last ``x0_hat``."""
    _check(cfg_pp)
    if noise is None and len(ts) > 2:
        raise ValueError("ping-pong sampling with more than one step needs a noise source")
    x0 = x
    for i in range(len(ts) - 1):
        vel = denoiser(x, ts[i])
        x0 = x - ts[i] * vel.guided
        if i < len(ts) - 2:
            x = pingpong_update(x, vel, ts[i], ts[i + 1], noise(x.shape), cfg_pp)
    return x0


def sample_ab2(denoiser: Denoiser, x: np.ndarray, ts: np.ndarray, *,
               noise: NoiseSource | None = None, cfg_pp: str | None = None) -> np.ndarray:
    """Second-order Adams-Bashforth: Euler's one network call per step, with each step after
    the first extrapolating the velocity from this step's and the last one's,
    ``x + h (v_i + h / (2 h_prev) (v_i - v_{i-1}))`` for step sizes ``h = t_{i+1} - t_i`` and
    ``h_prev = t_i - t_{i-1}`` (a linear multistep method, as DPM-Solver++(2M) is for
    diffusion). Draws no noise; has no CFG++ variant."""
    if cfg_pp is not None:
        raise ValueError("the ab2 sampler has no CFG++ variant (cfg_pp must be None); use euler")
    previous = None
    for i in range(len(ts) - 1):
        v = denoiser(x, ts[i]).guided
        h = ts[i + 1] - ts[i]
        slope = v if previous is None else v + (h / (2 * (ts[i] - ts[i - 1]))) * (v - previous)
        x = x + h * slope
        # A copy: the denoiser's velocity may view a buffer its next call overwrites (the
        # engine's, when unguided), which turned this into Euler.
        previous = v.copy()
    return x


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {"euler": sample_euler,
                                                   "pingpong": sample_pingpong,
                                                   "ab2": sample_ab2}
