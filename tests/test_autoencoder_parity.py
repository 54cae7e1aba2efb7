"""Parity of our Oobleck VAE with stable-audio-tools 0.0.20 on shared random weights.

SAT builds the reference through the same factory path a SAT diffusion model uses for its
``pretransform``; its state dict is loaded into ``OobleckAutoencoder`` with ``strict=True`` and
both are run on the same seeded inputs. SAT is a test-only dependency, imported lazily.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn

from lmdm_export.model.autoencoder import OobleckAutoencoder, OobleckConfig, oobleck_preset
from lmdm_export.model.oobleck import WNConv1d, WNConvTranspose1d, fold_weight_norm

# Both sides run the same fp32 convs; they differ only in how the weight-norm weight is
# rounded (torch's fused ``_weight_norm`` kernel vs our ``v * (g / ||v||)``), about 1 ulp per
# weight, which compounds over the ~50 convs of a pass. Measured: up to 3e-6 of the output scale
# on sao-small encode, 5e-7 on tiny. 3e-5 leaves ~10x headroom; a wrong key, layer order,
# padding or activation gives errors of order 1e-1 or more.
RELATIVE_TOLERANCE = 3e-5

# Per geometry: batch size and number of latent frames. sao-small uses 2 frames (4096 samples)
# so that it runs in a few seconds on two CPU cores.
_RUN_SIZES = {"tiny": (2, 16), "sao-small": (1, 2)}


def _sat_pretransform_config(cfg: OobleckConfig) -> dict:
    """The ``pretransform`` section of a SAT diffusion config for this geometry."""
    oobleck = {
        "channels": cfg.channels,
        "c_mults": list(cfg.c_mults),
        "strides": list(cfg.strides),
        "use_snake": cfg.use_snake,
    }
    return {
        "type": "autoencoder",
        "iterate_batch": True,
        "model_half": False,
        "chunked": True,
        "config": {
            "encoder": {
                "type": "oobleck",
                "requires_grad": False,
                "config": {
                    **oobleck,
                    "in_channels": cfg.audio_channels,
                    "latent_dim": 2 * cfg.latent_dim,
                },
            },
            "decoder": {
                "type": "oobleck",
                "config": {
                    **oobleck,
                    "out_channels": cfg.audio_channels,
                    "latent_dim": cfg.latent_dim,
                    "final_tanh": cfg.final_tanh,
                },
            },
            "bottleneck": {"type": "vae"},
            "latent_dim": cfg.latent_dim,
            "downsampling_ratio": cfg.downsampling_ratio,
            "io_channels": cfg.audio_channels,
        },
    }


def _perturb(model: nn.Module, generator: torch.Generator) -> None:
    """Move parameters off their init values so every one of them affects the output.

    At init SnakeBeta has alpha = beta = 0 and weight norm has g = ||v||, so a swapped alpha and
    beta or an ignored g would pass unnoticed. Mild ranges keep the deep stack from blowing up.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
            elif name.endswith("weight_g"):
                p.mul_(0.5 + torch.rand(p.shape, generator=generator))


@pytest.fixture(
    scope="module",
    params=["tiny", pytest.param("sao-small", marks=pytest.mark.slow)],
)
def models(request: pytest.FixtureRequest) -> tuple[str, nn.Module, OobleckAutoencoder]:
    """(preset name, SAT AudioAutoencoder, ours) sharing the same perturbed random weights."""
    factory = pytest.importorskip("stable_audio_tools.models.factory")
    name = request.param
    cfg = oobleck_preset(name)
    # SAT initialises from the global RNG; fork it so other tests see untouched state.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pretransform = factory.create_pretransform_from_config(
            _sat_pretransform_config(cfg), cfg.sample_rate
        )
    sat = pretransform.model.eval()
    _perturb(sat, torch.Generator().manual_seed(1))
    ours = OobleckAutoencoder(cfg).eval()
    ours.load_state_dict(sat.state_dict(), strict=True)
    return name, sat, ours


def _audio(name: str, cfg: OobleckConfig, seed: int) -> Tensor:
    batch, frames = _RUN_SIZES[name]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.audio_channels, frames * cfg.downsampling_ratio, generator=g)


def _assert_parity(ours: Tensor, reference: Tensor, what: str) -> None:
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    scale = reference.abs().max().item()
    err = (ours - reference).abs().max().item()
    assert err <= RELATIVE_TOLERANCE * max(scale, 1.0), (
        f"{what}: max abs error {err:.3e} at output scale {scale:.3e}"
    )


def test_state_dict_keys_match_sat(models):
    _, sat, ours = models
    sat_shapes = {k: tuple(v.shape) for k, v in sat.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert set(our_shapes) == set(sat_shapes), (
        f"only ours: {sorted(set(our_shapes) - set(sat_shapes))[:5]}, "
        f"only SAT: {sorted(set(sat_shapes) - set(our_shapes))[:5]}"
    )
    assert our_shapes == sat_shapes


@torch.inference_mode()
def test_encode_mean_matches_sat(models):
    name, sat, ours = models
    audio = _audio(name, ours.config, seed=2)
    # SAT's bottleneck always samples; its mean is the first half of the encoder output.
    reference = sat.encoder(audio).chunk(2, dim=1)[0]
    latents = ours.encode(audio, sample=False)
    frames = audio.shape[-1] // ours.config.downsampling_ratio
    assert latents.shape == (audio.shape[0], ours.config.latent_dim, frames)
    _assert_parity(latents, reference, f"{name} encode (mean)")


@torch.inference_mode()
def test_encode_sample_matches_sat_with_same_seed(models):
    name, sat, ours = models
    audio = _audio(name, ours.config, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        reference, info = sat.encode(audio, return_info=True)
    latents, kl = ours.encode_with_kl(audio, generator=torch.Generator().manual_seed(4))
    _assert_parity(latents, reference, f"{name} encode (sampled)")
    _assert_parity(kl, info["kl"], f"{name} KL")


@torch.inference_mode()
def test_decode_matches_sat(models):
    name, sat, ours = models
    batch, frames = _RUN_SIZES[name]
    g = torch.Generator().manual_seed(5)
    latents = torch.randn(batch, ours.config.latent_dim, frames, generator=g)
    reference = sat.decode(latents)
    audio = ours.decode(latents)
    cfg = ours.config
    assert audio.shape == (batch, cfg.audio_channels, frames * cfg.downsampling_ratio)
    _assert_parity(audio, reference, f"{name} decode")


@torch.inference_mode()
def test_fold_weight_norm_leaves_outputs_unchanged(models):
    name, _, ours = models
    folded = fold_weight_norm(copy.deepcopy(ours))
    assert not any(isinstance(m, (WNConv1d, WNConvTranspose1d)) for m in folded.modules())
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded.state_dict())

    audio = _audio(name, ours.config, seed=6)
    latents = ours.encode(audio, sample=False)
    # Folding stores exactly the tensor the weight-norm module computes each call and runs the
    # same conv op on it, so the outputs are bit-identical.
    torch.testing.assert_close(folded.encode(audio, sample=False), latents, rtol=0, atol=0)
    torch.testing.assert_close(folded.decode(latents), ours.decode(latents), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strides": (4, 8, 8, 3)}, "even"),
        ({"strides": (4, 8)}, "one entry per block"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_config_rejects_bad_geometry(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(oobleck_preset("tiny"), **change)


def test_encode_rejects_length_not_multiple_of_ratio():
    model = OobleckAutoencoder(oobleck_preset("tiny"))
    with pytest.raises(ValueError, match="multiple of the downsampling ratio"):
        model.encode(torch.zeros(1, 2, 12))
