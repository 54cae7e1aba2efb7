"""Builders for the real stable-audio-tools 0.0.20 models the parity tests compare against.

stable-audio-tools is a test-only reference, installed without its dependencies (see the
Makefile). Its configs cannot name a downloadable text encoder offline, so they condition on
``seconds_total`` only, as in ../shared/docs/dependencies.md §6.
"""

from __future__ import annotations

import copy

import pytest

GEOMETRIES = {
    # DiT (width, depth, heads, cond dim) and Oobleck (channels, c_mults, strides, latent dim).
    "tiny": dict(embed_dim=64, depth=2, num_heads=2, cond_dim=32, channels=4, c_mults=[1, 2],
                 strides=[2, 4], latent=8, frames=20),
    "sao-small": dict(embed_dim=1024, depth=16, num_heads=8, cond_dim=768, channels=128,
                      c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], latent=64, frames=240),
}


def sat_model_config(geometry: str) -> dict:
    g = GEOMETRIES[geometry]
    downsampling = 1
    for s in g["strides"]:
        downsampling *= s
    oob = dict(channels=g["channels"], c_mults=g["c_mults"], strides=g["strides"], use_snake=True)
    return {
        "model_type": "diffusion_cond", "sample_size": g["frames"] * downsampling,
        "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "io_channels": g["latent"],
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "model_half": False,
                             "config": {
                                 "encoder": {"type": "oobleck", "requires_grad": False,
                                             "config": {**oob, "in_channels": 2,
                                                        "latent_dim": 2 * g["latent"]}},
                                 "decoder": {"type": "oobleck",
                                             "config": {**oob, "out_channels": 2,
                                                        "latent_dim": g["latent"],
                                                        "final_tanh": False}},
                                 "bottleneck": {"type": "vae"}, "latent_dim": g["latent"],
                                 "downsampling_ratio": downsampling, "io_channels": 2}},
            "conditioning": {"cond_dim": g["cond_dim"], "configs": [
                {"id": "seconds_total", "type": "number",
                 "config": {"min_val": 0, "max_val": 256}}]},
            "diffusion": {"type": "dit", "cross_attention_cond_ids": ["seconds_total"],
                          "global_cond_ids": ["seconds_total"],
                          "diffusion_objective": "rectified_flow",
                          "config": {"io_channels": g["latent"], "embed_dim": g["embed_dim"],
                                     "depth": g["depth"], "num_heads": g["num_heads"],
                                     "cond_token_dim": g["cond_dim"],
                                     "global_cond_dim": g["cond_dim"],
                                     "transformer_type": "continuous_transformer",
                                     "attn_kwargs": {"qk_norm": "ln"}}}}}


def build_sat_model(geometry: str, seed: int = 0):
    """SAT's ``ConditionedDiffusionModelWrapper`` with every parameter random (zero-initialised
    output layers would hide errors) and rescaled to keep activations moderate."""
    torch = pytest.importorskip("torch")
    factory = pytest.importorskip("stable_audio_tools.models.factory")
    torch.manual_seed(seed)
    model = factory.create_model_from_config(copy.deepcopy(sat_model_config(geometry))).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            scale = 0.02 if p.ndim > 1 else 0.1
            noise = torch.randn(p.shape, generator=gen) * scale
            p.copy_(1 + noise if name.endswith(("gamma", "norm.weight")) else noise)
    return model
