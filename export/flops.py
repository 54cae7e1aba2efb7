"""Analytical FLOPs of one generated block for each streaming method (lmdm-reference §3.6).

Counted as 2 FLOPs per multiply-add of the matrix products (the linear layers applied to every
query token, attention scores and values); elementwise work, norms and the one-off conditioning
are left out, as in ../shared/docs/cpu-baseline.md §5 (whose 149.4 GFLOP for a 240-frame SAO
Small forward this reproduces).
"""

from __future__ import annotations

from lmdm_export.model.config import DiTConfig, StreamConfig


def forward_flops(dit: DiTConfig, queries: int, keys: int, cond_tokens: int) -> float:
    """One DiT evaluation with ``queries`` new tokens attending to ``keys`` keys (cache + new)."""
    d, L = dit.embed_dim, dit.depth
    # qkv 3d^2, self out d^2, cross q d^2, cross out d^2, SwiGLU 2*mult*d^2 + mult*d^2.
    per_token = L * (6 + 3 * dit.ff_mult) * d * d
    per_token += 2 * dit.io_channels * d + dit.input_add_channels * d + 2 * dit.io_channels ** 2
    linear = 2 * per_token * queries
    attention = 4 * queries * keys * d * L + 4 * queries * cond_tokens * d * L
    return float(linear + attention)


def block_flops(method: str, dit: DiTConfig, stream: StreamConfig, steps: int,
                cond_tokens: int) -> float:
    """FLOPs per block in steady state (the first block's bootstrap is a time-to-first-audio
    cost, not a per-block one). The global token counts as one more query and key."""
    s, c = stream.context_frames, stream.block_frames
    if method == "outpaint":
        return steps * forward_flops(dit, s + c + 1, s + c + 1, cond_tokens)
    if method == "enc-dec":
        return (forward_flops(dit, s, s, cond_tokens)
                + steps * forward_flops(dit, c + 1, s + c + 1, cond_tokens))
    if method == "block-causal":
        return (forward_flops(dit, 2 * c + 1, s + 2 * c + 1, cond_tokens)
                + (steps - 1) * forward_flops(dit, c + 1, s + c + 1, cond_tokens))
    raise ValueError(f"unknown method {method!r}")
