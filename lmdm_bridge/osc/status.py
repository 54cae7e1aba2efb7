"""The status snapshot: what the daemon reports, read by the OSC thread without touching the
daemon.

The daemon calls :meth:`StatusSnapshot.update` whenever something changes (after each block, on
an underrun, on a model switch); the OSC server answers ``/lmdm/status`` and feeds subscribers
from :meth:`StatusSnapshot.values`. Keys, types and units are :data:`table.STATUS_KEYS`; the
server appends its own counters (received ... rejected) at reply time.
"""

from __future__ import annotations

import threading
from typing import Any

from lmdm_bridge.osc.table import STATUS_KEYS

_PYTHON_TYPES = {"s": str, "i": int, "f": float}
# The keys the daemon owns; the counter keys at the end of STATUS_KEYS are the server's.
DAEMON_KEYS = ("state", "prompt", "rtf", "blocks", "ahead", "underruns", "xruns", "latency",
               "model", "error")
_TYPES = {key: _PYTHON_TYPES[tag] for key, tag, _ in STATUS_KEYS if key in DAEMON_KEYS}


def prompt_text(prompt: str | tuple[tuple[str, float], ...] | None) -> str:
    """A prompt as the status shows it: the text, or ``'a 0.7 | b 0.3'`` for a blend."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    return " | ".join(f"{text} {weight:g}" for text, weight in prompt)


class StatusSnapshot:
    """Thread-safe key -> value map of the daemon's state (see :data:`table.STATUS_KEYS`).

    Values are converted to the key's type on update, so the OSC reply's type tags never
    change between replies (a Max ``[route]`` after ``[unpack]`` relies on that).
    """

    def __init__(self, **values: Any) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {"state": "stopped", "prompt": "", "rtf": 0.0,
                                        "blocks": 0, "ahead": 0, "underruns": 0, "xruns": 0,
                                        "latency": 0.0, "model": "", "error": ""}
        self.update(**values)

    def update(self, **values: Any) -> None:
        """Set some keys; an unknown key or a value of the wrong kind raises ValueError."""
        converted = {}
        for key, value in values.items():
            if key not in _TYPES:
                raise ValueError(f"unknown status key {key!r}: use one of {DAEMON_KEYS}")
            kind = _TYPES[key]
            if kind is str:
                converted[key] = prompt_text(value) if key == "prompt" else str(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"status {key!r} takes a number, got {value!r}")
            else:
                converted[key] = kind(value)
        with self._lock:
            self._values.update(converted)

    def values(self) -> dict[str, Any]:
        """A consistent copy, in :data:`DAEMON_KEYS` order."""
        with self._lock:
            return dict(self._values)

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            return self._values[key]
