"""The bundle's graphs as small torch modules with tensor-only signatures, ready for ONNX.

Each DiT graph wraps exactly one step function of :mod:`lmdm_export.model.cache`, so the ONNX
graphs compute what the torch rollout computes. The KV cache crosses every boundary as explicit
tensors ``(L, B, H, S, Dh)``; all sizes but the batch are fixed by the model's geometry.

Tensor names (the manifest lists them with shapes; docs/bundle-format.md explains them):

* ``x``: latent frames of the call, ``input_add``: their input-add groups, ``t``: noise level;
* ``cross_k``, ``cross_v``, ``global_embed``: from the ``conditioning`` graph, once per prompt;
* ``cache_k``, ``cache_v``: the context cache; ``new_cache_k``, ``new_cache_v``: its successor;
* ``velocity``: the network's prediction ``eps - x0`` for the target frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmdm_export.model import cache as kv
from lmdm_export.model.conditioners import NumberConditioner
from lmdm_export.model.dit import Conditioning
from lmdm_export.model.lmdm import LMDM
from lmdm_export.model.stft_codec import StftCodec
from lmdm_export.model.text_encoders import FrozenTextConditioner
from lmdm_export.model.transformer import KV


@dataclass(frozen=True)
class GraphIO:
    """Names and example shapes of a graph's inputs and outputs (``"batch"`` is the one dynamic
    dim of every tensor: axis 1 of caches, axis 0 otherwise)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class TextEncoderGraph(nn.Module):
    """``input_ids, attention_mask (B, L) int64 -> tokens (B, L, cond_dim)``, padding zeroed."""

    io = GraphIO(("input_ids", "attention_mask"), ("tokens",))

    def __init__(self, conditioner: FrozenTextConditioner) -> None:
        super().__init__()
        self.encoder = conditioner.encoder.model.float()
        self.proj_out = conditioner.proj_out

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        tokens = self.proj_out(hidden.last_hidden_state.float())
        return tokens * attention_mask.unsqueeze(-1).to(tokens.dtype)


class ConditioningGraph(nn.Module):
    """Conditioner outputs -> the DiT's per-prompt tensors.

    Inputs: one ``(B, L, cond_dim)`` token tensor per text conditioner (named by its id), one
    ``(B,)`` value per number conditioner (named by its id), and ``cond_scale (B,)``: 1 for the
    conditional branch, 0 for CFG's unconditional one (it zeroes every cross-attention token and
    keeps the global conditioning, lmdm-reference §4.3). Outputs ``cross_k, cross_v
    (L, B, H, Tc, Dh)`` and ``global_embed (B, D)``.
    """

    def __init__(self, model: LMDM) -> None:
        super().__init__()
        self.model = model
        config = model.config.conditioning
        self.ids = [s.id for s in config.conditioners]
        self.numbers = [s.id for s in config.conditioners if s.type == "number"]
        self.io = GraphIO((*self.ids, "cond_scale"), ("cross_k", "cross_v", "global_embed"))

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        named = dict(zip(self.ids, inputs[:-1], strict=True))
        cond_scale = inputs[-1]
        tokens = {}
        for cid, value in named.items():
            conditioner = self.model.conditioner.conditioners[cid]
            if isinstance(conditioner, NumberConditioner):
                lo, hi = conditioner.min_val, conditioner.max_val
                tokens[cid] = conditioner.embedder((value.clamp(lo, hi) - lo) / (hi - lo))[:, None]
            else:
                tokens[cid] = value
        config = self.model.config.conditioning
        cross = torch.cat([tokens[i] for i in config.cross_attention_ids], dim=1)
        cross = cross * cond_scale[:, None, None]
        glob = torch.cat([tokens[i][:, 0] for i in config.global_ids], dim=-1)
        cond = self.model.dit.condition(cross, glob)
        return cond.cross.k, cond.cross.v, cond.global_embed


class _DiTGraph(nn.Module):
    def __init__(self, model: LMDM) -> None:
        super().__init__()
        self.dit = model.dit
        self.stream = model.config.stream
        self.s, self.c = self.stream.context_frames, self.stream.block_frames

    @staticmethod
    def cond(cross_k: Tensor, cross_v: Tensor, global_embed: Tensor) -> Conditioning:
        return Conditioning(KV(cross_k, cross_v), global_embed)


_COND = ("cross_k", "cross_v", "global_embed")


class BootstrapGraph(_DiTGraph):
    """``x (B, C, s + c)`` = [clean context | noisy target] -> velocity, new cache."""

    io = GraphIO(("x", "input_add", "t", *_COND), ("velocity", "new_cache_k", "new_cache_v"))

    def forward(self, x, input_add, t, cross_k, cross_v, global_embed):
        s = self.s
        v, cache = kv.bootstrap_step(
            self.dit, self.stream, self.cond(cross_k, cross_v, global_embed),
            context=x[..., :s], context_add=input_add[..., :s], target=x[..., s:],
            target_add=input_add[..., s:], t=t)
        return v, cache.k, cache.v


