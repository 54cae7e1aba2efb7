"""Audio devices: listing, loopback detection, lookup by name or index, set-up hints.

sounddevice (PortAudio) is imported only when a device is actually needed, so the null and file
back-ends and everything else in :mod:`lmdm_bridge.audio` work on a machine without PortAudio.

The classic set-up routes audio between a DAW and the daemon through virtual "loopback"
devices: the DAW sends a track to one, the daemon reads it, and plays its output into another
that the DAW records. :func:`format_devices` marks devices that look like such loopbacks and
ends with the hint for the user's platform.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from types import ModuleType


class AudioError(RuntimeError):
    """A user-facing audio set-up problem (missing device or library, unsupported rate or
    channel count); the message names the device and, where possible, what would work."""


# Name fragments of virtual/loopback devices and of the Linux sound servers that route
# between applications; matched case-insensitively against the device and host API names.
LOOPBACK_PATTERNS = ("blackhole", "loopback", "vb-cable", "vb-audio", "cable input",
                     "cable output", "voicemeeter", "soundflower", "jack", "pipewire",
                     "monitor of")

HINTS = {
    "darwin": (
        "macOS: install BlackHole (brew install blackhole-16ch: eight stereo pairs).\n"
        "  DAW track output -> 'BlackHole 16ch' 1-2 -> lmdm-bridge serve --input BlackHole "
        "--in-channels 1,2\n"
        "  lmdm-bridge serve --output BlackHole --out-channels 3,4 -> DAW track input "
        "'BlackHole 16ch' 3-4 (record-armed)"),
    "win32": (
        "Windows: install VB-Cable, and VB-Cable A+B for a second pair (vb-audio.com).\n"
        "  DAW track output -> 'CABLE Input' -> lmdm-bridge serve --input 'CABLE Output'\n"
        "  lmdm-bridge serve --output 'CABLE-A Input' -> DAW track input 'CABLE-A Output' "
        "(record-armed)"),
    "linux": (
        "Linux: run JACK (jackd, or PipeWire with pipewire-jack) and use its device:\n"
        "  lmdm-bridge serve --input system --output system, then connect ports in qjackctl, "
        "qpwgraph or Helvum:\n"
        "  DAW out -> PortAudio:in_0/1;  PortAudio:out_0/1 -> DAW in (PipeWire: the "
        "'pipewire' device works too)"),
}


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device: ``index``, ``name``, ``hostapi`` name, maximum ``inputs`` and
    ``outputs`` channels, ``default_samplerate`` (Hz), and whether it looks like a loopback."""

    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int
    default_samplerate: float

    @property
    def loopback(self) -> bool:
        return is_loopback(self.name, self.hostapi)


def is_loopback(name: str, hostapi: str = "") -> bool:
    """Whether a device of that name (on that host API) routes between applications."""
    text = f"{name} {hostapi}".lower()
    return any(pattern in text for pattern in LOOPBACK_PATTERNS)


def sounddevice() -> ModuleType:
    """The sounddevice module, or an :class:`AudioError` saying what to install."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise AudioError(f"PortAudio is not installed ({exc}); on Debian/Ubuntu: apt-get "
                         "install libportaudio2, on macOS: brew install portaudio") from exc
    return sd


def rescan() -> None:
    """Make PortAudio enumerate devices again (it does so only once, at initialisation), e.g.
    after a JACK server started. Every open stream must be closed first."""
    sd = sounddevice()
    sd._terminate()  # sounddevice has no public re-scan; these two are what it uses itself
    sd._initialize()


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio knows, in its index order."""
    sd = sounddevice()
    hostapis = sd.query_hostapis()
    return [DeviceInfo(index=i, name=d["name"], hostapi=hostapis[d["hostapi"]]["name"],
                       inputs=d["max_input_channels"], outputs=d["max_output_channels"],
                       default_samplerate=float(d["default_samplerate"]))
            for i, d in enumerate(sd.query_devices())]


