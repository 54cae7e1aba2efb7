"""Glue for ``lmdm-bridge eval classifier|run|codec ...``.

The runtime CLI (:mod:`lmdm_bridge.commands.eval`) parses the arguments and calls :func:`main`;
this module turns them into a :class:`ClassifierTrainConfig`, :class:`EvalConfig` or
:class:`CodecCeilingConfig`, runs it and logs the headline figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch  # here, so a missing torch fails in require_export_extra with one line

log = logging.getLogger(__name__)


def parse_bundle(value: str) -> tuple[str, str]:
    """``NAME=DIR`` or ``DIR`` (named after the folder) -> (name, dir)."""
    name, sep, path = value.partition("=")
    if sep and name and path:
        return name, path
    return Path(value).name or value, value


def _split(values: list[str] | None) -> tuple[str, ...] | None:
    """``--labels a,b --labels c`` -> ("a", "b", "c"); None when not given."""
    if values is None:
        return None
    return tuple(v for value in values for v in value.split(",") if v)


def main(args: argparse.Namespace) -> int:
    """Raises ``ValueError`` / ``FileNotFoundError`` for the caller to report as one line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.action == "classifier":
        return _classifier(args)
    if args.action == "codec":
        return _codec(args)
    return _run(args)


def _classifier(args: argparse.Namespace) -> int:
    from lmdm_export.eval.train_classifier import ClassifierTrainConfig, train_classifier

    cfg = ClassifierTrainConfig(corpus=str(args.corpus), out=str(args.out or "runs/classifier"),
                                minutes=args.minutes, steps=args.train_steps, seed=args.seed)
    report = train_classifier(cfg)
    held = report["heldout"]
    log.info("classifier: %d steps in %.0f s; held-out accuracy %.3f (balanced %.3f) on %d "
             "clips of validation pieces", report["steps"], report["train_seconds"],
             held["accuracy"] or float("nan"), held["balanced_accuracy"] or float("nan"),
             held["clips"])
    for label, row in held["per_label"].items():
        acc = "no held-out pieces" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        log.info("  %-12s %s (seen train clips %.3f)", label, acc, row["seen_accuracy"])
    log.info("wrote %s", Path(cfg.out) / "classifier.pt")
    return 0


def _codec(args: argparse.Namespace) -> int:
    from lmdm_export.eval.codec_ceiling import CodecCeilingConfig, codec_ceiling

    if not Path(args.codec).is_file():
        raise FileNotFoundError(f"no codec release at {args.codec}: train one with "
                                "`lmdm-bridge train autoencoder` or pass --codec FILE")
    cfg = CodecCeilingConfig(codec=str(args.codec), classifier=str(args.classifier),
                             corpus=str(args.corpus), out=str(args.out or "runs/eval-codec"),
                             clips=args.clips, seed=args.seed,
                             phase_iterations=args.phase_iterations,
                             calibrate=str(args.calibrate) if args.calibrate else None)
    report = codec_ceiling(cfg)
    log.info("real-vs-real FD %.2f (%d clips); wrote %s", report["real_vs_real_fd"],
             report["clips"], Path(cfg.out) / "codec.json")
    return 0


def _run(args: argparse.Namespace) -> int:
    from lmdm_bridge.default_model import default_bundle
    from lmdm_export.eval.run import EvalConfig, evaluate

    bundles = tuple(parse_bundle(b) for b in args.bundle or ())
    if not bundles:
        bundles = (("default", str(default_bundle())),)
    names = [n for n, _ in bundles]
    if len(set(names)) != len(names):
        raise ValueError(f"bundle names must differ, got {', '.join(names)}: name them "
                         "with --bundle NAME=DIR")
    stream_labels = _split(args.stream_labels)
    cfg = EvalConfig(
        bundles=bundles, classifier=str(args.classifier), corpus=str(args.corpus),
        out=str(args.out or "runs/eval"), clips=args.clips, prompts=args.prompts,
        labels=_split(args.labels), stream_minutes=args.stream_minutes, streams=args.streams,
        segment_seconds=args.segment_seconds, seed=args.seed, steps=args.steps, cfg=args.cfg,
        cfg_interval=None if args.cfg_interval is None else tuple(args.cfg_interval),
        method=args.method, providers=args.providers, threads=args.threads,
        **({} if stream_labels is None else {"stream_labels": stream_labels}))
    report = evaluate(cfg)
    ref = report["reference"]
    log.info("real-vs-real FD %.2f, noise-vs-real FD %.2f (%d clips)", ref["real_vs_real_fd"],
             ref["noise_vs_real_fd"], ref["clips"])
    for name, b in report["bundles"].items():
        log.info("%s: adherence %.3f, FD %.2f (x%.2f), tonal energy %s, real-time factor %.1f",
                 name, b["adherence"], b["fd"], b["fd_ratio"] or float("nan"),
                 b["tonal_energy"], b["speed"]["realtime_factor"])
    log.info("wrote %s and report.md", Path(cfg.out) / "report.json")
    return 0
