"""Audio back-ends: ``device`` (PortAudio via sounddevice), ``null`` (clocked, no sound card),
``file`` (offline, as fast as the producer delivers).

All three have one small interface, :class:`Backend`: ``start()``, ``stop()``,
``samplerate``, ``blocksize``, ``channels_in``/``channels_out``, ``latency`` (input and output,
in frames) and the counters of their :class:`~lmdm_bridge.audio.port.AudioPort`. The daemon never
gives a back-end a callback: it writes audio into ``backend.port.output`` (through
:class:`~lmdm_bridge.audio.feed.OutputFeed`) and reads ``backend.port.capture``; the back-end's
own callback moves frames between those rings and the device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmdm_bridge.audio.devices import AudioError, find_device, sounddevice
from lmdm_bridge.audio.port import AudioPort

KINDS = ("device", "null", "file")
_DEVICE_ONLY = ("input", "output", "in_channels", "out_channels", "hostapi", "latency")


def parse_channels(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"3,4"`` -> ``(3, 4)``: 1-based device channels, as DAWs number them."""
    if text is None or not isinstance(text, str):
        return None if text is None else tuple(int(c) for c in text)
    try:
        channels = tuple(int(part) for part in text.split(","))
    except ValueError:
        channels = ()
    if not channels or any(c < 1 for c in channels) or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be distinct 1-based numbers like '1,2', got {text!r}")
    return channels


class Backend:
    """Base of the back-ends: owns :attr:`port`, runs its callback, counts xruns."""

    kind = ""

    def __init__(self, port: AudioPort, blocksize: int) -> None:
        if not 1 <= blocksize <= port.max_blocksize:
            raise ValueError(f"blocksize must be 1..{port.max_blocksize} frames, got {blocksize}")
        self.port = port
        self.blocksize = int(blocksize)
        self.errors = 0  # exceptions caught in the callback (the block was played silent)
        self.last_error: BaseException | None = None

    samplerate = property(lambda self: self.port.samplerate)
    channels_in = property(lambda self: self.port.channels_in)
    channels_out = property(lambda self: self.port.channels_out)
    xruns = property(lambda self: self.port.xruns)
    underruns = property(lambda self: self.port.underruns)

    @property
    def latency(self) -> tuple[int, int]:
        """(input, output) latency of the device side in frames: how long a sample takes from
        the converter to the capture ring, and from the output ring to the converter."""
        return (self.blocksize, self.blocksize)

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_block(self, indata: np.ndarray | None, outdata: np.ndarray | None,
                   now: float) -> None:
        # A bug on either path must not kill the stream: the block plays silent and counts.
        try:
            if indata is not None:
                self.port.process_input(indata, now)
            if outdata is not None:
                self.port.process_output(outdata)
        except Exception as exc:
            self.errors += 1
            self.last_error = exc
            if outdata is not None:
                outdata.fill(0.0)


