"""``lmdm-bridge serve``: the daemon a producer runs (audio in and out, OSC control)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

NAME = "serve"
HELP = "run the daemon: generate live, play through an audio device, listen for OSC"


def _channels(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,2") from None
    return channels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag defaults to None so that only the flags given override the config file."""
    parser.add_argument("--bundle", type=Path, metavar="DIR",
                        help="bundle folder (default: the config's, else the embedded default)")
    parser.add_argument("--config", type=Path, metavar="FILE.toml",
                        help="settings and effect chains (docs/daemon.md); flags override it")
    parser.add_argument("--prompt", help="the prompt to start with")
    parser.add_argument("--autoplay", action="store_true", default=None,
                        help="start playing at once (otherwise on /lmdm/play)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, metavar="N",
                        help="onnxruntime threads (default: one per core; 1 on a busy machine)")
    osc = parser.add_argument_group("OSC")
    osc.add_argument("--osc-host", help="address to listen on (0.0.0.0: the network)")
    osc.add_argument("--osc-port", type=int, help="UDP port for OSC (default 9000)")
    osc.add_argument("--reply-port", type=int, help="port on the sender's host for replies (9001)")
    osc.add_argument("--allow", nargs="+", metavar="CIDR",
                     help="networks allowed to send (default: loopback only)")
    osc.add_argument("--models-dir", help="folder of bundles /lmdm/model NAME may pick from")
    audio = parser.add_argument_group("audio")
    audio.add_argument("--audio", choices=("device", "null", "file"),
                       help="back-end: a sound device, a clocked null device, or a file")
    audio.add_argument("--input", help="input device: name substring or index")
    audio.add_argument("--output", help="output device: name substring or index")
    audio.add_argument("--in-channels", type=_channels, metavar="A,B",
                       help="input channels, from 1")
    audio.add_argument("--out-channels", type=_channels, metavar="A,B",
                       help="output channels, from 1")
    audio.add_argument("--samplerate", type=int, metavar="HZ")
    audio.add_argument("--blocksize", type=int, metavar="FRAMES")
    audio.add_argument("--record", metavar="FILE.wav", help="record the output")
    audio.add_argument("--record-input", metavar="FILE.wav", help="record the input as well")
    audio.add_argument("--input-file", metavar="FILE",
                       help="the file back-end's input (default: silence)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this much generated audio (renders, tests)")


def _index(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def config_from_args(args: argparse.Namespace):
    from lmdm_bridge.daemon.config import DaemonConfig, load_config, with_overrides

    config = load_config(args.config) if args.config else DaemonConfig()
    return with_overrides(
        config, bundle=str(args.bundle) if args.bundle else None, prompt=args.prompt,
        autoplay=args.autoplay, steps=args.steps, cfg=args.cfg, seed=args.seed,
        threads=args.threads,
        models_dir=args.models_dir, osc__host=args.osc_host, osc__port=args.osc_port,
        osc__reply_port=args.reply_port,
        osc__allow=tuple(args.allow) if args.allow else None, audio__backend=args.audio,
        audio__input=_index(args.input), audio__output=_index(args.output),
        audio__in_channels=args.in_channels, audio__out_channels=args.out_channels,
        audio__samplerate=args.samplerate, audio__blocksize=args.blocksize,
        audio__record=args.record, audio__record_input=args.record_input,
        audio__input_file=args.input_file)


def serve(config, bundle: Path, duration: float | None = None) -> int:
    """Run the daemon until SIGINT/SIGTERM (or ``duration`` seconds of generated audio)."""
    from lmdm_bridge.daemon.daemon import Daemon, status_stream_for

    daemon = Daemon(config, bundle, status_stream=status_stream_for(sys.stderr))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: daemon.stop())
    if duration is not None:
        block = daemon.bundle.geometry.block_seconds
        blocks = int(-(-duration // block))
        threading.Thread(target=_stop_after, args=(daemon, blocks), daemon=True).start()
    host, port = daemon.server.address
    print(f"lmdm-bridge serve: {bundle} (warmed up in {daemon.model.warmup_seconds:.1f} s) on "
          f"{config.audio.backend} audio at "
          f"{daemon.backend.samplerate} Hz; OSC on {host}:{port}, replies to port "
          f"{config.osc.reply_port}; {'playing' if daemon.playing else 'send /lmdm/play'}",
          file=sys.stderr, flush=True)
    daemon.run()
    print("\nlmdm-bridge serve: stopped", file=sys.stderr)
    return 0


def _stop_after(daemon, blocks: int) -> None:
    while not daemon.stopped.wait(0.05):
        if daemon.counts.blocks >= blocks:
            daemon.stop()


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.audio import AudioError
    from lmdm_bridge.cli import CommandError
    from lmdm_bridge.daemon.config import ConfigError
    from lmdm_bridge.default_model import default_bundle
    from lmdm_bridge.manifest import BundleError

    try:
        config = config_from_args(args)
        bundle = Path(config.bundle) if config.bundle else default_bundle()
        return serve(config, bundle, args.duration)
    except (ConfigError, BundleError, AudioError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
