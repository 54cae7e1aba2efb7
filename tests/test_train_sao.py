"""The training commands on the SAO family: a stable-audio-tools checkpoint (here the ``tiny``
preset's geometry, random weights, written as SAT files the way Stable Audio Open Small ships:
a base model without stream or input-add groups) is encoded with, fine-tuned into an LMDM,
ARC-forced, released and exported, as a GPU user does with the real checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from lmdm_export.checkpoint import CheckpointError, save_weights, to_sat_config  # noqa: E402
from lmdm_export.model.lmdm import LMDM  # noqa: E402
from lmdm_export.presets import DefaultGeometry, get_preset  # noqa: E402
from lmdm_export.release import load_release_model  # noqa: E402
from lmdm_export.train.arc import ArcTrainConfig  # noqa: E402
from lmdm_export.train.arc import train as train_arc  # noqa: E402
from lmdm_export.train.diffusion import (  # noqa: E402
    DiffusionTrainConfig,
    stage_model,
    train_base,
    train_lmdm,
)
from lmdm_export.train.latents import _load_audio, encode_corpus  # noqa: E402
from lmdm_export.train.model_source import load_autoencoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000  # the corpus' rate: the tiny VAE hears it resampled to 44.1 kHz stereo
WINDOW = DefaultGeometry(context_frames=16, block_frames=4)


def _write_corpus(root: Path) -> Path:
    """Two labels, 4 items each (one held out), 0.5 s mono at 8 kHz."""
    rng = np.random.default_rng(0)
    records = []
    for label, caption in (("organ", "church organ chorale"), ("drums", "drum kit groove")):
        for k in range(4):
            t = np.arange(RATE // 2) / RATE
            x = (np.sin(2 * np.pi * 220 * 2 ** (k / 12) * t) * 0.3 if label == "organ" else
                 rng.standard_normal(t.shape) * np.exp(-((t * 4) % 1) * 8) * 0.3)
            rel = f"audio/{label}/{label}-{k}.flac"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, x.astype(np.float32), RATE)
            records.append({"id": f"{label}-{k}", "label": label, "caption": caption,
                            "split": "val" if k == 3 else "train", "piece_id": f"{label}-{k}",
                            "sample_rate": RATE, "path": rel, "duration": len(t) / RATE,
                            "stems": []})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _write_sat_base(root: Path) -> tuple[Path, Path]:
    """A SAO-Small-like base checkpoint of the tiny geometry: model_config.json (no stream, no
    input-add groups) and model.safetensors, random weights (seed 0)."""
    config = get_preset("tiny").config
    base = dataclasses.replace(config, dit=dataclasses.replace(config.dit, input_add_groups=()),
                               stream=None)
    torch.manual_seed(0)
    model = LMDM(base)
    with torch.no_grad():  # zero-initialised output layers would make every block an identity
        for p in model.dit.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_config.json").write_text(json.dumps(to_sat_config(base)))
    save_weights(model, root / "model.safetensors")
    return root / "model_config.json", root / "model.safetensors"


@pytest.fixture(scope="module")
def sao(tmp_path_factory):
    """SAT base checkpoint -> latents -> base (continued) -> lmdm (from the checkpoint and from
    the base release) -> arc (discriminator from the checkpoint), all tiny."""
    work = tmp_path_factory.mktemp("sao")
    corpus = _write_corpus(work / "corpus")
    config_json, weights = _write_sat_base(work / "sat")
    encode_corpus(None, corpus, work / "latents", model=str(config_json), weights=weights,
                  min_frames=24)
    common = dict(latents=str(work / "latents"), model=str(config_json), geometry=WINDOW,
                  batch=2, warmup=1, val_every=2, val_windows=2)
    train_base(DiffusionTrainConfig(out=str(work / "base"), weights=str(weights), steps=2,
                                    **common))
    train_lmdm(DiffusionTrainConfig(out=str(work / "lmdm"), weights=str(weights), steps=2,
                                    timesteps="shifted-uniform", **common))
    train_lmdm(DiffusionTrainConfig(out=str(work / "lmdm-from-base"),
                                    init=str(work / "base" / "release.pt"), steps=2, **common))
    # The discriminator's trunk from the checkpoint itself, as for SAO Small (no base stage).
    train_arc(ArcTrainConfig(latents=str(work / "latents"), out=str(work / "arc"),
                             init=str(work / "lmdm" / "release.pt"), base=str(weights),
                             base_model=str(config_json), steps=3, batch=2, rollout_chunks=2,
                             feature_block=1, head_width=8, disc_warmup=1))
    return work, config_json, weights


def test_the_corpus_is_heard_at_the_vaes_rate_and_channels(tmp_path):
    path = tmp_path / "a.flac"
    t = np.arange(RATE) / RATE
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    x = _load_audio(path, ratio=4, min_frames=4, sample_rate=44100, channels=2)
    assert x.shape == (2, 44100) and np.array_equal(x[0], x[1])
    spectrum = np.abs(np.fft.rfft(x[0]))
    assert abs(np.argmax(spectrum) * 44100 / len(x[0]) - 440) < 2  # same pitch, new rate
    assert np.allclose(np.sqrt(np.mean(x[0] ** 2)), 0.5 / np.sqrt(2), rtol=0.02)
    mono = _load_audio(path, ratio=8, min_frames=4, sample_rate=RATE, channels=1)
    assert np.array_equal(mono[0], sf.read(path, dtype="float32")[0])  # the default path as was


def test_latents_are_the_checkpoints_vae_at_its_frame_rate(sao):
    work, config_json, weights = sao
    index = json.loads((work / "latents" / "index.json").read_text())
    vae = get_preset("tiny").config.autoencoder
    assert index["sample_rate"] == 44100 and index["audio_channels"] == 2
    assert index["latent_rate"] == pytest.approx(44100 / vae.downsampling_ratio)
    with np.load(work / "latents" / "shard-00000.npz") as z:
        assert z["latents"].shape[1] == vae.latent_dim
        first = z["latents"][:z["offsets"][1]].astype(np.float32)
    audio = _load_audio(work / "corpus" / "audio/organ/organ-0.flac", ratio=vae.downsampling_ratio,
                        min_frames=24, sample_rate=44100, channels=2)
    with torch.no_grad():
        want = load_autoencoder(str(config_json), weights).encode(
            torch.from_numpy(audio)[None], sample=False)[0].T.numpy()
    np.testing.assert_allclose(first, want, atol=2e-3, rtol=1e-2)  # float16 shards


def test_the_lmdm_stage_fine_tunes_the_checkpoint_adding_the_inpaint_group(sao):
    """As the reference fine-tunes SAO Small: every checkpoint tensor is taken; only the
    inpaint group's input projection is new (initialised as the default family's LMDM stage
    initialises it from its base)."""
    work, config_json, weights = sao
    cfg = DiffusionTrainConfig(latents=str(work / "latents"), model=str(config_json),
                               weights=str(weights), geometry=WINDOW, out=str(work / "x"))
    model = stage_model(cfg, "lmdm", log_init=False)
    assert model.config.stream.context_frames == 16 and model.config.stream.block_frames == 4
    assert [g.name for g in model.config.dit.input_add_groups] == ["inpaint"]
    from safetensors.torch import load_file

    sat = load_file(str(weights))
    state = model.sat_state_dict()
    assert all(torch.equal(state[k], v) for k, v in sat.items())  # the whole checkpoint came in
    fresh = sorted(set(state) - set(sat))
    assert fresh == ["model.model.to_input_add_embed.weight"]
    assert state[fresh[0]].shape == (model.config.dit.embed_dim, 1 + model.config.dit.io_channels)


def test_every_stage_releases_a_sao_family_model(sao):
    work, _, weights = sao
    from safetensors.torch import load_file

    sat_vae = {k[len("pretransform.model."):]: v for k, v in load_file(str(weights)).items()
               if k.startswith("pretransform.model.")}
    for stage, name in (("base", "base"), ("lmdm", "lmdm"), ("lmdm", "lmdm-from-base"),
                        ("arc", "arc")):
        model, payload = load_release_model(work / name / "release.pt")
        assert (payload["family"], payload["stage"]) == ("sao", stage)
        assert (model.config.stream is None) == (stage == "base")
        vae = model.autoencoder.state_dict()
        assert all(torch.equal(vae[k], v) for k, v in sat_vae.items())  # the VAE never trains
        log = [json.loads(line) for line in (work / name / "log.jsonl").open()]
        assert any("val" in r or "phase" in r for r in log)  # validated (arc: its phases)


def test_a_stage_without_the_vae_weights_is_refused(sao, tmp_path):
    work, config_json, _ = sao
    cfg = DiffusionTrainConfig(latents=str(work / "latents"), model=str(config_json),
                               geometry=WINDOW, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="needs `weights`"):
        stage_model(cfg, "base", log_init=False)
    with pytest.raises(ValueError, match="set `model` too"):
        stage_model(dataclasses.replace(cfg, model="", weights="w.ckpt"), "base", log_init=False)
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_weights(LMDM(get_preset("tiny").config), other)  # a VAE of the same shape, other values
    bad = dataclasses.replace(cfg, weights=str(other))
    with pytest.raises(ValueError, match="encoded with another codec"):
        train_base(bad)
    with pytest.raises(CheckpointError, match="does not hold this model's autoencoder"):
        stage_model(dataclasses.replace(cfg, model="sao-small", weights=str(other)), "base",
                    log_init=False)


def test_a_sao_family_release_exports_to_a_bundle_that_verifies(sao, tmp_path):
    work, _, _ = sao
    out = tmp_path / "bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (["export", "--checkpoint", str(work / "arc" / "release.pt"), "--out", str(out),
                  "--steps", "2"], ["verify", str(out)]):
        result = subprocess.run([sys.executable, "-m", "lmdm_bridge", *args],
                                capture_output=True, text=True, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["geometry"]["sample_rate"] == 44100
    assert manifest["geometry"]["audio_channels"] == 2
