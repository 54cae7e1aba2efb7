"""Rotary position embedding with explicit positions (lmdm-reference §3.5).

Positions are passed explicitly, never derived from a sequence length, so that the streaming
steps (fused first step, cached steps, re-rotation of the cache) can give every token exactly
the position it has in the training window. Layout as in stable-audio-tools: the first
``rotary_dim`` dims of a head are rotated, pairs are ``(i, i + rotary_dim / 2)`` ("rotate half"),
angles are computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Holds ``inv_freq`` (a persistent buffer, so a checkpoint decides the base)."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq)

    def angles(self, positions: Tensor) -> Tensor:
        """Rotation angles ``(S, rotary_dim)`` for integer or float positions ``(S,)``."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq.to(torch.float32)[None, :]
        return torch.cat((freqs, freqs), dim=-1)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate the first ``angles.shape[-1]`` dims of ``x (..., S, head_dim)`` by ``angles (S, r)``.

    Rotation is computed in float32 and cast back to ``x``'s dtype. ``apply_rotary(x, a(p))``
    followed by ``apply_rotary(., a(d))`` equals ``apply_rotary(x, a(p + d))``: that is how the
    block-causal cache is re-rotated instead of recomputed.
    """
    rot = angles.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x32 = x_rot.to(torch.float32)
    out = x32 * angles.cos() + rotate_half(x32) * angles.sin()
    return torch.cat((out.to(x.dtype), x_pass), dim=-1)
