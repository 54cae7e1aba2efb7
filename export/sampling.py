"""Rectified-flow schedules, guidance and samplers as pure functions (lmdm-reference §4.3).

Parametrisation (§1): ``x_t = (1 - t) x0 + t eps``, the network predicts ``v = eps - x0``, so
``x0_hat = x_t - t v`` and ``eps_hat = x_t + (1 - t) v``.

A sampler is a function of ``(denoiser, x, ts)`` plus keyword options; device and dtype come
from ``x``, randomness from an injected ``torch.Generator``. A denoiser maps ``(x, t)`` to a
:class:`Velocity`: the guided velocity and the unconditional one (equal when no guidance is
applied) - CFG++ needs both. A denoiser may be stateful (a streaming block's first call runs the
fused cache step, later calls the cached step); the samplers call it exactly once per step, in
order.

The runtime has a numpy copy of this module; a parity test pins the two together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

CFGPP_VARIANTS = ("textbook", "lmdm-code")

NoiseSource = Callable[[tuple, "Tensor"], "Tensor"]


def draw_noise(shape: tuple, like: Tensor,
               generator: torch.Generator | NoiseSource | None) -> Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype.

    ``generator`` is a ``torch.Generator`` or a callable ``(shape, like) -> Tensor``: the latter
    replays recorded noise, which is how the runtime's numpy engine and this torch side are
    compared draw for draw.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        return generator(tuple(shape), like)
    # Drawn on the generator's own device (a CPU generator cannot draw on a GPU), then moved:
    # the same seed gives the same noise wherever the model runs.
    where = generator.device if generator is not None else like.device
    noise = torch.randn(tuple(shape), generator=generator, device=where, dtype=like.dtype)
    return noise.to(like.device)


class Velocity(NamedTuple):
    guided: Tensor
    uncond: Tensor


Denoiser = Callable[[Tensor, Tensor], Velocity]


def logsnr_schedule(steps: int, *, logsnr_min: float = -6.0, logsnr_max: float = 2.0,
                    device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``steps + 1`` noise levels from 1 to 0, uniform in logSNR: ``t = sigmoid(-logSNR)`` with
    ``logSNR = linspace(logsnr_min, logsnr_max, steps + 1)``; endpoints forced to exactly 1, 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    logsnr = torch.linspace(logsnr_min, logsnr_max, steps + 1, dtype=torch.float64)
    t = torch.sigmoid(-logsnr)
    t[0], t[-1] = 1.0, 0.0
    return t.to(device=device, dtype=dtype)


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, scale: float, *,
                rescale_phi: float = 0.0) -> Tensor:
    """Classifier-free guidance ``v_u + scale (v_c - v_u)``; ``rescale_phi > 0`` blends in the
    std-rescaled result (Lin et al. 2023, the reference's ``scale_phi``)."""
    v = v_uncond + scale * (v_cond - v_uncond)
    if rescale_phi > 0.0:
        dims = tuple(range(1, v.ndim))
        ratio = v_cond.std(dim=dims, keepdim=True) / v.std(dim=dims, keepdim=True).clamp_min(1e-12)
        v = rescale_phi * v * ratio + (1.0 - rescale_phi) * v
    return v


def _check(cfg_pp: str | None) -> None:
    if cfg_pp is not None and cfg_pp not in CFGPP_VARIANTS:
        raise ValueError(f"cfg_pp must be None or one of {CFGPP_VARIANTS}, got {cfg_pp!r}")


def euler_update(x: Tensor, vel: Velocity, t: Tensor, t_next: Tensor,
                 cfg_pp: str | None = None) -> Tensor:
    """One deterministic step from ``t`` to ``t_next``.

    * plain: ``x + (t_next - t) v`` (= ``(1 - t') x0_hat + t' eps_hat``);
    * CFG++ ``"textbook"``: denoise with the guided, re-noise with the unconditional noise
      estimate, ``(1 - t') x0_lambda + t' eps_u``;
    * CFG++ ``"lmdm-code"``: the reference code's ``x0_lambda + t' v_u`` (lmdm-reference §4.3,
      bug 10), kept so checkpoints tuned with it sample as their authors heard them.
    """
    if cfg_pp is None:
        return x + (t_next - t) * vel.guided
    x0_guided = x - t * vel.guided
    if cfg_pp == "textbook":
        eps_uncond = x + (1 - t) * vel.uncond
        return (1 - t_next) * x0_guided + t_next * eps_uncond
    return x0_guided + t_next * vel.uncond


def pingpong_update(x: Tensor, vel: Velocity, t: Tensor, t_next: Tensor, noise: Tensor,
                    cfg_pp: str | None = None) -> Tensor:
    """One ping-pong step: jump to ``x0_hat``, re-noise to ``t_next`` with fresh ``noise``.

    CFG++ ``"textbook"`` re-noises with fresh noise, so it equals plain ping-pong on the guided
    velocity; ``"lmdm-code"`` is the reference's ``x0_lambda + t' (eps - x0_u)``.
    """
    x0_guided = x - t * vel.guided
    if cfg_pp == "lmdm-code":
        x0_uncond = x - t * vel.uncond
        return x0_guided + t_next * (noise - x0_uncond)
    return (1 - t_next) * x0_guided + t_next * noise


def sample_euler(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                 generator: torch.Generator | NoiseSource | None = None,
                 cfg_pp: str | None = None) -> Tensor:
    """Integrate from ``ts[0]`` (noise ``x``) to ``ts[-1]`` with Euler steps; returns the result.

    ``generator`` is accepted for a uniform sampler signature; Euler draws no noise.
    """
    _check(cfg_pp)
    for i in range(len(ts) - 1):
        t = ts[i].expand(x.shape[0])
        vel = denoiser(x, t)
        x = euler_update(x, vel, _b(ts[i], x), _b(ts[i + 1], x), cfg_pp)
    return x


def sample_pingpong(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                    generator: torch.Generator | NoiseSource | None = None,
                    cfg_pp: str | None = None) -> Tensor:
    """Ping-pong sampling (the few-step sampler of ARC models): at every step predict ``x0_hat``
    and, except after the last, re-noise it with fresh noise drawn from ``generator``."""
    _check(cfg_pp)
    x0 = x
    for i in range(len(ts) - 1):
        t = ts[i].expand(x.shape[0])
        vel = denoiser(x, t)
        x0 = x - _b(ts[i], x) * vel.guided
        if i < len(ts) - 2:
            noise = draw_noise(x.shape, x, generator)
            x = pingpong_update(x, vel, _b(ts[i], x), _b(ts[i + 1], x), noise, cfg_pp)
    return x0


def _b(t: Tensor, x: Tensor) -> Tensor:
    """A scalar noise level as a tensor broadcastable against ``x``, in ``x``'s dtype."""
    return t.to(dtype=x.dtype, device=x.device)


def sample_ab2(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
               generator: torch.Generator | NoiseSource | None = None,
               cfg_pp: str | None = None) -> Tensor:
    """Second-order Adams-Bashforth: one denoiser call per step like Euler; after the first,
    each step extrapolates the velocity linearly from this step's and the last one's
    (``x + h (v_i + h / (2 h_prev) (v_i - v_{i-1}))``, a linear multistep method as
    DPM-Solver++(2M) is for diffusion). ``generator`` is accepted for a uniform signature;
    there is no CFG++ variant."""
    if cfg_pp is not None:
        raise ValueError("the ab2 sampler has no CFG++ variant (cfg_pp must be None); use euler")
    previous = None
    for i in range(len(ts) - 1):
        v = denoiser(x, ts[i].expand(x.shape[0])).guided
        h = _b(ts[i + 1] - ts[i], x)
        slope = v if previous is None else v + h / (2 * _b(ts[i] - ts[i - 1], x)) * (v - previous)
        x = x + h * slope
        previous = v
    return x


SAMPLERS = {"euler": sample_euler, "pingpong": sample_pingpong, "ab2": sample_ab2}
