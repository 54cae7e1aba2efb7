"""``lmdm-bridge data render|encode``: render the training corpus from packaged free material,
encode it to latent shards."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "data"
HELP = "prepare training data: render the corpus, encode it to latent shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("render", "encode"),
                        help="render: audio, stems, captions; encode: latent shards")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="render: corpus config (TOML or JSON; default: the full default "
                             "corpus, configs/data/default.toml)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (re-running resumes: finished parts are skipped)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="render: at most N pieces per source; encode: the first N items")
    parser.add_argument("--codec", type=Path, metavar="FILE",
                        help="encode: the released codec (runs/codec/release.pt)")
    parser.add_argument("--model", metavar="NAME|FILE",
                        help="encode with a stable-audio-tools model's VAE instead of --codec: a "
                             "preset (sao-small, tiny) or its model_config.json")
    parser.add_argument("--weights", type=Path, metavar="FILE",
                        help="encode: the --model's weights (.safetensors or .ckpt), e.g. "
                             "Stable Audio Open Small's")
    parser.add_argument("--corpus", type=Path, metavar="DIR",
                        help="encode: the rendered corpus (data/corpus)")
    parser.add_argument("--stems", action="store_true",
                        help="encode: also encode every stem (for the jamming control)")


def run(args: argparse.Namespace) -> int:
    import logging

    from lmdm_bridge.cli import CommandError, require_export_extra

    cli = require_export_extra("lmdm_export.data.cli")
    logging.getLogger("lmdm_export").setLevel(logging.INFO)
    try:
        return cli.main(args)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
