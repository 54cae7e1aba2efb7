"""``lmdm-bridge run``: the main job on the embedded default model (``make run`` calls it)."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "start the main job on the embedded default model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options yet: the daemon and the default model arrive with later issues."""


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.cli import build_parser

    print("lmdm-bridge: the embedded default model and the daemon arrive with later issues "
          "(the trained default and `serve`). What is here now:\n")
    build_parser().print_help()
    return 0