def setup_hint(platform: str | None = None) -> str:
    """The loopback set-up in a few lines for ``platform`` (``sys.platform`` by default)."""
    platform = platform or sys.platform
    key = "darwin" if platform == "darwin" else "win32" if platform.startswith("win") \
        else "linux"
    return HINTS[key]


def format_devices(devices: list[DeviceInfo] | None = None, platform: str | None = None) -> str:
    """A table of the devices (``*`` marks loopback-like ones) and the platform's hint."""
    devices = list_devices() if devices is None else devices
    lines = []
    if not devices:
        lines.append("no audio devices found (on Linux, start JACK or PipeWire first)")
    else:
        width = max(len(d.name) for d in devices)
        lines.append(f"{'':2}{'#':>3}  {'name':<{width}}  {'host API':<26} {'in':>3} {'out':>3}"
                     f"  rate")
        for d in devices:
            mark = "*" if d.loopback else " "
            lines.append(f"{mark:2}{d.index:>3}  {d.name:<{width}}  {d.hostapi:<26} "
                         f"{d.inputs:>3} {d.outputs:>3}  {d.default_samplerate:.0f}")
        lines.append("* loopback-like: routes audio between applications")
    lines += ["", setup_hint(platform)]
    return "\n".join(lines)


def _describe(d: DeviceInfo) -> str:
    return f"#{d.index} '{d.name}' ({d.hostapi}, {d.inputs} in, {d.outputs} out)"


def find_device(query: int | str, direction: str, hostapi: str | None = None,
                devices: list[DeviceInfo] | None = None) -> DeviceInfo:
    """The device for ``query``: an index, or a case-insensitive name substring (an exact
    name wins over substrings). ``direction`` is ``"input"`` or ``"output"``: only devices with
    such channels qualify. ``hostapi`` (substring, e.g. ``"JACK"``) narrows the search;
    without it, a name found on several host APIs prefers PortAudio's default one. Raises
    :class:`AudioError` listing close matches when nothing or more than one device fits."""
    if direction not in ("input", "output"):
        raise ValueError(f"direction must be 'input' or 'output', got {direction!r}")
    devices = list_devices() if devices is None else devices
    channels = (lambda d: d.inputs) if direction == "input" else (lambda d: d.outputs)
    usable = [d for d in devices if channels(d) > 0
              and (hostapi is None or hostapi.lower() in d.hostapi.lower())]
    where = f" on host API '{hostapi}'" if hostapi else ""
    if isinstance(query, int) or (isinstance(query, str) and re.fullmatch(r"\d+", query)):
        index = int(query)
        for d in usable:
            if d.index == index:
                return d
        raise AudioError(f"no {direction} device #{index}{where}; {direction} devices: "
                         + (", ".join(_describe(d) for d in usable) or "none"))
    text = str(query).lower()
    found = [d for d in usable if d.name.lower() == text] or \
        [d for d in usable if text in d.name.lower()]
    if len({d.hostapi for d in found}) > 1 and hostapi is None:
        default = _default_hostapi()
        found = [d for d in found if d.hostapi == default] or found
    if len(found) == 1:
        return found[0]
    if found:
        raise AudioError(f"'{query}' matches several {direction} devices: "
                         + ", ".join(_describe(d) for d in found)
                         + "; give a longer name, the index or the host API")
    close = difflib.get_close_matches(text, [d.name.lower() for d in usable], n=3, cutoff=0.4)
    hint = (" Close matches: " + ", ".join(_describe(d) for d in usable
                                           if d.name.lower() in close) + ".") if close else ""
    listing = ", ".join(_describe(d) for d in usable) or "none"
    raise AudioError(f"no {direction} device matches '{query}'{where}.{hint} Available "
                     f"{direction} devices: {listing}. (lmdm-bridge devices lists them all.)")


def _default_hostapi() -> str | None:
    try:
        sd = sounddevice()
        return sd.query_hostapis(sd.default.hostapi)["name"]
    except Exception:  # no default host API on this system: no preference
        return None
