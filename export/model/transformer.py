"""The pre-norm transformer of the SAO Small DiT, with the KV cache as explicit tensors.

Module and parameter names mirror stable-audio-tools' ``ContinuousTransformer`` so that a
checkpoint's ``model.model.transformer.*`` keys load unchanged (lmdm-reference §1).

Unlike the reference code, no attention module holds cache state: every call takes the past
keys/values as tensors and returns the keys/values of its own tokens, and the caller (the stream
state in :mod:`lmdm_export.model.cache`) decides what to keep. That makes each streaming step a
pure function, which is what the ONNX graphs with cache inputs and outputs need.

Shapes: ``B`` batch, ``S`` tokens of this call, ``P`` cached tokens, ``L`` layers, ``H`` heads,
``Dh`` head dim, ``D`` width, ``Tc`` conditioning tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmdm_export.model.rope import RotaryEmbedding, apply_rotary


class KV(NamedTuple):
    """Keys and values of every layer: ``k``, ``v`` each ``(L, B, H, S, Dh)``."""

    k: Tensor
    v: Tensor


class LayerNorm(nn.Module):
    """Bias-free LayerNorm with a gain (``gamma``) and a zero ``beta`` buffer, as in SAO."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.gamma.shape, weight=self.gamma, bias=self.beta, eps=self.eps)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


class Attention(nn.Module):
    """Multi-head attention with per-head LayerNorm on q and k (before RoPE).

    Self-attention uses a fused ``to_qkv``; cross-attention (``dim_context`` given) uses
    ``to_q`` on the tokens and ``to_kv`` on the conditioning tokens.
    """

    def __init__(self, dim: int, dim_heads: int, dim_context: int | None = None,
                 qk_norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = dim // dim_heads
        if dim_context is None:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        else:
            if dim_context != dim:
                raise ValueError("cross-attention context must already be projected to the width")
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(dim_context, dim_context * 2, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.to_out.weight)
        self.q_norm = nn.LayerNorm(dim_heads, eps=qk_norm_eps)
        self.k_norm = nn.LayerNorm(dim_heads, eps=qk_norm_eps)

    def self_qkv(self, x: Tensor, angles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, S, D)`` -> q, k, v ``(B, H, S, Dh)``; q and k normalised and rotated."""
        q, k, v = (_split_heads(t, self.num_heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        q = apply_rotary(self.q_norm(q), angles)
        k = apply_rotary(self.k_norm(k), angles)
        return q, k, v

    def attend_self(self, x: Tensor, angles: Tensor, past_k: Tensor | None,
                    past_v: Tensor | None, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention of ``S`` new tokens over ``[past (P) | new (S)]``.

        ``mask`` is ``(S, P + S)`` boolean (True = attend) or None (attend to all).
        Returns the output ``(B, S, D)`` and the new tokens' k, v ``(B, H, S, Dh)``.
        """
        q, k, v = self.self_qkv(x, angles)
        keys = k if past_k is None else torch.cat((past_k, k), dim=2)
        values = v if past_v is None else torch.cat((past_v, v), dim=2)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.to_out(_merge_heads(out)), k, v

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values ``(B, H, Tc, Dh)`` of conditioning tokens ``(B, Tc, D)``.

        They depend on the prompt only, so a stream computes them once per prompt.
        """
        k, v = (_split_heads(t, self.num_heads) for t in self.to_kv(context).chunk(2, dim=-1))
        return self.k_norm(k), v

    def attend_cross(self, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Cross-attention of ``x (B, S, D)`` to precomputed context keys/values (no mask, no RoPE:
        the reference disables the cross-attention padding mask)."""
        q = self.q_norm(_split_heads(self.to_q(x), self.num_heads))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class GLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.silu(gate)


class FeedForward(nn.Module):
    """SwiGLU: ``Linear(D -> 2 mult D)``, SiLU gate, zero-initialised ``Linear(mult D -> D)``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        out = nn.Linear(inner, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        # Index 1 is an identity so parameter names match the reference (ff.0 / ff.2).
        self.ff = nn.Sequential(GLU(dim, inner), nn.Identity(), out)

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, dim_heads: int, cross_attend: bool, ff_mult: int,
                 qk_norm_eps: float) -> None:
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = Attention(dim, dim_heads, qk_norm_eps=qk_norm_eps)
        self.cross_attend = cross_attend
        if cross_attend:
            self.cross_attend_norm = LayerNorm(dim)
            self.cross_attn = Attention(dim, dim_heads, dim_context=dim, qk_norm_eps=qk_norm_eps)
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x: Tensor, angles: Tensor, past_k: Tensor | None, past_v: Tensor | None,
                mask: Tensor | None, cross_k: Tensor | None,
                cross_v: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        attn, k, v = self.self_attn.attend_self(self.pre_norm(x), angles, past_k, past_v, mask)
        x = x + attn
        if self.cross_attend:
            x = x + self.cross_attn.attend_cross(self.cross_attend_norm(x), cross_k, cross_v)
        x = x + self.ff(self.ff_norm(x))
        return x, k, v


class ContinuousTransformer(nn.Module):
    """Input/output projections, the rotary table and the stack of blocks."""

    def __init__(self, *, dim: int, depth: int, dim_heads: int, dim_in: int, dim_out: int,
                 cross_attend: bool, rotary_dim: int, rope_base: float, ff_mult: int,
                 qk_norm_eps: float) -> None:
        super().__init__()
        self.project_in = nn.Linear(dim_in, dim, bias=False)
        self.project_out = nn.Linear(dim, dim_out, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(rotary_dim, base=rope_base)
        self.layers = nn.ModuleList(
            TransformerBlock(dim, dim_heads, cross_attend, ff_mult, qk_norm_eps)
            for _ in range(depth))

    def context_kv(self, context: Tensor) -> KV:
        """Per-layer cross-attention keys/values ``(L, B, H, Tc, Dh)`` of projected cond tokens."""
        ks, vs = zip(*(layer.cross_attn.context_kv(context) for layer in self.layers),
                     strict=True)
        return KV(torch.stack(ks), torch.stack(vs))

    def forward(self, x: Tensor, positions: Tensor, past: KV | None, mask: Tensor | None,
                cross: KV | None) -> tuple[Tensor, KV]:
        """Run all blocks on ``x (B, S, D)`` at integer ``positions (S,)``.

        ``past`` holds each layer's cached keys/values ``(L, B, H, P, Dh)`` (already normalised
        and rotated at their own positions), ``mask`` is ``(S, P + S)`` or None. Returns the
        hidden states ``(B, S, D)`` and the new tokens' keys/values ``(L, B, H, S, Dh)``.
        """
        angles = self.rotary_pos_emb.angles(positions)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(
                x, angles,
                None if past is None else past.k[i], None if past is None else past.v[i],
                mask,
                None if cross is None else cross.k[i], None if cross is None else cross.v[i])
            new_k.append(k)
            new_v.append(v)
        return x, KV(torch.stack(new_k), torch.stack(new_v))
