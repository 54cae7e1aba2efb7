"""Every shipped preset builds, conditions on a prompt, streams blocks and decodes audio."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lmdm_export.generate import GenerationSettings, generate_audio  # noqa: E402
from lmdm_export.model.lmdm import LMDM  # noqa: E402
from lmdm_export.presets import PRESETS, get_preset  # noqa: E402


def _run(name: str, steps: int, method: str = "block-causal"):
    preset = get_preset(name)
    torch.manual_seed(0)
    model = LMDM(preset.config).eval()
    cfg = preset.config
    seconds = 2 * cfg.stream.block_frames / cfg.latent_rate
    audio = generate_audio(model, "string ensemble chorale", seconds,
                           GenerationSettings(steps=steps, cfg_scale=2.0, method=method))
    samples = 2 * cfg.stream.block_frames * cfg.autoencoder.downsampling_ratio
    assert audio.shape == (cfg.autoencoder.audio_channels, samples)
    assert torch.isfinite(audio).all()
    return model


@pytest.mark.parametrize("method", ["block-causal", "enc-dec", "outpaint"])
def test_tiny_preset_streams_audio(method):
    _run("tiny", steps=3, method=method)


@pytest.mark.slow
def test_sao_small_preset_streams_audio():
    model = _run("sao-small", steps=2)
    dit_params = sum(p.numel() for p in model.dit.parameters())
    # 340.9 M for the SAO Small DiT plus LMDM's Linear(65 -> 1024) input-add projection.
    assert dit_params == pytest.approx(340.9e6 + 65 * 1024, rel=2e-3)


def test_default_preset_streams_audio():
    model = _run("default", steps=2)
    dit_params = sum(p.numel() for p in model.dit.parameters())
    assert 3e6 < dit_params < 8e6  # small enough for real-time on 2 CPU cores


def test_unknown_preset_names_the_choices():
    with pytest.raises(KeyError, match="sao-small"):
        get_preset("huge")
    assert set(PRESETS) == {"tiny", "sao-small", "default"}
