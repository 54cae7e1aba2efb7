"""The OSC address table: the single source of truth for the daemon's control surface.

Each :class:`Row` is data — address, type tags, how its arguments are read (``kind``), range,
default, unit, one-line help, when it takes effect, and its ``target`` (a
:data:`~lmdm_bridge.osc.controls.Control` class name, or a query the server answers itself). The
dispatcher (:mod:`lmdm_bridge.osc.server`), the argument validation below, ``docs/osc.md``
(:mod:`lmdm_bridge.osc.docs`) and, later, OSCQuery and the template checks all read the same rows.

Argument conventions shared by every row:

* numeric arguments may arrive as ``i``, ``h``, ``f`` or ``d`` (Pure Data sends every number as
  ``f``); an integer control takes a float only when it is a whole number;
* text arguments may arrive as one string or as several (Pd and Max send each word of a message
  as its own argument), and numbers among them are words too; they are joined with spaces;
* triggers (play, stop, ...) take no argument, or one number or boolean where 0/false is
  ignored, so a push button that sends 1 on press and 0 on release triggers once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmdm_bridge.osc import controls

PREFIX = "/lmdm"
IMMEDIATELY, NEXT_BLOCK, REPLY = "immediately", "next block", "reply"
KINDS = ("trigger", "int", "float", "text", "blend", "name")
QUERIES = ("ping", "status", "subscribe", "unsubscribe", "models")  # answered by the server
CHAINS = ("pre", "post")

# Characters an address segment or a model name may use: OSC reserves ' #*,/?[]{}' and a
# model name must never be able to leave the models folder.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_. +-]*")


class ArgError(ValueError):
    """Arguments that do not fit a row; the message is the ``/lmdm/error`` reason."""


@dataclass(frozen=True)
class FxTarget:
    """Where an fx row points: plugin ``index`` in ``chain``, under the address name
    ``plugin``."""

    chain: str
    index: int
    plugin: str
    param: str


@dataclass(frozen=True)
class Row:
    address: str
    types: str  # as documented: "" none, "i", "f", "s…" one or more, "(s… f)…" pairs
    kind: str  # one of KINDS: how the arguments are read
    target: str  # a controls.CONTROL_TYPES name, or one of QUERIES
    effect: str  # IMMEDIATELY, NEXT_BLOCK or REPLY
    help: str
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    unit: str = ""
    fx: FxTarget | None = None


@dataclass(frozen=True)
class FxPlugin:
    """One plugin of an effect chain as the audio side describes it: ``chain`` (``pre`` or
    ``post``), ``name`` (address segment, e.g. ``reverb``), ``params``: parameter name ->
    ``(minimum, maximum, default)`` in the parameter's unit. Plain tuples
    ``(chain, name, {param: (min, max, default)})`` are accepted wherever this is."""

    chain: str
    name: str
    params: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSettings:
    """The values the fixed rows take from the bundle and the daemon's configuration; the
    defaults are SAO Small's (192 context frames, 8 steps, no guidance)."""

    prompt: str = ""
    cfg: float = 1.0
    steps: int = 8
    max_steps: int = 64  # more would make one block slower than real time on any machine
    seed: int = 0
    context_frames: int = 192
    max_chars: int = 500  # per prompt text; the tokenizer truncates far earlier
    max_blend: int = 8  # prompts in a blend: each costs a text-encoder run

    @classmethod
    def from_manifest(cls, manifest: Any, **overrides: Any) -> TableSettings:
        """Settings from a bundle's :class:`~lmdm_bridge.manifest.Manifest`."""
        values = dict(cfg=manifest.sampler.cfg_scale, steps=manifest.sampler.steps,
                      context_frames=manifest.geometry.context_frames)
        return cls(**{**values, **overrides})


