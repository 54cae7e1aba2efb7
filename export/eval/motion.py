"""Spectral motion: how much a clip's spectrum changes from one frame to the next.

The mean absolute difference of the 64-band log-mel spectrogram (natural log of power, the
classifier's front end: n_fft 1024, hop 512, 23 ms at 22.05 kHz) between consecutive frames,
over bands and frames, with every band floored at ``FLOOR_DB`` below the clip's loudest: below
that, the sidelobes of a held chord's partials interfere and flicker by tens of dB from frame
to frame, which no listener hears. Note changes, onsets, vibrato, bow and breath noise all move
it; a held chord or a smoothed spectrogram does not. It is a diagnostic, not a quality score:
white noise moves a lot (its band powers fluctuate frame by frame), silence not at all. Set
beside the real clips' figure it shows whether a codec or a generator renders the music too
still (docs/default-model-history.md, session 7).
"""

from __future__ import annotations

import numpy as np
import torch

from lmdm_export.eval.melspec import LogMel

BANDS, N_FFT, HOP = 64, 1024, 512
FLOOR_DB = 60.0


def spectral_motion(clips: np.ndarray, sample_rate: int, batch: int = 32) -> np.ndarray:
    """Mono clips (n, samples) -> (n,) mean |log-mel(t+1) - log-mel(t)|."""
    logmel = LogMel(sample_rate, BANDS, N_FFT, HOP)
    out = []
    with torch.no_grad():
        for start in range(0, len(clips), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(clips[start:start + batch],
                                                          dtype=np.float32))
            mel = logmel(chunk)[:, 0]  # (B, bands, frames), natural log of power
            floor = mel.amax(dim=(1, 2), keepdim=True) - FLOOR_DB / 10 * np.log(10)
            mel = torch.maximum(mel, floor)
            out.append((mel[..., 1:] - mel[..., :-1]).abs().mean(dim=(1, 2)).numpy())
    return np.concatenate(out) if out else np.zeros(0)