class _ThreadBackend(Backend):
    """A back-end whose blocks are driven by a thread of ours (null and file)."""

    def __init__(self, port: AudioPort, blocksize: int) -> None:
        super().__init__(port, blocksize)
        self._indata = np.zeros((blocksize, max(1, port.device_in)), np.float32)
        self._outdata = np.zeros((blocksize, max(1, port.device_out)), np.float32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"audio-{self.kind}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        raise NotImplementedError


class NullBackend(_ThreadBackend):
    """Clocked like a sound card without one: every ``blocksize / samplerate`` seconds a thread
    consumes ``blocksize`` output frames and captures as many frames of silence. Deadlines are
    absolute (block ``k`` is due at ``t0 + k * blocksize / samplerate``), so the clock does not
    drift; a thread that wakes more than one block late counts an xrun and skips the lost
    blocks instead of bursting to catch up."""

    kind = "null"

    def _loop(self) -> None:
        period = self.blocksize / self.samplerate
        start = time.perf_counter()
        block = 0
        while not self._stop.is_set():
            due = start + block * period
            now = time.perf_counter()
            if now < due:
                self._stop.wait(due - now)
                continue
            if now - due > period:
                self.port.xruns += 1
                block += int((now - due) / period)  # the lost blocks never play
                continue
            self._run_block(self._indata if self.channels_in else None,
                            self._outdata if self.channels_out else None,
                            block * period)
            block += 1


class FileBackend(_ThreadBackend):
    """Offline: plays blocks as fast as the producer fills the output ring (a block runs when
    ``blocksize`` frames are queued, or once :meth:`AudioPort.end_of_stream` was called) and
    keeps every played block; the input comes from ``input_audio`` ``(channels, frames)`` at
    the back-end's rate (silence after its end, or throughout if None). :meth:`wait` returns
    when the stream ended and the ring is empty; :meth:`output_audio` gives what was played."""

    kind = "file"

    def __init__(self, port: AudioPort, blocksize: int,
                 input_audio: np.ndarray | None = None) -> None:
        super().__init__(port, blocksize)
        if input_audio is not None and (input_audio.ndim != 2
                                        or input_audio.shape[0] != port.device_in):
            raise ValueError(f"input audio must be ({port.device_in}, frames), got "
                             f"{input_audio.shape}")
        self._input = None if input_audio is None else \
            np.ascontiguousarray(input_audio.T, dtype=np.float32)  # (frames, channels)
        self._played: list[np.ndarray] = []
        self.done = threading.Event()

    @property
    def latency(self) -> tuple[int, int]:
        """Offline: nothing stands between the rings and the file."""
        return (0, 0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream ended and everything queued was played; True if so."""
        return self.done.wait(timeout)

    def output_audio(self) -> np.ndarray:
        """Everything played so far, ``(channels_out, frames)`` float32 (device columns)."""
        if not self._played:
            return np.zeros((self.port.device_out, 0), np.float32)
        return np.concatenate(self._played, axis=0).T.copy()

    def _loop(self) -> None:
        n = self.blocksize
        while not self._stop.is_set():
            ended = self.port.ended
            if ended and self.port.output.available == 0:
                self.done.set()
                self._stop.wait(0.005)
                continue
            if self.port.output.available < n and not ended:
                self._stop.wait(0.0005)  # the producer is computing; nothing is late offline
                continue
            self.done.clear()
            position = self.port.frames_played
            indata = None
            if self.channels_in:
                indata = self._indata
                indata.fill(0.0)
                if self._input is not None and position < len(self._input):
                    chunk = self._input[position:position + n]
                    indata[:len(chunk)] = chunk
            self._run_block(indata, self._outdata if self.channels_out else None,
                            position / self.samplerate)
            self._played.append(self._outdata.copy())


class DeviceBackend(Backend):
    """A sound card through PortAudio (sounddevice): JACK, PipeWire, ALSA, Core Audio, WASAPI...

    ``samplerate``: Hz, or None for the output device's default rate.
    ``input``/``output``: device index or name substring (None: no input / no output;
    ``"default"``: the system default). They may be different devices: on one host API they
    share a duplex stream, otherwise each gets its own. ``in_channels``/``out_channels``:
    1-based device channels (default: the first two, or one on a mono device). ``hostapi``:
    substring of a host API name to search in (``"JACK"``). ``latency``: PortAudio's
    suggested latency (``"low"``, ``"high"`` or seconds). Other keywords go to
    :class:`AudioPort` (ring sizes, fade).
    """

    kind = "device"

    def __init__(self, samplerate: int | None, blocksize: int, *,
                 input: int | str | None = "default",
                 output: int | str | None = "default",
                 in_channels: Sequence[int] | str | None = None,
                 out_channels: Sequence[int] | str | None = None, hostapi: str | None = None,
                 latency: str | float = "low", **port_options: Any) -> None:
        self._sd = sounddevice()
        self.input_device = self._resolve(input, "input", hostapi)
        self.output_device = self._resolve(output, "output", hostapi)
        if self.input_device is None and self.output_device is None:
            raise AudioError("neither an input nor an output device was given")
        if samplerate is None:  # the output device's own rate (the input's if output-only)
            samplerate = int(round((self.output_device or self.input_device).default_samplerate))
        in_sel = self._select(parse_channels(in_channels), self.input_device, "input")
        out_sel = self._select(parse_channels(out_channels), self.output_device, "output")
        port = AudioPort(samplerate, channels_in=len(in_sel), channels_out=len(out_sel),
                         max_blocksize=max(8192, blocksize), in_columns=in_sel or None,
                         out_columns=out_sel or None, **port_options)
        super().__init__(port, blocksize)
        for device, channels, what in ((self.input_device, port.device_in, "input"),
                                       (self.output_device, port.device_out, "output")):
            if device is not None:
                self._check_rate(device, channels, what)
        self._latency_setting = latency
        self._streams: list[Any] = []

    def _resolve(self, query, direction, hostapi):
        if query is None:
            return None
        if query == "default":
            index = self._sd.default.device[0 if direction == "input" else 1]
            if index is None or index < 0:
                raise AudioError(f"there is no default {direction} device; name one "
                                 "(lmdm-bridge devices lists them)")
            query = int(index)
        return find_device(query, direction, hostapi)

    @staticmethod
    def _select(selection, device, what) -> tuple[int, ...]:
        if device is None:
            return ()
        available = device.inputs if what == "input" else device.outputs
        selection = selection or tuple(range(1, min(2, available) + 1))
        if max(selection) > available:
            raise AudioError(f"{what} channels {','.join(map(str, selection))} do not exist on "
                             f"'{device.name}': it has {available} {what} channels")
        return selection

    def _check_rate(self, device, channels, what) -> None:
        check = self._sd.check_input_settings if what == "input" else \
            self._sd.check_output_settings
        try:
            check(device=device.index, channels=channels, samplerate=self.samplerate,
                  dtype="float32")
        except Exception as exc:  # sounddevice.PortAudioError, ValueError
            raise AudioError(f"{what} device '{device.name}' does not accept "
                             f"{self.samplerate} Hz with {channels} channels ({exc}); its "
                             f"default rate is {device.default_samplerate:.0f} Hz") from exc

    @property
    def running(self) -> bool:
        return bool(self._streams) and all(s.active for s in self._streams)

    @property
    def latency(self) -> tuple[int, int]:
        """(input, output) latency PortAudio reports for the open streams, in frames."""
        lat_in = lat_out = 0.0
        for stream in self._streams:
            value = stream.latency
            if isinstance(value, tuple):
                lat_in, lat_out = value
            elif stream is self._input_stream:
                lat_in = value
            else:
                lat_out = value
        return (int(round(lat_in * self.samplerate)), int(round(lat_out * self.samplerate)))

    _input_stream = None

    def _status(self, status) -> None:
        if (status.input_overflow or status.input_underflow or status.output_underflow
                or status.output_overflow):
            self.port.xruns += 1

    def _duplex(self, indata, outdata, frames, when, status) -> None:
        self._status(status)
        self._run_block(indata, outdata, when.inputBufferAdcTime or when.currentTime)

    def _in_only(self, indata, frames, when, status) -> None:
        self._status(status)
        self._run_block(indata, None, when.inputBufferAdcTime or when.currentTime)

    def _out_only(self, outdata, frames, when, status) -> None:
        self._status(status)
        self._run_block(None, outdata, when.currentTime)

    def start(self) -> None:
        if self._streams:
            return
        sd, port = self._sd, self.port
        common = dict(samplerate=self.samplerate, blocksize=self.blocksize, dtype="float32",
                      latency=self._latency_setting)
        i, o = self.input_device, self.output_device
        try:
            if i is not None and o is not None and i.hostapi == o.hostapi:
                try:
                    self._streams = [sd.Stream(device=(i.index, o.index),
                                               channels=(port.device_in, port.device_out),
                                               callback=self._duplex, **common)]
                except Exception:  # e.g. two ALSA cards cannot share one duplex stream
                    if i.index == o.index:
                        raise
                    self._open_separately(common)
            else:
                self._open_separately(common)
            for stream in self._streams:
                stream.start()
        except Exception as exc:  # sounddevice.PortAudioError and friends
            self.stop()
            raise AudioError(f"cannot open the audio stream ({exc})") from exc

    def _open_separately(self, common: dict[str, Any]) -> None:
        """An input and an output stream, each on its own device clock (the rings decouple
        them)."""
        sd, port = self._sd, self.port
        if self.input_device is not None:
            self._input_stream = sd.InputStream(device=self.input_device.index,
                                                channels=port.device_in,
                                                callback=self._in_only, **common)
            self._streams.append(self._input_stream)
        if self.output_device is not None:
            self._streams.append(sd.OutputStream(device=self.output_device.index,
                                                 channels=port.device_out,
                                                 callback=self._out_only, **common))

    def stop(self) -> None:
        for stream in self._streams:
            try:
                stream.stop()
            finally:
                stream.close()
        self._streams = []
        self._input_stream = None


def create_backend(kind: str, *, samplerate: int | None, blocksize: int, channels_in: int = 2,
                   channels_out: int = 2, input_audio: np.ndarray | str | Path | None = None,
                   **options: Any) -> Backend:
    """A back-end by name (``device``, ``null`` or ``file``). ``device`` takes
    :class:`DeviceBackend`'s keywords (``input``, ``output``, ``in_channels``,
    ``out_channels``, ``hostapi``, ``latency``) and finds the channel counts on the devices;
    ``null`` and ``file`` use ``channels_in``/``channels_out``, and ``file`` reads
    ``input_audio`` (an array ``(channels, frames)`` or a sound file, resampled to
    ``samplerate``). ``samplerate`` None (the device's default rate) works for ``device``
    only. Remaining keywords go to :class:`AudioPort`."""
    if kind == "device":
        return DeviceBackend(samplerate, blocksize, **options)
    if kind not in KINDS:
        raise ValueError(f"audio back-end must be one of {KINDS}, got {kind!r}")
    for key in _DEVICE_ONLY:
        if options.pop(key, None) is not None:
            raise ValueError(f"{key} applies to the device back-end only, not to {kind!r}")
    if samplerate is None:
        raise ValueError(f"the {kind} back-end needs a samplerate (e.g. the model's)")
    if isinstance(input_audio, (str, Path)):
        input_audio = read_input_file(input_audio, samplerate, channels_in)
    port = AudioPort(samplerate, channels_in=channels_in, channels_out=channels_out,
                     max_blocksize=max(8192, blocksize), **options)
    if kind == "null":
        return NullBackend(port, blocksize)
    return FileBackend(port, blocksize, input_audio)


def read_input_file(path: str | Path, samplerate: int, channels: int) -> np.ndarray:
    """A sound file as ``(channels, frames)`` float32 at ``samplerate`` Hz: resampled if its
    rate differs, a mono file copied to every channel, extra channels dropped."""
    import soundfile

    from lmdm_bridge.audio.resample import StreamResampler

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile.LibsndfileError, OSError
        raise AudioError(f"cannot read input file {path}: {exc}") from exc
    audio = data.T  # (file channels, frames)
    if audio.shape[0] == 1 and channels > 1:
        audio = np.repeat(audio, channels, axis=0)
    if audio.shape[0] < channels:
        raise AudioError(f"{path} has {audio.shape[0]} channels, {channels} are needed")
    audio = np.ascontiguousarray(audio[:channels])
    if rate != samplerate:
        resampler = StreamResampler(rate, samplerate, channels)
        audio = np.concatenate([resampler.process(audio), resampler.flush()], axis=1)
    return audio
