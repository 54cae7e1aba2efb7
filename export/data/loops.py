"""Recorded loops from Debian's sonic-pi-samples, CC0 items only.

The package's machine-readable copyright file (DEP-5) is the licence source of truth: a file is
used only when a ``Files:`` stanza naming it says ``License: CC0``. Each use is a varispeed
resampling (tempo and pitch move together, like a turntable) tiled to a fixed length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LicensedFile:
    """A file of the package with its DEP-5 record."""

    name: str  # file name, e.g. "loop_amen.flac"
    licence: str
    copyright: str
    source_url: str


def read_dep5(copyright_file: str | Path) -> dict[str, LicensedFile]:
    """File name (basename) -> its licence record, for every ``Files:`` stanza of the file."""
    text = Path(copyright_file).read_text(encoding="utf-8", errors="replace")
    records = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields = _fields(stanza)
        if "files" not in fields or "license" not in fields:
            continue
        licence = fields["license"].split("\n")[0].strip()
        url = re.search(r"https?://\S+", fields.get("source", "") + " " + stanza)
        for pattern in fields["files"].split():
            name = pattern.rsplit("/", 1)[-1]
            if "*" in name:
                continue
            records[name] = LicensedFile(name, licence, fields.get("copyright", "").strip(),
                                         url.group(0) if url else "")
    return records


def _fields(stanza: str) -> dict[str, str]:
    """DEP-5 fields of one stanza; continuation lines (leading space) join their field."""
    fields: dict[str, str] = {}
    current = None
    for line in stanza.splitlines():
        match = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
        if match and not line.startswith(" "):
            current = match.group(1).lower()
            fields[current] = match.group(2)
        elif current and line.startswith(" "):
            fields[current] += "\n" + line.strip()
    return fields


def cc0_files(copyright_file: str | Path) -> dict[str, LicensedFile]:
    return {k: v for k, v in read_dep5(copyright_file).items() if v.licence == "CC0"}


def varispeed(audio: np.ndarray, sample_rate: int, rate: float, out_rate: int) -> np.ndarray:
    """Play ``audio`` (frames, channels) ``rate`` times faster, resampled to ``out_rate`` Hz.

    A polyphase resampler (scipy) at the rational ratio closest to ``out_rate / (sample_rate *
    rate)`` with denominator <= 1000; the ratio error moves the tempo by < 0.1 %.
    """
    from scipy.signal import resample_poly

    ratio = Fraction(out_rate / (sample_rate * rate)).limit_denominator(1000)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=0).astype(np.float32)


def tile(audio: np.ndarray, frames: int, fade_frames: int) -> np.ndarray:
    """Repeat ``audio`` (frames, channels) to exactly ``frames`` and fade out the cut end."""
    reps = int(np.ceil(frames / len(audio)))
    out = np.concatenate([audio] * reps, axis=0)[:frames].copy()
    fade = min(fade_frames, frames)
    out[frames - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return out
