"""What the MR-STFT distance does not show about a codec: tonal energy and pitch of held tones.

The first default-codec run reached an MR-STFT distance of 1.88 while its reconstructions had
lost almost all tonal structure (tonal energy 0.04 against 0.95 for real audio), so the codec's
report carries these two yardsticks beside the distance:

* **tonal energy** (:mod:`lmdm_export.eval.tonal`) of reconstructions of tonal validation clips,
  beside the real clips' figure;
* **pitch of stationary tones**: harmonic tones (8 partials at 1/k amplitude, like a bowed or
  blown note held still) through the codec, and how far the reconstruction's strongest partial
  lies from the nearest partial of the input, in cents. A codec whose encoder sees only
  magnitudes and whose decoder is a shift-equivariant network gets identical latents for every
  frame of a stationary tone, so it can only return a signal periodic in one latent hop (1024
  samples): partials on a grid of ``sample_rate / downsampling_ratio`` (21.5 Hz at 22.05 kHz),
  up to half a grid step (10.8 Hz: 42 cents at 440 Hz, 1.8 semitones at 110 Hz) off. The
  ``periodicity`` figure measures that directly: the RMS difference between the reconstruction
  and itself shifted by one latent hop, relative to its RMS (0 = exactly periodic), beside the
  same figure for the input tone;
* **partial recall** on real clips: tonal energy only asks whether the energy sits in peaks,
  not whether the peaks are the input's. A codec that smooths the spectrum can score above the
  real audio while moving partials. Partial recall is the share of the input's partial energy
  (spectral peaks within ``PARTIAL_RANGE_DB`` of the frame's strongest and 10 dB above their
  surroundings, on an 8192-point spectrum: 2.7 Hz bins at 22.05 kHz) that the reconstruction
  also has as a peak within one bin. Resynthesis from the true magnitudes with peak-locked phase
  scores 0.96 on the default corpus.
"""

from __future__ import annotations

import numpy as np
import torch

from lmdm_export.eval.tonal import local_median, power_spectrogram, tonal_energy

PROBE_TONES_HZ = (110.0, 261.63, 440.0, 987.77)


def tone_frequency(audio: np.ndarray, sample_rate: int) -> float:
    """Frequency in Hz of the strongest partial of mono ``audio (samples,)``: the peak of a
    zero-padded Hann-windowed spectrum, refined by parabolic interpolation of its log."""
    n = 1 << int(np.ceil(np.log2(len(audio) * 4)))
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n)) + 1e-12
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c != 0 else 0.0
    return (k + offset) * sample_rate / n


def cents(frequency: float, reference: float) -> float:
    return float(1200 * np.log2(max(frequency, 1e-6) / reference))


def harmonic_tones(sample_rate: int, samples: int, tones: tuple[float, ...] = PROBE_TONES_HZ,
                   partials: int = 8) -> torch.Tensor:
    """Tones of ``partials`` harmonics at amplitude 1/k below Nyquist, peak 0.5,
    (len(tones), 1, samples) float32."""
    t = np.arange(samples) / sample_rate
    out = []
    for f in tones:
        ks = [k for k in range(1, partials + 1) if k * f < sample_rate / 2]
        y = sum(np.sin(2 * np.pi * k * f * t) / k for k in ks)
        out.append(0.5 * y / np.abs(y).max())
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


