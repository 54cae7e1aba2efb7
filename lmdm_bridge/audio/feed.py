"""The non-real-time edges around the rings: generated audio in, captured audio out.

:class:`OutputFeed` takes the model's blocks ``(model channels, frames)`` at the model's rate
and prepares them for the output ring: non-finite samples zeroed (a diverging model must not
reach the speakers as NaN), resampled to the device rate, channels matched to the output
selection, the ``post`` chain (with its safety limiter), optionally recorded, then written,
waiting for room when the ring is full. :class:`InputTap` does the reverse for the model's
input path: new captured frames, the ``pre`` chain, resampled to the model's rate and channels.
Both run on the daemon's worker threads, never in the audio callback, and may allocate.
"""

from __future__ import annotations

import time

import numpy as np

from lmdm_bridge.audio.effects import EffectChain
from lmdm_bridge.audio.port import AudioPort
from lmdm_bridge.audio.resample import StreamResampler
from lmdm_bridge.audio.ring import CaptureReader, CaptureRing


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``(c, n)`` -> ``(channels, n)``: equal counts pass, mono is copied to every channel,
    anything becomes mono by averaging; other combinations are a :class:`ValueError`."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    raise ValueError(f"cannot map {have} channels onto {channels} (use 1 or {have} channels)")


def _check_mapping(have: int, want: int) -> None:
    if not (have == want or have == 1 or want == 1):
        raise ValueError(f"cannot map {have} channels onto {want} (use 1 or {have} channels)")


class OutputFeed:
    """Generated audio at ``source_rate`` Hz with ``source_channels`` channels -> ``port``'s
    output ring. ``chain``: the ``post`` chain (runs at the device rate); ``recorder``: gets
    every processed block (anything with ``write((channels, frames))``)."""

    def __init__(self, port: AudioPort, source_rate: float, source_channels: int, *,
                 chain: EffectChain | None = None, recorder=None, quality: str = "good",
                 poll_seconds: float = 0.005) -> None:
        _check_mapping(source_channels, port.channels_out)
        self.port = port
        self.source_channels = int(source_channels)
        self.chain = chain
        self.recorder = recorder
        self.poll_seconds = poll_seconds
        self.resampler = StreamResampler(source_rate, port.samplerate, source_channels, quality)
        self.nonfinite = 0  # blocks in which NaN or inf samples were zeroed
        self.dropped = 0  # device frames not written because push() timed out

    @property
    def latency(self) -> int:
        """Device frames of processing delay (resampler hold + chain look-ahead), not counting
        the audio queued in the ring (:attr:`queued`)."""
        return self.resampler.latency + (self.chain.latency if self.chain else 0)

    @property
    def queued(self) -> int:
        """Device frames waiting in the output ring."""
        return self.port.output.available

    @property
    def queued_seconds(self) -> float:
        return self.port.output.available / self.port.samplerate

    def process(self, audio: np.ndarray) -> np.ndarray:
        """The device-ready form ``(port channels, m)`` of a generated block
        ``(source_channels, frames)``; advances the resampler's and chain's state."""
        if audio.ndim != 2 or audio.shape[0] != self.source_channels:
            raise ValueError(f"expected ({self.source_channels}, frames) audio, got "
                             f"{audio.shape}")
        audio = np.asarray(audio, dtype=np.float32)
        if not np.isfinite(audio).all():
            self.nonfinite += 1
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        return self._device_side(self.resampler.process(audio))

    def _device_side(self, audio: np.ndarray) -> np.ndarray:
        audio = match_channels(audio, self.port.channels_out)
        if self.chain is not None and audio.shape[1]:
            audio = self.chain.process(audio)
        return np.asarray(audio, dtype=np.float32)

    def push(self, audio: np.ndarray, timeout: float | None = None) -> int:
        """Process a generated block and queue it for playback, waiting while the ring is full
        (at most ``timeout`` seconds; the rest is dropped and counted). Returns the device
        frames queued."""
        return self._write(self.process(audio), timeout)

    def finish(self, timeout: float | None = None) -> int:
        """End of the stream: push the resampler's and the chain's held tails, then tell the
        port that running dry now is intended. Returns the device frames queued."""
        tail = self._device_side(self.resampler.flush())
        if self.chain is not None and self.chain.latency:
            silence = np.zeros((self.port.channels_out, self.chain.latency), np.float32)
            tail = np.concatenate([tail, self.chain.process(silence)], axis=1)
        written = self._write(tail, timeout)
        self.port.end_of_stream()
        self.resampler.reset()
        return written

    def cut(self, reset_effects: bool = False) -> None:
        """Drop the queued audio with a short fade (stop, reset, a jump): see
        :meth:`AudioPort.cut`. The resampler starts afresh; the chain's tails (reverb, delay)
        carry on into the next audio unless ``reset_effects``."""
        self.port.cut()
        self.resampler.reset()
        if reset_effects and self.chain is not None:
            self.chain.reset()

    def _write(self, audio: np.ndarray, timeout: float | None) -> int:
        if self.recorder is not None and audio.shape[1]:
            self.recorder.write(audio)
        self.port.end_of_stream(False)
        frames = audio.T  # (frames, channels) view, as the ring stores them
        done = self.port.output.write(frames)
        deadline = None if timeout is None else time.monotonic() + timeout
        while done < len(frames):
            if deadline is not None and time.monotonic() >= deadline:
                self.dropped += len(frames) - done
                break
            time.sleep(self.poll_seconds)  # the callback frees room; it cannot signal us
            done += self.port.output.write(frames[done:])
        return done


class InputTap:
    """New captured input -> ``pre`` chain (device rate) -> ``target_rate`` Hz with
    ``target_channels`` channels, for the model. Starts at the capture ring's current end
    (or at absolute index ``start``)."""

    def __init__(self, capture: CaptureRing, target_rate: float, target_channels: int, *,
                 chain: EffectChain | None = None, start: int | None = None,
                 quality: str = "good", chunk_frames: int = 16384) -> None:
        _check_mapping(capture.channels, target_channels)
        self.capture = capture
        self.target_channels = int(target_channels)
        self.chain = chain
        self.reader = CaptureReader(capture, start)
        self.resampler = StreamResampler(capture.samplerate, target_rate, target_channels,
                                         quality)
        self._scratch = np.zeros((chunk_frames, capture.channels), np.float32)

    @property
    def lost(self) -> int:
        """Captured frames overwritten before this tap read them."""
        return self.reader.lost

    @property
    def position(self) -> int:
        """Absolute capture index of the next frame this tap will read."""
        return self.reader.position

    @property
    def latency(self) -> int:
        """Model-rate samples of processing delay (chain look-ahead and resampler hold)."""
        chain = self.chain.latency if self.chain else 0
        return int(round(chain * self.resampler.ratio)) + self.resampler.input_latency

    def read(self) -> np.ndarray:
        """Every frame captured since the last call, processed: ``(target_channels, m)``."""
        parts = []
        while (n := self.reader.read(self._scratch)) > 0:
            parts.append(self._scratch[:n].T.copy())
        if not parts:
            return np.zeros((self.target_channels, 0), np.float32)
        audio = np.concatenate(parts, axis=1)
        if self.chain is not None:
            audio = self.chain.process(audio)
        return self.resampler.process(match_channels(audio, self.target_channels))