def _fixed_rows(s: TableSettings) -> list[Row]:
    p = PREFIX
    return [
        Row(f"{p}/play", "", "trigger", "Play", IMMEDIATELY, "start generating and playing"),
        Row(f"{p}/stop", "", "trigger", "Stop", IMMEDIATELY,
            "fade out and stop; the stream is kept for the next play"),
        Row(f"{p}/reset", "", "trigger", "Reset", NEXT_BLOCK,
            "start over from the first block; prompt and settings stay"),
        Row(f"{p}/prompt", "s…", "text", "SetPrompt", NEXT_BLOCK,
            "the text prompt; several string arguments are joined with spaces",
            default=s.prompt or None),
        Row(f"{p}/prompts", "(s… f)…", "blend", "SetPrompt", NEXT_BLOCK,
            "a weighted blend: text then weight, repeated (weights > 0, normalised to sum 1)",
            minimum=0.0, maximum=100.0, unit="weight"),
        Row(f"{p}/cfg", "f", "float", "SetCfg", NEXT_BLOCK,
            "classifier-free guidance scale; 1 turns guidance off (half the compute)",
            minimum=0.0, maximum=20.0, default=s.cfg),
        Row(f"{p}/steps", "i", "int", "SetSteps", NEXT_BLOCK,
            "sampler steps per block; fewer is faster", minimum=1, maximum=s.max_steps,
            default=s.steps),
        Row(f"{p}/seed", "i", "int", "Reseed", NEXT_BLOCK, "reseed the noise generator",
            minimum=0, maximum=2**31 - 1, default=s.seed),
        Row(f"{p}/eject", "i", "int", "Eject", NEXT_BLOCK,
            "forget the oldest context frames (weakens the pull of the past)",
            minimum=0, maximum=s.context_frames, default=0, unit="latent frames"),
        Row(f"{p}/gain", "f", "float", "SetGain", IMMEDIATELY, "output gain",
            minimum=-60.0, maximum=12.0, default=0.0, unit="dB"),
        Row(f"{p}/model", "s…", "name", "SwitchModel", NEXT_BLOCK,
            "switch to the bundle of this name in the models folder (a name, never a path)"),
        Row(f"{p}/models", "", "trigger", "models", REPLY,
            "reply /lmdm/models with the bundle names in the models folder"),
        Row(f"{p}/ping", "", "trigger", "ping", REPLY, "reply /lmdm/pong"),
        Row(f"{p}/status", "", "trigger", "status", REPLY,
            "reply /lmdm/status: key, value, key, value, ... (keys below)"),
        Row(f"{p}/subscribe", "i", "int", "subscribe", REPLY,
            "send /lmdm/status every second and /lmdm/block per block to this UDP port of "
            "the sender's host", minimum=1, maximum=65535, unit="port"),
        Row(f"{p}/unsubscribe", "i", "int", "unsubscribe", REPLY,
            "stop sending to this port of the sender's host", minimum=1, maximum=65535,
            unit="port"),
    ]


def fx_plugins(chains: Iterable[FxPlugin | tuple]) -> list[FxPlugin]:
    """The chain description as :class:`FxPlugin` objects, checked (names, ranges)."""
    plugins = []
    for item in chains:
        plugin = item if isinstance(item, FxPlugin) else FxPlugin(*item)
        where = f"effect {plugin.chain}/{plugin.name}"
        if plugin.chain not in CHAINS:
            raise ValueError(f"{where}: the chain must be one of {CHAINS}")
        for name in (plugin.name, *plugin.params):
            if not isinstance(name, str) or not _SEGMENT.fullmatch(name):
                raise ValueError(f"{where}: {name!r} cannot be an OSC address segment "
                                 "(use letters, digits, '_', '.', '-')")
        for param, bounds in plugin.params.items():
            low, high, default = (float(v) for v in bounds)
            if not (math.isfinite(low) and math.isfinite(high) and low < high
                    and low <= default <= high):
                raise ValueError(f"{where}/{param}: need minimum < maximum and the default "
                                 f"between them, got {tuple(bounds)}")
        plugins.append(plugin)
    return plugins


