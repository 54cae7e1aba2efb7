"""Checkpoint loading: stable-audio-tools' own files round-trip strictly; bad ones fail by name."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_audio_tools")

from safetensors.torch import save_file  # noqa: E402

from lmdm_export.checkpoint import (  # noqa: E402
    CheckpointError,
    config_from_sat,
    load_checkpoint,
    read_weights,
    save_weights,
)

from .sat_reference import build_sat_model, sat_model_config  # noqa: E402


@pytest.fixture(scope="module")
def sat_model():
    return build_sat_model("tiny")


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(sat_model_config("tiny")))
    return path


def _sat_export(model, path, *, safetensors: bool):
    """Exactly what SAT's ``DiffusionCondTrainingWrapper.export_model`` writes."""
    if safetensors:
        save_file(model.state_dict(), str(path))
    else:
        torch.save({"state_dict": model.state_dict()}, path)


def _equal_states(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sat_checkpoint_round_trips_strictly(sat_model, config_path, tmp_path, suffix):
    weights = tmp_path / f"model{suffix}"
    _sat_export(sat_model, weights, safetensors=suffix == ".safetensors")
    ours = load_checkpoint(config_path, weights)
    _equal_states(ours.sat_state_dict(), sat_model.state_dict())
    # ... and what we write, SAT's own loader reads back into its model strictly.
    from stable_audio_tools.models.utils import load_ckpt_state_dict

    out = tmp_path / "ours.safetensors"
    save_weights(ours, out)
    sat_model.load_state_dict(load_ckpt_state_dict(str(out)), strict=True)
    _equal_states(load_ckpt_state_dict(str(out)), sat_model.state_dict())


def test_lightning_training_checkpoint_and_split_qkv(sat_model, config_path, tmp_path):
    """A Lightning checkpoint (model under ``diffusion.``, extras beside it) with the LMDM code's
    split self-attention projections loads to the same weights."""
    state = {}
    for k, v in sat_model.state_dict().items():
        if k.endswith("self_attn.to_qkv.weight"):
            d = v.shape[0] // 3
            state["diffusion." + k.replace("to_qkv", "to_q")] = v[:d]
            state["diffusion." + k.replace("to_qkv", "to_kv")] = v[d:]
        else:
            state["diffusion." + k] = v
    state["diffusion_ema.some_copy.weight"] = torch.zeros(1)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, path)
    ours = load_checkpoint(config_path, path)
    _equal_states(ours.sat_state_dict(), sat_model.state_dict())


def test_wrong_shape_and_missing_key_are_named(sat_model, config_path, tmp_path):
    state = dict(sat_model.state_dict())
    del state["model.model.transformer.layers.1.ff_norm.gamma"]
    state["model.model.transformer.project_in.weight"] = torch.zeros(64, 9)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(config_path, path)
    message = str(info.value)
    assert "model.model.transformer.layers.1.ff_norm.gamma" in message
    assert "shape mismatch at model.model.transformer.project_in.weight" in message
    assert "(64, 8)" in message and "(64, 9)" in message


def test_unexpected_key_is_named(sat_model, config_path, tmp_path):
    state = dict(sat_model.state_dict())
    state["model.model.extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "extra.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="1 unexpected key.*model.model.extra_head.weight"):
        load_checkpoint(config_path, path)


def test_missing_and_corrupt_files(config_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        read_weights(tmp_path / "nowhere.safetensors")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.ckpt"):
        read_weights(corrupt)
    bad_json = tmp_path / "model_config.json"
    bad_json.write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(bad_json, corrupt)


def test_lmdm_config_geometry_and_text_encoder_dirs():
    """An LMDM block-causal config (as the reference ships it) parses into our geometry; its T5
    prompt encoder must be given as a local directory."""
    raw = sat_model_config("sao-small")
    raw["sample_size"] = 491520
    raw["model"]["conditioning"]["configs"].insert(
        0, {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 64}})
    raw["model"]["diffusion"]["cross_attention_cond_ids"] = ["prompt", "seconds_total"]
    raw["model"]["diffusion"]["config"].update(
        postpend=True, input_add_dims=[["inpaint_mask", 1], ["inpaint_masked_input", 64]])
    raw["training"] = {"context_router": True, "inpainting": {"mask_kwargs": {
        "fixed_mask_size": 192, "context_router_attention_pattern": "block-causal",
        "block_causal_chunk_size": 48, "block_causal_window_chunks": 4}}}
    with pytest.raises(CheckpointError, match="t5-base.*local copy"):
        config_from_sat(raw)
    config = config_from_sat(raw, text_encoder_dirs={"t5-base": "/models/t5-base"})
    assert config.stream.pattern == "block-causal"
    assert (config.stream.context_frames, config.stream.block_frames) == (192, 48)
    assert [(g.name, g.channels) for g in config.dit.input_add_groups] == [("inpaint", 65)]
    assert config.conditioning.num_cross_attention_tokens == 65
    assert config.conditioning.spec("prompt").params.model_dir == "/models/t5-base"
