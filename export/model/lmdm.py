"""The whole model: conditioners, DiT and autoencoder, with the geometry that ties them together.

State-dict layout (ours -> stable-audio-tools' ``ConditionedDiffusionModelWrapper``):

==================  ===========================
``dit.*``           ``model.model.*``
``conditioner.*``   ``conditioner.*``
``autoencoder.*``   ``pretransform.model.*``
==================  ===========================

:mod:`lmdm_export.checkpoint` does the renaming; the modules below keep SAT's names inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmdm_export.model.autoencoder import OobleckAutoencoder, OobleckConfig
from lmdm_export.model.conditioners import Conditioners, ConditioningConfig
from lmdm_export.model.config import DiTConfig, StreamConfig
from lmdm_export.model.dit import DiffusionTransformer
from lmdm_export.model.stft_codec import StftCodec, StftCodecConfig

SAT_PREFIXES = (("dit.", "model.model."), ("conditioner.", "conditioner."),
                ("autoencoder.", "pretransform.model."))


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build the model. ``stream`` is None for a base (non-streaming) DiT."""

    dit: DiTConfig
    conditioning: ConditioningConfig
    autoencoder: OobleckConfig | StftCodecConfig
    stream: StreamConfig | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.dit.cond_token_dim != self.conditioning.cond_dim:
            problems.append(f"dit.cond_token_dim {self.dit.cond_token_dim} != conditioning "
                            f"cond_dim {self.conditioning.cond_dim}")
        if self.dit.global_cond_dim != self.conditioning.global_cond_dim:
            problems.append(f"dit.global_cond_dim {self.dit.global_cond_dim} != conditioning "
                            f"global width {self.conditioning.global_cond_dim}")
        if self.dit.io_channels != self.autoencoder.latent_dim:
            problems.append(f"dit.io_channels {self.dit.io_channels} != autoencoder latent_dim "
                            f"{self.autoencoder.latent_dim}")
        if self.stream is not None:
            names = [g.name for g in self.dit.input_add_groups]
            if "inpaint" not in names or self.dit.group("inpaint").channels != \
                    1 + self.dit.io_channels:
                problems.append("a streaming model needs the input-add group 'inpaint' with "
                                "1 + io_channels channels (the clean context enters through it)")
        if problems:
            raise ValueError("inconsistent model config: " + "; ".join(problems))

    @property
    def sample_rate(self) -> int:
        return self.autoencoder.sample_rate

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (21.53 for SAO)."""
        return self.autoencoder.sample_rate / self.autoencoder.downsampling_ratio


class LMDM(nn.Module):
    """Conditioners + DiT + autoencoder. Inference helpers live in :mod:`lmdm_export.rollout`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.conditioner = Conditioners(config.conditioning)
        self.dit = DiffusionTransformer(config.dit)
        self.autoencoder = build_autoencoder(config.autoencoder)

    def conditioning_inputs(self, metadata: list[dict], device=None) -> tuple[Tensor, Tensor]:
        """``cross_attn_cond (B, Tc, cond_dim)`` and ``global_cond (B, global_cond_dim)`` for B
        metadata dicts (e.g. ``{"prompt": "...", "seconds_total": 11.0}``)."""
        device = device or next(self.dit.parameters()).device
        out = self.conditioner(metadata, device)
        dtype = next(self.dit.parameters()).dtype
        return out["cross_attn_cond"].to(dtype), out["global_cond"].to(dtype)

    def sat_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under stable-audio-tools' key names."""
        return to_sat_keys(self.state_dict())


def build_autoencoder(config: OobleckConfig | StftCodecConfig) -> OobleckAutoencoder | StftCodec:
    """The Oobleck VAE (SAO checkpoints) or the STFT codec (the CPU-trained default model)."""
    if isinstance(config, StftCodecConfig):
        return StftCodec(config)
    return OobleckAutoencoder(config)


def to_sat_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for ours, theirs in SAT_PREFIXES:
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = value
                break
        else:
            raise KeyError(f"key {key!r} has no stable-audio-tools equivalent")
    return out


def from_sat_keys(sat_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """stable-audio-tools key names -> ours (the inverse of :func:`to_sat_keys`); keys of other
    parts of a checkpoint (EMA copies, discriminators) are left out."""
    out = {}
    for key, value in sat_state.items():
        for ours, theirs in SAT_PREFIXES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
                break
    return out
