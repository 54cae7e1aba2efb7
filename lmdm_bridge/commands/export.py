"""``lmdm-bridge export``: write a bundle (ONNX graphs with the KV cache as inputs/outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmdm_bridge.sampling import SAMPLERS

NAME = "export"
HELP = "export a model to an ONNX bundle with cache inputs and outputs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("tiny", "default", "sao-small"),
                        help="model geometry (with --random-init; a checkpoint brings its own)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--random-init", action="store_true",
                        help="random weights: for tests, benchmarks and hosts under development")
    source.add_argument("--checkpoint", type=Path, metavar="PATH",
                        help="stable-audio-tools / LMDM weights (.safetensors, .ckpt)")
    parser.add_argument("--model-config", type=Path, metavar="JSON",
                        help="its model_config.json (default: beside the checkpoint)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    parser.add_argument("--text-encoder", action="append", default=[], metavar="NAME=DIR",
                        help="local copy of a text encoder a checkpoint names, e.g. "
                             "t5-base=/models/t5-base (repeatable)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "int8", "int8-all"),
                        default="fp32",
                        help="fp32 (default); fp16 for CUDA; int8: dynamic quantization of the "
                             "DiT's matrix products, for CPUs; int8-all: also the text encoder "
                             "and the VAE (the smallest bundle, e.g. the embedded default)")
    parser.add_argument("--steps", type=int, default=8, help="default sampler steps (8)")
    parser.add_argument("--sampler", choices=tuple(SAMPLERS), default="pingpong")
    parser.add_argument("--cfg", type=float, default=1.0, help="default CFG scale (1 = off)")
    parser.add_argument("--logsnr-min", type=float, default=-6.0, metavar="L",
                        help="the sampler's noise schedule starts at this logSNR (default -6, "
                             "Stable Audio Open's, which the embedded default uses)")
    parser.add_argument("--logsnr-max", type=float, default=2.0, metavar="L",
                        help="... and ends at this logSNR before its last step to t = 0 "
                             "(default 2)")
    parser.add_argument("--cfg-interval", type=float, nargs=2, default=(0.0, 1.0),
                        metavar=("T_LO", "T_HI"),
                        help="guide only the steps whose noise level t lies in [T_LO, T_HI]; "
                             "the others run the conditional branch alone, at batch 1 where "
                             "the cache allows (default 0 1: every step)")
    parser.add_argument("--phase-iterations", type=int, metavar="N",
                        help="STFT codecs with peak-locked phase: refine the phase with N "
                             "iterations of fast Griffin-Lim at decode (default: the release's, "
                             "0 unless set; the embedded default uses 1)")
    parser.add_argument("--codec", type=Path, metavar="PATH",
                        help="decode with the decoder of this codec release (`train "
                             "autoencoder` with the model's encoder frozen, e.g. "
                             "runs/codec-gan/release.pt); its encoder must be the model's")
    parser.add_argument("--calibrate", type=Path, metavar="CORPUS",
                        help="STFT codecs: fit the decoder's spectral calibration (a gain per "
                             "frequency bin) so real audio of this rendered corpus' train split "
                             "comes back through the codec at its own power per bin, with the "
                             "decode settings exported (e.g. data/corpus; the embedded default "
                             "uses it)")
    parser.add_argument("--no-source-weights", action="store_true",
                        help="leave out source/ (torch weights; `verify` then needs --checkpoint)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="bundle folder")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.cli import CommandError, require_export_extra

    tool = require_export_extra("lmdm_export.bundle.tool")
    try:
        tool.export_from_args(args)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return 0
