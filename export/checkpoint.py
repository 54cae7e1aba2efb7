"""Load and write stable-audio-tools checkpoints: ``model_config.json`` + weights.

Accepted weights: ``.safetensors`` (read without pickle), or ``.ckpt`` / ``.pt`` / ``.pth``
(``torch.load(weights_only=True)``: tensors only, no code runs). Both the unwrapped layout SAT's
``export_model`` writes (``{"state_dict": ...}`` or a flat dict) and a Lightning training
checkpoint (the ``diffusion.`` subtree of its ``state_dict``) load; self-attention may come fused
(``to_qkv``, SAT) or split (``to_q`` + ``to_kv``, the LMDM code's cache layout).

Loading is strict: every missing, unexpected or mis-shaped key is listed in one error, and
nothing is loaded unless everything matches. There is no silent partial load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmdm_export.model.autoencoder import OobleckConfig
from lmdm_export.model.conditioners import (
    ConditionerSpec,
    ConditioningConfig,
    MiniLMParams,
    NumberParams,
)
from lmdm_export.model.config import DiTConfig, InputAddGroup, StreamConfig
from lmdm_export.model.lmdm import LMDM, ModelConfig, from_sat_keys, to_sat_keys
from lmdm_export.model.text_encoders import T5Params


class CheckpointError(ValueError):
    """A checkpoint or model config that cannot be loaded; the message says what and how to fix."""


# -- weights -------------------------------------------------------------------------------------

def read_weights(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a weights file, unwrapped to the ``ConditionedDiffusionModelWrapper`` keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which and why
        raise CheckpointError(f"cannot read weights from {path}: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no flat mapping of tensor names to tensors")
    return fuse_split_qkv(_training_subtree(dict(state)))


def _training_subtree(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Lightning training checkpoint keeps the model under ``diffusion.`` (plus optimiser-free
    extras such as EMA copies or discriminators, which are not the model)."""
    if any(k.startswith("model.model.") for k in state):
        return state
    sub = {k[len("diffusion."):]: v for k, v in state.items() if k.startswith("diffusion.")}
    return sub or state


def fuse_split_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Turn split self-attention projections (``to_q`` + ``to_kv``) into SAT's fused ``to_qkv``."""
    out = dict(state)
    for key in list(state):
        if key.endswith("self_attn.to_q.weight"):
            base = key[: -len("to_q.weight")]
            kv_key = base + "to_kv.weight"
            if kv_key not in state:
                raise CheckpointError(f"{key} has no matching {kv_key}")
            out[base + "to_qkv.weight"] = torch.cat((out.pop(key), out.pop(kv_key)), dim=0)
    return out


@dataclass(frozen=True)
class KeyReport:
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 20) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")
                lines.append(f"{len(items)} {title} key(s): {shown}")
        for key, want, got in self.mismatched[:limit]:
            lines.append(f"shape mismatch at {key}: the model has {want}, the checkpoint {got}")
        return "\n".join(lines)


