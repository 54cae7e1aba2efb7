"""FluidSynth, driven note by note: a :class:`Performance` in, a mix and one stem per voice out.

Why not the ``fluidsynth`` CLI on a MIDI file: stems must line up with the mix sample for
sample, so every render here is played from the same note list by the same synthesiser with the
same event timing. Reverb and chorus are switched off (they are shared, stateful effects of all
channels, so stems would not sum to the mix), and audio is read as float32 through
``fluid_synth_write_float`` (no 16-bit clipping or dither). With that, the voices are
independent and the stems sum to the mix to -46 dB or better (RMS of the difference relative
to the mix: typically 2e-4 to 1e-3, worst 5e-3 in 30 random items of the default corpus):
fluidsynth reuses voice objects from a pool whose internal state after a reset depends on
earlier renders, so the same note rendered twice by one synthesiser differs at that level (a
fresh synthesiser is bit-exact, but costs 0.1 s per render to create).

FluidSynth processes audio in blocks of 64 frames and applies events at block starts. Event
times are therefore quantised to 64 frames (2.9 ms at 22.05 kHz) and every render writes a
whole number of blocks, so the synthesiser's block phase is the same at the start of every
render and each stem's notes start in the same frame as in the mix.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from lmdm_export.data.performance import DRUM_BANK, DRUM_CHANNEL, Performance, Voice

log = logging.getLogger(__name__)

BLOCK = 64  # FLUID_BUFSIZE: fluidsynth's internal block, in frames
MELODIC_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)


class FluidSynthMissing(RuntimeError):
    """pyfluidsynth or the libfluidsynth library is not installed."""


def _load_fluidsynth():
    try:
        import fluidsynth
    except ImportError as exc:  # the package raises ImportError when libfluidsynth is absent
        raise FluidSynthMissing(
            f"fluidsynth is unavailable ({exc}): apt-get install fluidsynth; "
            "pip install pyfluidsynth") from exc
    return fluidsynth


def fluidsynth_available() -> bool:
    try:
        _load_fluidsynth()
    except FluidSynthMissing:
        return False
    return True


class Synth:
    """One fluidsynth instance at ``sample_rate`` Hz holding every soundfont it was asked for.

    Loading a soundfont is slow (FluidR3: 0.3 s; the Ogg-compressed MuseScore .sf3: ~3 s), so a
    worker keeps one :class:`Synth` and reuses it for all its renders.
    """

    def __init__(self, sample_rate: int, gain: float = 0.2) -> None:
        fs = _load_fluidsynth()
        self.sample_rate = sample_rate
        self._fs = fs.Synth(gain=gain, samplerate=sample_rate, channels=16, **{
            "synth.reverb.active": 0,
            "synth.chorus.active": 0,
            "synth.cpu-cores": 1,
            "synth.polyphony": 512,
        })
        self._write_float = fs.cfunc(
            "fluid_synth_write_float", ctypes.c_int,
            ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
            ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1))
        self._soundfonts: dict[str, int] = {}

    def close(self) -> None:
        self._fs.delete()

    def soundfont_id(self, path: str) -> int:
        if path not in self._soundfonts:
            if not Path(path).is_file():
                raise FileNotFoundError(f"soundfont {path} not found")
            sfid = self._fs.sfload(str(path))
            if sfid < 0:
                raise RuntimeError(f"fluidsynth could not load {path}")
            self._soundfonts[path] = sfid
        return self._soundfonts[path]

    def has_preset(self, soundfont: str, bank: int, program: int) -> bool:
        return self._fs.sfpreset_name(self.soundfont_id(soundfont), bank, program) is not None

    def render(self, perf: Performance, soundfont: str, tail_seconds: float,
               stereo_spread: float = 0.0) -> tuple[np.ndarray, list[np.ndarray]]:
        """Play ``perf`` once as a whole and once per voice.

        Returns ``(mix, stems)``: float32 arrays of shape ``(2, frames)`` (left, right), all of
        the same length (the last release plus ``tail_seconds``, rounded up to a block), stems
        in the order of ``perf.voices``. ``stereo_spread`` in [0, 1] pans the voices apart.
        """
        channels = assign_channels(perf.voices)
        frames = _blocks(perf.duration + tail_seconds, self.sample_rate) * BLOCK
        pans = _pans(len(perf.voices), stereo_spread)
        mix = self._play(perf.voices, channels, pans, soundfont, frames)
        stems = [self._play((v,), (c,), (p,), soundfont, frames)
                 for v, c, p in zip(perf.voices, channels, pans, strict=True)]
        return mix, stems

    def _play(self, voices, channels, pans, soundfont: str, frames: int) -> np.ndarray:
        fs = self._fs
        sfid = self.soundfont_id(soundfont)
        self._reset()
        for voice, channel, pan in zip(voices, channels, pans, strict=True):
            bank = DRUM_BANK if voice.drums else 0
            if fs.program_select(channel, sfid, bank, voice.program) != 0:
                raise ValueError(f"{soundfont} has no preset bank {bank} program {voice.program}")
            fs.cc(channel, 7, 100)  # channel volume: GM default, same for mix and stems
            fs.cc(channel, 10, pan)
        events = _events(voices, channels, self.sample_rate)
        out = np.zeros((2, frames), dtype=np.float32)
        pos = 0
        for frame, kind, channel, pitch, velocity in events:
            frame = min(frame, frames)
            self._write(out, pos, frame)
            pos = frame
            if kind == 0:
                fs.noteoff(channel, pitch)
            else:
                fs.noteon(channel, pitch, velocity)
        self._write(out, pos, frames)
        return out

    def _write(self, out: np.ndarray, start: int, stop: int) -> None:
        if stop <= start:
            return
        left, right = out[0, start:stop], out[1, start:stop]
        self._write_float(self._fs.synth, stop - start, left.ctypes.data, 0, 1,
                          right.ctypes.data, 0, 1)

    def _reset(self) -> None:
        """Silence every voice and reset controllers, then run whole blocks so nothing of the
        previous render (release tails, block phase) reaches the next one."""
        for channel in range(16):
            self._fs.all_sounds_off(channel)
        self._fs.system_reset()
        scratch = np.zeros((2, 4 * BLOCK), dtype=np.float32)
        self._write(scratch, 0, scratch.shape[1])


def assign_channels(voices: tuple[Voice, ...]) -> tuple[int, ...]:
    """Drum voices share MIDI channel 10; pitched voices get channels 1-9, 11-16 in order."""
    channels, melodic = [], iter(MELODIC_CHANNELS)
    for voice in voices:
        if voice.drums:
            channels.append(DRUM_CHANNEL)
            continue
        try:
            channels.append(next(melodic))
        except StopIteration:
            raise ValueError(f"more than {len(MELODIC_CHANNELS)} pitched voices") from None
    return tuple(channels)


def _blocks(seconds: float, sample_rate: int) -> int:
    return int(np.ceil(seconds * sample_rate / BLOCK))


def _pans(count: int, spread: float) -> tuple[int, ...]:
    """MIDI pan (0-127, 64 = centre) per voice, spread symmetrically top voice left."""
    if count < 2 or spread <= 0:
        return (64,) * count
    return tuple(int(round(64 + spread * 63 * (2 * i / (count - 1) - 1))) for i in range(count))


def _events(voices, channels, sample_rate: int) -> list[tuple[int, int, int, int, int]]:
    """(frame, kind, channel, pitch, velocity) sorted by frame, note-offs (kind 0) before
    note-ons at the same frame so a repeated pitch is released before it is struck again.
    Frames are quantised to fluidsynth blocks (module docstring)."""
    events = []
    for voice, channel in zip(voices, channels, strict=True):
        for note in voice.notes:
            on = _blocks(note.start, sample_rate) * BLOCK
            off = max(_blocks(note.end, sample_rate) * BLOCK, on + BLOCK)
            events.append((on, 1, channel, note.pitch, note.velocity))
            events.append((off, 0, channel, note.pitch, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def to_output(audio: np.ndarray, channels: int) -> np.ndarray:
    """(2, frames) stereo -> (frames,) mono by averaging, or (frames, 2) for soundfile."""
    if channels == 1:
        return audio.mean(axis=0)
    return audio.T
