"""``lmdm-bridge bench``: per-block cost of outpainting, enc-dec and block-causal streaming,
in torch and in onnxruntime, measured in one run on the same weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmdm_bridge.sampling import SAMPLERS

NAME = "bench"
HELP = "benchmark the streaming methods per block (torch, onnxruntime, stable-audio-tools)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("tiny", "default", "sao-small"), default="sao-small")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--random-init", action="store_true", help="random weights (seeded)")
    source.add_argument("--checkpoint", type=Path, metavar="PATH")
    parser.add_argument("--model-config", type=Path, metavar="JSON")
    parser.add_argument("--text-encoder", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=4,
                        help="blocks per method; the first is reported as time to first block")
    parser.add_argument("--sampler", choices=tuple(SAMPLERS), default="euler")
    parser.add_argument("--cfg", type=float, default=1.0,
                        help="CFG scale (1 = off; the SAT peer runs only without CFG)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true",
                        help="also export and measure an int8 bundle (blockcausal_ort_int8)")
    parser.add_argument("--work", type=Path, metavar="DIR",
                        help="keep the exported bundles here and reuse them (default: temporary)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT.json")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="bar chart of the results")


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.cli import CommandError, require_export_extra

    tool = require_export_extra("lmdm_export.bundle.tool")
    try:
        tool.bench_from_args(args)
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return 0
