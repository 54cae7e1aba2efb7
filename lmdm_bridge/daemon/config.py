"""The daemon's configuration: a TOML file for everything on the command line plus the effect
chains; command-line flags override the file. Unknown keys and wrong types are rejected with the
key's name, before anything starts.

Example (``lmdm.toml``)::

    bundle = "bundles/default"
    prompt = "string ensemble chorale in G major"
    autoplay = true
    steps = 8
    cfg = 1.0

    [osc]
    host = "127.0.0.1"
    port = 9000
    reply_port = 9001
    allow = ["127.0.0.0/8", "192.168.1.0/24"]

    [audio]
    backend = "device"          # device | null | file
    input = "BlackHole 2ch"     # name substring or index
    output = "BlackHole 16ch"
    in_channels = [1, 2]
    out_channels = [3, 4]
    samplerate = 48000
    blocksize = 512
    record = "take.wav"

    [[fx.pre]]
    plugin = "highpass"
    cutoff_frequency_hz = 80

    [[fx.post]]
    plugin = "reverb"
    room_size = 0.4
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration problem; the message names the key (or flag) and what is expected."""


@dataclass(frozen=True)
class OscSettings:
    host: str = "127.0.0.1"
    port: int = 9000
    reply_port: int = 9001
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class AudioSettings:
    backend: str = "device"
    input: str | int | None = None  # device name substring or index
    output: str | int | None = None
    in_channels: tuple[int, ...] = (1, 2)
    out_channels: tuple[int, ...] = (1, 2)
    samplerate: int | None = None  # None: the output device's default rate
    blocksize: int = 512
    record: str | None = None
    record_input: str | None = None
    input_file: str | None = None  # the file back-end's input


@dataclass(frozen=True)
class FxSettings:
    pre: tuple[dict, ...] = ()
    post: tuple[dict, ...] = ()
    limiter: bool = True  # a limiter at the end of `post` so nothing clips


@dataclass(frozen=True)
class DaemonConfig:
    bundle: str | None = None
    models_dir: str | None = None
    prompt: str = "string ensemble chorale"
    autoplay: bool = False
    steps: int | None = None
    cfg: float | None = None
    seed: int = 0
    method: str | None = None
    ahead: int = 2  # blocks the generation worker keeps ready ahead of playback
    # onnxruntime's intra-op threads per graph (None: half the cores, since the decoder runs
    # beside the generator). On a machine busy with other work, 1 avoids spinning threads
    # fighting for the cores (docs/performance.md).
    threads: int | None = None
    osc: OscSettings = field(default_factory=OscSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    fx: FxSettings = field(default_factory=FxSettings)

    def __post_init__(self) -> None:
        if self.audio.backend not in ("device", "null", "file"):
            raise ConfigError(f"audio.backend {self.audio.backend!r} must be device, null or file")
        if not 64 <= self.audio.blocksize <= 4096:
            raise ConfigError(f"audio.blocksize {self.audio.blocksize} must be 64..4096 frames")
        if self.audio.samplerate is not None and self.audio.samplerate not in (
                22050, 32000, 44100, 48000, 88200, 96000):
            raise ConfigError(f"audio.samplerate {self.audio.samplerate} is not a common device "
                              "rate (44100, 48000, 88200, 96000)")
        if not 1 <= self.ahead <= 4:
            raise ConfigError(f"ahead {self.ahead} must be 1..4 blocks")
        if self.threads is not None and not 1 <= self.threads <= 256:
            raise ConfigError(f"threads {self.threads} must be 1..256 (or left out: "
                              "onnxruntime's default)")
        for name, channels in (("in_channels", self.audio.in_channels),
                               ("out_channels", self.audio.out_channels)):
            if not channels or any(c < 1 for c in channels):
                raise ConfigError(f"audio.{name} must list channel numbers from 1, got {channels}")


_SECTIONS = {"osc": OscSettings, "audio": AudioSettings, "fx": FxSettings}


def _typed(key: str, value: Any, annotation: str) -> Any:
    """Check ``value`` against a dataclass field's annotation (written as a string)."""
    optional = annotation.endswith("| None")
    base = annotation.replace(" | None", "")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} may not be empty")
    if base.startswith("tuple["):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__}")
        item = base[len("tuple["):-len(", ...]")]
        return tuple(_typed(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    checks = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict}
    if " | " in base:
        for option in base.split(" | "):
            if isinstance(value, checks[option]) and not isinstance(value, bool):
                return value
        raise ConfigError(f"{key} must be {base.replace(' | ', ' or ')}, got "
                          f"{type(value).__name__} {value!r}")
    expected = checks[base]
    if not isinstance(value, expected) or (base in ("int", "float") and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {base}, got {type(value).__name__} {value!r}")
    return float(value) if base == "float" else value


def _section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                          f"known in [{name}]: {', '.join(sorted(known))}")
    return cls(**{k: _typed(f"{name}.{k}", v, str(known[k].type)) for k, v in raw.items()})


def config_from_dict(raw: dict) -> DaemonConfig:
    known = {f.name: f for f in fields(DaemonConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    values = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            values[key] = _section(key, _SECTIONS[key], value)
        else:
            values[key] = _typed(key, value, str(known[key].type))
    return DaemonConfig(**values)


def load_config(path: str | Path) -> DaemonConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def with_overrides(config: DaemonConfig, **flags: Any) -> DaemonConfig:
    """Apply command-line values that were given (None = not given). Keys are field names,
    ``section__field`` for sections (e.g. ``osc__port``)."""
    top, sections = {}, {}
    for key, value in flags.items():
        if value is None:
            continue
        if "__" in key:
            section, name = key.split("__", 1)
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, values in sections.items():
        top[section] = replace(getattr(config, section), **values)
    return replace(config, **top)
