"""Log-mel front end of the label classifier.

A 64-band log-mel spectrogram (n_fft 1024) as in the feasibility study's classifier; with the
classifier's hop of 512 a 3 s clip at 22.05 kHz is a (64, 130) image. The filterbank is
built here (HTK mel scale, triangular filters) so the torch side needs no torchaudio.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(sample_rate: int, n_fft: int, bands: int, f_min: float = 30.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular filters on the HTK mel scale: (bands, n_fft // 2 + 1)."""
    f_max = f_max or sample_rate / 2
    mels = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), bands + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """(B, samples) mono audio -> (B, 1, bands, frames) log-mel, natural log of power + 1e-6."""

    def __init__(self, sample_rate: int, bands: int = 64, n_fft: int = 1024,
                 hop: int = 512) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fbank", mel_filterbank(sample_rate, n_fft, bands),
                             persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        return torch.log(self.fbank @ power + 1e-6).unsqueeze(1)
