"""``lmdm-bridge eval {classifier,run,codec}``: offline metrics of generated audio.

``classifier`` trains the label classifier on real renders and reports its held-out accuracy;
``run`` measures one or more bundles with it (prompt adherence, Fréchet distance, tonal energy,
drift over a long stream, real-time factor, the codec's ceiling); ``codec`` splits what a
peak-locked STFT codec costs in Fréchet distance into its phase and magnitude parts. See
docs/default-model.md, "Evaluation".
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "eval"
HELP = "evaluate generated audio: train the label classifier, measure bundles against real audio"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("classifier", "run", "codec"),
                        help="classifier: train it and report held-out accuracy; run: measure "
                             "bundles; codec: the FD a trained STFT codec costs, by part")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"), metavar="DIR",
                        help="the rendered corpus (default: data/corpus)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: runs/classifier, runs/eval or "
                             "runs/eval-codec)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch and onnxruntime threads (default: theirs)")
    classifier = parser.add_argument_group("eval classifier")
    classifier.add_argument("--minutes", type=float, default=6.0,
                            help="training time budget in minutes (default 6)")
    classifier.add_argument("--train-steps", type=int, metavar="N",
                            help="train exactly N steps instead of a time budget: the same "
                                 "classifier on any machine (make default-model uses 1000)")
    run = parser.add_argument_group("eval run")
    run.add_argument("--bundle", action="append", metavar="[NAME=]DIR",
                     help="bundle to measure; repeat to compare (default: the embedded default)")
    run.add_argument("--classifier", type=Path, default=Path("runs/classifier/classifier.pt"),
                     metavar="FILE", help="from `eval classifier`, also for eval codec "
                                          "(default: runs/classifier/classifier.pt)")
    run.add_argument("--clips", type=int, default=16,
                     help="generated 3 s clips per label, and real clips per reference set; "
                          "also for eval codec (default 16)")
    run.add_argument("--prompts", type=int, default=4,
                     help="different captions per label (default 4)")
    run.add_argument("--labels", action="append", metavar="A,B,...",
                     help="labels to measure (default: all the classifier knows)")
    run.add_argument("--stream-minutes", type=float, default=5.0,
                     help="length of each drift stream; 0 skips drift (default 5)")
    run.add_argument("--stream-labels", action="append", metavar="A,B,...",
                     help="drift streams' labels (default: piano,strings,drums)")
    run.add_argument("--streams", type=int, default=1, metavar="N",
                     help="drift streams per stream label, each from its own seed on the "
                          "label's prompts in turn; more narrow the per-segment FD's noise "
                          "(default 1)")
    run.add_argument("--segment-seconds", type=float, default=30.0,
                     help="drift segment length (default 30)")
    run.add_argument("--steps", type=int, help="sampler steps (default: the bundle's)")
    run.add_argument("--cfg", type=float, help="guidance scale (default: the bundle's)")
    run.add_argument("--cfg-interval", type=float, nargs=2, metavar=("T_LO", "T_HI"),
                     help="guide only the steps whose noise level t lies in [T_LO, T_HI] "
                          "(default: the bundle's)")
    run.add_argument("--method", choices=("block-causal", "enc-dec", "outpaint"),
                     help="streaming method (default: the bundle's)")
    run.add_argument("--providers", choices=("auto", "cpu", "cuda"), default="cpu",
                     help="onnxruntime providers (default cpu: the real-time factor on this "
                          "machine's cores)")
    codec = parser.add_argument_group("eval codec")
    codec.add_argument("--codec", type=Path, default=Path("runs/codec/release.pt"),
                       metavar="FILE", help="a trained STFT codec's release (default: "
                                            "runs/codec/release.pt)")
    codec.add_argument("--phase-iterations", type=int, default=0, metavar="N",
                       help="also measure the phase refined by N Griffin-Lim iterations (what "
                            "export --phase-iterations N builds in; default 0)")
    codec.add_argument("--calibrate", type=Path, metavar="CORPUS",
                       help="fit each decoder's spectral calibration on this rendered corpus' "
                            "train split first, for its phase iterations, as export --calibrate "
                            "does (e.g. data/corpus; default: the release's, uncalibrated)")


def run(args: argparse.Namespace) -> int:
    import logging

    from lmdm_bridge.cli import CommandError, require_export_extra
    from lmdm_bridge.manifest import BundleError

    cli = require_export_extra("lmdm_export.eval.cli")
    logging.getLogger("lmdm_export").setLevel(logging.INFO)
    try:
        return cli.main(args)
    except (ValueError, FileNotFoundError, BundleError) as exc:
        raise CommandError(str(exc)) from exc
