"""Named model presets: ``sao-small`` (the real geometry) and ``tiny`` (seconds on CPU, for tests).

Every preset is a test case: each one builds and runs a forward in the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmdm_export.model.config import DiTConfig, LMDMConfig, StreamConfig, inpaint_group


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    lmdm: LMDMConfig


def _sao_small() -> ModelPreset:
    dit = DiTConfig(io_channels=64, embed_dim=1024, depth=16, num_heads=8, cond_token_dim=768,
                    global_cond_dim=768, input_add_groups=(inpaint_group(64),))
    return ModelPreset(
        name="sao-small",
        description="Stable Audio Open Small geometry: 341M-parameter DiT, 64 latent channels, "
                    "window 192 + 48 frames (8.9 s + 2.2 s at 44.1 kHz)",
        lmdm=LMDMConfig(dit=dit, stream=StreamConfig(context_frames=192, block_frames=48)))


def _tiny() -> ModelPreset:
    dit = DiTConfig(io_channels=8, embed_dim=64, depth=2, num_heads=2, cond_token_dim=32,
                    global_cond_dim=32, input_add_groups=(inpaint_group(8),))
    return ModelPreset(
        name="tiny",
        description="2 layers of width 64, 8 latent channels, window 16 + 4 frames: for tests",
        lmdm=LMDMConfig(dit=dit, stream=StreamConfig(context_frames=16, block_frames=4)))


PRESETS = {"sao-small": _sao_small, "tiny": _tiny}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}") from None
