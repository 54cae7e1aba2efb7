"""Parity with the real stable-audio-tools 0.0.20 DiT on shared random weights.

Our DiT with no context (no router, no input-add groups, no mask) must equal SAT's
``DiffusionTransformer`` forward, on the tiny geometry and on the full SAO Small geometry. The
weights travel through our checkpoint loader, so the key mapping is tested too.

Tolerance: relative 1e-5 of the output scale. The two implementations order a few float32
operations differently (RoPE table slicing, attention kernels); the observed error is ~1e-7
relative, and a real bug (a swapped RoPE half, a missing qk-norm) is of order 1.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_audio_tools")

from lmdm_export.checkpoint import config_from_sat, load_state_strict  # noqa: E402
from lmdm_export.model.lmdm import LMDM  # noqa: E402

from .sat_reference import GEOMETRIES, build_sat_model, sat_model_config  # noqa: E402


def _compare(geometry: str, batch: int = 2):
    sat = build_sat_model(geometry)
    ours = LMDM(config_from_sat(sat_model_config(geometry))).eval()
    load_state_strict(ours, sat.state_dict(), source=f"SAT {geometry}")
    g = GEOMETRIES[geometry]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, g["latent"], g["frames"], generator=gen)
    t = torch.rand(batch, generator=gen)
    metadata = [{"seconds_total": 11.0 + i} for i in range(batch)]
    with torch.inference_mode():
        cond = sat.conditioner(metadata, device="cpu")
        inputs = sat.get_conditioning_inputs(cond)
        expected = sat.model.model(x, t, cross_attn_cond=inputs["cross_attn_cond"],
                                   global_embed=inputs["global_cond"], cfg_scale=1.0)
        cross, glob = ours.conditioning_inputs(metadata)
        got = ours.dit(x, t, cross, glob)
    err = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    print(f"DiT parity {geometry}: max abs error {err:.3e} (output scale {scale:.3f})")
    assert torch.isfinite(got).all()
    assert err <= 1e-5 * max(scale, 1.0), f"max abs error {err:.3e} at scale {scale:.3f}"


def test_dit_matches_stable_audio_tools_tiny():
    _compare("tiny")


@pytest.mark.slow
def test_dit_matches_stable_audio_tools_sao_small():
    _compare("sao-small", batch=1)
