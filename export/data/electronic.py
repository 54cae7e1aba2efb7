"""Procedural electronic tracks: a drum-machine groove under a synth bass, an arpeggio and a pad.

The "electronic" label had only the two sonic-pi synth loops (4.8 min, both in the train split):
a base trained longer learns them by heart (session 21) and the evaluation had no held-out
electronic audio to measure against. This source gives the label pieces of its own the way
:mod:`lmdm_export.data.drums` gave "percussion" its grooves.

A track is in a key (natural minor or major) and loops a four-chord progression, one chord per
bar, built from diatonic triads. Its parts, each a stem:

* the drums: a ``machine`` style of :mod:`lmdm_export.data.drums` (four-on-the-floor house and
  techno, electro, synth-pop, trance, downtempo) on an electronic GM kit, with its fills;
* ``bass``: a synth bass playing a per-style step pattern on the chord's root (``R``), octave
  (``O``) or fifth (``F``), ``-`` holding the previous note, ``.`` resting;
* ``arp``: a synth lead arpeggiating the chord over two octaves (up, down, up-down or random),
  in eighths or sixteenths;
* ``pad``: the chord held for the bar, voiced in the middle register.

Arrangement: the track runs in 4-bar phrases; the first may be an intro without drums and bass,
a later one a breakdown without drums, and the arpeggio and pad come and go by phrase (at least
one of them always sounds, so every phrase carries the harmony). Every part shares the drums'
grid and swing, so the bass locks to the kick. The stems sum to the mix to -42 dB or better
(RMS of the difference relative to the mix, 18 tracks over the three soundfonts: 1e-3 to 8e-3;
fluidsynth's synth presets vary a little more from render to render than the score programs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmdm_export.data.drums import STYLES, groove
from lmdm_export.data.performance import Note, Performance, Voice

SCALES = {"minor": (0, 2, 3, 5, 7, 8, 10), "major": (0, 2, 4, 5, 7, 9, 11)}
# Scale degrees (0 = tonic) of the chord loops, one chord per bar.
PROGRESSIONS = {
    "minor": ((0, 5, 2, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 0, 5, 6), (0, 6, 5, 6),
              (0, 3, 0, 4)),
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (3, 0, 4, 5), (0, 3, 4, 3)),
}
# GM programs. Left out: presets that fluidsynth renders differently from one render to the
# next by 1-5 % RMS (crystal 98, choir pad 91, bowed 92, halo 94, sweep 95 in FluidR3 or
# MuseScore Lite: modulators whose state outlives a reset), which would break the stems'
# sum to the mix.
BASS_PROGRAMS = (38, 39)  # synth bass 1, 2
ARP_PROGRAMS = (80, 81, 87)  # square lead, saw lead, bass + lead
PAD_PROGRAMS = (50, 51, 89, 90)  # synth strings 1, 2, warm pad, polysynth
BASS_LOW = 33  # every chord's bass root is placed in MIDI 33-44 (A1-G#2)
PAD_LOW = 55  # pad voices in MIDI 55-66, the arpeggio from 60 up
ARP_LOW = 60


@dataclass(frozen=True)
class Track:
    """The synth parts of a style (its drums are ``drums.STYLES[name]``, family "machine").

    ``bass``: one-bar step patterns on the drum style's grid (module docstring); ``arp_steps``:
    grid steps per arpeggio note (choices); ``minor``: probability of a minor key.
    """

    caption: str
    bass: tuple[str, ...]
    arp_steps: tuple[int, ...]
    minor: float = 0.7


TRACKS: dict[str, Track] = {
    "house": Track("house", ("..R...R...R...R.", "R..R..R.O..R..F.", "..R-..R-..R-..RO"),
                   (2, 1)),
    "techno": Track("techno", ("R.RR.RR.R.RR.RR.", "..R...R...R...R.", "RRO.RRO.RRO.RRO."),
                    (1,), minor=0.9),
    "electro": Track("electro", ("R..R..R...R.O...", "R-.R-.O...R.F.R.", "R...R..RO..R..R."),
                     (1, 2)),
    "synthpop": Track("synth-pop", ("R.R.R.R.R.R.R.R.", "R.R.O.R.R.R.O.R.", "R--.R--.R-R.F-O."),
                      (2,), minor=0.4),
    "trance": Track("trance", (".RRR.RRR.RRR.RRR", ".R.R.R.R.R.R.R.R", "..RO..RO..RO..RO"),
                    (1,), minor=0.85),
    "downtempo": Track("downtempo", ("R-----.R--F----.", "R---.---R-.O---.", "R-.R----F---O---"),
                       (2, 4)),
}


def chord(degree: int, mode: str) -> tuple[int, int, int]:
    """The diatonic triad on ``degree`` as semitones above the tonic (root, third, fifth)."""
    scale = SCALES[mode]
    return tuple(scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4))


def track(style_name: str, bpm: float, bars: int, kit: int, tonic: int, mode: str,
          rng: np.random.Generator, *, timing_jitter_ms: float = 2.0,
          velocity_jitter: int = 6) -> Performance:
    """``bars`` bars (a multiple of 4) of ``style_name`` in ``tonic`` (pitch class) ``mode``.

    Voices, each a stem: pad, arp, bass, then the drum voices of the groove.
    """
    if style_name not in TRACKS or bars % 4:
        raise ValueError(f"{style_name!r} at {bars} bars: a track needs a machine style "
                         f"({', '.join(TRACKS)}) and whole 4-bar phrases")
    style, parts = STYLES[style_name], TRACKS[style_name]
    step_s = 60.0 / bpm / style.steps
    bar_steps = style.beats * style.steps
    progression = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    plan = _arrangement(bars // 4, rng)

    def at(bar: int, step: float) -> float:
        swing = style.swing if int(step) % 2 else 0.0
        return max((bar * bar_steps + step + swing) * step_s
                   + rng.normal(0.0, timing_jitter_ms / 1000.0), 0.0)

    def velocity(base: int) -> int:
        return int(np.clip(base + rng.integers(-velocity_jitter, velocity_jitter + 1), 1, 127))

    bass_pattern = parts.bass[int(rng.integers(len(parts.bass)))]
    arp_steps = int(rng.choice(parts.arp_steps))
    arp_shape = str(rng.choice(("up", "down", "updown", "random")))
    pad, arp, bass = [], [], []
    for bar in range(bars):
        layers = plan[bar // 4]
        tones = chord(progression[bar % 4], mode)
        if "pad" in layers:
            end = (bar + 1) * bar_steps * step_s
            pad += [Note(at(bar, 0), end, PAD_LOW + (tonic + t - PAD_LOW) % 12, velocity(72))
                    for t in tones]
        if "arp" in layers:
            ladder = sorted(ARP_LOW + (tonic + t - ARP_LOW) % 12 + 12 * octave
                            for octave in (0, 1) for t in tones)
            order = _arp_order(ladder, arp_shape, bar_steps // arp_steps, rng)
            for i, pitch in enumerate(order):
                start = at(bar, i * arp_steps)
                arp.append(Note(start, start + 0.6 * arp_steps * step_s, pitch,
                                velocity(96 if i % 4 == 0 else 80)))
        if "bass" in layers:
            root = BASS_LOW + (tonic + tones[0] - BASS_LOW) % 12
            bass += _bass_bar(bass_pattern, root, bar, at, step_s, velocity)

    drums = groove(style_name, bpm, bars, kit, rng, timing_jitter_ms=timing_jitter_ms,
                   velocity_jitter=velocity_jitter)
    bar_s = bar_steps * step_s
    voices = [Voice(name, tuple(sorted(notes, key=lambda n: (n.start, n.pitch))), program)
              for name, notes, program in (
                  ("pad", pad, int(rng.choice(PAD_PROGRAMS))),
                  ("arp", arp, int(rng.choice(ARP_PROGRAMS))),
                  ("bass", bass, int(rng.choice(BASS_PROGRAMS)))) if notes]
    for voice in drums.voices:  # drop the hits of phrases the arrangement leaves without drums
        # (half a step of slack: a downbeat jittered early belongs to the bar it opens)
        notes = tuple(n for n in voice.notes if "drums" in plan[
            min(int((n.start + step_s / 2) // bar_s) // 4, len(plan) - 1)])
        if notes:
            voices.append(Voice(voice.name, notes, voice.program, drums=True))
    return Performance(tuple(voices))


def _arrangement(phrases: int, rng: np.random.Generator) -> list[set[str]]:
    """The layers sounding in each 4-bar phrase."""
    plan = []
    for phrase in range(phrases):
        layers = {"drums", "bass"}
        if phrase == 0 and phrases > 1 and rng.random() < 0.2:
            layers = set()  # intro: harmony alone
        elif phrase > 0 and rng.random() < 0.1:
            layers = {"bass"}  # breakdown
        melodic = {name for name in ("arp", "pad") if rng.random() < 0.75}
        plan.append(layers | (melodic or {str(rng.choice(("arp", "pad")))}))
    return plan


def _arp_order(ladder: list[int], shape: str, count: int, rng: np.random.Generator) -> list[int]:
    if shape == "random":
        return [int(p) for p in rng.choice(ladder, size=count)]
    cycle = {"up": ladder, "down": ladder[::-1], "updown": ladder + ladder[-2:0:-1]}[shape]
    return [cycle[i % len(cycle)] for i in range(count)]


def _bass_bar(pattern: str, root: int, bar: int, at, step_s: float, velocity) -> list[Note]:
    """One bar of ``pattern`` on ``root``: a note per letter, held over the ``-`` after it."""
    offsets = {"R": 0, "O": 12, "F": 7}
    notes = []
    for step, char in enumerate(pattern):
        if char not in offsets:
            continue
        held = 1
        while step + held < len(pattern) and pattern[step + held] == "-":
            held += 1
        start = at(bar, step)
        notes.append(Note(start, start + (held - 0.2) * step_s, root + offsets[char],
                          velocity(100 if step % 4 == 0 else 88)))
    return notes
