"""Spectral losses and reconstruction metrics for the codec.

``mr_stft`` is the multi-resolution STFT distance (spectral convergence + L1 on log-magnitudes,
averaged over resolutions): the codec's training loss and its reported quality figure. Beside it
the codec report gives Griffin-Lim from the *true* magnitudes (what a magnitude-only model could
reach at best with classic phase recovery) and white noise, for scale; and SI-SDR.
"""

from __future__ import annotations

import torch
from torch import Tensor

RESOLUTIONS = (512, 1024, 2048)


def _mag(x: Tensor, n_fft: int) -> Tensor:
    """(B, N) -> |STFT| (B, bins, frames), hann window, hop n_fft / 4."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True)
    return spec.abs().clamp(min=1e-5)


def _sc_log_l1(mp: Tensor, mt: Tensor, log_p: Tensor, log_t: Tensor) -> Tensor:
    """Spectral convergence + mean L1 of log-magnitudes per item of (N, bins, frames)
    magnitudes and their logs -> (N,)."""
    sc = torch.linalg.norm(mt - mp, dim=(1, 2)) / torch.linalg.norm(mt, dim=(1, 2)).clamp(min=1e-9)
    return sc + (log_t - log_p).abs().mean(dim=(1, 2))


def mr_stft(pred: Tensor, target: Tensor, resolutions: tuple[int, ...] = RESOLUTIONS,
            reduce: bool = True) -> Tensor:
    """Multi-resolution STFT distance of (B, C, N) signals: a scalar, or (B,) with reduce=False."""
    p, t = pred.flatten(0, 1), target.flatten(0, 1)
    total = 0
    for n_fft in resolutions:
        mp, mt = _mag(p, n_fft), _mag(t, n_fft)
        total = total + _sc_log_l1(mp, mt, mp.log(), mt.log())
    per_item = (total / len(resolutions)).reshape(pred.shape[0], -1).mean(1)
    return per_item.mean() if reduce else per_item


def log_magnitude_distance(pred: Tensor, target: Tensor) -> Tensor:
    """Spectral convergence + mean L1 between log-magnitudes (B, rows, F) on one STFT grid: the
    MR-STFT distance's terms at the codec's own resolution, for a decoder whose output is that
    grid's log-magnitudes (the peak-locked codec, whose phase follows from them)."""
    return _sc_log_l1(pred.exp(), target.exp(), pred, target).mean()


def si_sdr(pred: Tensor, target: Tensor) -> Tensor:
    """Scale-invariant SDR in dB per item, (B, C, N) -> (B,)."""
    p, t = pred.flatten(1), target.flatten(1)
    p, t = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    scale = (p * t).sum(1, keepdim=True) / (t * t).sum(1, keepdim=True).clamp(min=1e-12)
    proj = scale * t
    noise = p - proj
    return 10 * torch.log10((proj * proj).sum(1).clamp(min=1e-12) /
                            (noise * noise).sum(1).clamp(min=1e-12))


def griffin_lim(target: Tensor, n_fft: int = 1024, iters: int = 32, seed: int = 0) -> Tensor:
    """Griffin-Lim from the true magnitudes of (B, C, N) audio, random initial phase."""
    x = target.flatten(0, 1)
    window = torch.hann_window(n_fft, dtype=x.dtype)
    hop = n_fft // 4
    mag = torch.stft(x, n_fft, hop, window=window, return_complex=True).abs()
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(mag.shape, generator=g) * 2 * torch.pi
    spec = torch.polar(mag, phase)
    for _ in range(iters):
        y = torch.istft(spec, n_fft, hop, window=window, length=x.shape[-1])
        rebuilt = torch.stft(y, n_fft, hop, window=window, return_complex=True)
        spec = torch.polar(mag, rebuilt.angle())
    y = torch.istft(spec, n_fft, hop, window=window, length=x.shape[-1])
    return y.reshape(target.shape)
