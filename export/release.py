"""Release files of the default-model training stages: what ``lmdm-bridge export`` reads.

A release (``runs/<stage>/release.pt``) is one ``torch.save`` dict, self-contained: the DiT and
conditioner weights, the codec (config and weights) and the :class:`DefaultGeometry` that
rebuilds the :class:`~lmdm_export.model.lmdm.ModelConfig`. Training checkpoints
(``checkpoint.pt``: optimisers, RNGs, step) are separate and never exported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

import torch

from lmdm_export.model.lmdm import LMDM, ModelConfig
from lmdm_export.model.stft_codec import StftCodec, StftCodecConfig
from lmdm_export.presets import DefaultGeometry, default_model_config

RELEASE_KIND = "lmdm-default"
STAGES = ("base", "lmdm", "arc")


def geometry_of(config: ModelConfig) -> DefaultGeometry:
    """The default-family geometry of a model config (inverse of ``default_model_config``)."""
    dit, stream = config.dit, config.stream
    prompt = config.conditioning.spec("prompt").params
    # A base model has no stream: its release keeps the family's default window.
    window = stream or DefaultGeometry()
    return DefaultGeometry(width=dit.embed_dim, depth=dit.depth, heads=dit.num_heads,
                           cond_dim=dit.cond_token_dim, prompt_tokens=prompt.max_length,
                           context_frames=window.context_frames,
                           block_frames=window.block_frames)


def release_payload(model: LMDM, *, stage: str, steps: int) -> dict:
    """The release dict of ``model`` (its autoencoder must be the trained STFT codec)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    if not isinstance(model.autoencoder, StftCodec):
        raise ValueError("releases hold default-family models (STFT codec); SAO-style models "
                         "are exported from their stable-audio-tools checkpoints")
    stream = model.config.stream
    return {"kind": RELEASE_KIND, "stage": stage, "steps": steps,
            "pattern": stream.pattern if stream else "block-causal",
            "geometry": asdict(geometry_of(model.config)),
            "codec": {"config": asdict(model.autoencoder.config),
                      "state_dict": model.autoencoder.state_dict()},
            "dit": model.dit.state_dict(), "conditioner": model.conditioner.state_dict()}


def is_release(path: str | Path) -> bool:
    """Whether ``path`` is a release file (a ``.pt`` of this module's kind)."""
    path = Path(path)
    if path.suffix != ".pt" or not path.is_file():
        return False
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return isinstance(payload, dict) and payload.get("kind") == RELEASE_KIND


def load_release(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"release {path} not found")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("kind") != RELEASE_KIND:
        raise ValueError(f"{path} is not a release of `lmdm-bridge train base/lmdm/arc`")
    return payload


def release_model_config(payload: dict) -> ModelConfig:
    from lmdm_export.data.config import from_dict

    geometry = from_dict(DefaultGeometry, payload["geometry"])
    return default_model_config(geometry, streaming=payload["stage"] != "base",
                                pattern=payload["pattern"],
                                codec=StftCodecConfig(**payload["codec"]["config"]))


def load_release_model(path: str | Path) -> tuple[LMDM, dict]:
    """The whole LMDM (conditioners, DiT, codec) of a release, in eval mode, and its payload."""
    payload = load_release(path)
    model = LMDM(release_model_config(payload))
    model.conditioner.load_state_dict(payload["conditioner"])
    model.dit.load_state_dict(payload["dit"])
    model.autoencoder.load_state_dict(payload["codec"]["state_dict"])
    return model.eval(), payload


def set_phase_iterations(model: LMDM, iterations: int) -> LMDM:
    """Decode with ``iterations`` of fast Griffin-Lim after the peak-locked phase (a decode-time
    setting of a trained STFT codec: the weights and latents stay; the bundle's decoder graph,
    its reach and its source release follow the new config)."""
    codec = model.autoencoder
    if not isinstance(codec, StftCodec) or codec.config.phase != "peak-locked":
        raise ValueError("--phase-iterations refines a peak-locked STFT codec's phase; this "
                         "model's autoencoder has none (leave the option out)")
    config = dataclasses.replace(codec.config, phase_iterations=iterations)
    codec.config = config
    model.config = dataclasses.replace(model.config, autoencoder=config)
    return model
