"""Streaming sample-rate conversion between the model's rate and the device's.

The model produces audio at its bundle's rate (44.1 kHz for the SAO geometry, maybe 22.05 kHz
for a small default model) and the device runs at whatever the user's interface runs at (44.1,
48, 88.2 or 96 kHz). Conversion happens at the edges, outside the audio callback: generated
blocks are converted before they enter the output ring, captured input after it leaves the
capture ring.

This wraps ``pedalboard.io.StreamResampler`` (a windowed-sinc resampler that keeps its filter
state between calls). Its output does not depend on how the input is cut into chunks: any
chunking followed by :meth:`StreamResampler.flush` gives the same samples as one call with the
whole signal (pinned by ``tests/test_audio.py``). It aligns its output with its input (an impulse
at input sample ``k`` comes out at ``k * target / source``) by holding back
:attr:`StreamResampler.input_latency` input samples until later input (or the flush) arrives;
that hold is the resampler's latency.
"""

from __future__ import annotations

import numpy as np

QUALITIES = ("fast", "good", "best")


def _quality(name: str):
    from pedalboard import Resample

    q = Resample.Quality
    return {"fast": q.WindowedSinc16, "good": q.WindowedSinc32, "best": q.WindowedSinc64}[name]


class StreamResampler:
    """Audio ``(channels, frames)`` float32 at ``source_rate`` Hz in, ``(channels, m)`` at
    ``target_rate`` Hz out, with state carried across calls. Equal rates pass audio through
    unchanged, without latency.

    ``quality``: ``"fast"``, ``"good"`` (default) or ``"best"`` (windowed sinc of 16, 32 or 64
    taps per side).
    """

    def __init__(self, source_rate: float, target_rate: float, channels: int,
                 quality: str = "good") -> None:
        if source_rate <= 0 or target_rate <= 0 or channels < 1:
            raise ValueError(f"need positive rates and channels, got {source_rate} Hz -> "
                             f"{target_rate} Hz, {channels} channels")
        if quality not in QUALITIES:
            raise ValueError(f"resampler quality must be one of {QUALITIES}, got {quality!r}")
        self.source_rate = float(source_rate)
        self.target_rate = float(target_rate)
        self.channels = int(channels)
        self.quality = quality
        self._impl = None
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.source_rate == self.target_rate

    @property
    def ratio(self) -> float:
        """Output samples per input sample."""
        return self.target_rate / self.source_rate

    @property
    def input_latency(self) -> int:
        """Input samples held back until more input (or :meth:`flush`) arrives."""
        return 0 if self._impl is None else int(round(self._impl.input_latency))

    @property
    def latency(self) -> int:
        """The hold expressed in output samples: how much later than the input's end the
        output of one call ends."""
        return int(round(self.input_latency * self.ratio))

    def reset(self) -> None:
        """Forget all state (the next call starts a new stream)."""
        if self.passthrough:
            self._impl = None
        else:
            from pedalboard.io import StreamResampler as Impl

            self._impl = Impl(self.source_rate, self.target_rate, self.channels,
                              _quality(self.quality))

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Convert the next chunk ``(channels, frames)``; returns ``(channels, m)`` float32 with
        ``m`` about ``frames * ratio`` (less at the start, while the filter fills)."""
        if audio.ndim != 2 or audio.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, frames) audio, got {audio.shape}")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if self._impl is None:
            return audio
        return self._impl.process(audio)

    def flush(self) -> np.ndarray:
        """The held-back tail ``(channels, m)``; the stream ends here (call :meth:`reset` to
        start another)."""
        if self._impl is None:
            return np.zeros((self.channels, 0), np.float32)
        return self._impl.process(None)
