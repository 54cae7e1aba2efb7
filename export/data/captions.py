"""Captions from metadata: "string ensemble chorale in G major, 92 bpm".

Keys are spelled the way a musician would write the key (flats for F, Bb, Eb, Ab, Db majors
and their relative minors), never derived from music21's interval arithmetic, which can give
"A# major" after a transposition.
"""

from __future__ import annotations

import numpy as np

MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def key_name(tonic_pc: int, mode: str, transpose: int = 0) -> str:
    """``key_name(7, "major", 2) == "A major"``; modes other than minor use major spellings."""
    pc = (tonic_pc + transpose) % 12
    names = MINOR_NAMES if mode == "minor" else MAJOR_NAMES
    return f"{names[pc]} {mode}"


def score_caption(instrument: str, form: str, key: str, bpm: float) -> str:
    return f"{instrument} {form} in {key}, {round(bpm)} bpm"


def _worded(wordings: tuple[str, ...], weights: tuple[float, ...],
            rng: np.random.Generator | None, **fields: object) -> str:
    """One of ``wordings`` drawn by ``rng`` with ``weights`` (the first without an rng)."""
    k = 0 if rng is None else int(rng.choice(len(wordings), p=weights))
    return wordings[k].format(**fields)


# A drum-kit groove's caption is worded one of these ways, with these weights, so a prompt
# need not say "groove": a phrase carried only by the five recorded drum loops was not learned
# (session 23: "breakbeat drum loop" rendered as electronic tracks).
DRUM_WORDINGS = ("{style} drum groove, {kit} kit, {bpm} bpm", "{style} drum loop, {bpm} bpm",
                 "{style} drum beat, {kit} kit, {bpm} bpm")
DRUM_WORDING_WEIGHTS = (0.5, 0.25, 0.25)


def drum_caption(style: str, kit: str, bpm: float, rng: np.random.Generator | None = None) -> str:
    """A :data:`DRUM_WORDINGS` caption drawn by ``rng`` (the first one without it)."""
    return _worded(DRUM_WORDINGS, DRUM_WORDING_WEIGHTS, rng, style=style, kit=kit, bpm=round(bpm))


# A hand-percussion groove's caption, worded several ways for the same reason: with the one
# "groove, hand percussion" wording, session 24's default rendered the sonic-pi loop's own
# "hand percussion loop, 96 bpm" as electronic tracks and "samba loop" as harpsichord.
HAND_PERCUSSION_WORDINGS = ("{style} groove, hand percussion, {bpm} bpm",
                            "{style} hand percussion loop, {bpm} bpm", "{style} loop, {bpm} bpm")
HAND_PERCUSSION_WORDING_WEIGHTS = (0.5, 0.25, 0.25)


def hand_percussion_caption(style: str, bpm: float,
                            rng: np.random.Generator | None = None) -> str:
    """A :data:`HAND_PERCUSSION_WORDINGS` caption drawn by ``rng`` (the first without it)."""
    return _worded(HAND_PERCUSSION_WORDINGS, HAND_PERCUSSION_WORDING_WEIGHTS, rng,
                   style=style, bpm=round(bpm))


def electronic_caption(style: str, key: str, bpm: float) -> str:
    return f"electronic {style} track in {key}, {round(bpm)} bpm"


def loop_caption(phrase: str, bpm: float) -> str:
    return f"{phrase}, {round(bpm)} bpm"
