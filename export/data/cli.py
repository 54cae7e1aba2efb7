"""Glue for ``lmdm-bridge data render --config FILE --out DIR [--limit N]`` and
``lmdm-bridge data encode (--codec FILE | --model M --weights FILE) --corpus DIR --out DIR
[--stems] [--limit N]``.

The runtime CLI registers the subcommand and calls :func:`main` with its parsed arguments; this
module only turns them into a :func:`render_corpus` call and reports through logging.
"""

from __future__ import annotations

import argparse
import logging
import time

from lmdm_export.data.config import load_config
from lmdm_export.data.render import render_corpus

log = logging.getLogger(__name__)

ACTIONS = ("render", "encode")


def main(args: argparse.Namespace) -> int:
    """``args``: ``action`` ("render"), ``config`` (path or None for the built-in default),
    ``out`` (folder), ``limit`` (pieces per source, optional). Returns the exit code.

    Raises ``ValueError`` (bad config or action) and ``FileNotFoundError`` (missing config or
    soundfont) for the caller to report as one line.
    """
    if args.action not in ACTIONS:
        raise ValueError(f"unknown data action {args.action!r} (known: {', '.join(ACTIONS)})")
    if args.action == "encode":
        return _encode(args)
    config = load_config(args.config)
    limit = getattr(args, "limit", None)
    started = time.monotonic()
    last = [started]

    def progress(done: int, total: int, piece_id: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 10 or done == total:  # one line per 10 s, not one per piece
            last[0] = now
            log.info("%d/%d pieces (%s), %.0f s", done, total, piece_id, now - started)

    summary = render_corpus(config, args.out, progress=progress, limit=limit)
    log.info("%d items in %s (%d rendered now, %d already there, %d pieces skipped) in %.0f s",
             summary.items, args.out, summary.rendered, summary.skipped,
             len(summary.failed_pieces), summary.wall_seconds)
    for label, hours in summary.hours_per_label.items():
        log.info("  %-12s %6.2f h", label, hours)
    log.info("  splits: %s", summary.items_per_split)
    return 0


def _encode(args: argparse.Namespace) -> int:
    from lmdm_export.train.latents import encode_corpus

    model, weights = getattr(args, "model", None), getattr(args, "weights", None)
    if args.corpus is None or (args.codec is None) == (model is None):
        raise ValueError("data encode needs --corpus (a rendered corpus folder) and either "
                         "--codec (a released codec, e.g. runs/codec/release.pt) or --model "
                         "with --weights (a stable-audio-tools model's VAE)")
    if model is not None:
        if weights is None:
            raise ValueError(f"--model {model} needs --weights: the checkpoint whose VAE encodes "
                             "the corpus (and whose model the diffusion stages then train)")
        if not weights.exists():
            raise FileNotFoundError(f"weights {weights} not found")
    elif not args.codec.exists():
        raise FileNotFoundError(f"codec {args.codec} not found: train it first with "
                                "`lmdm-bridge train autoencoder --config "
                                "configs/train/autoencoder.toml`")
    started = time.monotonic()
    out = encode_corpus(args.codec, args.corpus, args.out, stems=args.stems,
                        limit=getattr(args, "limit", None), model=model or "", weights=weights)
    log.info("latents in %s in %.0f s", out, time.monotonic() - started)
    return 0
