"""Typed control commands and the queue that carries them from the OSC thread to the daemon.

The OSC server only validates and queues; the daemon's generation worker drains the queue and
applies each :data:`Control` at a block boundary (the ones the address table marks
``immediately`` may be applied by whatever drains more often, e.g. the gain ramp of the audio
side). Nothing here touches the engine.

Settings (prompt, cfg, steps, gain, an effect parameter, the model) *coalesce*: a fader that sends
a hundred values while one block is generated leaves one pending value, not a hundred, so a
burst never turns into a hundred text-encoder runs. Actions (play, stop, reset, seed, eject) keep
every occurrence in order, up to a bound.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

# Spelled like lmdm_bridge.text.WeightedPrompt; not imported from there because that module
# loads the tokenizer and onnxruntime, which the control surface does not need.
WeightedPrompt = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Play:
    """Start (or resume) generating and playing."""


@dataclass(frozen=True)
class Stop:
    """Stop playing (the daemon fades out; the stream state is kept)."""


@dataclass(frozen=True)
class Reset:
    """Back to the first block (:meth:`Engine.reset`): prompt and settings stay."""


@dataclass(frozen=True)
class SetPrompt:
    """``prompt``: one text, or ``((text, weight), ...)`` with weights > 0 (the engine
    normalises them to sum 1). Feed it to :meth:`Engine.set_prompt` as is."""

    prompt: str | WeightedPrompt


@dataclass(frozen=True)
class SetCfg:
    """Classifier-free guidance scale (1: off), for :meth:`Engine.set_cfg`."""

    scale: float


@dataclass(frozen=True)
class SetSteps:
    """Sampler steps per block, for :meth:`Engine.set_steps`."""

    steps: int


@dataclass(frozen=True)
class Reseed:
    """Seed of the noise generator, for :meth:`Engine.reseed`."""

    seed: int


@dataclass(frozen=True)
class Eject:
    """Zero the oldest ``frames`` latent frames of context, for :meth:`Engine.eject`."""

    frames: int


@dataclass(frozen=True)
class SetGain:
    """Output gain in dB (0: unity), applied by the audio side with a short ramp."""

    db: float


@dataclass(frozen=True)
class SetFx:
    """One effect parameter: ``chain`` (``"pre"`` or ``"post"``), ``index`` (position of the
    plugin in that chain, 0-based: unambiguous when two plugins share a name), ``plugin`` (its
    name in the OSC address), ``param`` and ``value`` (in the parameter's own unit, within the
    range the chain description declared)."""

    chain: str
    index: int
    plugin: str
    param: str
    value: float


@dataclass(frozen=True)
class SwitchModel:
    """Load the bundle ``name`` from the configured models folder; ``path`` is that folder
    joined with the validated name (it existed when the message arrived)."""

    name: str
    path: Path


Control = (Play | Stop | Reset | SetPrompt | SetCfg | SetSteps | Reseed | Eject | SetGain | SetFx
           | SwitchModel)

# Classes by the name a table row gives as its target.
CONTROL_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    Play, Stop, Reset, SetPrompt, SetCfg, SetSteps, Reseed, Eject, SetGain, SetFx, SwitchModel)}

# Only the latest value of a setting matters, so a new one replaces the pending one.
_SETTINGS = (SetPrompt, SetCfg, SetSteps, SetGain, SetFx, SwitchModel)


def _setting_key(control: Control) -> tuple | None:
    if isinstance(control, SetFx):
        return (SetFx, control.chain, control.index, control.param)
    if isinstance(control, _SETTINGS):
        return (type(control),)
    return None


class QueueFull(RuntimeError):
    """More actions are pending than the queue holds: the worker is not draining it."""


class ControlQueue:
    """Thread-safe, ordered, coalescing queue of :data:`Control` commands.

    ``put`` is called by the OSC thread, ``drain``/``wait`` by the daemon. A setting replaces a
    pending setting of the same key and moves to the end (applying both in order would leave the
    later value anyway, and no action reads a setting); actions are kept in order, at most
    ``max_actions`` of them pending.
    """

    def __init__(self, max_actions: int = 256) -> None:
        self.max_actions = max_actions
        self._items: dict[object, Control] = {}  # insertion-ordered; key -> control
        self._serial = 0  # unique keys for actions
        self._actions = 0
        self.superseded = 0  # settings replaced before the worker saw them
        self._cond = threading.Condition()

    def put(self, control: Control) -> None:
        """Queue ``control``; raises :class:`QueueFull` when too many actions are pending."""
        key = _setting_key(control)
        with self._cond:
            if key is None:
                if self._actions >= self.max_actions:
                    raise QueueFull(f"{self._actions} actions are pending; the daemon is not "
                                    "applying them")
                self._serial += 1
                key, self._actions = ("action", self._serial), self._actions + 1
            elif self._items.pop(key, None) is not None:
                self.superseded += 1
            self._items[key] = control
            self._cond.notify_all()

    def drain(self) -> list[Control]:
        """Every pending control, oldest first; the queue is empty afterwards."""
        with self._cond:
            items = list(self._items.values())
            self._items.clear()
            self._actions = 0
            return items

    def wait(self, timeout: float | None = None) -> bool:
        """Block until something is pending or ``timeout`` seconds passed; True if pending."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._items), timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
