"""One line of ``metadata.jsonl``: the record of an item, its validation, and atomic file writes.

Records are first written one file per item under ``records/`` (atomically, after the item's
audio), which is what makes a render resumable: an item counts as done exactly when its record
exists. ``metadata.jsonl`` is assembled from them at the end of every run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SPLITS = ("train", "val")
KINDS = ("score", "drums", "electronic", "loop")

# field -> accepted types; None marks a field that may be null
FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "path": (str,),
    "caption": (str,),
    "label": (str,),
    "source": (str,),
    "kind": (str,),
    "piece_id": (str,),
    "split": (str,),
    "title": (str,),
    "composer": (str,),
    "copyright": (str,),  # notice in the source's metadata (score encoding, loop's DEP-5 entry)
    "duration": (float,),  # seconds
    "sample_rate": (int,),  # Hz
    "channels": (int,),
    "tempo": (float,),  # beats per minute (the time signature's beat)
    "key": (str, type(None)),  # "G major"; null for drums and loops
    "transposition": (int,),  # semitones relative to the score
    "tempo_factor": (float,),
    "program": (int, type(None)),  # GM program of the top voice (drums: kit preset)
    "soundfont": (str, type(None)),
    "licence": (str,),
    "stems": (list,),  # [{"voice": str, "path": str, "program": int | None}]
}


def validate_record(record: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first missing, unknown or mistyped field."""
    missing = sorted(set(FIELDS) - set(record))
    unknown = sorted(set(record) - set(FIELDS))
    if missing or unknown:
        raise ValueError(f"record {record.get('id')!r}: missing {missing}, unknown {unknown}")
    for name, types in FIELDS.items():
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"record {record['id']!r}: {name}={value!r} is not {types}")
    if record["split"] not in SPLITS or record["kind"] not in KINDS:
        raise ValueError(f"record {record['id']!r}: bad split or kind")
    if record["duration"] <= 0:
        raise ValueError(f"record {record['id']!r}: duration must be positive")
    for stem in record["stems"]:
        if set(stem) != {"voice", "path", "program"}:
            raise ValueError(f"record {record['id']!r}: stem {stem} needs voice, path, program")


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def write_audio_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write (frames,) or (frames, channels) float audio as 16-bit FLAC or WAV (by suffix);
    a crash leaves a hidden ``.tmp`` file, never a truncated audio file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
