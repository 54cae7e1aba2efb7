"""Release files of the default-model training stages: what ``lmdm-bridge export`` reads.

A release (``runs/<stage>/release.pt``) is one ``torch.save`` dict, self-contained. For the
default family: the DiT and conditioner weights, the codec (config and weights) and the
:class:`DefaultGeometry` that rebuilds the :class:`~lmdm_export.model.lmdm.ModelConfig`; for the
SAO family (an Oobleck VAE, :mod:`lmdm_export.train.model_source`): the stable-audio-tools
``model_config`` and the whole state dict. Training checkpoints
(``checkpoint.pt``: optimisers, RNGs, step) are separate and never exported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

import torch

from lmdm_export.calibration import CalibrationReport, calibrate
from lmdm_export.model.lmdm import LMDM, ModelConfig
from lmdm_export.model.stft_codec import StftCodec, StftCodecConfig
from lmdm_export.presets import DefaultGeometry, default_model_config
from lmdm_export.train.loop import fingerprint

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
    """The release dict of ``model``: a default-family model (STFT codec) keeps its parts and
    geometry; a SAO-family model (Oobleck VAE) its stable-audio-tools ``model_config`` and whole
    state dict (:mod:`lmdm_export.train.model_source`)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    stream = model.config.stream
    head = {"kind": RELEASE_KIND, "stage": stage, "steps": steps,
            "pattern": stream.pattern if stream else "block-causal"}
    if not isinstance(model.autoencoder, StftCodec):
        from lmdm_export.checkpoint import to_sat_config

        # to_sat_config names a T5 encoder by its folder; the release keeps where that is.
        t5 = {Path(spec.params.model_dir).name: spec.params.model_dir
              for spec in model.config.conditioning.conditioners if spec.type == "t5"}
        return {**head, "family": "sao", "model_config": to_sat_config(model.config),
                "text_encoders": t5, "state_dict": _on_cpu(model)}
    return {**head, "family": "default", "geometry": asdict(geometry_of(model.config)),
            "codec": {"config": asdict(model.autoencoder.config),
                      "state_dict": _on_cpu(model.autoencoder)},
            "dit": _on_cpu(model.dit), "conditioner": _on_cpu(model.conditioner)}


def _on_cpu(module: torch.nn.Module) -> dict:
    """``module``'s state dict on the CPU (a release trained on a GPU loads anywhere)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def release_state(payload: dict) -> dict:
    """Every tensor of a release under our key names (``dit.``, ``conditioner.``,
    ``autoencoder.``), whichever family."""
    if payload.get("family") == "sao":
        return dict(payload["state_dict"])
    state = {f"dit.{k}": v for k, v in payload["dit"].items()}
    state.update({f"conditioner.{k}": v for k, v in payload["conditioner"].items()})
    state.update({f"autoencoder.{k}": v for k, v in payload["codec"]["state_dict"].items()})
    return state


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

    if payload.get("family") == "sao":
        from lmdm_export.checkpoint import config_from_sat

        return config_from_sat(payload["model_config"],
                               text_encoder_dirs=payload.get("text_encoders", {}))
    geometry = from_dict(DefaultGeometry, payload["geometry"])
    return default_model_config(geometry, streaming=payload["stage"] != "base",
                                pattern=payload["pattern"],
                                codec=StftCodecConfig(**payload["codec"]["config"]))


def load_release_model(path: str | Path) -> tuple[LMDM, dict]:
    """The whole LMDM (conditioners, DiT, codec) of a release, in eval mode, and its payload."""
    payload = load_release(path)
    model = LMDM(release_model_config(payload))
    model.load_state_dict(release_state(payload))
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


def calibrate_codec(model: LMDM, corpus: str | Path) -> CalibrationReport:
    """Fit the spectral calibration of the model's STFT codec decoder on ``corpus``
    (:mod:`lmdm_export.calibration`), with the decode-time settings the model has now."""
    codec = model.autoencoder
    if not isinstance(codec, StftCodec):
        raise ValueError("--calibrate fits an STFT codec's decoder; this model's autoencoder "
                         "is not one (leave the option out)")
    return calibrate(codec, corpus)


def set_calibration(model: LMDM, values: list[float]) -> LMDM:
    """Decode with the spectral calibration a bundle's manifest records (``verify``)."""
    buffer = model.autoencoder.decoder.calibration
    if len(values) != buffer.numel():
        raise ValueError(f"the manifest's calibration has {len(values)} bins, the model's "
                         f"decoder {buffer.numel()}: the bundle comes from another codec")
    buffer.copy_(torch.tensor(values, dtype=buffer.dtype))
    return model


def decoder_digest(model: LMDM) -> str:
    """SHA-256 of the codec decoder's weights (:func:`~lmdm_export.train.loop.fingerprint`):
    the manifest records it, so ``verify`` can tell whether the torch model it rebuilt decodes
    with the bundle's decoder."""
    return fingerprint(model.autoencoder.decoder)


def replace_decoder(model: LMDM, codec_path: str | Path) -> LMDM:
    """Decode with the decoder of the released codec ``codec_path`` (a decoder fine-tuned with
    its encoder frozen, ``configs/train/decoder.toml``). The model's latents must mean the
    same to it: its geometry, encoder weights and latent statistics must equal the model's own
    codec's, or the DiT's latents would be read by a decoder trained on other ones. The model's
    decode-time ``phase_iterations`` stay."""
    from lmdm_export.train.codec import read_codec_release

    codec = model.autoencoder
    if not isinstance(codec, StftCodec):
        raise ValueError("--codec replaces an STFT codec's decoder; this model's autoencoder "
                         "is not one (leave the option out)")
    payload = read_codec_release(codec_path)
    differ = codec.config.geometry_differences(StftCodecConfig(**payload["config"]))
    if differ:
        raise ValueError(f"codec {codec_path} has another geometry than the model's codec "
                         f"({', '.join(differ)} differ): its decoder cannot read this model's "
                         "latents")
    state, own = payload["state_dict"], codec.state_dict()
    changed = [k for k, v in own.items()
               if not k.startswith("decoder.") and (k not in state or not torch.equal(state[k], v))]
    if changed:
        raise ValueError(f"codec {codec_path} encodes differently from the model's codec "
                         f"({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} "
                         "differ): a decoder for this model must be fine-tuned with the "
                         "model's encoder frozen (`init` the model's codec, `freeze_encoder = "
                         "true`, as configs/train/decoder.toml does)")
    codec.decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items()
                                   if k.startswith("decoder.")})
    return model