def _fx_rows(chains: Iterable[FxPlugin | tuple]) -> list[Row]:
    rows, seen, index = [], {}, dict.fromkeys(CHAINS, 0)
    for plugin in fx_plugins(chains):
        # Two plugins of one name in a chain (two gain stages) get "-2", "-3" in the address;
        # SetFx carries the index, so the audio side never has to parse names.
        count = seen[plugin.chain, plugin.name] = seen.get((plugin.chain, plugin.name), 0) + 1
        name = plugin.name if count == 1 else f"{plugin.name}-{count}"
        for param, (low, high, default) in plugin.params.items():
            rows.append(Row(
                f"{PREFIX}/fx/{plugin.chain}/{name}/{param}", "f", "float", "SetFx",
                IMMEDIATELY, f"{param} of {plugin.name} in the {plugin.chain} chain",
                minimum=float(low), maximum=float(high), default=float(default),
                fx=FxTarget(plugin.chain, index[plugin.chain], name, param)))
        index[plugin.chain] += 1
    return rows


class AddressTable:
    """The rows by address, and the settings their validation uses. ``immediate(control)``
    says whether a control may be applied before the next block boundary."""

    def __init__(self, rows: Iterable[Row], settings: TableSettings = TableSettings()) -> None:
        self.rows = tuple(rows)
        self.settings = settings
        self._by_address: dict[str, Row] = {}
        for row in self.rows:
            if row.address in self._by_address:
                raise ValueError(f"two rows for {row.address} (rename one effect plugin)")
            if row.kind not in KINDS or row.target not in (*controls.CONTROL_TYPES, *QUERIES):
                raise ValueError(f"{row.address}: unknown kind {row.kind!r} or target "
                                 f"{row.target!r}")
            self._by_address[row.address] = row
        self._immediate = {controls.CONTROL_TYPES[row.target] for row in self.rows
                           if row.effect == IMMEDIATELY and row.target in controls.CONTROL_TYPES}

    def get(self, address: str) -> Row | None:
        return self._by_address.get(address)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def immediate(self, control: controls.Control) -> bool:
        return type(control) in self._immediate


def build_table(chains: Iterable[FxPlugin | tuple] = (),
                settings: TableSettings = TableSettings()) -> AddressTable:
    """The fixed rows plus one ``/lmdm/fx/<chain>/<plugin>/<param>`` row per effect parameter
    of ``chains`` (see :class:`FxPlugin`)."""
    return AddressTable(_fixed_rows(settings) + _fx_rows(chains), settings)


# What the daemon sends. /lmdm/status's keys, their OSC types and meaning (units included).
STATUS_KEYS: tuple[tuple[str, str, str], ...] = (
    ("state", "s", "stopped, playing, loading or error"),
    ("prompt", "s", "the current prompt; a blend as 'text weight | text weight'"),
    ("rtf", "f", "real-time factor of generation: compute time / audio time (< 1 keeps up)"),
    ("blocks", "i", "blocks generated since start"),
    ("ahead", "i", "blocks generated but not yet played"),
    ("underruns", "i", "times playback found no generated audio ready (faded out and in)"),
    ("xruns", "i", "audio device over- and underflows reported by the driver"),
    ("latency", "f", "input-to-output delay in ms, for the DAW's delay compensation"),
    ("model", "s", "name of the loaded bundle"),
    ("error", "s", "the last error, '' if none"),
    ("received", "i", "OSC datagrams received"),
    ("applied", "i", "OSC messages accepted (queued or answered)"),
    ("errors", "i", "OSC messages answered with /lmdm/error (sent or rate-limited)"),
    ("dropped", "i", "datagrams that were not OSC (truncated, garbage)"),
    ("rejected", "i", "datagrams from senders outside --allow"),
)

REPLIES: tuple[tuple[str, str, str], ...] = (
    (f"{PREFIX}/pong", "", "answer to /lmdm/ping"),
    (f"{PREFIX}/status", "(s x)…", "key and value pairs, the status keys in order"),
    (f"{PREFIX}/block", "i f", "to subscribers, per generated block: block number, its rtf"),
    (f"{PREFIX}/models", "s…", "answer to /lmdm/models: one bundle name per argument"),
    (f"{PREFIX}/error", "s s", "the address that failed ('' for a malformed datagram), why"),
)


