"""``export --calibrate CORPUS``: fit an STFT codec decoder's spectral calibration on real audio.

The decoder's ``calibration`` (:class:`~lmdm_export.model.stft_codec.StftDecoder`) is one
log-magnitude offset per bin, added to the decoded magnitudes at synthesis. It is fitted so that
the mean power per bin of real clips resynthesised by the codec (encoded, decoded with the
decode-time settings being exported, Griffin-Lim iterations included) equals that of the clips
themselves: a systematic, per-frequency bias of the decoder, taken out the way a measured
frequency response is equalised. Measured on the default model
(docs/default-model-history.md, session 13) the uncalibrated codec's output was 4-7 dB short
above 4 kHz; calibrated, the Fréchet distance of real clips through the codec fell from 4.65x
real-vs-real to 3.21x, and that of generated clips from 3.68x to 2.57x.

The fit uses clips of the corpus' *train* split (one centred crop per item, the items in a seeded
order), never the validation pieces the evaluation scores on. The overlap-add and Griffin-Lim
make the output's power depend on the magnitudes of neighbouring bins and frames, so one ratio
does not land exactly: the offset is refined for ``rounds`` rounds, each multiplying in what is
still missing, and clamped to +-``LIMIT_DB`` so a bin the codec never renders (no power in the
resynthesis) cannot be boosted without bound.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lmdm_export.model.stft_codec import StftCodec
from lmdm_export.train.corpus import fixed_clips, read_items

log = logging.getLogger(__name__)

LIMIT_DB = 12.0
# A bin's power is floored at this share of the loudest bin's, so near-empty bins (above a
# band limit) give finite ratios.
POWER_FLOOR = 1e-8


@dataclass(frozen=True)
class CalibrationReport:
    """What a fit did: clips used, and the per-bin power error (resynthesis against real, in dB)
    before the fit and after each round, as the largest and the power-weighted mean absolute
    value over bins."""

    clips: int
    seconds: float
    max_error_db: tuple[float, ...]
    mean_error_db: tuple[float, ...]

    def line(self) -> str:
        return (f"calibrated on {self.clips} clips ({self.seconds / 60:.1f} min): power error "
                f"per bin {self.mean_error_db[0]:.2f} dB mean / {self.max_error_db[0]:.1f} max "
                f"-> {self.mean_error_db[-1]:.2f} / {self.max_error_db[-1]:.1f}")


def mean_power(codec: StftCodec, audio: Tensor, batch: int = 32) -> Tensor:
    """Mean power per bin of ``audio (B, C, N)`` in the codec's own STFT: (C * bins,) float64."""
    total = torch.zeros(codec.config.audio_channels * codec.config.bins, dtype=torch.float64)
    frames = 0
    for i in range(0, len(audio), batch):
        re, im = codec.spectrum(audio[i:i + batch])
        power = (re * re + im * im).flatten(1, 2)  # (b, C * bins, F)
        total += power.double().sum(dim=(0, 2))
        frames += power.shape[0] * power.shape[2]
    return total / max(frames, 1)


@torch.no_grad()
def fit_calibration(codec: StftCodec, clips: Tensor, *, rounds: int = 3,
                    batch: int = 32) -> CalibrationReport:
    """Set ``codec.decoder.calibration`` so the codec's resynthesis of ``clips (B, C, N)`` (N a
    multiple of the downsampling ratio) has their mean power per bin; starts from the current
    calibration. Returns the errors before and after each round."""
    if rounds < 1:
        raise ValueError(f"calibration rounds must be >= 1, got {rounds}")
    codec.eval()
    calibration = codec.decoder.calibration
    limit = LIMIT_DB / 20.0 * math.log(10.0)  # in natural-log magnitude
    latents = torch.cat([codec.encode(clips[i:i + batch], sample=False)
                         for i in range(0, len(clips), batch)])
    real = mean_power(codec, clips, batch)
    real_floored = real.clamp(min=float(real.max()) * POWER_FLOOR)
    weight = real / real.sum()
    max_err, mean_err = [], []
    for r in range(rounds + 1):
        decoded = torch.cat([codec.decode(latents[i:i + batch])
                             for i in range(0, len(latents), batch)])
        resynth = mean_power(codec, decoded, batch).clamp(min=float(real.max()) * POWER_FLOOR)
        ratio_db = 10.0 * torch.log10(real_floored / resynth)  # what is still missing, per bin
        max_err.append(float(ratio_db.abs().max()))
        mean_err.append(float((ratio_db.abs() * weight).sum()))
        if r == rounds:
            break
        step = 0.5 * torch.log(real_floored / resynth)  # power ratio -> log-magnitude offset
        calibration.copy_((calibration.double() + step).clamp(-limit, limit).float())
    seconds = clips.shape[0] * clips.shape[-1] / codec.config.sample_rate
    return CalibrationReport(len(clips), seconds, tuple(max_err), tuple(mean_err))


def corpus_clips(codec: StftCodec, corpus: str | Path, clips: int = 256,
                 latent_frames: int = 64, seed: int = 0) -> Tensor:
    """Up to ``clips`` crops of ``latent_frames`` latent frames (3 s at the default geometry),
    one per item of the train split of ``corpus``: (n, audio_channels, samples)."""
    items = read_items(corpus, "train")
    if not items:
        raise ValueError(f"corpus {corpus} has no train items to calibrate on")
    rate = codec.config.sample_rate
    if any(it.sample_rate != rate for it in items):
        raise ValueError(f"corpus {corpus} is not at the codec's rate {rate} Hz: calibrate "
                         "on a corpus rendered at the model's geometry")
    audio = fixed_clips(items, clips, latent_frames * codec.config.downsampling_ratio, seed=seed)
    audio = np.repeat(audio, codec.config.audio_channels, axis=1)  # mono renders, C channels
    return torch.from_numpy(audio)


def calibrate(codec: StftCodec, corpus: str | Path, *, clips: int = 256) -> CalibrationReport:
    """Fit ``codec``'s calibration on ``clips`` train clips of ``corpus`` (the codec's current
    decode-time settings: set the phase iterations first)."""
    report = fit_calibration(codec, corpus_clips(codec, corpus, clips))
    log.info(report.line())
    return report
