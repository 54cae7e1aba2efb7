"""The LMDM diffusion transformer: SAO Small's DiT with clean/noisy routing (lmdm-reference §1, §3).

One module serves the base model (no input-add groups, no router: exactly stable-audio-tools'
``DiffusionTransformer`` with a prepended global token), block-wise outpainting (input-add
groups, no router) and the streaming LMDM (router + input-add groups + masks + explicit KV
cache). Every mode is one call of :meth:`DiffusionTransformer.step` with different tokens,
positions, cache and mask; the stream logic in :mod:`lmdm_export.model.cache` composes them.

Routing (§3.1), with router ``r`` = 0 on clean context frames and 1 on noisy target frames::

    x_in = (preprocess_conv(x_t) + x_t) * r        # noisy context zeroed before projection
    h    = project_in(x_in) + to_input_add_embed(groups)

so a context token is ``W_add [1; x_clean]`` (clean only) and a target token is the base model's
input path. Time enters only through the global token (§3.2), which is postpended at token index
``S`` and given RoPE position 0 with latents at ``1..T`` (the base model's prepended geometry,
§3.5). Context queries never see it under the LMDM masks, so context keys/values depend on the
clean context, the text and positions only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lmdm_export.model.config import DiTConfig
from lmdm_export.model.transformer import KV, ContinuousTransformer


class FourierFeatures(nn.Module):
    """Random Fourier features of t: ``[cos 2pi t W, sin 2pi t W]`` with a fixed buffer ``W``."""

    def __init__(self, in_features: int, out_features: int, std: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: Tensor) -> Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat((f.cos(), f.sin()), dim=-1)


class Conditioning(NamedTuple):
    """Prompt-dependent tensors, computed once per prompt and reused by every step.

    ``cross``: per-layer cross-attention keys/values ``(L, B, H, Tc, Dh)``;
    ``global_embed``: the projected global conditioning ``(B, D)`` (timestep not yet added).
    """

    cross: KV
    global_embed: Tensor


class DiffusionTransformer(nn.Module):
    """SAO Small DiT + LMDM routing. Parameter names follow stable-audio-tools."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.timestep_features = FourierFeatures(1, config.timestep_features_dim)
        self.to_timestep_embed = nn.Sequential(
            nn.Linear(config.timestep_features_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.to_cond_embed = nn.Sequential(
            nn.Linear(config.cond_token_dim, d, bias=False), nn.SiLU(),
            nn.Linear(d, d, bias=False))
        self.to_global_embed = nn.Sequential(
            nn.Linear(config.global_cond_dim, d, bias=False), nn.SiLU(),
            nn.Linear(d, d, bias=False))
        if config.input_add_groups:
            self.to_input_add_embed = nn.Linear(config.input_add_channels, d, bias=False)
        self.transformer = ContinuousTransformer(
            dim=d, depth=config.depth, dim_heads=config.head_dim, dim_in=config.io_channels,
            dim_out=config.io_channels, cross_attend=True, rotary_dim=config.rotary_dim,
            rope_base=config.rope_base, ff_mult=config.ff_mult, qk_norm_eps=config.qk_norm_eps)
        # Zero-initialised residual 1x1 convs: identity at initialisation.
        self.preprocess_conv = nn.Conv1d(config.io_channels, config.io_channels, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        self.postprocess_conv = nn.Conv1d(config.io_channels, config.io_channels, 1, bias=False)
        nn.init.zeros_(self.postprocess_conv.weight)

    # -- prompt-dependent parts ---------------------------------------------------------------

    def condition(self, cross_attn_cond: Tensor, global_cond: Tensor) -> Conditioning:
        """Project conditioning tokens ``(B, Tc, cond_token_dim)`` and ``global_cond
        (B, global_cond_dim)`` once; the result is reused by all steps of all blocks."""
        context = self.to_cond_embed(cross_attn_cond)
        return Conditioning(self.transformer.context_kv(context),
                            self.to_global_embed(global_cond))

    def global_token(self, t: Tensor, cond: Conditioning) -> Tensor:
        """The one token that carries time: ``global_embed + timestep_embed``, ``(B, 1, D)``."""
        t = t.to(cond.global_embed.dtype)
        timestep = self.to_timestep_embed(self.timestep_features(t[:, None]))
        return (cond.global_embed + timestep)[:, None, :]

    # -- latent tokens ------------------------------------------------------------------------

    def embed_latents(self, x: Tensor, router: Tensor | None,
                      input_add: Tensor | None) -> Tensor:
        """Token embeddings ``(B, S, D)`` of latent frames ``x (B, C, S)``.

        ``router (B, 1, S)``: 1 = noisy target, 0 = clean context; None = every frame noisy.
        ``input_add (B, sum(group channels), S)``: the concatenated input-add groups.
        """
        x = self.preprocess_conv(x) + x
        if router is not None:
            x = x * router
        h = self.transformer.project_in(x.transpose(1, 2))
        if input_add is not None:
            h = h + self.to_input_add_embed(input_add.transpose(1, 2))
        return h

    def step(self, x: Tensor, t: Tensor, cond: Conditioning, *, positions: Tensor,
             global_position: int | None, router: Tensor | None = None,
             input_add: Tensor | None = None, past: KV | None = None,
             mask: Tensor | None = None) -> tuple[Tensor, KV]:
        """One network evaluation on ``S`` latent frames (+ the global token unless
        ``global_position`` is None, as in the enc-dec prefill).

        Args:
            x: latent frames ``(B, C, S)`` (noisy target and/or clean context).
            t: noise level ``(B,)`` in [0, 1].
            positions: RoPE positions of the ``S`` latent tokens, ``(S,)`` int64.
            past: cached keys/values ``(L, B, H, P, Dh)`` the new tokens attend to first.
            mask: ``(S [+1], P + S [+1])`` boolean, True = attend; None = attend to all.

        Returns:
            velocity ``(B, C, S)`` of the latent frames, and the keys/values of the latent
            tokens ``(L, B, H, S, Dh)`` (the global token's are never cached).
        """
        frames = x.shape[-1]
        h = self.embed_latents(x, router, input_add)
        if global_position is not None:
            h = torch.cat((h, self.global_token(t, cond)), dim=1)
            positions = torch.cat((positions, positions.new_tensor([global_position])))
        h, kv = self.transformer(h, positions, past, mask, cond.cross)
        out = self.transformer.project_out(h[:, :frames]).transpose(1, 2)
        v = self.postprocess_conv(out) + out
        return v, KV(kv.k[:, :, :, :frames], kv.v[:, :, :, :frames])

    def forward(self, x: Tensor, t: Tensor, cross_attn_cond: Tensor, global_cond: Tensor, *,
                router: Tensor | None = None, input_add: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """Uncached forward over a whole window ``x (B, C, T)``: latents at positions ``1..T``,
        the global token at 0. With no router, groups or mask this is the base SAO DiT."""
        cond = self.condition(cross_attn_cond, global_cond)
        positions = torch.arange(1, x.shape[-1] + 1, device=x.device)
        v, _ = self.step(x, t, cond, positions=positions, global_position=0, router=router,
                         input_add=input_add, mask=mask)
        return v
