"""Recording to WAV from a thread of its own, robust to being stopped at any moment.

:class:`WavRecorder` takes blocks ``(channels, frames)`` from any thread (``write`` only
queues a copy, it never touches the disk) and a writer thread appends them to the file. Every
``flush_seconds`` the writer flushes, which makes libsndfile rewrite the WAV header with the
current length, so even a process killed without warning (SIGKILL, power loss) leaves a valid
file with everything up to the last flush. :meth:`WavRecorder.close` (or leaving the ``with``
block) writes every block queued so far and finalises the file; a daemon that handles SIGTERM
by closing its recorders therefore leaves every block it produced.

:class:`CaptureRecorder` follows a :class:`~lmdm_bridge.audio.ring.CaptureRing` (the device
input) into a :class:`WavRecorder`, so a user can check the routing of the input.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

from lmdm_bridge.audio.ring import CaptureReader, CaptureRing

_STOP = object()


class WavRecorder:
    """An incrementally written WAV file of ``channels`` channels at ``samplerate`` Hz.

    ``subtype``: ``"FLOAT"`` (default: nothing clips in the file), ``"PCM_24"`` or
    ``"PCM_16"``. Errors of the writer thread (disk full) are kept in :attr:`error` and raised
    by :meth:`close`; blocks written after one are dropped.
    """

    def __init__(self, path: str | Path, samplerate: int, channels: int, *,
                 subtype: str = "FLOAT", flush_seconds: float = 0.5) -> None:
        import soundfile

        self.path = Path(path)
        self.samplerate = int(samplerate)
        self.channels = int(channels)
        self.flush_seconds = flush_seconds
        self.frames = 0  # frames on disk (written by the writer thread)
        self.error: BaseException | None = None
        self._file = soundfile.SoundFile(str(self.path), "w", self.samplerate, self.channels,
                                         subtype=subtype, format="WAV")
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"record-{self.path.name}",
                                        daemon=True)
        self._thread.start()

    def write(self, audio: np.ndarray) -> None:
        """Queue ``audio`` ``(channels, frames)`` (copied); returns at once."""
        if audio.ndim != 2 or audio.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, frames) audio, got {audio.shape}")
        if self._closed:
            raise ValueError(f"recorder {self.path} is closed")
        self._queue.put(np.array(audio.T, dtype=np.float32))  # (frames, channels) copy

    def _run(self) -> None:
        unflushed, last_flush = False, time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None and self.error is None:
                try:
                    self._file.write(item)
                    self.frames += len(item)
                    unflushed = True
                except Exception as exc:  # disk full, file removed: keep the daemon running
                    self.error = exc
            if unflushed and time.monotonic() - last_flush >= self.flush_seconds:
                self._flush()
                unflushed, last_flush = False, time.monotonic()

    def _flush(self) -> None:
        try:
            self._file.flush()
        except Exception as exc:  # as above
            self.error = self.error or exc

    def close(self) -> None:
        """Write everything queued, finalise the header and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._file.close()
        if self.error is not None:
            raise OSError(f"recording to {self.path} failed: {self.error}") from self.error

    def __enter__(self) -> WavRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureRecorder:
    """Records a :class:`CaptureRing` (from its current end on) to ``path``, polling it every
    ``poll_seconds``; frames the ring overwrote before they were read are written as silence,
    so the file's timeline stays true, and counted in :attr:`lost`."""

    def __init__(self, capture: CaptureRing, path: str | Path, *, subtype: str = "FLOAT",
                 poll_seconds: float = 0.05) -> None:
        self.capture = capture
        self.reader = CaptureReader(capture)
        self.recorder = WavRecorder(path, int(capture.samplerate), capture.channels,
                                    subtype=subtype)
        self.poll_seconds = poll_seconds
        self._scratch = np.zeros((max(1, int(capture.samplerate * poll_seconds * 4)),
                                  capture.channels), np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-input", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        return self.reader.lost

    def _drain(self) -> None:
        while True:
            lost = self.reader.lost
            n = self.reader.read(self._scratch)
            if self.reader.lost > lost:
                gap = self.reader.lost - lost
                self.recorder.write(np.zeros((self.capture.channels, gap), np.float32))
            if n == 0:
                return
            self.recorder.write(self._scratch[:n].T)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._drain()

    def close(self) -> None:
        """Record what was captured up to now, then finalise the file."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._drain()
        self.recorder.close()

    def __enter__(self) -> CaptureRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
