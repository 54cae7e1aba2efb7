"""Procedural drum grooves on the General MIDI kit (channel 10), one :class:`Performance` each.

A style is a few one-bar (bossa: two-bar) step patterns written as strings, one per kit piece:
``X`` accent, ``x`` normal hit, ``o`` ghost note, ``.`` rest. A groove strings bars of the
style's main and variation patterns into 4- or 8-bar phrases, ends phrases with a fill (tom run,
snare roll, or snare/tom mix) and opens the next phrase with a crash, then humanises: swing on
the off-beat subdivisions, Gaussian timing jitter, velocity jitter. Kit pieces are grouped into
voices (kick, snare, hats, toms, cymbals, percussion) which become the stems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmdm_export.data.performance import Note, Performance, Voice

# Kit piece -> (GM key, voice). Hats share one voice: the open hat is choked by the closed and
# pedal hats (same exclusive class), which sounds the same in the mix and in the stem only if
# they are in one stem.
KIT = {
    "kick": (36, "kick"), "snare": (38, "snare"), "stick": (37, "snare"), "clap": (39, "snare"),
    "hat": (42, "hats"), "pedal": (44, "hats"), "open": (46, "hats"),
    "tom1": (50, "toms"), "tom2": (48, "toms"), "tom3": (45, "toms"), "floor": (43, "toms"),
    "floor2": (41, "toms"), "crash": (49, "cymbals"), "ride": (51, "cymbals"),
    "bell": (53, "cymbals"), "shaker": (70, "percussion"), "cowbell": (56, "percussion"),
    "tamb": (54, "percussion"), "clave": (75, "percussion"),
}
VOICE_ORDER = ("kick", "snare", "hats", "toms", "cymbals", "percussion")
VELOCITY = {"X": 118, "x": 92, "o": 42}
KIT_NAMES = {0: "standard", 8: "room", 16: "power", 24: "electronic", 25: "TR-808",
             32: "jazz", 40: "brush", 48: "orchestral"}


@dataclass(frozen=True)
class Style:
    """A groove family: ``steps`` per beat, ``beats`` per bar; each pattern maps kit pieces to
    step strings of ``steps * beats * bars`` characters. ``swing`` delays every second step by
    that fraction of a step (0.33 ~ triplet feel on a straight 16th grid)."""

    caption: str
    beats: int
    steps: int
    bpm: tuple[float, float]
    patterns: tuple[dict[str, str], ...]
    swing: float = 0.0
    bars: int = 1


STYLES: dict[str, Style] = {
    "rock": Style("rock", 4, 4, (80, 150), (
        {"kick": "x.......x.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.....x.x.x.....", "snare": "....X.......X..o", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.......x.....x.", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
    )),
    "funk": Style("funk", 4, 4, (86, 118), (
        {"kick": "x..x..x...x..x..", "snare": "....X..o.o..X..o", "hat": "XoxoXoxoXoxoXoxo"},
        {"kick": "x.x...x..x....x.", "snare": "..o.X..o.o.oX...", "hat": "XoxoXoxoXoxoXo.o",
         "open": "..............x."},
    ), swing=0.08),
    "shuffle": Style("shuffle", 4, 3, (80, 140), (
        {"kick": "x.....x.....", "snare": "...X.....X..", "hat": "x.xx.xx.xx.x"},
        {"kick": "x....xx.....", "snare": "...X.....X.o", "ride": "x.xx.xx.xx.x"},
    )),
    "waltz": Style("waltz", 3, 4, (84, 160), (
        {"kick": "x...........", "snare": "....x...x...", "hat": "x.x.x.x.x.x."},
        {"kick": "x.......x...", "snare": "....x...x...", "ride": "x...x...x..."},
    )),
    "bossa": Style("bossa nova", 4, 4, (100, 140), (
        {"kick": "x..xx..xx..xx..xx..xx..xx..xx..x", "stick": "x..x..x...x..x......x..x..x..x..",
         "shaker": "xoxoxoxoxoxoxoxoxoxoxoxoxoxoxoxo"},
        {"kick": "x..xx..xx..xx..xx..xx..xx..xx..x", "stick": "..x..x..x...x..x..x..x..x...x.x.",
         "hat": "x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x."},
    ), bars=2),
    "disco": Style("disco", 4, 4, (110, 130), (
        {"kick": "x...x...x...x...", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x.",
         "open": "..x...x...x...x."},
        {"kick": "x...x...x...x...", "clap": "....X.......X...", "hat": "xxxxxxxxxxxxxxxx",
         "tamb": "....x.......x..."},
    )),
    "hiphop": Style("hip-hop", 4, 4, (76, 98), (
        {"kick": "x......x.xx.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.x.......x..x..", "snare": "....X.......X.o.", "hat": "x.x.x.x.x.xxx.x."},
    ), swing=0.25),
    "reggae": Style("reggae one-drop", 4, 4, (70, 96), (
        {"kick": "........X.......", "stick": "........X.......", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "........X.......", "stick": "........X.......", "hat": "x.xxx.xxx.xxx.xx",
         "open": "..............x."},
    ), swing=0.3),
    "swing": Style("jazz swing", 4, 3, (110, 160), (
        {"ride": "x..X.xx..X.x", "pedal": "...x.....x..", "kick": "o..o..o..o.."},
        {"ride": "x..X.xx..X.x", "pedal": "...x.....x..", "snare": ".....o....o."},
    )),
    "march": Style("march", 4, 4, (100, 124), (
        {"kick": "x.......x.......", "snare": "X.xxX.x.X.xxX.x.", "crash": "........x......."},
        {"kick": "x.......x.......", "snare": "X.x.X.xxX.x.XxxX"},
    )),
}

FILLS = (
    {"tom1": "....xx......", "tom2": "......xx....", "tom3": "........xx..",
     "floor": "..........xx"},
    {"snare": "..xxxxxxxxxx"},
    {"snare": "....x.x.x.x.", "tom1": ".....x......", "tom3": ".......x....",
     "floor": ".........x.x"},
)


def groove(style_name: str, bpm: float, bars: int, kit: int, rng: np.random.Generator, *,
           timing_jitter_ms: float = 6.0, velocity_jitter: int = 10) -> Performance:
    """``bars`` bars (a multiple of 4) of ``style_name`` at ``bpm`` beats per minute."""
    style = STYLES[style_name]
    step_s = 60.0 / bpm / style.steps
    bar_steps = style.beats * style.steps
    phrase = int(rng.choice((4, 8)))
    hits: dict[str, list[tuple[float, int]]] = {}

    def add(piece: str, step: int, velocity: int, bar: int) -> None:
        t = (bar * bar_steps + step + (style.swing if step % 2 else 0.0)) * step_s
        t += rng.normal(0.0, timing_jitter_ms / 1000.0)
        v = velocity + int(rng.integers(-velocity_jitter, velocity_jitter + 1))
        hits.setdefault(piece, []).append((max(t, 0.0), int(np.clip(v, 1, 127))))

    main, *variations = style.patterns
    for bar in range(bars):
        last_of_phrase = (bar + 1) % phrase == 0
        pattern = main if not variations or rng.random() < 0.6 else variations[
            int(rng.integers(len(variations)))]
        offset = (bar % style.bars) * bar_steps
        fill = FILLS[int(rng.integers(len(FILLS)))] if last_of_phrase else None
        fill_from = bar_steps // 2 if fill else bar_steps
        for piece, steps in pattern.items():
            for step, char in enumerate(steps[offset:offset + bar_steps]):
                if char in VELOCITY and (step < fill_from or piece in ("kick", "hat", "pedal")):
                    add(piece, step, VELOCITY[char], bar)
        if fill:
            for piece, steps in fill.items():
                for step, char in enumerate(_stretch(steps, bar_steps)):
                    if char in VELOCITY and step >= fill_from:
                        add(piece, step, VELOCITY[char] - 10 + step * 2, bar)
        if bar % phrase == 0 and bar > 0:
            add("crash", 0, VELOCITY["X"], bar)

    length = bars * bar_steps * step_s
    voices = []
    for name in VOICE_ORDER:
        notes = sorted((Note(t, t + 0.2, KIT[piece][0], v)
                        for piece, times in hits.items() if KIT[piece][1] == name
                        for t, v in times if t < length), key=lambda n: (n.start, n.pitch))
        if notes:
            voices.append(Voice(name, tuple(notes), program=kit, drums=True))
    return Performance(tuple(voices))


def bars_for(style_name: str, bpm: float, seconds: float) -> int:
    """Whole 4-bar phrases closest to ``seconds`` at ``bpm`` (at least 4 bars)."""
    style = STYLES[style_name]
    bar_s = 60.0 / bpm * style.beats
    return max(4, int(round(seconds / bar_s / 4)) * 4)


def _stretch(steps: str, length: int) -> str:
    """Fills are written on a 12-step bar; resample the string to the style's bar length."""
    return "".join(steps[int(i * len(steps) / length)] for i in range(length))
