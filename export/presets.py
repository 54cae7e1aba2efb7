"""Named model presets: ``sao-small`` (the real geometry) and ``tiny`` (seconds on CPU, for tests).

Both use SAO Small's conditioning layout (prompt tokens + ``seconds_total``) with the offline
MiniLM prompt encoder; a T5 encoder replaces it when a checkpoint asks for one (see
:mod:`lmdm_export.checkpoint`). Every preset is a test case: each one builds and runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmdm_export.model.autoencoder import oobleck_preset
from lmdm_export.model.conditioners import minilm_conditioning
from lmdm_export.model.config import DiTConfig, StreamConfig, inpaint_group
from lmdm_export.model.lmdm import ModelConfig


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    config: ModelConfig


def _sao_small() -> ModelPreset:
    dit = DiTConfig(io_channels=64, embed_dim=1024, depth=16, num_heads=8, cond_token_dim=768,
                    global_cond_dim=768, input_add_groups=(inpaint_group(64),))
    return ModelPreset(
        name="sao-small",
        description="Stable Audio Open Small geometry: 341M-parameter DiT, Oobleck VAE "
                    "(64 latent channels, 2048x), window 192 + 48 frames (8.9 s + 2.2 s)",
        config=ModelConfig(dit=dit, conditioning=minilm_conditioning(768),
                           autoencoder=oobleck_preset("sao-small"),
                           stream=StreamConfig(context_frames=192, block_frames=48)))


def _tiny() -> ModelPreset:
    dit = DiTConfig(io_channels=8, embed_dim=64, depth=2, num_heads=2, cond_token_dim=32,
                    global_cond_dim=32, input_add_groups=(inpaint_group(8),))
    return ModelPreset(
        name="tiny",
        description="2 layers of width 64, tiny Oobleck (8 latent channels, 8x), "
                    "window 16 + 4 frames: for tests",
        config=ModelConfig(dit=dit, conditioning=minilm_conditioning(32, max_length=16),
                           autoencoder=oobleck_preset("tiny"),
                           stream=StreamConfig(context_frames=16, block_frames=4)))


PRESETS = {"sao-small": _sao_small, "tiny": _tiny}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}") from None