# -- reading arguments -----------------------------------------------------------------------

def _osc_type(value: Any) -> str:
    return {bool: "T/F", int: "i", float: "f", str: "s", bytes: "b"}.get(type(value), "N")


def format_number(value: float) -> str:
    """``2147483647`` for a whole number (not ``2.14748e+09``), ``%g`` otherwise."""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"


def _number(row: Row, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgError(f"takes a number, got {_osc_type(value)}")
    if not math.isfinite(value):
        raise ArgError(f"takes a finite number, got {value}")
    if row.kind == "int" and value != int(value):
        raise ArgError(f"takes a whole number, got {format_number(value)}")
    if not row.minimum <= value <= row.maximum:
        raise ArgError(f"takes {format_number(row.minimum)}..{format_number(row.maximum)}, "
                       f"got {format_number(value)}")
    return int(value) if row.kind == "int" else float(value)


def _word(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:g}" if isinstance(value, float) else str(value)  # Pd's 120 -> "120"
    raise ArgError(f"takes text, got {_osc_type(value)}")


def _text(words: list[str], settings: TableSettings) -> str:
    text = " ".join(w.strip() for w in words if w.strip())
    if not text:
        raise ArgError("takes a non-empty text")
    if len(text) > settings.max_chars:
        raise ArgError(f"takes at most {settings.max_chars} characters, got {len(text)}")
    return text


def check_model_name(name: str) -> str:
    """``name`` if it can only mean a folder directly inside the models folder."""
    if ".." in name or not _MODEL_NAME.fullmatch(name) or len(name) > 100:
        raise ArgError(f"{name!r} is not a model name: give the bundle's folder name "
                       "(letters, digits, '_', '-', '+', '.', spaces; no paths, no '..')")
    return name


def read_args(row: Row, args: tuple, settings: TableSettings = TableSettings()) -> Any:
    """The validated value of a message to ``row``: None for a trigger that should not fire,
    True for one that should, a number, a text, or ``((text, weight), ...)``. Raises ArgError."""
    if row.kind == "trigger":
        if len(args) > 1:
            raise ArgError(f"takes no argument, got {len(args)}")
        if not args:
            return True
        if not isinstance(args[0], (bool, int, float)):
            raise ArgError(f"takes no argument (or a button's 0/1), got {_osc_type(args[0])}")
        return True if args[0] else None
    if row.kind in ("int", "float"):
        if len(args) != 1:
            raise ArgError(f"takes one number, got {len(args)} arguments")
        return _number(row, args[0])
    if not args:
        raise ArgError("takes text, got no argument")
    if row.kind == "text":
        return _text([_word(a) for a in args], settings)
    if row.kind == "name":
        return check_model_name(_text([_word(a) for a in args], settings))
    # blend: words up to a number make one text, the number is its weight
    pairs, words = [], []
    for value in args:
        if isinstance(value, str):
            words.append(value)
            continue
        weight = _number(row, value)
        if not words:
            raise ArgError(f"weight {format_number(weight)} has no text before it (send "
                           "numbers inside a text as strings)")
        if weight <= 0:
            raise ArgError(f"weights must be > 0, got {format_number(weight)}")
        pairs.append((_text(words, settings), weight))
        words = []
    if words:
        raise ArgError(f"the text {' '.join(words)!r} has no weight after it")
    if len(pairs) > settings.max_blend:
        raise ArgError(f"blends at most {settings.max_blend} prompts, got {len(pairs)}")
    return tuple(pairs)


def to_control(row: Row, value: Any) -> controls.Control:
    """The command a validated ``value`` for a control row queues (the server builds
    SwitchModel itself: only it knows the models folder)."""
    cls = controls.CONTROL_TYPES[row.target]
    if cls is controls.SwitchModel:
        raise ValueError("SwitchModel needs the models folder: the server builds it")
    if row.kind == "trigger":
        return cls()
    if row.fx is not None:
        return controls.SetFx(row.fx.chain, row.fx.index, row.fx.plugin, row.fx.param, value)
    return cls(value)