class FusedGraph(_DiTGraph):
    """``x (B, C, 2c)`` = [clean pending | noisy target], cache -> velocity, next cache."""

    io = GraphIO(("x", "input_add", "t", *_COND, "cache_k", "cache_v"),
                 ("velocity", "new_cache_k", "new_cache_v"))

    def forward(self, x, input_add, t, cross_k, cross_v, global_embed, cache_k, cache_v):
        c = self.c
        v, cache = kv.fused_step(
            self.dit, self.stream, self.cond(cross_k, cross_v, global_embed),
            cache=KV(cache_k, cache_v), pending=x[..., :c], pending_add=input_add[..., :c],
            target=x[..., c:], target_add=input_add[..., c:], t=t)
        return v, cache.k, cache.v


class CachedGraph(_DiTGraph):
    """``x (B, C, c)`` noisy target, cache -> velocity (the cache is read only)."""

    io = GraphIO(("x", "input_add", "t", *_COND, "cache_k", "cache_v"), ("velocity",))

    def forward(self, x, input_add, t, cross_k, cross_v, global_embed, cache_k, cache_v):
        return kv.cached_step(self.dit, self.stream, self.cond(cross_k, cross_v, global_embed),
                              cache=KV(cache_k, cache_v), target=x, target_add=input_add, t=t)


class PrefillGraph(_DiTGraph):
    """``x (B, C, s)`` clean context -> its cache (enc-dec; no time, no global token)."""

    io = GraphIO(("x", "input_add", "cross_k", "cross_v"), ("new_cache_k", "new_cache_v"))

    def forward(self, x, input_add, cross_k, cross_v):
        # The prefill never reads the global embedding; a zero stands in for it.
        cond = self.cond(cross_k, cross_v, x.new_zeros(x.shape[0], self.dit.config.embed_dim))
        cache = kv.prefill(self.dit, cond, context=x, context_add=input_add)
        return cache.k, cache.v


class DecoderGraph(_DiTGraph):
    """``x (B, C, c)`` noisy target over the prefilled cache -> velocity (enc-dec)."""

    io = GraphIO(("x", "input_add", "t", *_COND, "cache_k", "cache_v"), ("velocity",))

    def forward(self, x, input_add, t, cross_k, cross_v, global_embed, cache_k, cache_v):
        return kv.decoder_step(self.dit, self.cond(cross_k, cross_v, global_embed),
                               cache=KV(cache_k, cache_v), target=x, target_add=input_add, t=t)


class OutpaintGraph(_DiTGraph):
    """``x (B, C, s + c)`` the whole window (RePaint-noised context | target), no router, no
    mask, no cache -> velocity of the whole window (the baseline)."""

    io = GraphIO(("x", "input_add", "t", *_COND), ("velocity",))

    def forward(self, x, input_add, t, cross_k, cross_v, global_embed):
        positions = torch.arange(1, x.shape[-1] + 1, device=x.device)
        v, _ = self.dit.step(x, t, self.cond(cross_k, cross_v, global_embed),
                             positions=positions, global_position=0, input_add=input_add)
        return v


class VAEDecoderGraph(nn.Module):
    """``latents (B, C, F) -> audio (B, channels, F * downsampling)``; F is dynamic.

    A peak-locked STFT codec accumulates phase from frame to frame, which a stream must carry
    across decodes: its graph also takes ``phase (B, channels * bins)``, the phase at STFT frame
    ``phase_frame (1,)`` (int64) of this decode, and also returns ``phases (B, channels * bins,
    F * 2^downsamples)``, the phase of every STFT frame, wrapped to [-pi, pi)."""

    def __init__(self, model: LMDM) -> None:
        super().__init__()
        self.autoencoder = model.autoencoder
        self.stateful = is_peak_locked(self.autoencoder)
        self.io = (GraphIO(("latents", "phase", "phase_frame"), ("audio", "phases"))
                   if self.stateful else GraphIO(("latents",), ("audio",)))

    def forward(self, latents, phase=None, phase_frame=None):
        if self.stateful:
            return self.autoencoder.decode_with_phase(latents, phase, phase_frame)
        return self.autoencoder.decode(latents)


def is_peak_locked(autoencoder: nn.Module) -> bool:
    """Whether ``autoencoder`` is an STFT codec whose phase follows from its magnitudes."""
    return isinstance(autoencoder, StftCodec) and autoencoder.config.phase == "peak-locked"


class VAEEncoderGraph(nn.Module):
    """``audio (B, channels, N) -> latents (B, C, N / downsampling)`` (the VAE mean)."""

    io = GraphIO(("audio",), ("latents",))

    def __init__(self, model: LMDM) -> None:
        super().__init__()
        self.autoencoder = model.autoencoder

    def forward(self, audio):
        return self.autoencoder.encode(audio, sample=False)


DIT_GRAPHS = {"bc_bootstrap": BootstrapGraph, "bc_fused": FusedGraph, "bc_cached": CachedGraph,
              "ed_prefill": PrefillGraph, "ed_decoder": DecoderGraph, "outpaint": OutpaintGraph}
