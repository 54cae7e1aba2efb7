"""``lmdm-bridge verify DIR``: the torch model and the bundle side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "verify"
HELP = "compare a bundle with its torch model: every graph, streamed blocks, decoded audio"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="DIR")
    parser.add_argument("--checkpoint", type=Path, metavar="PATH",
                        help="torch weights, when the bundle has no source/ folder")
    parser.add_argument("--model-config", type=Path, metavar="JSON")
    parser.add_argument("--codec", type=Path, metavar="PATH",
                        help="the codec release the bundle's decoder came from (export --codec)")
    parser.add_argument("--text-encoder", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--blocks", type=int, default=4,
                        help="streamed blocks per pattern (default 4)")


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.cli import CommandError, require_export_extra
    from lmdm_bridge.manifest import BundleError

    tool = require_export_extra("lmdm_export.bundle.tool")
    verify = require_export_extra("lmdm_export.bundle.verify")
    if args.blocks < 4:
        raise CommandError("--blocks must be at least 4 (streams are checked over 4+ blocks)")
    try:
        checks = verify.verify(args.bundle, checkpoint=args.checkpoint,
                               model_config=args.model_config,
                               text_encoder_dirs=tool.parse_text_encoders(args.text_encoder),
                               blocks=args.blocks, codec=args.codec, progress=print)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks within tolerance")
    return 1 if failed else 0