@torch.no_grad()
def pitch_report(reconstruct, sample_rate: int, hop: int, seconds: float = 3.0,
                 tones: tuple[float, ...] = PROBE_TONES_HZ, channels: int = 1) -> dict:
    """Harmonic tones through ``reconstruct`` ((B, channels, N) -> (B, channels, N), the same
    tone in every channel): for each, the distance in cents from the reconstruction's strongest
    partial (first channel) to the nearest partial of the input, and the periodicity in ``hop``
    samples, measured on the middle half (no edges)."""
    samples = int(seconds * sample_rate) // hop * hop
    x = harmonic_tones(sample_rate, samples, tones)
    out = reconstruct(x.expand(-1, channels, -1).contiguous())[:, 0].numpy()
    mid = slice(samples // 4, 3 * samples // 4)
    errors, periodicity, periodicity_input = {}, {}, {}
    for f, y, ref in zip(tones, out, x[:, 0].numpy(), strict=True):
        found = tone_frequency(y[mid], sample_rate)
        errors[f"{f:g}"] = round(cents(found, f * max(1, round(found / f))), 1)
        periodicity[f"{f:g}"] = _periodicity(y[mid], hop)
        periodicity_input[f"{f:g}"] = _periodicity(ref[mid], hop)
    return {"error_cents": errors,
            "median_abs_error_cents": round(float(np.median(np.abs(list(errors.values())))), 1),
            "periodicity": periodicity, "periodicity_input": periodicity_input}


def _periodicity(y: np.ndarray, hop: int) -> float:
    """RMS of ``y`` minus itself ``hop`` samples later, over the RMS of ``y``."""
    rms = float(np.sqrt(np.mean(y ** 2))) + 1e-12
    return round(float(np.sqrt(np.mean((y[hop:] - y[:-hop]) ** 2))) / rms, 3)


PARTIAL_FFT = 8192
PARTIAL_RANGE_DB = 30.0
PARTIAL_PROMINENCE_DB = 10.0


def _partials(audio: np.ndarray, range_db: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame (8192 points, hop 2048, Hann): indices of the partials, local maxima within
    ``range_db`` of the frame's strongest bin that stand ``PARTIAL_PROMINENCE_DB`` above the
    median of the 31 bins around them (noise has local maxima everywhere, but few of those), and
    the frame's magnitudes."""
    mags = np.sqrt(power_spectrogram(audio, PARTIAL_FFT, PARTIAL_FFT // 4))
    levels = 20 * np.log10(mags + 1e-12)
    locals_ = 20 * np.log10(local_median(mags) + 1e-12)  # the log commutes with the median
    out = []
    for mag, level, local in zip(mags, levels, locals_, strict=True):
        inner = level[1:-1]
        peak = (inner > level[:-2]) & (inner >= level[2:]) & \
            (inner > level.max() - range_db) & (inner > local[1:-1] + PARTIAL_PROMINENCE_DB)
        out.append((np.nonzero(peak)[0] + 1, mag))
    return out


def partial_recall(real: np.ndarray, reconstruction: np.ndarray) -> float | None:
    """Share of the partial energy of mono ``real`` (samples,) that ``reconstruction`` has as a
    spectral peak within one bin (see the module docstring); None for audio shorter than one
    frame or without peaks. The reconstruction's peaks count down to 10 dB further below its
    frame's strongest, so a partial a little weaker than in the input still counts."""
    if len(real) < PARTIAL_FFT:
        return None
    found_hit = total = 0.0
    theirs = _partials(real, PARTIAL_RANGE_DB)
    ours = _partials(reconstruction, PARTIAL_RANGE_DB + 10)
    for (peaks, mag), (found, _) in zip(theirs, ours, strict=True):
        if not len(peaks):
            continue
        energy = mag[peaks] ** 2
        near = np.abs(peaks[:, None] - found[None, :]).min(axis=1) <= 1 if len(found) else \
            np.zeros(len(peaks), bool)
        found_hit += energy[near].sum()
        total += energy.sum()
    return round(found_hit / total, 4) if total > 0 else None


def median_partial_recall(real: torch.Tensor, reconstruction: torch.Tensor) -> float | None:
    """Median :func:`partial_recall` over (B, C, N) clips (channels averaged)."""
    values = [partial_recall(r.mean(0).numpy(), y.mean(0).numpy())
              for r, y in zip(real, reconstruction, strict=True)]
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 4) if values else None


def median_tonal_energy(clips: torch.Tensor) -> float | None:
    """Median tonal energy of (B, C, N) clips (channels averaged); None for no clips."""
    if len(clips) == 0:
        return None
    return round(float(np.median([tonal_energy(c.mean(0).numpy()) for c in clips])), 4)
