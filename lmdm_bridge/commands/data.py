"""``lmdm-bridge data render``: render the training corpus from packaged free material."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "data"
HELP = "prepare training data (render the corpus from music21, fluidsynth, sonic-pi loops)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("render",), help="render: audio, stems, captions")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="corpus config (TOML or JSON; default: the full default corpus, "
                             "configs/data/default.toml)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (re-running resumes: existing items are skipped)")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N pieces per source")


def run(args: argparse.Namespace) -> int:
    import logging

    from lmdm_bridge.cli import CommandError, require_export_extra

    cli = require_export_extra("lmdm_export.data.cli")
    logging.getLogger("lmdm_export").setLevel(logging.INFO)
    try:
        return cli.main(args)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
