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
from lmdm_export.model.stft_codec import StftCodecConfig


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


@dataclass(frozen=True)
class DefaultGeometry:
    """The sizes of the CPU-trained default model family (training configs may change them)."""

    width: int = 192
    depth: int = 6
    heads: int = 3
    cond_dim: int = 192
    prompt_tokens: int = 32
    context_frames: int = 144
    block_frames: int = 48


def default_model_config(geometry: DefaultGeometry = DefaultGeometry(), *,
                         streaming: bool = True, pattern: str = "block-causal",
                         codec: StftCodecConfig | None = None) -> ModelConfig:
    """The CPU-trained default model: 22.05 kHz mono STFT codec (32 latent channels, 1024x,
    21.5 frames/s), a 6-layer DiT of width 192 with MiniLM prompts, window 144 + 48 frames
    (6.7 s + 2.2 s). ``streaming=False`` gives its base model (no input-add groups, no stream).

    New controls (accompaniment, sketch) are added later as input-add groups by fine-tuning:
    their columns are appended, zero-initialised, to ``to_input_add_embed``, so the base
    and LMDM stages need not be repeated."""
    codec = codec or StftCodecConfig()
    g, io = geometry, codec.latent_dim
    dit = DiTConfig(io_channels=io, embed_dim=g.width, depth=g.depth, num_heads=g.heads,
                    cond_token_dim=g.cond_dim, global_cond_dim=g.cond_dim,
                    input_add_groups=(inpaint_group(io),) if streaming else ())
    stream = StreamConfig(pattern=pattern, context_frames=g.context_frames,
                          block_frames=g.block_frames)
    return ModelConfig(dit=dit, conditioning=minilm_conditioning(g.cond_dim, g.prompt_tokens),
                       autoencoder=codec, stream=stream if streaming else None)


def _default() -> ModelPreset:
    return ModelPreset(
        name="default",
        description="the embedded default model's geometry: STFT codec at 22.05 kHz mono "
                    "(32 latent channels, 1024x), 6 layers of width 192, window 144 + 48 frames",
        config=default_model_config())


PRESETS = {"sao-small": _sao_small, "tiny": _tiny, "default": _default}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}") from None
