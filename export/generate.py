"""Offline generation on the torch side: prompt -> streamed latent blocks -> audio.

A thin composition of the conditioners, :func:`lmdm_export.rollout.stream_blocks` and the
autoencoder; the runtime's onnxruntime engine is checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmdm_export.model.lmdm import LMDM
from lmdm_export.rollout import Guidance, make_conditioning, make_session, stream_blocks
from lmdm_export.sampling import SAMPLERS, logsnr_schedule


@dataclass(frozen=True)
class GenerationSettings:
    steps: int = 8
    sampler: str = "pingpong"
    cfg_scale: float = 1.0
    cfg_pp: str | None = None
    method: str = "block-causal"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: use one of {sorted(SAMPLERS)}")


@torch.inference_mode()
def generate_latents(model: LMDM, metadata: list[dict], blocks: int,
                     settings: GenerationSettings = GenerationSettings(),
                     context: Tensor | None = None) -> Tensor:
    """``blocks`` streamed blocks for B metadata dicts: latents ``(B, C, blocks * c)``."""
    guidance = Guidance(scale=settings.cfg_scale)
    cross, glob = model.conditioning_inputs(metadata)
    cond = make_conditioning(model.dit, cross, glob, guidance)
    generator = torch.Generator(device=cross.device).manual_seed(settings.seed)
    session = make_session(settings.method, model.dit, model.config, cond, guidance=guidance,
                           context=context, batch=len(metadata), generator=generator)
    ts = logsnr_schedule(settings.steps, device=cross.device)
    return torch.cat(list(stream_blocks(session, blocks, sampler=SAMPLERS[settings.sampler],
                                        ts=ts, generator=generator, cfg_pp=settings.cfg_pp)),
                     dim=-1)


@torch.inference_mode()
def generate_audio(model: LMDM, prompt: str, seconds: float,
                   settings: GenerationSettings = GenerationSettings()) -> Tensor:
    """Audio ``(channels, samples)`` of at least ``seconds``, whole blocks, at the model's rate."""
    stream = model.config.stream
    if stream is None:
        raise ValueError("this model has no streaming geometry (a base DiT)")
    block_seconds = stream.block_frames / model.config.latent_rate
    blocks = max(1, int(-(-seconds // block_seconds)))
    latents = generate_latents(model, [{"prompt": prompt, "seconds_total": seconds}], blocks,
                               settings)
    return model.autoencoder.decode(latents)[0]
