"""Captions from metadata: "string ensemble chorale in G major, 92 bpm".

Keys are spelled the way a musician would write the key (flats for F, Bb, Eb, Ab, Db majors
and their relative minors), never derived from music21's interval arithmetic, which can give
"A# major" after a transposition.
"""

from __future__ import annotations

MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def key_name(tonic_pc: int, mode: str, transpose: int = 0) -> str:
    """``key_name(7, "major", 2) == "A major"``; modes other than minor use major spellings."""
    pc = (tonic_pc + transpose) % 12
    names = MINOR_NAMES if mode == "minor" else MAJOR_NAMES
    return f"{names[pc]} {mode}"


def score_caption(instrument: str, form: str, key: str, bpm: float) -> str:
    return f"{instrument} {form} in {key}, {round(bpm)} bpm"


def drum_caption(style: str, kit: str, bpm: float) -> str:
    return f"{style} drum groove, {kit} kit, {round(bpm)} bpm"


def hand_percussion_caption(style: str, bpm: float) -> str:
    return f"{style} groove, hand percussion, {round(bpm)} bpm"


def electronic_caption(style: str, key: str, bpm: float) -> str:
    return f"electronic {style} track in {key}, {round(bpm)} bpm"


def loop_caption(phrase: str, bpm: float) -> str:
    return f"{phrase}, {round(bpm)} bpm"
