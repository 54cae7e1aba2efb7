"""``lmdm-bridge run``: the main job (``make run``): the daemon on the embedded default model.

Until a trained default model ships inside the package, it makes itself a small random-weight
bundle (the ``tiny`` preset; it sounds like noise, not music) in the user cache folder, says so,
and serves that. It plays through the default sound device, or through the clocked null device
on a machine without one, starts playing at once and listens for OSC on 127.0.0.1:9000.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NAME = "run"
HELP = "start the daemon on the embedded default model, playing at once (make run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="string ensemble chorale",
                        help="the prompt to start with (change it over OSC: /lmdm/prompt)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this much audio (default: until Ctrl-C)")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmdm-bridge"


def stand_in_bundle() -> Path:
    """A random-weight ``tiny`` bundle, exported once into the cache folder."""
    from lmdm_bridge.cli import require_export_extra
    from lmdm_bridge.manifest import BundleError, read_manifest

    path = _cache_dir() / "tiny-random-init"
    try:
        read_manifest(path)
        return path
    except BundleError:
        pass
    tool = require_export_extra("lmdm_export.bundle.tool")
    print(f"lmdm-bridge run: exporting a tiny random-weight stand-in bundle to {path}",
          file=sys.stderr, flush=True)
    tool.export_from_args(argparse.Namespace(
        checkpoint=None, preset="tiny", seed=0, text_encoder=[], model_config=None,
        dtype="fp32", sampler="pingpong", steps=8, cfg=1.0, no_source_weights=True, out=path,
        force=True))
    return path


def _has_output_device() -> bool:
    try:
        import sounddevice

        return any(d["max_output_channels"] > 0 for d in sounddevice.query_devices())
    except (OSError, ImportError):  # no PortAudio library, or no devices at all
        return False


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.cli import CommandError
    from lmdm_bridge.commands.serve import serve
    from lmdm_bridge.daemon.config import DaemonConfig, with_overrides
    from lmdm_bridge.default_model import default_bundle
    from lmdm_bridge.manifest import BundleError

    try:
        bundle = default_bundle()
    except BundleError:
        print("lmdm-bridge run: no trained default model ships with this version yet; playing "
              "a random-weight stand-in (noise, not music) so the daemon, OSC and audio can be "
              "tried out. Use `lmdm-bridge serve --bundle DIR` for a real model.",
              file=sys.stderr, flush=True)
        bundle = stand_in_bundle()
    backend = "device" if _has_output_device() else "null"
    if backend == "null":
        print("lmdm-bridge run: no audio output device found; using the clocked null device "
              "(see `lmdm-bridge devices`)", file=sys.stderr, flush=True)
    config = with_overrides(DaemonConfig(), prompt=args.prompt, autoplay=True,
                            audio__backend=backend)
    try:
        return serve(config, bundle, args.duration)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
