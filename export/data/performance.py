"""A performance: timed notes grouped into voices, the one thing the synthesiser plays.

Scores (music21) and procedural drums both become a :class:`Performance`; transposition, tempo
scaling, excerpting and humanisation are pure functions on it, so every render of a piece, and
every stem of a render, is derived from the same note list and stays time-aligned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0
DRUM_BANK = 128  # fluidsynth's bank for GM percussion kits


@dataclass(frozen=True)
class Note:
    """One note: onset and release in seconds, MIDI pitch (0-127) and velocity (1-127)."""

    start: float
    end: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Voice:
    """One stem: a name ("soprano", "kick"), its GM program (bank 0, or the kit in bank 128
    when ``drums``) and its notes sorted by onset."""

    name: str
    notes: tuple[Note, ...]
    program: int = 0
    drums: bool = False


@dataclass(frozen=True)
class Performance:
    """Voices ordered top voice first; ``duration`` in seconds covers the last release."""

    voices: tuple[Voice, ...]

    @property
    def duration(self) -> float:
        ends = [n.end for v in self.voices for n in v.notes]
        return max(ends, default=0.0)

    @property
    def note_count(self) -> int:
        return sum(len(v.notes) for v in self.voices)


def transpose(perf: Performance, semitones: int) -> Performance:
    """Shift every pitched voice by ``semitones``; drum voices keep their (kit-piece) keys.

    Notes pushed outside 0..127 are dropped rather than folded, so no wrong note is invented.
    """
    voices = []
    for v in perf.voices:
        if v.drums:
            voices.append(v)
            continue
        notes = tuple(dataclasses.replace(n, pitch=n.pitch + semitones) for n in v.notes
                      if 0 <= n.pitch + semitones < 128)
        voices.append(dataclasses.replace(v, notes=notes))
    return Performance(tuple(voices))


def scale_time(perf: Performance, factor: float) -> Performance:
    """Multiply every time by ``factor`` (> 1 is slower): a tempo change without pitch change."""
    return Performance(tuple(
        dataclasses.replace(v, notes=tuple(
            dataclasses.replace(n, start=n.start * factor, end=n.end * factor) for n in v.notes))
        for v in perf.voices))


def excerpt(perf: Performance, start: float, length: float) -> Performance:
    """Notes sounding in ``[start, start + length)``, shifted to begin at 0.

    Notes that began before ``start`` are dropped (a render must not open on a cut attack);
    notes running past the end are shortened to it.
    """
    stop = start + length
    voices = []
    for v in perf.voices:
        notes = tuple(
            dataclasses.replace(n, start=n.start - start, end=min(n.end, stop) - start)
            for n in v.notes if start <= n.start < stop)
        voices.append(dataclasses.replace(v, notes=notes))
    return Performance(tuple(voices))


def trim_leading_silence(perf: Performance) -> Performance:
    """Shift so the first onset is at 0 (scores often open with rests in every voice)."""
    first = min((n.start for v in perf.voices for n in v.notes), default=0.0)
    if first <= 0:
        return perf
    return Performance(tuple(
        dataclasses.replace(v, notes=tuple(
            dataclasses.replace(n, start=n.start - first, end=n.end - first) for n in v.notes))
        for v in perf.voices))


def jitter_velocities(perf: Performance, amount: int, rng: np.random.Generator) -> Performance:
    """Add uniform integer noise in ``[-amount, amount]`` to every velocity, clipped to 1..127."""
    if amount <= 0:
        return perf
    voices = []
    for v in perf.voices:
        offsets = rng.integers(-amount, amount + 1, size=len(v.notes))
        notes = tuple(dataclasses.replace(n, velocity=int(np.clip(n.velocity + o, 1, 127)))
                      for n, o in zip(v.notes, offsets, strict=True))
        voices.append(dataclasses.replace(v, notes=notes))
    return Performance(tuple(voices))


def drop_empty_voices(perf: Performance) -> Performance:
    return Performance(tuple(v for v in perf.voices if v.notes))
