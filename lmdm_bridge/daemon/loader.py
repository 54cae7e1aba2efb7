"""Loading the next model in the background while the current one keeps playing.

``/lmdm/model NAME`` must not stop the music for the seconds a bundle takes to open and warm
up. The generation worker hands the request to a :class:`ModelLoader` and goes on generating;
a thread of the loader's own opens the bundle (:func:`~lmdm_bridge.daemon.model.load_model`),
and the worker picks the finished :class:`~lmdm_bridge.daemon.model.Model` up with
:meth:`ModelLoader.take` at a block boundary and swaps it in. Only the newest request matters:
one that arrives during a load is started when that load ends, and the older result is
dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmdm_bridge.daemon.model import Model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadFailed:
    """A request that could not be loaded: the model ``name`` and the ``reason``."""

    name: str
    reason: str


class ModelLoader:
    """Runs ``load(path) -> Model`` on a thread of its own, one request at a time."""

    def __init__(self, load: Callable[[Path], Model]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._wanted: tuple[str, Path] | None = None
        self._done: Model | LoadFailed | None = None
        self._running = False

    @property
    def busy(self) -> bool:
        """A load is running, or its result waits for :meth:`take`."""
        with self._lock:
            return self._running or self._done is not None

    def request(self, name: str, path: Path) -> None:
        """Load ``path`` (the model ``name``) next; returns at once."""
        with self._lock:
            self._wanted = (name, path)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="model-loader", daemon=True).start()

    def take(self) -> Model | LoadFailed | None:
        """The finished load, once (None while loading or idle)."""
        with self._lock:
            done, self._done = self._done, None
            return done

    def _run(self) -> None:
        while True:
            with self._lock:
                wanted, self._wanted = self._wanted, None
                if wanted is None:
                    self._running = False
                    return
            name, path = wanted
            try:
                result: Model | LoadFailed = self._load(path)
            except Exception as exc:  # any broken bundle: reported, the old model plays on
                log.warning("loading model %r failed: %s", name, exc)
                result = LoadFailed(name, str(exc))
            with self._lock:
                if self._wanted is None:  # a newer request makes this result stale
                    self._done = result
