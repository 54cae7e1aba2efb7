"""Shared fixtures: seeded tiny models whose every weight is random.

The DiT zero-initialises its output projections and residual convs (an identity at the start of
training), which would make attention invisible in an equivalence test; tests therefore draw
every parameter at random.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def randomize_(module, seed: int, std: float = 0.1):
    """Overwrite every parameter with N(0, std) (LayerNorm gains with 1 + N(0, std))."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            p.copy_(1 + noise if name.endswith(("gamma", "norm.weight")) else noise)
    return module


@pytest.fixture
def tiny_preset():
    from lmdm_export.presets import get_preset

    return get_preset("tiny")
