"""``lmdm-bridge devices``: the audio devices, loopback-like ones marked, and the set-up hint."""

from __future__ import annotations

import argparse

NAME = "devices"
HELP = "list audio devices (loopback-like ones marked) and how to route a DAW to the daemon"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", choices=("darwin", "win32", "linux"),
                        help="show the set-up hint for this platform instead of this machine's")


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.audio.devices import AudioError, format_devices
    from lmdm_bridge.cli import CommandError

    try:
        print(format_devices(platform=args.platform))
    except AudioError as exc:
        raise CommandError(str(exc)) from exc
    return 0
