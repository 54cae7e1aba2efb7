"""Pieces of the music21 corpus: listing them, and turning one into a :class:`Performance`.

Notes are read off the parsed score (ties merged; see :func:`_voice` for what is simplified).
Scores that fail to parse are reported to the caller, which skips and counts them.

Times: the returned performance plays at the piece's *base tempo*: its metronome mark when the
source trusts score tempi and the score has one, else the source's ``default_bpm``. Tempo is
counted in the time signature's beat (a half note in 4/2, a dotted quarter in 6/8).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lmdm_export.data.config import ScoreSource
from lmdm_export.data.performance import (
    Note,
    Performance,
    Voice,
    drop_empty_voices,
    trim_leading_silence,
)

# Dance and form names found in the titles of the folk-tune collections; the first match
# replaces the source's generic form in the caption ("flute reel in D major, 112 bpm").
DEFAULT_VELOCITY = 80  # notes without an explicit volume (most of the corpus)

FORM_WORDS = ("reel", "jig", "hornpipe", "strathspey", "polka", "waltz", "march", "schottische",
              "mazurka", "quickstep", "fling", "slide", "clog", "air", "lament", "minuet",
              "gavotte", "galop", "song")


@dataclass(frozen=True)
class PieceRef:
    """A piece to render, identified without parsing it.

    ``piece_id`` is stable across runs and limits ("bach-chorales/bwv66.6",
    "oneills/0001-0050.abc#3"); ``number`` selects a tune inside a multi-tune ABC file.
    """

    source: str
    piece_id: str
    corpus_path: str
    number: int | None = None


@dataclass(frozen=True)
class ScorePiece:
    """A parsed piece at its base tempo (module docstring)."""

    performance: Performance
    bpm: float  # beats per minute of ``performance``
    tonic_pc: int  # pitch class of the tonic, 0 = C
    mode: str  # "major", "minor", "dorian", ...
    title: str
    composer: str
    copyright: str
    form: str


def list_pieces(source: ScoreSource) -> list[PieceRef]:
    """Every piece of ``source`` in a deterministic order (``max_pieces`` not applied)."""
    from music21 import corpus

    if source.kind == "chorales":
        # The Riemenschneider numbering lists some chorales twice (same file): keep one, so a
        # duplicate cannot land in both splits.
        paths = dict.fromkeys(corpus.chorales.Iterator(returnType="filename"))
        return [PieceRef(source.name, f"{source.name}/{p.split('/')[-1]}", p) for p in paths]
    refs = []
    for path, number in _core_works():
        if not path.startswith(source.paths):
            continue
        if source.extensions and not path.endswith(source.extensions):
            continue
        suffix = f"#{number}" if number is not None else ""
        refs.append(PieceRef(source.name, f"{source.name}/{path.split('/', 1)[-1]}{suffix}",
                             path, number))
    refs.sort(key=lambda r: (r.corpus_path, r.number or 0))
    return refs


@functools.lru_cache(maxsize=1)
def _core_works() -> tuple[tuple[str, int | None], ...]:
    """(corpus path, work number) of every work in music21's core corpus metadata cache.

    One slice of the bundle: iterating it entry by entry rebuilds a list per step (quadratic,
    about a minute for the 15,000 works).
    """
    from music21 import corpus

    entries = corpus.corpora.CoreCorpus().metadataBundle[:]
    works = [(str(e.sourcePath), int(e.number) if e.number not in (None, "") else None)
             for e in entries]
    # A multi-tune ABC file is listed once per tune and once as a whole: keep the tunes.
    numbered = {path for path, number in works if number is not None}
    return tuple((p, n) for p, n in works if n is not None or p not in numbered)


def load_piece(ref: PieceRef, source: ScoreSource) -> ScorePiece:
    """Parse one piece and read its notes; raises whatever music21 raises on a broken score."""
    from music21 import corpus, key, meter, tempo

    if ref.number is not None:
        score = corpus.parse(ref.corpus_path, number=ref.number)
    else:
        score = corpus.parse(ref.corpus_path)
    flat = score.flatten()

    signature = flat.getElementsByClass(meter.TimeSignature).first()
    beat_quarters = float(signature.beatDuration.quarterLength) if signature else 1.0
    keys = list(flat.getElementsByClass(key.Key))
    found = keys[0] if keys else score.analyze("key")
    marks = [m.getQuarterBPM() for m in flat.getElementsByClass(tempo.MetronomeMark)]
    marked_qpm = next((q for q in marks if q), None) if source.use_score_tempo else None
    base_qpm = marked_qpm or source.default_bpm * beat_quarters

    parts = list(score.parts) or [score]
    voices = [_voice(part, index, 60.0 / base_qpm) for index, part in enumerate(parts)]
    # Top voice first, whatever the file's part order (Humdrum lists the bass first).
    voices.sort(key=lambda v: -sum(n.pitch for n in v.notes) / max(len(v.notes), 1))
    performance = trim_leading_silence(drop_empty_voices(Performance(tuple(_unique(voices)))))

    metadata = score.metadata
    title = (metadata.title or metadata.movementName or "") if metadata else ""
    title = title or ref.corpus_path.split("/")[-1].rsplit(".", 1)[0]
    return ScorePiece(
        performance=performance,
        bpm=base_qpm / beat_quarters,
        tonic_pc=int(found.tonic.pitchClass),
        mode=str(found.mode or "major"),
        title=title,
        composer=str(metadata.composer or "") if metadata else "",
        copyright=str(metadata.copyright or "") if metadata else "",
        form=form_of(title, source.form),
    )


def _voice(part, index: int, seconds_per_quarter: float) -> Voice:
    """The notes of one part, in score order, at a constant tempo.

    Read straight off the score, not through music21's MIDI export: that export expands
    repeats by deep-copying the score (60 % of the render time in a profile) and fails on
    badly formed repeats (``bach/bwv277``); ``stripTies`` is slower still, so ties are merged
    here. Repeats are therefore played once and volta endings in sequence, tempo changes inside
    a piece are ignored, and velocities come from explicit note volumes only (dynamics
    markings are not interpreted).
    """
    from music21 import chord, note

    finished: list[Note] = []
    tied: dict[int, list] = {}  # pitch -> [start, end, velocity] of a note whose tie is open
    for element in part.flatten().notes:
        length = float(element.quarterLength)
        if length <= 0 or not isinstance(element, (note.Note, chord.Chord)):
            continue  # grace notes, unpitched percussion
        start = float(element.offset) * seconds_per_quarter
        end = start + length * seconds_per_quarter
        velocity = int(element.volume.velocity or DEFAULT_VELOCITY)
        members = element.notes if isinstance(element, chord.Chord) else (element,)
        for member in members:
            pitch = int(member.pitch.midi)
            tie = member.tie or element.tie
            kind = tie.type if tie is not None else None
            if kind in ("continue", "stop") and pitch in tied:
                tied[pitch][1] = end
                if kind == "stop":
                    finished.append(_close(tied.pop(pitch), pitch))
                continue
            if pitch in tied:  # a tie that never stopped: end it where it got to
                finished.append(_close(tied.pop(pitch), pitch))
            if kind in ("start", "continue"):
                tied[pitch] = [start, end, velocity]
            else:
                finished.append(Note(start, end, pitch, velocity))
    finished.extend(_close(rec, pitch) for pitch, rec in tied.items())
    notes = sorted((n for n in finished if 0 <= n.pitch < 128), key=lambda n: (n.start, n.pitch))
    return Voice(_voice_name(part.partName or "", index), tuple(notes))


def _close(record: list, pitch: int) -> Note:
    start, end, velocity = record
    return Note(start, end, pitch, velocity)


def form_of(title: str, default: str) -> str:
    words = set(re.findall(r"[a-z]+", title.lower()))
    return next((w for w in FORM_WORDS if w in words), default)


def _voice_name(name: str, index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")
    return slug or f"voice{index + 1}"


def _unique(voices: list[Voice]) -> list[Voice]:
    """Voice names become stem file names: make them unique ("violin", "violin-2")."""
    seen: dict[str, int] = {}
    out = []
    for v in voices:
        seen[v.name] = seen.get(v.name, 0) + 1
        out.append(v if seen[v.name] == 1 else Voice(f"{v.name}-{seen[v.name]}", v.notes))
    return out
