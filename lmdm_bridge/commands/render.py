"""``lmdm-bridge render``: stream a prompt through the engine into an audio file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "render"
HELP = "render a prompt to an audio file (WAV, FLAC, MP3, Ogg) through the streaming engine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, metavar="DIR",
                        help="bundle folder (default: the embedded default model)")
    parser.add_argument("--prompt", required=True, help="text prompt")
    parser.add_argument("--seconds", type=float, required=True, help="length of the output")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.wav",
                        help="output file; the extension picks the format: .wav (16-bit), "
                        ".flac, .mp3 or .ogg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="sampler steps (default: the bundle's)")
    parser.add_argument("--cfg", type=float, help="guidance scale (default: the bundle's)")
    parser.add_argument("--cfg-interval", type=float, nargs=2, metavar=("T_LO", "T_HI"),
                        help="guide only the steps whose noise level t lies in [T_LO, T_HI] "
                             "(default: the bundle's)")
    parser.add_argument("--method", choices=("block-causal", "enc-dec", "outpaint"),
                        help="streaming method (default: the one the model was trained for)")
    parser.add_argument("--events", type=Path, metavar="FILE.json",
                        help="timed prompt and parameter changes (see docs/render.md)")
    parser.add_argument("--providers", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--limiter", action="store_true",
                        help="end with serve's safety limiter (peaks held under -0.3 dBFS, "
                             "latency compensated) instead of clipping what exceeds full scale")
    parser.add_argument("--json", action="store_true",
                        help="print the statistics as one JSON object")


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.bundle import Bundle
    from lmdm_bridge.cli import CommandError
    from lmdm_bridge.default_model import default_bundle
    from lmdm_bridge.events import EventsError, load_events
    from lmdm_bridge.manifest import BundleError
    from lmdm_bridge.render import Progress, check_audio_path, limit, render, write_audio_atomic

    try:
        check_audio_path(args.out)
        events = load_events(args.events) if args.events else []
        bundle = Bundle(args.bundle or default_bundle(), providers=args.providers)
        progress = Progress(0)

        def on_block(done: int, total: int) -> None:
            progress.total = total
            progress.update(done)

        audio, stats = render(bundle, prompt=args.prompt, seconds=args.seconds, seed=args.seed,
                              steps=args.steps, cfg=args.cfg, method=args.method,
                              cfg_interval=args.cfg_interval, events=events, on_block=on_block)
        progress.close()
        if args.limiter:
            audio = limit(audio, bundle.geometry.sample_rate)
        write_audio_atomic(args.out, audio, bundle.geometry.sample_rate)
    except (BundleError, EventsError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps({**stats.as_dict(), "out": str(args.out)}))
    else:
        print(f"wrote {args.out}: {stats.summary()}", file=sys.stdout)
    return 0
