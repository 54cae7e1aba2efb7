"""LMDM's block-wise KV cache as pure step functions over explicit tensors (lmdm-reference §3.4).

Each function is one network evaluation with the cache going in and out as tensors - exactly the
graphs the ONNX bundle exports. The stateful bookkeeping (which function to call when, what to
feed back) lives in :mod:`lmdm_export.rollout`.

Geometry (all from :class:`~lmdm_export.model.config.StreamConfig`): ``s`` context frames,
``c`` block frames, ``n = s / c`` context chunks, window ``T = s + c``. Positions follow the
training window: latents ``1..T``, the global token ``0`` (§3.5).

Cache tensors: ``KV(k, v)``, each ``(L, B, H, P, Dh)``: per layer, the keys (after q/k-norm and
RoPE at the position of their frame) and values of ``P`` clean context frames.

**Block-causal** (``rope_mode="fixed"``): the cache always holds the last ``n`` chunks at
positions ``1..s``.

1. :func:`bootstrap_step` - the first step of the first block (or after a prompt change): the
   whole window under the block-causal mask; the context frames' keys/values become the cache.
2. :func:`fused_step` - the first step of every later block: queries ``[pending | target |
   global]`` over ``[cache | pending | target | global]`` with the sliding mask in an
   ``n + 2``-chunk index space. Its by-product is the next cache: ``[c1 .. c_{n-1} | pending]``
   (the oldest chunk evicted), re-rotated by ``-c`` so it sits at ``1..s`` again. No separate
   context pass, ever.
3. :func:`cached_step` - the remaining steps: ``[target | global]`` over ``[cache | target |
   global]``; the mask is a switch (``"full"``: the reference's unmasked step, ``"window"``: the
   training window).

**Enc-dec**: :func:`prefill` runs the context alone (bidirectional, no global token) once per
block; :func:`decoder_step` runs ``[target | global]`` over ``[cache | target | global]``
unmasked. The context length is the cache's, never a constant (bug 2 of the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lmdm_export.model.config import DiTConfig, StreamConfig
from lmdm_export.model.dit import Conditioning, DiffusionTransformer
from lmdm_export.model.masks import cached_step_mask, fused_step_mask, window_mask
from lmdm_export.model.rope import apply_rotary
from lmdm_export.model.transformer import KV


@dataclass
class StreamState:
    """Everything a stream carries from one block to the next (``B'`` = ``2B`` under CFG).

    * ``context``: ``(B, C, s)`` clean latents - the sliding context of enc-dec and outpainting,
      the bootstrap context of block-causal (unused once the cache exists);
    * ``cache``: block-causal only, ``KV`` of ``(L, B', H, s, Dh)`` at positions ``1..s``, or
      None before the bootstrap;
    * ``pending``: block-causal only, ``(B, C, c)`` the last clean block, not yet in the cache;
    * ``blocks``: blocks committed so far.
    """

    context: Tensor
    cache: KV | None = None
    pending: Tensor | None = None
    blocks: int = 0

    def snapshot(self) -> StreamState:
        """A copy that later steps cannot change (restore it to replay a stream from here)."""
        def clone(t):
            return None if t is None else t.clone()

        cache = None if self.cache is None else KV(self.cache.k.clone(), self.cache.v.clone())
        return replace(self, context=self.context.clone(), cache=cache,
                       pending=clone(self.pending))


def build_input_add(config: DiTConfig, *, clean: Tensor | None, batch: int, frames: int,
                    controls: dict[str, Tensor] | None = None, device=None,
                    dtype=torch.float32) -> Tensor | None:
    """Concatenate the model's input-add groups for ``frames`` frames: ``(B, sum(ch), frames)``.

    ``clean``: clean latents ``(B, C, frames)`` of context frames (inpaint group = ``[1; x]``),
    or None for target frames (inpaint group = zeros). ``controls`` maps other group names to
    their ``(B, ch, frames)`` tensors; a group not given is zeros, which is also how training's
    per-group CFG dropout presents "no control".
    """
    if not config.input_add_groups:
        return None
    controls = dict(controls or {})
    parts = []
    for group in config.input_add_groups:
        if group.name == "inpaint":
            if clean is None:
                parts.append(torch.zeros(batch, group.channels, frames, device=device, dtype=dtype))
            else:
                ones = torch.ones(batch, 1, frames, device=clean.device, dtype=clean.dtype)
                parts.append(torch.cat((ones, clean), dim=1))
        elif group.name in controls:
            tensor = controls.pop(group.name)
            if tensor.shape != (batch, group.channels, frames):
                raise ValueError(f"control {group.name!r} has shape {tuple(tensor.shape)}, "
                                 f"expected {(batch, group.channels, frames)}")
            parts.append(tensor.to(dtype))
        else:
            parts.append(torch.zeros(batch, group.channels, frames, device=device, dtype=dtype))
    if controls:
        raise KeyError(f"the model has no input-add group(s) {sorted(controls)}")
    return torch.cat(parts, dim=1)


def router(context: int, target: int, *, batch: int, device=None,
           dtype=torch.float32) -> Tensor:
    """``(B, 1, context + target)``: 0 on the clean context frames, 1 on the noisy target."""
    r = torch.cat((torch.zeros(context, device=device, dtype=dtype),
                   torch.ones(target, device=device, dtype=dtype)))
    return r.expand(batch, 1, -1)


def _arange(start: int, stop: int, like: Tensor) -> Tensor:
    return torch.arange(start, stop, device=like.device)


# -- block-causal --------------------------------------------------------------------------------

def bootstrap_step(model: DiffusionTransformer, stream: StreamConfig, cond: Conditioning, *,
                   context: Tensor, context_add: Tensor | None, target: Tensor,
                   target_add: Tensor | None, t: Tensor) -> tuple[Tensor, KV]:
    """First step of a block-causal stream over the window ``[context (s) | target (c)]``.

    Args: ``context (B, C, s)`` clean (zeros = "no context"), ``target (B, C, c)`` noisy at
    ``t (B,)``; ``*_add`` their input-add channels. Returns the target velocity ``(B, C, c)``
    and the cache ``(L, B, H, s, Dh)``.
    """
    s, c = stream.context_frames, stream.block_frames
    x = torch.cat((context, target), dim=-1)
    add = None if context_add is None else torch.cat((context_add, target_add), dim=-1)
    mask = window_mask("block-causal", context_frames=s, block_frames=c, device=x.device)
    v, kv = model.step(x, t, cond, positions=_arange(1, s + c + 1, x), global_position=0,
                       router=router(s, c, batch=x.shape[0], device=x.device, dtype=x.dtype),
                       input_add=add, mask=mask)
    return v[..., s:], KV(kv.k[..., :s, :], kv.v[..., :s, :])


def fused_step(model: DiffusionTransformer, stream: StreamConfig, cond: Conditioning, *,
               cache: KV, pending: Tensor, pending_add: Tensor | None, target: Tensor,
               target_add: Tensor | None, t: Tensor) -> tuple[Tensor, KV]:
    """First step of a later block: also moves the cache one chunk on.

    Args: ``cache`` ``(L, B, H, s, Dh)`` at positions ``1..s``; ``pending (B, C, c)`` the clean
    last block; ``target (B, C, c)`` noisy at ``t``. Positions: cache ``1..s``, pending
    ``s+1..s+c``, target ``s+c+1..s+2c`` and the global token ``c``, so every relative offset
    equals the training window's after the slide. Returns the target velocity and the new cache
    ``[c1 .. c_{n-1} | pending]`` re-rotated by ``-c`` to positions ``1..s`` (fixed RoPE mode).
    """
    s, c = stream.context_frames, stream.block_frames
    x = torch.cat((pending, target), dim=-1)
    add = None if pending_add is None else torch.cat((pending_add, target_add), dim=-1)
    mask = fused_step_mask(context_frames=s, block_frames=c, device=x.device)
    v, kv = model.step(x, t, cond, positions=_arange(s + 1, s + 2 * c + 1, x),
                       global_position=c,
                       router=router(c, c, batch=x.shape[0], device=x.device, dtype=x.dtype),
                       input_add=add, past=cache, mask=mask)
    back = model.transformer.rotary_pos_emb.angles(x.new_tensor([-c]))
    new_k = torch.cat((cache.k[..., c:, :], kv.k[..., :c, :]), dim=-2)
    return v[..., c:], KV(apply_rotary(new_k, back),
                          torch.cat((cache.v[..., c:, :], kv.v[..., :c, :]), dim=-2))


def cached_step(model: DiffusionTransformer, stream: StreamConfig, cond: Conditioning, *,
                cache: KV, target: Tensor, target_add: Tensor | None, t: Tensor) -> Tensor:
    """A later step of a block: the target (positions ``s+1..s+c``) and the global token (0) over
    the cache; the cache is read, not changed. Returns the target velocity ``(B, C, c)``."""
    s, c = stream.context_frames, stream.block_frames
    mask = cached_step_mask(stream.cached_step_mask, context_frames=s, block_frames=c,
                            device=target.device)
    v, _ = model.step(target, t, cond, positions=_arange(s + 1, s + c + 1, target),
                      global_position=0,
                      router=torch.ones_like(target[:, :1]), input_add=target_add,
                      past=cache, mask=mask)
    return v


# -- enc-dec -------------------------------------------------------------------------------------

def prefill(model: DiffusionTransformer, cond: Conditioning, *, context: Tensor,
            context_add: Tensor | None) -> KV:
    """Encoder pass over the clean context ``(B, C, P)`` alone (positions ``1..P``, no global
    token, no mask: context attention is bidirectional among context). Returns its cache
    ``(L, B, H, P, Dh)``; ``P`` is whatever context length is given."""
    frames = context.shape[-1]
    t = context.new_zeros(context.shape[0])
    _, kv = model.step(context, t, cond, positions=_arange(1, frames + 1, context),
                       global_position=None, router=torch.zeros_like(context[:, :1]),
                       input_add=context_add)
    return kv


def decoder_step(model: DiffusionTransformer, cond: Conditioning, *, cache: KV, target: Tensor,
                 target_add: Tensor | None, t: Tensor) -> Tensor:
    """Target ``(B, C, c)`` at positions ``P+1..P+c`` and the global token over the prefilled
    cache, unmasked (the enc-dec mask lets target and global token see everything)."""
    p, c = cache.k.shape[-2], target.shape[-1]
    v, _ = model.step(target, t, cond, positions=_arange(p + 1, p + c + 1, target),
                      global_position=0, router=torch.ones_like(target[:, :1]),
                      input_add=target_add, past=cache)
    return v
