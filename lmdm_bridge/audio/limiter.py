"""The safety limiter at the end of the ``post`` chain: a look-ahead brick-wall peak limiter.

Why not ``pedalboard.Limiter``: it is JUCE's limiter, a loudness maximiser. It applies
``3.75 dB - threshold`` of make-up gain after its two compressors (a quiet signal at -20 dBFS
comes out 13.75 dB louder at the default threshold) and ends in a hard clipper at 0 dBFS, which
transients reach during its 2 ms attack. A safety stage must leave audio below the ceiling
untouched and never clip, so this one looks ahead instead.

The math, for a required gain ``r[t] = min(1, ceiling / peak[t])`` (peak over channels, so the
stereo image stays put) and a window of ``L`` samples: ``m[t] = min(r[t-L+1 .. t])`` and
``g[t] = mean(m[t-L+1 .. t])``. Every ``m`` in that mean covers ``r[t-L+1]``, so
``g[t] <= r[t-L+1]``, and the output ``y[t] = x[t-L+1] * g[t]`` never exceeds the ceiling. The
gain starts falling ``L`` samples before a peak and recovers over ``2 L`` after it (no step,
no overshoot); the cost is ``L - 1`` samples of latency. Audio whose peaks stay below the
ceiling comes out exactly as it went in, delayed.
"""

from __future__ import annotations

import numpy as np


def sliding_min(values: np.ndarray, window: int) -> np.ndarray:
    """``out[t] = min(values[t : t + window])`` for every full window, shape
    ``(len(values) - window + 1,)``; O(n log window) with whole-array operations."""
    out, width = values, 1
    while 2 * width <= window:  # out[t] = min(values[t : t + 2 width])
        out = np.minimum(out[:-width], out[width:])
        width *= 2
    count = len(values) - window + 1
    # Two windows of the largest power of two <= window cover [t, t + window) exactly.
    return np.minimum(out[:count], out[window - width:window - width + count])


class SafetyLimiter:
    """Brick-wall peak limiter on ``(channels, frames)`` float32 blocks at ``samplerate`` Hz:
    ``|output| <= 10 ** (ceiling_db / 20)`` always; ``window_ms`` sets look-ahead, attack and
    release (:attr:`latency` = window - 1 samples). State is kept between calls; the channel
    count is taken from the first block (a different one restarts the state)."""

    name = "safety"
    # OSC-controllable parameters: name -> (minimum, maximum) in the parameter's unit.
    ranges = {"ceiling_db": (-24.0, 0.0)}

    def __init__(self, samplerate: float, ceiling_db: float = -0.3,
                 window_ms: float = 5.0) -> None:
        self.window = max(2, int(round(window_ms * 1e-3 * samplerate)))
        self.ceiling_db = float(ceiling_db)
        self._channels = 0
        self.reset()

    @property
    def latency(self) -> int:
        """Samples by which the output lags the input."""
        return self.window - 1

    @property
    def ceiling(self) -> float:
        return float(10.0 ** (self.ceiling_db / 20.0))

    def reset(self, channels: int | None = None) -> None:
        """Forget the stream: silence in the delay line, unity gain."""
        self._channels = self._channels if channels is None else channels
        hold = self.window - 1
        self._required = np.ones(hold, np.float64)  # r of the last L-1 samples
        self._minimum = np.ones(hold, np.float64)  # m of the last L-1 samples
        self._delay = np.zeros((self._channels, hold), np.float32)  # x of the last L-1

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Limit the next block ``(channels, frames)``; returns ``(channels, frames)``."""
        if audio.ndim != 2:
            raise ValueError(f"expected (channels, frames) audio, got {audio.shape}")
        if audio.shape[0] != self._channels:
            self.reset(audio.shape[0])
        n, ceiling = audio.shape[1], self.ceiling
        if n == 0:
            return audio.astype(np.float32, copy=True)
        peak = np.abs(audio).max(axis=0).astype(np.float64)  # (frames,)
        required = np.minimum(1.0, ceiling / np.maximum(peak, 1e-30))
        required = np.concatenate([self._required, required])
        minimum = np.concatenate([self._minimum, sliding_min(required, self.window)])
        sums = np.concatenate([[0.0], np.cumsum(minimum)])
        gain = (sums[self.window:] - sums[:-self.window]) / self.window  # (frames,)
        delayed = np.concatenate([self._delay, audio.astype(np.float32, copy=False)], axis=1)
        hold = self.window - 1
        self._required, self._minimum = required[-hold:], minimum[-hold:]
        self._delay = delayed[:, -hold:].copy()
        out = (delayed[:, :n] * gain).astype(np.float32)
        # The bound holds exactly in real arithmetic; the clip absorbs float rounding and the
        # few milliseconds after a lowered ceiling, whose delayed samples used the old one.
        return np.clip(out, -ceiling, ceiling, out=out)
