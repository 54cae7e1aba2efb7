"""The benchmark harness end to end on the tiny preset (figures are not checked: speed is
measured by `lmdm-bridge bench`, never asserted in tests)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from lmdm_export.bench import report_markdown, run_bench  # noqa: E402
from lmdm_export.flops import block_flops  # noqa: E402
from lmdm_export.presets import get_preset  # noqa: E402

from .engine_support import tiny_model_and_bundle  # noqa: E402


def test_cost_model_matches_the_reference_arithmetic():
    """lmdm-reference §3.6 / cpu-baseline §5: 149.4 GFLOP per 240-frame SAO Small forward and
    the 4.4x outpainting / block-causal ratio at 8 steps."""
    cfg = get_preset("sao-small").config
    outpaint = block_flops("outpaint", cfg.dit, cfg.stream, 8, 65)
    causal = block_flops("block-causal", cfg.dit, cfg.stream, 8, 65)
    assert outpaint / causal == pytest.approx(4.4, abs=0.05)
    assert outpaint / 8 == pytest.approx(150.5e9, rel=0.01)  # 149.4 + 65 text tokens, + W_add


def test_bench_runs_every_method_on_tiny():
    model, bundle = tiny_model_and_bundle()
    report = run_bench(model, bundles={"fp32": bundle}, steps=2, blocks=2, sampler="euler",
                       cfg=1.0, seed=0, threads=1, progress=lambda m: None)
    names = set(report["results"])
    assert {"outpaint_torch", "encdec_torch", "blockcausal_torch", "outpaint_ort",
            "encdec_ort", "blockcausal_ort", "vae_decode_ort"} <= names
    assert "outpaint_sat" in names  # stable-audio-tools is installed in the test environment
    assert report["graphs"]["blockcausal_ort"]["bc_cached"]["gflop"] > 0
    table = report_markdown(report)
    assert "`blockcausal_ort`" in table and "bc_cached" in table
