"""Effect chains: ``pre`` on the captured input, ``post`` on the generated output.

A chain is built from the config's description, a list of entries such as
``{"plugin": "reverb", "room_size": 0.3}`` or ``{"plugin": "vst3", "path": "/x/Fx.vst3",
"name": "fx", "mix": 0.5}``. ``plugin`` names a :data:`REGISTRY` entry (or the pedalboard class,
e.g. ``"HighpassFilter"``); ``name`` optionally renames the plugin's OSC address segment; every
other key is a parameter in pedalboard's own name and unit. VST3 and Audio Unit plugins load
from a ``path`` in the config file only: no OSC message can name a file.

Everything wrong in a description (unknown plugin, unknown parameter, a value of the wrong type
or out of range, a plugin file that does not load) is a :class:`ValueError` naming the entry
the way the daemon's TOML spells it (``fx.post[1] (reverb): room_size = 1.5 is out of range
[0, 1]``), raised at start-up. Every numeric parameter is reported by :meth:`EffectChain.
describe` as an :class:`~lmdm_bridge.osc.FxPlugin` for the OSC table, and can be changed with
:meth:`EffectChains.set_param` from any thread; the change is applied by the thread that calls
:meth:`EffectChain.process`, between two blocks, never inside the audio callback.

Chains process audio in streaming mode (``reset=False``): reverb tails, delay lines and
filter states carry over from one block to the next.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard

from lmdm_bridge.audio.limiter import SafetyLimiter
from lmdm_bridge.osc.table import FxPlugin

CHAINS = ("pre", "post")
# Filters are unstable at or above Nyquist: their frequency ranges stop below it.
_NYQUIST_FRACTION = 0.45


@dataclass(frozen=True)
class PluginSpec:
    """A built-in plugin: its pedalboard class name, numeric parameters
    ``name -> (minimum, maximum, default)`` and text parameters ``name -> choices``."""

    cls: str
    params: Mapping[str, tuple[float, float, float]]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_Q = (0.1, 10.0, 0.7071)
_FREQ = (20.0, 20000.0)
# Ranges are what is musically useful and safe for pedalboard (it rejects e.g. ratio < 1 and
# chorus rates above 100 Hz); defaults are pedalboard's, except lowpass (its 50 Hz default
# would silence everything).
REGISTRY: dict[str, PluginSpec] = {
    "gain": PluginSpec("Gain", {"gain_db": (-60.0, 24.0, 0.0)}),
    "highpass": PluginSpec("HighpassFilter", {"cutoff_frequency_hz": (*_FREQ, 50.0)}),
    "lowpass": PluginSpec("LowpassFilter", {"cutoff_frequency_hz": (*_FREQ, 8000.0)}),
    "highshelf": PluginSpec("HighShelfFilter", {"cutoff_frequency_hz": (*_FREQ, 440.0),
                                                "gain_db": (-24.0, 24.0, 0.0), "q": _Q}),
    "lowshelf": PluginSpec("LowShelfFilter", {"cutoff_frequency_hz": (*_FREQ, 440.0),
                                              "gain_db": (-24.0, 24.0, 0.0), "q": _Q}),
    "peak": PluginSpec("PeakFilter", {"cutoff_frequency_hz": (*_FREQ, 440.0),
                                      "gain_db": (-24.0, 24.0, 0.0), "q": _Q}),
    "ladder": PluginSpec("LadderFilter", {"cutoff_hz": (*_FREQ, 200.0),
                                          "resonance": (0.0, 1.0, 0.0),
                                          "drive": (1.0, 10.0, 1.0)},
                         {"mode": ("LPF12", "HPF12", "BPF12", "LPF24", "HPF24", "BPF24")}),
    "compressor": PluginSpec("Compressor", {"threshold_db": (-60.0, 0.0, 0.0),
                                            "ratio": (1.0, 30.0, 1.0),
                                            "attack_ms": (0.01, 500.0, 1.0),
                                            "release_ms": (1.0, 5000.0, 100.0)}),
    "limiter": PluginSpec("Limiter", {"threshold_db": (-60.0, 0.0, -10.0),
                                      "release_ms": (1.0, 5000.0, 100.0)}),
    "noisegate": PluginSpec("NoiseGate", {"threshold_db": (-100.0, 0.0, -100.0),
                                          "ratio": (1.0, 100.0, 10.0),
                                          "attack_ms": (0.01, 500.0, 1.0),
                                          "release_ms": (1.0, 5000.0, 100.0)}),
    "reverb": PluginSpec("Reverb", {"room_size": (0.0, 1.0, 0.5), "damping": (0.0, 1.0, 0.5),
                                    "wet_level": (0.0, 1.0, 0.33), "dry_level": (0.0, 1.0, 0.4),
                                    "width": (0.0, 1.0, 1.0), "freeze_mode": (0.0, 1.0, 0.0)}),
    "delay": PluginSpec("Delay", {"delay_seconds": (0.0, 5.0, 0.5), "feedback": (0.0, 1.0, 0.0),
                                  "mix": (0.0, 1.0, 0.5)}),
    "chorus": PluginSpec("Chorus", {"rate_hz": (0.0, 100.0, 1.0), "depth": (0.0, 1.0, 0.25),
                                    "centre_delay_ms": (1.0, 100.0, 7.0),
                                    "feedback": (-0.95, 0.95, 0.0), "mix": (0.0, 1.0, 0.5)}),
    "phaser": PluginSpec("Phaser", {"rate_hz": (0.0, 100.0, 1.0), "depth": (0.0, 1.0, 0.5),
                                    "centre_frequency_hz": (*_FREQ, 1300.0),
                                    "feedback": (-0.95, 0.95, 0.0), "mix": (0.0, 1.0, 0.5)}),
    "distortion": PluginSpec("Distortion", {"drive_db": (0.0, 60.0, 25.0)}),
    "bitcrush": PluginSpec("Bitcrush", {"bit_depth": (1.0, 32.0, 8.0)}),
    "clipping": PluginSpec("Clipping", {"threshold_db": (-60.0, 0.0, -6.0)}),
    "pitchshift": PluginSpec("PitchShift", {"semitones": (-24.0, 24.0, 0.0)}),
}
EXTERNAL = ("vst3", "au")  # loaded from a path: pedalboard.load_plugin
_ALIASES = {spec.cls.lower(): key for key, spec in REGISTRY.items()}
_RESERVED = ("plugin", "name", "path", "plugin_name")


@dataclass
class Effect:
    """One plugin of a chain: ``name`` (its OSC segment), ``kind`` (registry key, ``vst3`` or
    ``au``, or ``safety``), the plugin object and its OSC-controllable ``ranges``
    ``param -> (minimum, maximum)``."""

    name: str
    kind: str
    plugin: Any
    ranges: dict[str, tuple[float, float]]

    def value(self, param: str) -> float:
        return float(getattr(self.plugin, param))

    def set(self, param: str, value: float) -> None:
        setattr(self.plugin, param, value)

    def latency(self) -> int:
        return int(getattr(self.plugin, "latency", 0)) if self.kind == "safety" else 0


class EffectChain:
    """A ``pre`` or ``post`` chain of :class:`Effect` at ``samplerate`` Hz. One thread calls
    :meth:`process`; :meth:`set_param` may be called from any thread."""

    def __init__(self, chain: str, effects: Sequence[Effect], samplerate: float) -> None:
        if chain not in CHAINS:
            raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
        self.chain = chain
        self.effects = list(effects)
        self.samplerate = float(samplerate)
        self._pending: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()  # guards _pending only; never held while processing

    def __len__(self) -> int:
        return len(self.effects)

    @property
    def latency(self) -> int:
        """Samples of delay the chain declares (the safety limiter's look-ahead)."""
        return sum(effect.latency() for effect in self.effects)

    def describe(self) -> list[FxPlugin]:
        """The chain for the OSC table: one :class:`FxPlugin` per effect, defaults = current
        values."""
        return [FxPlugin(self.chain, e.name, {p: (lo, hi, min(hi, max(lo, e.value(p))))
                                              for p, (lo, hi) in e.ranges.items()})
                for e in self.effects]

    def set_param(self, index: int, param: str, value: float) -> None:
        """Queue ``param`` of effect ``index`` (0-based) := ``value``; applied before the next
        :meth:`process`. A :class:`ValueError` names a bad index, parameter or value."""
        if not 0 <= index < len(self.effects):
            raise ValueError(f"fx.{self.chain}[{index}]: no such effect (the chain has "
                             f"{len(self.effects)})")
        effect = self.effects[index]
        where = f"fx.{self.chain}[{index}] ({effect.name})"
        if param not in effect.ranges:
            raise ValueError(f"{where}: no controllable parameter {param!r} (known: "
                             f"{', '.join(effect.ranges) or 'none'})")
        _check_range(where, param, value, effect.ranges[param])
        with self._lock:
            self._pending[index, param] = float(value)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Run the next block ``(channels, frames)`` float32 through the chain (state kept);
        returns ``(channels, frames)``."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (index, param), value in pending.items():
            self.effects[index].set(param, value)
        for effect in self.effects:
            if effect.kind == "safety":
                audio = effect.plugin(audio)
            else:
                audio = effect.plugin(audio, self.samplerate, reset=False)
        return audio

    def reset(self) -> None:
        """Clear every effect's state (tails, delay lines); parameters stay."""
        for effect in self.effects:
            effect.plugin.reset()


class EffectChains:
    """The ``pre`` and ``post`` chains together, addressed the way
    :class:`~lmdm_bridge.osc.SetFx` addresses them."""

    def __init__(self, pre: EffectChain, post: EffectChain) -> None:
        self.pre, self.post = pre, post

    def __getitem__(self, chain: str) -> EffectChain:
        if chain not in CHAINS:
            raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
        return self.pre if chain == "pre" else self.post

    def describe(self) -> list[FxPlugin]:
        """Both chains for :func:`lmdm_bridge.osc.build_table`."""
        return self.pre.describe() + self.post.describe()

    def set_param(self, chain: str, index: int, param: str, value: float) -> None:
        """Thread-safe; see :meth:`EffectChain.set_param`. Feed it a ``SetFx`` control's
        ``chain, index, param, value``."""
        self[chain].set_param(index, param, value)


def _check_range(where: str, param: str, value: Any, bounds: tuple[float, float]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {param} must be a number, got {value!r}")
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{where}: {param} = {value} is out of range [{low:g}, {high:g}]")


def _ranges(spec: PluginSpec, samplerate: float) -> dict[str, tuple[float, float]]:
    nyquist_cap = _NYQUIST_FRACTION * samplerate
    return {p: (lo, min(hi, nyquist_cap) if p.endswith("_hz") and "rate" not in p else hi)
            for p, (lo, hi, _) in spec.params.items()}


def _builtin(key: str, entry: Mapping[str, Any], where: str, samplerate: float) -> Effect:
    spec = REGISTRY[key]
    ranges = _ranges(spec, samplerate)
    plugin = getattr(pedalboard, spec.cls)()
    values = {p: min(default, ranges[p][1]) for p, (_, _, default) in spec.params.items()}
    for param, value in entry.items():
        if param in _RESERVED:
            continue
        if param in spec.choices:
            if value not in spec.choices[param]:
                raise ValueError(f"{where}: {param} must be one of {spec.choices[param]}, "
                                 f"got {value!r}")
            setattr(plugin, param, getattr(type(plugin).Mode, value))
            continue
        if param not in ranges:
            known = [*ranges, *spec.choices]
            raise ValueError(f"{where}: unknown parameter {param!r}{_did_you_mean(param, known)}"
                             f" (known: {', '.join(known)})")
        _check_range(where, param, value, ranges[param])
        values[param] = float(value)
    for param, value in values.items():
        setattr(plugin, param, value)
    return Effect(str(entry.get("name", key)), key, plugin, ranges)


def _external(kind: str, entry: Mapping[str, Any], where: str) -> Effect:
    if "path" not in entry:
        raise ValueError(f"{where}: a {kind} plugin needs a 'path' to the plugin file")
    path = Path(str(entry["path"])).expanduser()
    if not path.exists():
        raise ValueError(f"{where}: no plugin at {path}")
    try:
        plugin = pedalboard.load_plugin(str(path), plugin_name=entry.get("plugin_name"))
    except Exception as exc:  # pedalboard raises ImportError/RuntimeError/ValueError by case
        raise ValueError(f"{where}: cannot load {path}: {exc}") from exc
    ranges = {}
    for param, info in plugin.parameters.items():
        low, high, _ = info.range
        if info.type is float and low is not None and high is not None and low < high:
            ranges[param] = (float(low), float(high))
    for param, value in entry.items():
        if param in _RESERVED:
            continue
        if param not in plugin.parameters:
            raise ValueError(f"{where}: unknown parameter {param!r}"
                             f"{_did_you_mean(param, list(plugin.parameters))} (the plugin has: "
                             f"{', '.join(plugin.parameters)})")
        if param in ranges:
            _check_range(where, param, value, ranges[param])
        try:
            setattr(plugin, param, value)
        except Exception as exc:  # the plugin's own validation, e.g. an unknown choice
            raise ValueError(f"{where}: {param} = {value!r} rejected: {exc}") from exc
    return Effect(str(entry.get("name", path.stem.lower())), kind, plugin, ranges)


def build_effect(chain: str, index: int, entry: Mapping[str, Any], samplerate: float) -> Effect:
    """One config entry -> :class:`Effect`; ``chain`` and ``index`` only name it in errors."""
    if not isinstance(entry, Mapping) or "plugin" not in entry:
        raise ValueError(f"fx.{chain}[{index}]: need a table with a 'plugin' key, got "
                         f"{entry!r}")
    name = str(entry["plugin"])
    key = name.lower() if name.lower() in (*REGISTRY, *EXTERNAL) else _ALIASES.get(name.lower())
    where = f"fx.{chain}[{index}] ({name})"
    if key is None:
        hint = _did_you_mean(name.lower(), [*REGISTRY, *_ALIASES])
        raise ValueError(f"fx.{chain}[{index}]: unknown plugin {name!r}{hint} (known: "
                         f"{', '.join(REGISTRY)}, or vst3/au with a path)")
    if key in EXTERNAL:
        return _external(key, entry, where)
    return _builtin(key, entry, where, samplerate)


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    """``"; did you mean room_size?"`` for the closest known spellings, each named once (a
    registry key and its pedalboard alias often coincide), or ``""``."""
    close = dict.fromkeys(difflib.get_close_matches(word, known, n=3))
    return f"; did you mean {' or '.join(close)}?" if close else ""


def build_chain(chain: str, entries: Sequence[Mapping[str, Any]], samplerate: float, *,
                safety_limiter: bool = False, ceiling_db: float = -0.3) -> EffectChain:
    """A chain from config ``entries``, running at ``samplerate`` Hz; ``safety_limiter``
    appends a :class:`~lmdm_bridge.audio.limiter.SafetyLimiter` at ``ceiling_db`` dBFS."""
    effects = [build_effect(chain, i, entry, samplerate) for i, entry in enumerate(entries)]
    if safety_limiter:
        low, high = SafetyLimiter.ranges["ceiling_db"]
        _check_range(f"fx.{chain} safety limiter", "ceiling_db", ceiling_db, (low, high))
        effects.append(Effect(SafetyLimiter.name, "safety",
                              SafetyLimiter(samplerate, ceiling_db=ceiling_db),
                              dict(SafetyLimiter.ranges)))
    return EffectChain(chain, effects, samplerate)


def build_chains(pre: Sequence[Mapping[str, Any]] = (), post: Sequence[Mapping[str, Any]] = (),
                 *, samplerate: float, safety_limiter: bool = True,
                 ceiling_db: float = -0.3) -> EffectChains:
    """Both chains from the config, at the device rate ``samplerate`` (Hz). The ``post`` chain
    ends in the safety limiter unless ``safety_limiter`` is False."""
    return EffectChains(build_chain("pre", pre, samplerate),
                        build_chain("post", post, samplerate, safety_limiter=safety_limiter,
                                    ceiling_db=ceiling_db))
