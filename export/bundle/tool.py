"""The torch side of the ``export`` and ``verify`` commands (the parsers live in the runtime)."""

from __future__ import annotations

import argparse
import sys

import torch

from lmdm_bridge.manifest import SamplerDefaults, check_cfg_interval
from lmdm_export.bundle.writer import ExportRequest, export_bundle
from lmdm_export.checkpoint import load_checkpoint
from lmdm_export.model.lmdm import LMDM
from lmdm_export.presets import get_preset
from lmdm_export.release import (
    calibrate_codec,
    is_release,
    load_release_model,
    replace_decoder,
    set_phase_iterations,
)


def parse_text_encoders(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--text-encoder {pair!r} must look like NAME=DIR, "
                             "e.g. t5-base=/models/t5-base")
        out[name] = path
    return out


def model_from_args(args: argparse.Namespace) -> tuple[LMDM, str]:
    """The model a command line names, and a one-line description of where it came from."""
    if args.checkpoint is not None:
        if is_release(args.checkpoint):
            model, payload = load_release_model(args.checkpoint)
            return model, (f"release {args.checkpoint.name} ({payload['stage']} stage, "
                           f"{payload['steps']} steps)")
        config = args.model_config or args.checkpoint.parent / "model_config.json"
        model = load_checkpoint(config, args.checkpoint,
                                text_encoder_dirs=parse_text_encoders(args.text_encoder))
        return model, f"checkpoint {args.checkpoint.name}"
    if args.preset is None:
        raise ValueError("--random-init needs --preset (tiny or sao-small)")
    torch.manual_seed(args.seed)
    model = LMDM(get_preset(args.preset).config).eval()
    randomize_zero_init_(model, args.seed)
    return model, f"random-init seed {args.seed}"


def randomize_zero_init_(model: LMDM, seed: int, std: float = 0.02) -> LMDM:
    """Give the layers that start at exactly zero (attention and FFN output projections, the
    residual 1x1 convs) small random values. A fresh model is otherwise an identity through
    every attention block, and a random-init bundle could not show a cache or mask error in
    ``verify``; its cost in ``bench`` is the same either way."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.dit.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def export_from_args(args: argparse.Namespace) -> None:
    if not args.logsnr_min < args.logsnr_max:
        raise ValueError(f"--logsnr-min {args.logsnr_min:g} must be below --logsnr-max "
                         f"{args.logsnr_max:g}: the schedule runs from noise (low logSNR) to "
                         "signal")
    check_cfg_interval(args.cfg_interval)  # before the (slow) model load
    model, source = model_from_args(args)
    if args.codec is not None:
        replace_decoder(model, args.codec)
        source += f", decoder of {args.codec}"
    if args.phase_iterations is not None:
        set_phase_iterations(model, args.phase_iterations)
        source += f", {args.phase_iterations} phase iteration(s)"
    if args.calibrate is not None:
        report = calibrate_codec(model, args.calibrate)
        print(report.line(), file=sys.stderr, flush=True)
        source += f", decoder calibrated on {args.calibrate}"
    request = ExportRequest(
        dtype=args.dtype, source=source, preset=args.preset,
        include_source_weights=not args.no_source_weights,
        sampler=SamplerDefaults(name=args.sampler, steps=args.steps, cfg_scale=args.cfg,
                                logsnr_min=args.logsnr_min, logsnr_max=args.logsnr_max,
                                cfg_interval=tuple(args.cfg_interval)))
    export_bundle(model, args.out, request, force=args.force)


def bench_from_args(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from lmdm_bridge.manifest import BundleError, read_manifest
    from lmdm_export.bench import plot_report, run_bench, write_report

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    model, source = model_from_args(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="lmdm-bench-"))
    bundles = {}
    for dtype in ("fp32", "int8") if args.int8 else ("fp32",):
        path = work / f"{args.preset}-{dtype}"
        try:
            manifest = read_manifest(path, check_files=False)
            reusable = manifest.model.get("source") == source and manifest.dtype == dtype
        except BundleError:
            reusable = False
        if not reusable:
            progress(f"exporting the {dtype} bundle to {path}")
            export_bundle(model, path, ExportRequest(dtype=dtype, source=source,
                                                     preset=args.preset,
                                                     include_source_weights=False),
                          force=True, progress=progress)
        bundles[dtype] = path
    report = run_bench(model, bundles=bundles, steps=args.steps, blocks=args.blocks,
                       sampler=args.sampler, cfg=args.cfg, seed=args.seed,
                       threads=args.threads, progress=progress)
    report["model"] = {"preset": args.preset, "source": source}
    write_report(report, args.json)
    if args.plot:
        plot_report(report, args.plot)
    progress(f"report written to {args.json}")
