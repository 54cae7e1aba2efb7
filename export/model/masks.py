"""Attention patterns of LMDM as small predicates over (query, key) token indices.

Token index space of one window (lmdm-reference §3.3): latent frames ``0 .. T-1`` followed by
the postpended global token at index ``T``. A predicate answers "may query q attend to key k";
:func:`materialize` turns it into the dense boolean matrix SDPA, ONNX export and the tests use
(``True`` = attend, the convention of ``F.scaled_dot_product_attention``).

Two patterns:

* **enc-dec** (context length ``s``): context queries see only context (bidirectionally);
  target queries and the global token see everything.
* **block-causal sliding window** (chunk ``c``, ``n`` context chunks): every token belongs to a
  chunk, the global token to the last (target) chunk; a query chunk sees itself and the
  ``lookback`` chunks before it (``n - 1`` in training), bidirectionally within a chunk.

The same chunk rule, evaluated in a larger index space, gives the masks of the streaming steps
(the fused first step of a block, the cached steps) and of the uncached long-sequence reference
the equivalence tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MaskPredicate = Callable[[Tensor, Tensor], Tensor]


def encdec_predicate(context_frames: int) -> MaskPredicate:
    """``allowed(q, k) = k < s or q >= s`` for a window whose first ``s`` frames are context."""

    def allowed(q: Tensor, k: Tensor) -> Tensor:
        return (k < context_frames) | (q >= context_frames)

    return allowed


def chunk_ids(index: Tensor, *, chunk: int, latent_frames: int) -> Tensor:
    """Chunk of each token index; the global token (index ``latent_frames``) joins the last one."""
    last = (latent_frames - 1) // chunk
    return torch.clamp(index // chunk, max=last)


def block_causal_predicate(
    *,
    chunk: int,
    latent_frames: int,
    lookback: int,
    target_lookback: int | None = None,
) -> MaskPredicate:
    """Sliding-window block-causal rule over a sequence of ``latent_frames`` frames + global token.

    A query in chunk ``b(q)`` may see keys in chunks ``b(q) - lookback .. b(q)``. The last chunk
    (the target block, which also holds the global token) may use a different ``target_lookback``:
    the reference's cached steps run unmasked, so there the target sees one chunk more than in
    training (lmdm-reference §3.4 step 4, bug 9).
    """
    last = (latent_frames - 1) // chunk
    target_lookback = lookback if target_lookback is None else target_lookback

    def allowed(q: Tensor, k: Tensor) -> Tensor:
        bq = chunk_ids(q, chunk=chunk, latent_frames=latent_frames)
        bk = chunk_ids(k, chunk=chunk, latent_frames=latent_frames)
        back = torch.where(bq == last, target_lookback, lookback)
        return (bk <= bq) & (bk >= bq - back)

    return allowed


def materialize(
    allowed: MaskPredicate,
    query_index: Tensor,
    key_index: Tensor,
) -> Tensor:
    """Dense boolean mask ``(len(query_index), len(key_index))`` of a predicate."""
    return allowed(query_index[:, None], key_index[None, :])


def window_mask(
    pattern: str,
    *,
    context_frames: int,
    block_frames: int,
    device: torch.device | None = None,
) -> Tensor:
    """Training mask of one window ``(T + 1, T + 1)``, ``T = context_frames + block_frames``.

    ``pattern`` is ``"enc-dec"`` or ``"block-causal"`` (chunk = block, ``n = s / c`` context
    chunks, lookback ``n - 1``).
    """
    frames = context_frames + block_frames
    index = torch.arange(frames + 1, device=device)
    if pattern == "enc-dec":
        predicate = encdec_predicate(context_frames)
    elif pattern == "block-causal":
        n = context_frames // block_frames
        predicate = block_causal_predicate(chunk=block_frames, latent_frames=frames, lookback=n - 1)
    else:
        raise ValueError(f"unknown attention pattern {pattern!r}: use 'enc-dec' or 'block-causal'")
    return materialize(predicate, index, index)


def fused_step_mask(*, context_frames: int, block_frames: int, device=None) -> Tensor:
    """Mask of the block-causal fused first step, ``(2c + 1, s + 2c + 1)``.

    Keys are ``[cache c0..c_{n-1} | pending | target | global]``, queries ``[pending | target |
    global]``: the sliding rule in an ``n + 2``-chunk index space, so pending sees ``c1..c_{n-1}``
    and itself, and the target sees ``c2..c_{n-1}``, pending and itself, exactly as in the
    training window after the slide (lmdm-reference §3.4 step 3).
    """
    c, s = block_frames, context_frames
    n = s // c
    frames = s + 2 * c
    predicate = block_causal_predicate(chunk=c, latent_frames=frames, lookback=n - 1)
    keys = torch.arange(frames + 1, device=device)
    return materialize(predicate, keys[s:], keys)


def cached_step_mask(
    mode: str, *, context_frames: int, block_frames: int, device=None
) -> Tensor | None:
    """Mask of a block-causal cached step: queries ``[target | global]``, keys ``[cache | target |
    global]``, shape ``(c + 1, s + c + 1)``; ``None`` means no mask.

    ``mode="full"`` is the reference behaviour (unmasked: the target also sees the oldest cached
    chunk, which training hides); ``mode="window"`` applies the training window, hiding it.
    """
    if mode == "full":
        return None
    if mode != "window":
        raise ValueError(f"unknown cached-step mask mode {mode!r}: use 'full' or 'window'")
    c, s = block_frames, context_frames
    keys = torch.arange(s + c + 1, device=device)
    return (keys >= c)[None, :].expand(c + 1, -1).clone()
