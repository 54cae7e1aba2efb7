"""Timed prompt and parameter changes for ``lmdm-bridge render --events FILE.json``.

The file holds a JSON list of events, each an object with ``time`` (seconds of output audio,
>= 0) and exactly one change::

    [
      {"time": 0,    "prompt": "string ensemble chorale in G major"},
      {"time": 6.5,  "prompts": [["organ chorale", 0.7], ["flute chorale", 0.3]]},
      {"time": 10,   "cfg": 3.0},
      {"time": 12,   "steps": 4},
      {"time": 14,   "seed": 7},
      {"time": 16,   "eject": 96}
    ]

``prompt`` sets one prompt, ``prompts`` a weighted blend (weights > 0, normalised to sum 1),
``cfg`` the guidance scale, ``steps`` the sampler steps, ``seed`` reseeds the noise, ``eject``
zeroes that many of the oldest context frames (the reference's context ejection). A change takes
effect at the first block boundary at or after its time, in file order; block boundaries are
every ``block_seconds`` of the bundle (2.23 s for SAO geometry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = {"prompt": str, "prompts": list, "cfg": (int, float), "steps": int, "seed": int,
         "eject": int}


class EventsError(ValueError):
    """A malformed events file; the message names the event and the problem."""


@dataclass(frozen=True)
class Event:
    time: float
    kind: str
    value: Any


def _check(index: int, raw: Any) -> Event:
    where = f"event {index}"
    if not isinstance(raw, dict):
        raise EventsError(f"{where} must be an object like {{\"time\": 0, \"prompt\": \"...\"}}")
    time = raw.get("time")
    if not isinstance(time, (int, float)) or isinstance(time, bool) or time < 0:
        raise EventsError(f"{where}: 'time' must be a number of seconds >= 0")
    changes = [k for k in raw if k != "time"]
    if len(changes) != 1 or changes[0] not in KINDS:
        raise EventsError(f"{where}: give exactly one of {sorted(KINDS)} besides 'time', "
                          f"got {changes}")
    kind = changes[0]
    value = raw[kind]
    if not isinstance(value, KINDS[kind]) or isinstance(value, bool):
        raise EventsError(f"{where}: '{kind}' has the wrong type ({type(value).__name__})")
    if kind == "prompts":
        if not value or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                and isinstance(p[1], (int, float)) and p[1] > 0 for p in value):
            raise EventsError(f"{where}: 'prompts' must be a non-empty list of "
                              "[text, weight > 0] pairs")
        value = [(text, float(weight)) for text, weight in value]
    if kind == "steps" and value < 1:
        raise EventsError(f"{where}: 'steps' must be >= 1")
    if kind in ("eject", "seed") and value < 0:
        raise EventsError(f"{where}: '{kind}' must be >= 0")
    return Event(float(time), kind, float(value) if kind == "cfg" else value)


def parse_events(raw: Any) -> list[Event]:
    if not isinstance(raw, list):
        raise EventsError("an events file holds a JSON list of events")
    events = [_check(i, e) for i, e in enumerate(raw)]
    return sorted(events, key=lambda e: e.time)  # sorted() is stable: file order within a time


def load_events(path: str | Path) -> list[Event]:
    path = Path(path)
    if not path.is_file():
        raise EventsError(f"events file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EventsError(f"events file {path} is not valid JSON: {exc}") from exc
    try:
        return parse_events(raw)
    except EventsError as exc:
        raise EventsError(f"{path}: {exc}") from exc


def due(events: list[Event], start: int, until_seconds: float) -> tuple[list[Event], int]:
    """Events from index ``start`` with ``time <= until_seconds``, and the next index."""
    end = start
    while end < len(events) and events[end].time <= until_seconds:
        end += 1
    return events[start:end], end
