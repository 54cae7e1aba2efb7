"""``lmdm-bridge info DIR``: a bundle's manifest in human terms."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmdm_bridge.manifest import Manifest, read_manifest

NAME = "info"
HELP = "describe a bundle: model, geometry, controls, graphs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="DIR", help="bundle folder")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the sha256 check of every file (faster on large bundles)")


def _size(path: Path) -> str:
    size = path.stat().st_size
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def describe(manifest: Manifest, root: Path) -> str:
    g, s = manifest.geometry, manifest.sampler
    model = manifest.model
    params = model.get("dit_parameters")
    lines = [
        f"bundle {root} (format {manifest.format_version}, {manifest.dtype}, "
        f"{manifest.created_by})",
        f"model      {model.get('preset') or 'custom'} from {model.get('source')}"
        + (f", DiT {params / 1e6:.2f} M parameters" if params else ""),
        f"audio      {g.sample_rate} Hz, {g.audio_channels} channel(s); latents {g.latent_channels}"
        f" ch at {g.latent_rate:.2f} frames/s ({g.downsampling_ratio} samples per frame)",
        f"streaming  {manifest.pattern}: context {g.context_frames} frames "
        f"({g.context_frames / g.latent_rate:.2f} s) + block {g.block_frames} frames "
        f"({g.block_seconds:.2f} s); cached steps: {manifest.cached_step_mask}, "
        f"RoPE {manifest.rope_mode}",
        f"DiT        {g.layers} layers, width {g.embed_dim}, {g.heads} heads of {g.head_dim}; "
        f"{g.cond_tokens} conditioning tokens of {g.cond_dim}",
        f"prompt     {manifest.text.encoder}, {manifest.text.max_length} tokens "
        f"({manifest.text.tokenizer})",
        "numbers    " + ", ".join(f"{k} in [{lo:g}, {hi:g}] (default {d:g})"
                                  for k, (lo, hi, d) in manifest.numbers.items()),
        "controls   " + ", ".join(f"{c.name} ({c.channels} ch)" for c in manifest.controls),
        f"sampler    {s.name}, {s.steps} steps, CFG {s.cfg_scale:g}"
        + (f" ({s.cfg_pp} CFG++)" if s.cfg_pp else "")
        + f", logSNR {s.logsnr_min:g}..{s.logsnr_max:g}",
        "graphs",
    ]
    for role, spec in manifest.graphs.items():
        ins = ", ".join(f"{i.name}{list(i.shape)}" for i in spec.inputs)
        outs = ", ".join(f"{o.name}{list(o.shape)}" for o in spec.outputs)
        lines.append(f"  {role:<13} {spec.file}")
        lines.append(f"  {'':<13}   in:  {ins}")
        lines.append(f"  {'':<13}   out: {outs}")
    for name in manifest.weights:
        lines.append(f"weights    {name} ({_size(root / name)})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lmdm_bridge.cli import CommandError
    from lmdm_bridge.manifest import BundleError

    try:
        manifest = read_manifest(args.bundle, check_files=not args.no_check)
    except BundleError as exc:
        raise CommandError(str(exc)) from exc
    print(describe(manifest, args.bundle))
    return 0
