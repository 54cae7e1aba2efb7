"""The real-time side of the audio I/O: what every back-end's callback does.

An :class:`AudioPort` owns the rings between the callback and the rest of the daemon:

* ``output`` (:class:`RingBuffer`, device rate, ``channels_out`` columns): the daemon writes
  processed audio, the callback plays it;
* ``capture`` (:class:`CaptureRing`, device rate, ``channels_in`` columns): the callback stores
  the device input with its stream time, readers take it from there;
* ``monitor`` (optional :class:`CaptureRing`): a copy of exactly what was played, fades and
  gain included (tests, and a "record what the device got" option).

The callback only copies and scales: no allocation of audio-sized memory (every scratch array
is made here, for ``max_blocksize`` frames), no lock, no logging, no model. When ``output``
runs dry the played audio fades out over ``fade`` frames instead of stopping with a click: the
envelope never exceeds ``(frames still in the ring) / fade``, so it reaches zero exactly when
the ring empties, and rises by at most ``1 / fade`` per frame when audio returns. Each fall
into silence that the producer did not announce with :meth:`AudioPort.end_of_stream` counts as
one underrun. :meth:`AudioPort.cut` (stop, reset) fades out the same way and drops what is
queued, without counting an underrun. The output gain (:meth:`AudioPort.set_gain_db`, for
``/lmdm/gain``) ramps over ``gain_ramp`` frames, so a fader never clicks either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmdm_bridge.audio.ring import CaptureRing, RingBuffer


def _columns(selection: Sequence[int] | None, channels: int, what: str) -> tuple[int, ...]:
    """0-based device columns of a 1-based ``selection`` (default: the first ``channels``)."""
    if selection is None:
        return tuple(range(channels))
    if len(selection) != channels or any(c < 1 for c in selection):
        raise ValueError(f"{what}: need {channels} channel numbers >= 1, got {list(selection)}")
    return tuple(c - 1 for c in selection)


class AudioPort:
    """Rings, scratch buffers and counters of one audio stream at ``samplerate`` Hz.

    ``channels_in``/``channels_out``: channels of the capture and output rings (0 for none).
    ``device_in``/``device_out``: channels the device stream is opened with, and
    ``in_columns``/``out_columns`` the 1-based device channels that feed or receive the ring
    channels (``--in-channels 3,4``). Unselected output channels are silent.
    ``output_seconds``/``capture_seconds``: ring sizes. ``fade_ms``: underrun fade length;
    ``gain_ramp_ms``: length of a gain change.
    """

    def __init__(self, samplerate: int, *, channels_in: int, channels_out: int,
                 max_blocksize: int = 8192, device_in: int | None = None,
                 device_out: int | None = None, in_columns: Sequence[int] | None = None,
                 out_columns: Sequence[int] | None = None, output_seconds: float = 8.0,
                 capture_seconds: float = 30.0, monitor_seconds: float = 0.0,
                 fade_ms: float = 10.0, gain_ramp_ms: float = 20.0) -> None:
        if samplerate <= 0 or max_blocksize < 1 or channels_out < 0 or channels_in < 0:
            raise ValueError("AudioPort needs samplerate > 0, max_blocksize >= 1 and channel "
                             "counts >= 0")
        self.samplerate = int(samplerate)
        self.max_blocksize = int(max_blocksize)
        self.channels_in, self.channels_out = int(channels_in), int(channels_out)
        self.in_columns = _columns(in_columns, self.channels_in, "input channels")
        self.out_columns = _columns(out_columns, self.channels_out, "output channels")
        self.device_in = max((c + 1 for c in self.in_columns), default=0) \
            if device_in is None else int(device_in)
        self.device_out = max((c + 1 for c in self.out_columns), default=0) \
            if device_out is None else int(device_out)
        if max(self.in_columns, default=-1) >= self.device_in or \
                max(self.out_columns, default=-1) >= self.device_out:
            raise ValueError("a selected channel is beyond the device's channel count")
        # Identity mappings let the callback skip the per-column copy.
        self._in_identity = self.in_columns == tuple(range(self.device_in))
        self._out_identity = self.out_columns == tuple(range(self.device_out))

        sr = self.samplerate
        self.output = RingBuffer(max(int(output_seconds * sr), max_blocksize),
                                 max(1, self.channels_out))
        self.capture = CaptureRing(max(int(capture_seconds * sr), max_blocksize),
                                   max(1, self.channels_in), sr)
        self.monitor = (CaptureRing(int(monitor_seconds * sr), max(1, self.channels_out), sr)
                        if monitor_seconds > 0 else None)

        self.fade = max(1, int(round(fade_ms * 1e-3 * sr)))
        self.gain_ramp = max(1, int(round(gain_ramp_ms * 1e-3 * sr)))
        # Scratch for the callback: made once, sliced per call.
        self._block = np.zeros((max_blocksize, max(1, self.channels_out)), np.float32)
        self._inblock = np.zeros((max_blocksize, max(1, self.channels_in)), np.float32)
        self._env = np.zeros(max_blocksize, np.float32)
        self._tmp = np.zeros(max_blocksize, np.float32)
        self._steps = np.arange(1, max_blocksize + 1, dtype=np.float32)  # 1, 2, ..., n

        self._level = 0.0  # fade envelope after the last played frame, 0..1
        self._gain = 1.0  # output gain after the last played frame (linear)
        self._gain_target = 1.0  # written by set_gain_db, read by the callback
        self._ended = False  # written by the producer: running dry now is no underrun
        self._dry = True  # callback state: the ring ran empty and nothing has come since
        # cut(): the producer stores the index up to which queued audio goes, then bumps
        # _cut_requested; the callback sets _cut_done to the request it finished. Two
        # counters with one writer each, so a cut requested during another is never lost.
        self._cut_at = 0
        self._cut_requested = 0
        self._cut_done = 0

        self.underruns = 0  # counted falls into silence, see the module docstring
        self.xruns = 0  # device over/underflows, counted by the back-end
        self.callbacks = 0
        self.frames_played = 0  # output frames handed to the device (silence included)
        self.frames_captured = 0

    # -- producer / control side (any non-real-time thread) --------------------------------

    def set_gain_db(self, db: float) -> None:
        """Output gain in dB (0: unity), reached over ``gain_ramp`` frames."""
        self._gain_target = float(10.0 ** (db / 20.0))

    def end_of_stream(self, ended: bool = True) -> None:
        """Say that the output will run dry on purpose (stop, end of a render), so the fade-out
        that follows is not counted as an underrun. Writing again after it should be preceded
        by ``end_of_stream(False)`` (:class:`~lmdm_bridge.audio.feed.OutputFeed` does so)."""
        self._ended = ended

    def cut(self) -> None:
        """Fade out what is playing now (over at most ``fade`` frames) and drop everything
        queued so far: for stop, reset, or a jump to new material. Audio written after this
        call plays once the fade is done, fading in; the silence between is no underrun."""
        self._cut_at = self.output.written
        self._cut_requested += 1

    @property
    def ended(self) -> bool:
        """Whether the producer announced the end of the output (:meth:`end_of_stream`)."""
        return self._ended

    @property
    def queued(self) -> int:
        """Output frames waiting to be played."""
        return self.output.available

    # -- callback side -----------------------------------------------------------------------

    def process_output(self, outdata: np.ndarray) -> None:
        """Fill ``outdata`` ``(frames, device_out)`` from the output ring: fade envelope, gain,
        channel mapping. Real-time safe."""
        size = self.max_blocksize
        for start in range(0, len(outdata), size):  # one pass unless a host sends more
            self._output_block(outdata[start:start + size])

    def _output_block(self, outdata: np.ndarray) -> None:
        n = len(outdata)
        block, env, tmp, steps = self._block[:n], self._env[:n], self._tmp[:n], \
            self._steps[:n]
        if self._cut_requested != self._cut_done:
            got, available = self._cut_block(block)
        else:
            got = self.output.read(block)
            # Frames known to exist from this block's first frame on; the producer only adds.
            available = got + self.output.available
            if got < n and not self._dry:
                self._dry = True
                if not self._ended:
                    self.underruns += 1
            elif got == n:
                self._dry = False
        block[got:] = 0.0
        # Envelope: rise from the last level by 1/fade per frame, capped at 1 and at
        # (frames left in the ring)/fade, so it lands on 0 where the audio ends.
        step = 1.0 / self.fade
        np.multiply(steps, step, out=env)
        env += self._level
        np.minimum(env, 1.0, out=env)
        np.multiply(steps, -step, out=tmp)
        tmp += (available + 1) * step
        np.minimum(env, tmp, out=env)
        np.maximum(env, 0.0, out=env)
        self._level = float(env[-1]) if n else self._level
        # Gain ramp toward the target, linear over gain_ramp frames.
        target, gain = self._gain_target, self._gain
        if gain != target:
            delta = (target - gain) / self.gain_ramp
            np.multiply(steps, delta, out=tmp)
            tmp += gain
            np.minimum(tmp, max(gain, target), out=tmp)
            np.maximum(tmp, min(gain, target), out=tmp)
            env *= tmp
            self._gain = float(tmp[-1]) if n else gain
        elif gain != 1.0:
            env *= gain
        for j in range(block.shape[1]):  # per column: a broadcast multiply makes a temporary
            np.multiply(block[:, j], env, out=block[:, j])
        if self._out_identity:
            outdata[:] = block
        else:
            outdata.fill(0.0)
            for j, column in enumerate(self.out_columns):
                outdata[:, column] = block[:, j]
        if self.monitor is not None:
            self.monitor.write(block, self.frames_played / self.samplerate)
        self.frames_played += n
        self.callbacks += 1

    def _cut_block(self, block: np.ndarray) -> tuple[int, int]:
        """During a cut: play the old audio only while the fade from the current level lasts,
        then drop the rest of it. Returns (frames read, frames the envelope may count on)."""
        request = self._cut_requested
        old = max(0, self._cut_at - self.output.consumed)  # old audio still queued
        # Non-zero frames left in the fade: from level k/fade down by 1/fade per frame, k - 1
        # of them (the level sits on multiples of 1/fade, up to float error).
        ramp = max(0, int(np.ceil(self._level * self.fade - 1e-3)) - 1)
        planned = min(ramp, old)
        got = self.output.read(block[:min(len(block), planned)])
        if got == planned:  # the fade ends in this block
            self.output.discard(max(0, self._cut_at - self.output.consumed))
            self._dry = True  # the silence until new audio comes is intended
            self._cut_done = request
        return got, planned

    def process_input(self, indata: np.ndarray, time: float) -> None:
        """Store ``indata`` ``(frames, device_in)``, captured from stream time ``time`` (s),
        in the capture ring. Real-time safe."""
        if self.channels_in == 0:
            return
        size = self.max_blocksize
        for start in range(0, len(indata), size):
            self._input_block(indata[start:start + size], time + start / self.samplerate)

    def _input_block(self, indata: np.ndarray, time: float) -> None:
        n = len(indata)
        if self._in_identity:
            self.capture.write(indata, time)
        else:
            block = self._inblock[:n]
            for j, column in enumerate(self.in_columns):
                block[:, j] = indata[:, column]
            self.capture.write(block, time)
        self.frames_captured += n

    def stats(self) -> dict[str, int]:
        """Counters for the status line and ``/lmdm/status``."""
        return {"underruns": self.underruns, "xruns": self.xruns, "callbacks": self.callbacks,
                "frames_played": self.frames_played, "frames_captured": self.frames_captured,
                "queued": self.output.available}
