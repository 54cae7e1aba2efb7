"""Training-step time of a diffusion stage in fp32 and in bf16 mixed precision, in one run.

Not a test: it measures and prints; nothing asserts. It builds a stage's model from the
committed configs (``configs/train/base.toml``'s geometry on ``configs/train/autoencoder.toml``'s
codec shape, randomly initialised: a step costs the same whatever the weights) and times full
optimiser steps (batch drawn as the stage draws it, forward, backward, AdamW) on random latents.
The two precisions take turns ``--repeats`` times, so a change in the machine's load hits both
alike. It prints each one's median seconds per step and the bf16 speed-up over fp32.

bf16 (``precision = "bf16"`` in a stage config, :func:`lmdm_export.train.loop.autocast`) pays
where the CPU has bfloat16 matrix units (AMX, AVX512-BF16) and on GPUs; elsewhere PyTorch
emulates it and it can be slower than fp32.

Usage::

    python benchmarks/train_precision.py --stage base --steps 4 --repeats 3 --json prec.json

Figures and the machine they were measured on: docs/default-model.md, "Training in bf16".
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import tomllib
import torch

from lmdm_export.model.stft_codec import StftCodecConfig
from lmdm_export.presets import DefaultGeometry
from lmdm_export.train import loop
from lmdm_export.train.diffusion import (
    DiffusionTrainConfig,
    DiTTrainee,
    batch_loss,
    build_model,
    make_batch,
    model_config,
)

ROOT = Path(__file__).resolve().parents[1]


def _stage_config(stage: str) -> tuple[DiffusionTrainConfig, StftCodecConfig]:
    stage_toml = tomllib.loads((ROOT / "configs/train" / f"{stage}.toml").read_text())
    base_toml = tomllib.loads((ROOT / "configs/train/base.toml").read_text())
    codec_toml = tomllib.loads((ROOT / "configs/train/autoencoder.toml").read_text())
    keys = ("batch", "timesteps", "cfg_dropout", "group_dropout", "context_uncond",
            "context_partial")
    cfg = DiffusionTrainConfig(geometry=DefaultGeometry(**base_toml["geometry"]),
                               **{k: stage_toml[k] for k in keys if k in stage_toml})
    return cfg, StftCodecConfig(**codec_toml["codec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("base", "lmdm"), default="base")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per turn")
    parser.add_argument("--repeats", type=int, default=3, help="turns of each precision")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, codec = _stage_config(args.stage)
    config = model_config(cfg, args.stage, codec)
    trainee = DiTTrainee(build_model(config))
    opt = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad], lr=1e-5)
    frames = (config.stream.window_frames if config.stream is not None else
              cfg.geometry.context_frames + cfg.geometry.block_frames)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(cfg.batch, codec.latent_dim, frames, generator=gen)
    captions = [f"string ensemble chorale in G major, {80 + i} bpm" for i in range(cfg.batch)]
    device = torch.device("cpu")

    def step(precision: str) -> None:
        batch = make_batch(x0, captions, args.stage, config, cfg, gen)
        with loop.autocast(precision, device):
            loss, _ = batch_loss(trainee, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {p: [] for p in loop.PRECISIONS}
    for precision in loop.PRECISIONS:
        step(precision)  # warm-up: the prompt memo, oneDNN's kernels for these shapes
    for _ in range(args.repeats):
        for precision in loop.PRECISIONS:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(precision)
            times[precision].append((time.perf_counter() - start) / args.steps)
    median = {p: statistics.median(t) for p, t in times.items()}
    speedup = median["fp32"] / median["bf16"]
    print(f"{args.stage} stage, batch {cfg.batch} x {frames} frames, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}")
    for precision in loop.PRECISIONS:
        print(f"  {precision}: {median[precision]:.3f} s/step (turns: "
              + ", ".join(f"{t:.3f}" for t in times[precision]) + ")")
    print(f"  bf16 speed-up over fp32: {speedup:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"stage": args.stage, "batch": cfg.batch,
                                         "frames": frames, "threads": args.threads,
                                         "seconds_per_step": median, "turns": times,
                                         "bf16_speedup": round(speedup, 3)}, indent=1))


if __name__ == "__main__":
    main()
