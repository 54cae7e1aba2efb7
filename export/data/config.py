"""Typed, frozen configuration of the training-corpus renderer, loadable from TOML or JSON.

Every choice the renderer makes (sample rate, soundfonts, label -> GM programs, tempo and
transposition ranges, variants per piece, split fraction, seed) is a field here, so a corpus is
reproduced from its config alone; ``render_corpus`` writes the resolved config beside the audio.
Files are read strictly: an unknown key fails by its dotted name (e.g. ``scores[1].varaints``)
instead of being silently ignored (style.md §3).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

AUDIO_FORMATS = ("flac", "wav")
SCORE_KINDS = ("chorales", "corpus")


@dataclass(frozen=True)
class SoundfontConfig:
    """A General MIDI soundfont from a Debian package; its licence is read from the package."""

    name: str
    path: str
    package: str
    licence: str = ""  # one line for DATA_CARD.md, read off the package's copyright file
    weight: float = 1.0  # relative probability of being drawn for a render


@dataclass(frozen=True)
class LabelConfig:
    """An evaluation class and how it sounds.

    ``programs`` are GM programs (0-127) from the top voice down; voices below the last entry
    reuse it, so ``[48]`` is a string ensemble on every voice and ``[73, 68, 71, 70]`` a
    flute/oboe/clarinet/bassoon quartet.
    """

    name: str
    caption: str
    programs: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.programs or any(not 0 <= p < 128 for p in self.programs):
            raise ValueError(f"label {self.name!r}: programs must be 1+ GM numbers in 0..127")

    def program_for_voice(self, index: int) -> int:
        return self.programs[min(index, len(self.programs) - 1)]


@dataclass(frozen=True)
class ScoreSource:
    """A collection of the music21 corpus rendered with fluidsynth.

    ``kind = "chorales"`` walks ``music21.corpus.chorales.Iterator()`` (the 371 Riemenschneider
    chorales); ``kind = "corpus"`` takes every work of the core corpus whose path starts with
    one of ``paths`` and ends with one of ``extensions``. Pieces without a metronome mark are
    played at ``default_bpm`` beats (the time signature's beat) per minute before the random
    tempo factor; pieces longer than ``max_seconds`` are rendered as random excerpts.
    """

    name: str
    kind: str
    form: str  # the caption's noun: "chorale", "motet", "folk tune" (dance names override it)
    labels: tuple[str, ...]
    paths: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    licence: str = ""  # one line for DATA_CARD.md: composition and encoding status
    variants: int = 4
    max_pieces: int | None = None
    default_bpm: float = 80.0
    use_score_tempo: bool = True  # False: ignore metronome marks (some encodings carry a dummy 120)
    min_seconds: float = 8.0
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"scores {self.name!r}: kind must be one of {SCORE_KINDS}")
        if self.kind == "corpus" and not self.paths:
            raise ValueError(f"scores {self.name!r}: kind 'corpus' needs paths")
        if self.variants < 1 or not self.labels:
            raise ValueError(f"scores {self.name!r}: needs variants >= 1 and at least one label")


@dataclass(frozen=True)
class DrumSource:
    """Procedural grooves on the GM drum kit (MIDI channel 10, bank 128): the drum-kit styles
    as ``drums``, the hand-percussion styles as ``percussion`` (:mod:`lmdm_export.data.drums`),
    the drum-machine styles as ``electronic``, under synth parts
    (:mod:`lmdm_export.data.electronic`)."""

    styles: tuple[str, ...] = ("rock", "funk", "shuffle", "waltz", "bossa", "disco", "hiphop",
                               "reggae", "swing", "march", "breakbeat", "industrial")
    patterns_per_style: int = 40
    bpm_range: tuple[float, float] = (70.0, 160.0)
    seconds_range: tuple[float, float] = (16.0, 32.0)
    kits: tuple[int, ...] = (0, 8, 16, 24, 25, 32, 40)  # GM kit presets in bank 128
    label: str = "drums"
    timing_jitter_ms: float = 6.0
    velocity_jitter: int = 10

    def __post_init__(self) -> None:
        from lmdm_export.data.drums import STYLES

        unknown = sorted(set(self.styles) - set(STYLES))
        if unknown:
            raise ValueError(f"unknown groove style(s) {unknown} (known: {', '.join(STYLES)})")
        if not self.styles or self.patterns_per_style < 1:
            raise ValueError("a groove source needs at least one style and one pattern per style")


@dataclass(frozen=True)
class LoopInfo:
    """One recorded loop: its caption phrase, label and length in beats (for the tempo)."""

    name: str  # file stem, e.g. "loop_amen"
    caption: str
    label: str
    beats: int


@dataclass(frozen=True)
class LoopSource:
    """CC0 loops of Debian's sonic-pi-samples, varispeed-resampled and tiled to a length.

    Only files the package's copyright file lists under ``License: CC0`` are used, whatever
    ``loops`` names; a listed loop that is not CC0 is skipped and logged.
    """

    directory: str = "/usr/share/sonic-pi/samples"
    copyright_file: str = "/usr/share/doc/sonic-pi-samples/copyright"
    loops: tuple[LoopInfo, ...] = ()
    variants: int = 12
    rate_range: tuple[float, float] = (0.85, 1.18)
    seconds: float = 12.0


@dataclass(frozen=True)
class DataConfig:
    """The whole corpus. Units: Hz, seconds, semitones, dBFS; ranges are inclusive."""

    sample_rate: int = 22050
    channels: int = 1
    audio_format: str = "flac"
    seed: int = 0
    val_fraction: float = 0.1
    piece_limit: int | None = None  # pieces per source, for quick runs
    workers: int = 2
    tempo_factor_range: tuple[float, float] = (0.8, 1.25)
    transpose_range: tuple[int, int] = (-5, 6)
    velocity_jitter: int = 6
    tail_seconds: float = 1.5  # rendered after the last note-off so releases are not cut
    peak_dbfs: float = -1.0  # the mix is normalised to this peak; stems get the same gain
    soundfonts: tuple[SoundfontConfig, ...] = ()
    labels: tuple[LabelConfig, ...] = ()
    scores: tuple[ScoreSource, ...] = ()
    drums: DrumSource | None = None
    percussion: DrumSource | None = None  # the hand-percussion grooves, under their own ids
    # synth tracks over drum-machine grooves (lmdm_export.data.electronic): "machine" styles
    electronic: DrumSource | None = None
    loops: LoopSource | None = None
    notes: tuple[str, ...] = field(default=())  # free text copied into DATA_CARD.md

    def __post_init__(self) -> None:
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}")
        if self.channels not in (1, 2):
            raise ValueError("channels must be 1 (mono) or 2 (stereo)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        lo, hi = self.transpose_range
        if lo > hi:
            raise ValueError("transpose_range must be (low, high) with low <= high")
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        known = set(names)
        for source in self.scores:
            missing = set(source.labels) - known
            if missing:
                raise ValueError(f"scores {source.name!r} uses undefined labels {sorted(missing)}")
        if self.electronic is not None:
            from lmdm_export.data.drums import MACHINE_STYLES

            other = sorted(set(self.electronic.styles) - set(MACHINE_STYLES))
            if other:
                raise ValueError(f"electronic styles must be drum-machine styles "
                                 f"({', '.join(MACHINE_STYLES)}), got {other}")
        if (self.scores or self.drums or self.percussion or self.electronic) and \
                not self.soundfonts:
            raise ValueError("rendering scores or grooves needs at least one soundfont")
        sources = [s.name for s in self.scores]
        if len(set(sources)) != len(sources):
            raise ValueError(f"score source names must be unique, got {sources}")

    def soundfont(self, name: str) -> SoundfontConfig:
        for soundfont in self.soundfonts:
            if soundfont.name == name:
                return soundfont
        raise KeyError(name)

    def groove_source(self, name: str) -> DrumSource:
        """The groove source a job names: "drums", "percussion" or "electronic"."""
        source = {"drums": self.drums, "percussion": self.percussion,
                  "electronic": self.electronic}.get(name)
        if source is None:
            raise KeyError(name)
        return source

    def loop(self, name: str) -> LoopInfo:
        for info in self.loops.loops if self.loops else ():
            if info.name == name:
                return info
        raise KeyError(name)

    def score_source(self, name: str) -> ScoreSource:
        for source in self.scores:
            if source.name == name:
                return source
        raise KeyError(name)

    def label(self, name: str) -> LabelConfig:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None) -> DataConfig:
    """Read a ``.toml`` or ``.json`` config; ``None`` gives the built-in default corpus."""
    if path is None:
        from lmdm_export.data.defaults import default_config

        return default_config()
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return from_dict(DataConfig, raw)


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from plain data, rejecting unknown keys by their dotted name."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(names))})")
    kwargs = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