def compare_keys(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> KeyReport:
    return KeyReport(
        missing=tuple(sorted(set(expected) - set(given))),
        unexpected=tuple(sorted(set(given) - set(expected))),
        mismatched=tuple((k, tuple(expected[k].shape), tuple(given[k].shape))
                         for k in sorted(set(expected) & set(given))
                         if expected[k].shape != given[k].shape))


def load_state_strict(model: LMDM, sat_state: Mapping[str, Tensor], *, source: str) -> None:
    """Load SAT-keyed tensors into ``model``, all or nothing."""
    report = compare_keys(model.sat_state_dict(), sat_state)
    if not report.ok:
        raise CheckpointError(f"{source} does not match the model config:\n{report.describe()}")
    model.load_state_dict(from_sat_keys(sat_state), strict=True)


# -- model_config.json ---------------------------------------------------------------------------

_DIT_KEYS = {"io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim",
             "global_cond_dim", "input_add_dims", "postpend", "split_qkv", "transformer_type",
             "attn_kwargs", "patch_size", "project_cond_tokens", "project_global_cond"}
_RF_OBJECTIVES = ("rectified_flow", "rf_denoiser")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise CheckpointError(message)


def _groups(input_add_dims: list) -> tuple[InputAddGroup, ...]:
    """The reference lists ``[["inpaint_mask", 1], ["inpaint_masked_input", 64], ...]``: each
    ``<name>_mask`` entry opens a group that the following entry completes."""
    groups, i = [], 0
    while i < len(input_add_dims):
        (first, dim), rest = input_add_dims[i], input_add_dims[i + 1:]
        _require(first.endswith("_mask") and dim == 1 and rest,
                 f"input_add_dims entry {input_add_dims[i]} must be a '<group>_mask' of width 1 "
                 f"followed by the group's features")
        groups.append(InputAddGroup(first[: -len("_mask")], 1 + rest[0][1]))
        i += 2
    return tuple(groups)


def _conditioning(cfg: Mapping, cross_ids: list, global_ids: list,
                  text_encoder_dirs: Mapping[str, str]) -> ConditioningConfig:
    specs = []
    for entry in cfg.get("configs", []):
        kind, params = entry["type"], dict(entry.get("config", {}))
        if kind == "t5":
            name = params.pop("t5_model_name", "t5-base")
            _require(name in text_encoder_dirs,
                     f"conditioner {entry['id']!r} uses the T5 encoder {name!r}: pass a local copy "
                     f"(text_encoder_dirs={{'{name}': '/path/to/{name}'}}, CLI: --text-encoder "
                     f"{name}=/path/to/{name}); it needs config.json, model.safetensors and "
                     f"spiece.model or tokenizer.json")
            specs.append(ConditionerSpec(entry["id"], "t5", T5Params(
                text_encoder_dirs[name], max_length=params.pop("max_length", 64))))
            _require(not params, f"conditioner {entry['id']!r}: unsupported keys {sorted(params)}")
        elif kind == "minilm":
            specs.append(ConditionerSpec(entry["id"], "minilm", MiniLMParams(**params)))
        elif kind == "number":
            specs.append(ConditionerSpec(entry["id"], "number", NumberParams(**params)))
        else:
            raise CheckpointError(f"conditioner {entry['id']!r} has type {kind!r}; supported: "
                                  "t5, minilm, number")
    return ConditioningConfig(cond_dim=cfg["cond_dim"], conditioners=tuple(specs),
                              cross_attention_ids=tuple(cross_ids),
                              global_ids=tuple(global_ids))


def _autoencoder(pre: Mapping, sample_rate: int) -> OobleckConfig:
    _require(pre.get("type") == "autoencoder", "only an autoencoder pretransform is supported")
    cfg = pre["config"]
    enc, dec = cfg["encoder"], cfg["decoder"]
    _require(enc.get("type") == "oobleck" and dec.get("type") == "oobleck",
             "only Oobleck encoders and decoders are supported")
    _require(cfg.get("bottleneck", {}).get("type") == "vae",
             "only the 'vae' bottleneck is supported")
    e, d = enc["config"], dec["config"]
    for key in ("channels", "c_mults", "strides"):
        _require(e[key] == d[key], f"encoder and decoder differ in {key}")
    _require(e["latent_dim"] == 2 * d["latent_dim"],
             "the VAE encoder must output 2 x latent_dim channels (mean and scale)")
    return OobleckConfig(audio_channels=d.get("out_channels", 2), channels=d["channels"],
                         c_mults=tuple(d["c_mults"]), strides=tuple(d["strides"]),
                         latent_dim=d["latent_dim"], use_snake=d.get("use_snake", False),
                         final_tanh=d.get("final_tanh", True), sample_rate=sample_rate)


def _stream(model_config: Mapping, downsampling: int) -> StreamConfig | None:
    training = model_config.get("training", {})
    if not training.get("context_router"):
        return None
    mask = training["inpainting"]["mask_kwargs"]
    pattern = mask.get("context_router_attention_pattern", "enc-dec")
    context = mask["fixed_mask_size"]
    window = model_config["sample_size"] // downsampling
    block = mask.get("block_causal_chunk_size", window - context)
    _require(block == window - context,
             f"the window of {window} frames (sample_size {model_config['sample_size']}) is not "
             f"context {context} + block {block}: the geometry is inconsistent")
    if pattern == "block-causal":
        chunks = mask.get("block_causal_window_chunks", context // block)
        _require(chunks * block == context,
                 f"block_causal_window_chunks {chunks} x {block} != fixed_mask_size {context}")
    return StreamConfig(pattern=pattern, context_frames=context, block_frames=block)


def config_from_sat(model_config: Mapping, *,
                    text_encoder_dirs: Mapping[str, str] | None = None) -> ModelConfig:
    """Our :class:`ModelConfig` from a stable-audio-tools / LMDM ``model_config.json`` dict."""
    _require(model_config.get("model_type") == "diffusion_cond",
             f"model_type {model_config.get('model_type')!r} is not supported "
             "(need diffusion_cond)")
    model = model_config["model"]
    diffusion = model["diffusion"]
    _require(diffusion.get("type") == "dit", "only the 'dit' diffusion backbone is supported")
    _require(diffusion.get("diffusion_objective") in _RF_OBJECTIVES,
             f"diffusion_objective {diffusion.get('diffusion_objective')!r} is not supported "
             f"(need one of {_RF_OBJECTIVES}, as Stable Audio Open Small)")
    dc = diffusion["config"]
    unknown = set(dc) - _DIT_KEYS
    _require(not unknown, f"diffusion.config has unsupported keys {sorted(unknown)}")
    _require(dc.get("transformer_type", "continuous_transformer") == "continuous_transformer",
             "only transformer_type 'continuous_transformer' is supported")
    _require(dc.get("attn_kwargs", {}).get("qk_norm") == "ln",
             "attn_kwargs.qk_norm must be 'ln' (SAO Small)")
    _require(dc.get("patch_size", 1) == 1, "only patch_size 1 is supported")
    _require(dc.get("project_cond_tokens", True) and dc.get("project_global_cond", True),
             "project_cond_tokens and project_global_cond must be true")
    dit = DiTConfig(io_channels=dc["io_channels"], embed_dim=dc["embed_dim"], depth=dc["depth"],
                    num_heads=dc["num_heads"], cond_token_dim=dc["cond_token_dim"],
                    global_cond_dim=dc["global_cond_dim"],
                    input_add_groups=_groups(dc.get("input_add_dims", [])))
    autoencoder = _autoencoder(model["pretransform"], model_config["sample_rate"])
    conditioning = _conditioning(model["conditioning"], diffusion.get("cross_attention_cond_ids",
                                                                      []),
                                 diffusion.get("global_cond_ids", []), text_encoder_dirs or {})
    return ModelConfig(dit=dit, conditioning=conditioning, autoencoder=autoencoder,
                       stream=_stream(model_config, autoencoder.downsampling_ratio))


def autoencoder_from_sat(model_config: Mapping) -> OobleckConfig:
    """The VAE config alone of a ``model_config.json`` dict (no text encoder needed)."""
    _require(model_config.get("model_type") == "diffusion_cond",
             f"model_type {model_config.get('model_type')!r} is not supported "
             "(need diffusion_cond)")
    return _autoencoder(model_config["model"]["pretransform"], model_config["sample_rate"])


def load_checkpoint(model_config_path: str | Path, weights_path: str | Path, *,
                    text_encoder_dirs: Mapping[str, str] | None = None) -> LMDM:
    """Build the model from ``model_config.json`` and load ``weights_path`` strictly."""
    model_config_path = Path(model_config_path)
    if not model_config_path.is_file():
        raise FileNotFoundError(f"model config {model_config_path} does not exist")
    try:
        raw = json.loads(model_config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{model_config_path} is not valid JSON: {exc}") from exc
    try:
        config = config_from_sat(raw, text_encoder_dirs=text_encoder_dirs)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{model_config_path}: missing or malformed entry {exc}") from exc
    model = LMDM(config)
    load_state_strict(model, read_weights(weights_path), source=str(weights_path))
    return model.eval()


def save_weights(model: LMDM, path: str | Path) -> None:
    """Write our weights under SAT's key names as safetensors (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in to_sat_keys(model.state_dict()).items()}, str(tmp))
    tmp.replace(path)


def to_sat_config(config: ModelConfig) -> dict:
    """The ``model_config.json`` dict that :func:`config_from_sat` reads back to ``config``."""
    ae, dit, cond, stream = config.autoencoder, config.dit, config.conditioning, config.stream
    oob = dict(channels=ae.channels, c_mults=list(ae.c_mults), strides=list(ae.strides),
               use_snake=ae.use_snake)
    conditioners = []
    for spec in cond.conditioners:
        p = spec.params
        if spec.type == "number":
            entry = {"min_val": p.min_val, "max_val": p.max_val}
        elif spec.type == "t5":
            entry = {"t5_model_name": Path(p.model_dir).name, "max_length": p.max_length}
        else:
            entry = {"max_length": p.max_length}
            if p.model_dir is not None:
                entry["model_dir"] = p.model_dir
        conditioners.append({"id": spec.id, "type": spec.type, "config": entry})
    add_dims = []
    for group in dit.input_add_groups:
        add_dims += [[f"{group.name}_mask", 1], [f"{group.name}_input", group.channels - 1]]
    window = (stream.window_frames if stream is not None else 256)
    raw = {
        "model_type": "diffusion_cond", "sample_size": window * ae.downsampling_ratio,
        "sample_rate": ae.sample_rate, "audio_channels": ae.audio_channels,
        "model": {
            "io_channels": dit.io_channels,
            "pretransform": {"type": "autoencoder", "config": {
                "encoder": {"type": "oobleck", "config": {
                    **oob, "in_channels": ae.audio_channels, "latent_dim": 2 * ae.latent_dim}},
                "decoder": {"type": "oobleck", "config": {
                    **oob, "out_channels": ae.audio_channels, "latent_dim": ae.latent_dim,
                    "final_tanh": ae.final_tanh}},
                "bottleneck": {"type": "vae"}, "latent_dim": ae.latent_dim,
                "downsampling_ratio": ae.downsampling_ratio, "io_channels": ae.audio_channels}},
            "conditioning": {"cond_dim": cond.cond_dim, "configs": conditioners},
            "diffusion": {
                "type": "dit", "diffusion_objective": "rectified_flow",
                "cross_attention_cond_ids": list(cond.cross_attention_ids),
                "global_cond_ids": list(cond.global_ids),
                "config": {"io_channels": dit.io_channels, "embed_dim": dit.embed_dim,
                           "depth": dit.depth, "num_heads": dit.num_heads,
                           "cond_token_dim": dit.cond_token_dim,
                           "global_cond_dim": dit.global_cond_dim, "postpend": True,
                           "transformer_type": "continuous_transformer",
                           "attn_kwargs": {"qk_norm": "ln"},
                           **({"input_add_dims": add_dims} if add_dims else {})}}}}
    if stream is not None:
        raw["training"] = {"context_router": True, "inpainting": {"mask_kwargs": {
            "fixed_mask_size": stream.context_frames,
            "context_router_attention_pattern": stream.pattern,
            "block_causal_chunk_size": stream.block_frames,
            "block_causal_window_chunks": stream.context_chunks}}}
    return raw
