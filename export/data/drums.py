"""Procedural grooves on the General MIDI kit (channel 10), one :class:`Performance` each.

A style is a few one-bar (bossa: two-bar) step patterns written as strings, one per kit piece:
``X`` accent, ``x`` normal hit, ``o`` ghost note, ``.`` rest. A groove strings bars of the
style's main and variation patterns into 4- or 8-bar phrases, ends phrases with a fill (tom run,
snare roll, or snare/tom mix) and opens the next phrase with a crash, then humanises: swing on
the off-beat subdivisions, Gaussian timing jitter, velocity jitter. Kit pieces are grouped into
voices (kick, snare, hats, toms, cymbals, percussion) which become the stems.

Three families share the machinery. ``kit`` styles are drum-kit grooves (the "drums" label).
``hand`` styles are Latin and Afro-Cuban hand-percussion grooves on the GM kit's keys 60-81
(congas, bongos, timbales, agogo, claves, shakers, guiro, cuica, triangle; the "percussion"
label beside the tabla and safari loops): their fills are conga, bongo and timbale runs, no
crash opens a phrase, and the shakers and bells keep time through a fill as the kick and hats do
in a kit groove. Voices: hand-drums and percussion. ``machine`` styles are drum-machine
grooves (house, techno, electro, synth-pop, trance, downtempo) with clap and snare-roll fills,
the drum part of :mod:`lmdm_export.data.electronic`'s tracks.
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
    "bongo_hi": (60, "hand-drums"), "bongo_lo": (61, "hand-drums"),
    "conga_mute": (62, "hand-drums"), "conga_open": (63, "hand-drums"),
    "conga_lo": (64, "hand-drums"), "timbale_hi": (65, "hand-drums"),
    "timbale_lo": (66, "hand-drums"), "agogo_hi": (67, "percussion"),
    "agogo_lo": (68, "percussion"), "cabasa": (69, "percussion"), "guiro": (73, "percussion"),
    "guiro_long": (74, "percussion"), "block_hi": (76, "percussion"),
    "block_lo": (77, "percussion"), "cuica": (78, "percussion"), "cuica_open": (79, "percussion"),
    "triangle": (80, "percussion"), "triangle_open": (81, "percussion"),
}
VOICE_ORDER = ("kick", "snare", "hats", "toms", "cymbals", "hand-drums", "percussion")
VELOCITY = {"X": 118, "x": 92, "o": 42}
KIT_NAMES = {0: "standard", 8: "room", 16: "power", 24: "electronic", 25: "TR-808",
             32: "jazz", 40: "brush", 48: "orchestral"}


@dataclass(frozen=True)
class Style:
    """A groove style: ``steps`` per beat, ``beats`` per bar; each pattern maps kit pieces to
    step strings of ``steps * beats * bars`` characters. ``swing`` delays every second step by
    that fraction of a step (0.33 ~ triplet feel on a straight 16th grid). ``family`` is a key of
    :data:`FAMILIES`: "kit", "hand" or "machine" (module docstring)."""

    caption: str
    beats: int
    steps: int
    bpm: tuple[float, float]
    patterns: tuple[dict[str, str], ...]
    swing: float = 0.0
    bars: int = 1
    family: str = "kit"


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
    # Breakbeat: the syncopated kick and ghosted snare of the funk breaks sampled in hip-hop
    # and jungle (an amen-like bar, a variation, a funky-drummer-like bar).
    # Industrial: a pounding kick, snare and clap layered on the backbeat, a cowbell or
    # tambourine line. Both name the sonic-pi drum loops' styles, which had one recorded loop each.
    "breakbeat": Style("breakbeat", 4, 4, (90, 160), (
        {"kick": "x.x.......xx....", "snare": "....X..o.o..X..o", "ride": "x.x.x.x.x.x.x.x."},
        {"kick": "x.x.......x.....", "snare": ".o..X..o.o....X.", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.x...x...x..x..", "snare": "....X..o.o.oX..o", "hat": "xxxxxxxoxxxxxoxx",
         "open": ".......x.....x.."},
    ), swing=0.1),
    "industrial": Style("industrial", 4, 4, (95, 140), (
        {"kick": "x...x...x...x.x.", "snare": "....X.......X...", "clap": "....X.......X...",
         "hat": "x.x.x.x.x.x.x.x.", "cowbell": "x..x..x...x..x.."},
        {"kick": "x..xx...x..xx...", "snare": "....X.......X..x", "clap": "....X.......X...",
         "tamb": "..x...x...x...x.", "hat": "xxxxxxxxxxxxxxxx"},
    )),
    # Hand percussion. Clave and bell lines are the usual ones of each style; conga, bongo and
    # timbale parts are simplified (heel-toe as ghost notes, tones and slaps as hits/accents).
    "tumbao": Style("conga tumbao", 4, 4, (88, 132), (
        {"conga_mute": "o.x.X.o.o.x.....", "conga_open": "............X.X.",
         "shaker": "xoxoxoxoxoxoxoxo", "clave": "x..x..x.....x.x."},
        {"conga_mute": "o.x.X.o.o.x.X...", "conga_open": "..............XX",
         "conga_lo": "......x.........", "shaker": "xoxoxoxoxoxoxoxo",
         "clave": "..x.x...x..x..x."},
    ), family="hand"),
    "martillo": Style("bongo martillo", 4, 4, (90, 140), (
        {"bongo_hi": "X.o.x.o.X.o.x...", "bongo_lo": "..............x.",
         "guiro": "x.xxx.xxx.xxx.xx", "cowbell": "x...x...x...x..."},
        {"bongo_hi": "X.o.x.o.X.o.x.o.", "bongo_lo": "......x.......x.",
         "guiro_long": "x.......x.......", "guiro": "....x.xx....x.xx"},
    ), family="hand"),
    "bembe": Style("afro-cuban 6/8", 4, 3, (84, 126), (
        {"agogo_hi": "x.x.xx.x.x.x", "conga_open": "..x..x..x..x", "conga_lo": "x.....x.....",
         "shaker": "xooxooxooxoo"},
        {"agogo_hi": "x.x.xx.x.x.x", "conga_mute": "o..o..o..o..", "conga_open": "..X.....X...",
         "conga_lo": ".....x.....x", "cabasa": "x.xx.xx.xx.x"},
    ), family="hand"),
    "samba": Style("samba", 4, 4, (92, 132), (
        {"conga_lo": "....X.......X...", "tamb": "xoxxxoxxxoxxxoxx",
         "agogo_hi": "x..x..x...x.x...", "agogo_lo": "..x...x.x....x..",
         "cuica": "..x....x..x....x"},
        {"conga_lo": "x...X...x...X...", "tamb": "xoxxxoxxxoxxxoxx",
         "agogo_hi": "x.x..x.x..x.x...", "cuica_open": "......x.......x."},
    ), family="hand"),
    "guaguanco": Style("rumba guaguanco", 4, 4, (92, 126), (
        {"clave": "x..x...x..x.x...", "block_hi": "x.xx.x.xx.x.x.x.",
         "conga_mute": "o.o.o.o.o.o.o.o.", "conga_open": "..........X..X.."},
        {"clave": "x..x...x..x.x...", "block_lo": "x.xx.x.xx.x.x.x.",
         "conga_mute": "o.o.o.o.o.o.o.o.", "conga_lo": "......x.....X..."},
    ), family="hand"),
    "mambo": Style("timbale mambo", 4, 4, (100, 150), (
        {"timbale_hi": "x.xx.x.xx.x.x.x.", "cowbell": "x.x.x.x.x.x.x.x.",
         "conga_mute": "o.x.X.o.o.x.....", "conga_open": "............X.X."},
        {"timbale_hi": "x.xx.x.xx.x.x.x.", "timbale_lo": "......X.......X.",
         "conga_open": "..............XX", "clave": "x..x..x.....x.x."},
    ), family="hand"),
    "nyabinghi": Style("nyabinghi hand drum", 4, 4, (70, 100), (
        {"conga_lo": "X.......x.......", "bongo_hi": "..x...x...x...x.",
         "shaker": "x.x.x.x.x.x.x.x."},
        {"conga_lo": "X.......X.......", "bongo_hi": "..x.o.x...x.o.x.",
         "bongo_lo": "....x.......x...", "shaker": "x.x.x.x.x.x.x.x."},
    ), family="hand"),
    "baiao": Style("baiao", 4, 4, (90, 130), (
        {"triangle": "x.xxx.xxx.xxx.xx", "triangle_open": "..x...x...x...x.",
         "conga_lo": "X..x....X..x....", "bongo_lo": "....x.......x..."},
        {"triangle": "x.xxx.xxx.xxx.xx", "triangle_open": "..x...x...x...x.",
         "conga_lo": "X..x...xX..x....", "guiro": "x.x.x.x.x.x.x.x."},
    ), family="hand"),
    # Drum-machine grooves under the synth parts of lmdm_export.data.electronic (16th grid).
    "house": Style("house", 4, 4, (118, 128), (
        {"kick": "x...x...x...x...", "clap": "....X.......X...", "open": "..x...x...x...x."},
        {"kick": "x...x...x...x...", "clap": "....X.......X...", "hat": "xoxoxoxoxoxoxoxo",
         "open": "..x...x...x...x."},
    ), swing=0.1, family="machine"),
    "techno": Style("techno", 4, 4, (124, 140), (
        {"kick": "x...x...x...x...", "hat": "xoxxxoxxxoxxxoxx", "open": "..x...x...x...x."},
        {"kick": "x...x...x...x..o", "clap": "....x.......x...", "hat": "xoxxxoxxxoxxxoxx",
         "ride": "x.x.x.x.x.x.x.x."},
    ), family="machine"),
    "electro": Style("electro", 4, 4, (105, 130), (
        {"kick": "x......x..x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x..x......x..x..", "clap": "....X.......X...", "hat": "xxx.xxx.xxx.xxx.",
         "cowbell": "..x.....x.....x."},
    ), family="machine"),
    "synthpop": Style("synth-pop", 4, 4, (100, 126), (
        {"kick": "x.......x.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x...x...x...x...", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x.",
         "tamb": "....x.......x..."},
    ), family="machine"),
    "trance": Style("trance", 4, 4, (130, 140), (
        {"kick": "x...x...x...x...", "clap": "....x.......x...", "open": "..x...x...x...x."},
        {"kick": "x...x...x...x...", "clap": "....x.......x...", "hat": "xxxxxxxxxxxxxxxx",
         "open": "..X...X...X...X."},
    ), family="machine"),
    "downtempo": Style("downtempo", 4, 4, (80, 100), (
        {"kick": "x......x..x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.....x...x..x..", "snare": "....X.......X.o.", "hat": "x.xxx.x.x.xxx.x.",
         "shaker": "xoxoxoxoxoxoxoxo"},
    ), swing=0.2, family="machine"),
}
HAND_STYLES = tuple(name for name, style in STYLES.items() if style.family == "hand")
MACHINE_STYLES = tuple(name for name, style in STYLES.items() if style.family == "machine")

FILLS = (
    {"tom1": "....xx......", "tom2": "......xx....", "tom3": "........xx..",
     "floor": "..........xx"},
    {"snare": "..xxxxxxxxxx"},
    {"snare": "....x.x.x.x.", "tom1": ".....x......", "tom3": ".......x....",
     "floor": ".........x.x"},
)
HAND_FILLS = (
    {"conga_open": "....xx......", "conga_mute": "......xx....", "conga_lo": "........xxxx"},
    {"bongo_hi": "..xxxxxx....", "bongo_lo": "........xxxx"},
    {"timbale_hi": "....x.x.x...", "timbale_lo": ".....x.x.x.x"},
)


@dataclass(frozen=True)
class Family:
    """How a style family phrases: its ``fills``, the ``timekeepers`` that go on playing
    through a fill (which replaces the other pieces from mid-bar on), and whether a ``crash``
    opens each phrase after the first."""

    fills: tuple[dict[str, str], ...]
    timekeepers: tuple[str, ...]
    crash: bool


# Drum-machine fills: clap and snare rolls building into the next phrase.
MACHINE_FILLS = (
    {"clap": "......xxxxxx"},
    {"snare": "....x.x.xxxx"},
    {"snare": "......x.x.x.", "clap": ".......x.x.x"},
)

FAMILIES = {
    "kit": Family(FILLS, ("kick", "hat", "pedal"), crash=True),
    "machine": Family(MACHINE_FILLS, ("kick", "hat", "open"), crash=True),
    "hand": Family(HAND_FILLS, ("shaker", "tamb", "cabasa", "guiro", "guiro_long", "agogo_hi",
                                "agogo_lo", "clave", "cowbell", "triangle", "triangle_open",
                                "block_hi", "block_lo"), crash=False),
}


def groove(style_name: str, bpm: float, bars: int, kit: int, rng: np.random.Generator, *,
           timing_jitter_ms: float = 6.0, velocity_jitter: int = 10) -> Performance:
    """``bars`` bars (a multiple of 4) of ``style_name`` at ``bpm`` beats per minute."""
    style = STYLES[style_name]
    family = FAMILIES[style.family]
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
        fill = family.fills[int(rng.integers(len(family.fills)))] if last_of_phrase else None
        fill_from = bar_steps // 2 if fill else bar_steps
        for piece, steps in pattern.items():
            for step, char in enumerate(steps[offset:offset + bar_steps]):
                if char in VELOCITY and (step < fill_from or piece in family.timekeepers):
                    add(piece, step, VELOCITY[char], bar)
        if fill:
            for piece, steps in fill.items():
                for step, char in enumerate(_stretch(steps, bar_steps)):
                    if char in VELOCITY and step >= fill_from:
                        add(piece, step, VELOCITY[char] - 10 + step * 2, bar)
        if family.crash and bar % phrase == 0 and bar > 0:
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
