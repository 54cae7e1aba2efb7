"""``lmdm-bridge info DIR``: a bundle's manifest in human terms."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "info"
HELP = "describe a bundle: model, geometry, controls, graphs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="DIR", help="bundle folder")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the sha256 check of every file (faster on large bundles)")


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.bundle import Bundle
    from lmdm_bridge.cli import CommandError
    from lmdm_bridge.manifest import BundleError

    try:
        bundle = Bundle(args.bundle, providers="cpu", check_files=not args.no_check)
    except BundleError as exc:
        raise CommandError(str(exc)) from exc
    print(bundle.info())
    return 0
