"""``lmdm-bridge train {autoencoder,base,lmdm,arc} --config FILE [--resume]``."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "train"
HELP = "train a stage of the default model (also under torchrun: gloo on CPU, NCCL on GPU)"
STAGES = ("autoencoder", "base", "lmdm", "arc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES,
                        help="autoencoder: the STFT codec; base: text-conditioned DiT; "
                             "lmdm: streaming fine-tuning; arc: ARC-Forcing post-training")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="stage config (TOML or JSON; examples in configs/train/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in the config's `out` folder")


def run(args: argparse.Namespace) -> int:
    import logging

    from lmdm_bridge.cli import CommandError, require_export_extra

    cli = require_export_extra("lmdm_export.train.cli")
    logging.getLogger("lmdm_export").setLevel(logging.INFO)
    try:
        return cli.main(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise CommandError(str(exc)) from exc
