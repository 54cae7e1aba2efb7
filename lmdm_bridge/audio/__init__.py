"""Audio I/O for the daemon: back-ends, lock-free rings, resampling at the edges, effect
chains, recording, device listing.

Three roles, three owners:

* the back-end's callback (:mod:`.port`, :mod:`.backends`) only copies between the device and
  two rings (output ring -> device, device -> capture ring), fading out instead of clicking
  when the output runs dry;
* the daemon's generation worker pushes generated blocks through an :class:`OutputFeed`
  (resample to the device rate, ``post`` chain with the safety limiter, recording) into the
  output ring, and reads the input through an :class:`InputTap`;
* control threads (OSC) change effect parameters with :meth:`EffectChains.set_param` and the
  output gain with :meth:`AudioPort.set_gain_db`; nothing they call waits for the audio.

A typical set-up::

    backend = create_backend("device", samplerate=48000, blocksize=256, input="BlackHole",
                             output="BlackHole", in_channels="1,2", out_channels="3,4")
    chains = build_chains(pre_config, post_config, samplerate=backend.samplerate)
    feed = OutputFeed(backend.port, model_rate, model_channels, chain=chains.post)
    backend.start()
    feed.push(block)             # (model channels, frames) at the model rate; waits for room
    backend.port.stats()         # underruns, xruns, queued frames
"""

from lmdm_bridge.audio.backends import (
    KINDS,
    Backend,
    DeviceBackend,
    FileBackend,
    NullBackend,
    create_backend,
    parse_channels,
    read_input_file,
)
from lmdm_bridge.audio.devices import (
    AudioError,
    DeviceInfo,
    find_device,
    format_devices,
    is_loopback,
    list_devices,
    setup_hint,
)
from lmdm_bridge.audio.effects import (
    REGISTRY,
    Effect,
    EffectChain,
    EffectChains,
    build_chain,
    build_chains,
)
from lmdm_bridge.audio.feed import InputTap, OutputFeed, match_channels
from lmdm_bridge.audio.limiter import SafetyLimiter
from lmdm_bridge.audio.port import AudioPort
from lmdm_bridge.audio.recorder import CaptureRecorder, WavRecorder
from lmdm_bridge.audio.resample import StreamResampler
from lmdm_bridge.audio.ring import CaptureReader, CaptureRing, RingBuffer

__all__ = [
    "KINDS", "REGISTRY", "AudioError", "AudioPort", "Backend", "CaptureReader",
    "CaptureRecorder", "CaptureRing", "DeviceBackend", "DeviceInfo", "Effect", "EffectChain",
    "EffectChains", "FileBackend", "InputTap", "NullBackend", "OutputFeed", "RingBuffer",
    "SafetyLimiter", "StreamResampler", "WavRecorder", "build_chain", "build_chains",
    "create_backend", "find_device", "format_devices", "is_loopback", "list_devices",
    "match_channels", "parse_channels", "read_input_file", "setup_hint",
]
