"""The one streaming rollout of the torch side: context -> block after block.

Offline generation, export verification and (later) ARC-Forcing's self-rollout all iterate
:func:`stream_blocks`. The per-block plan, in order:

1. draw the block's starting noise ``(B, C, c)`` from the injected generator;
2. run the sampler on the session's block denoiser - its first call is the cache-building step
   (block-causal: bootstrap or fused step; enc-dec: prefill, then a decoder step), every later
   call a cached step;
3. commit the clean block: it becomes the pending chunk (block-causal) or slides into the
   context (enc-dec, outpainting);
4. yield it.

Sessions hold the stream state (cache, pending chunk, context) and apply classifier-free
guidance by running the conditional and unconditional branches as one doubled batch (the cache
then holds ``2B`` items). Outside the guidance interval a step takes the conditional velocity
alone: the cache-building first step still runs doubled, every other such step runs the
conditional half of the conditioning and of the cache at batch ``B`` (the runtime engine's
plan, step for step). Nothing here switches grad mode: ARC-Forcing needs gradients through a
step; callers that only infer wrap the loop in ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lmdm_export.model import cache as kv
from lmdm_export.model.dit import Conditioning, DiffusionTransformer
from lmdm_export.model.lmdm import ModelConfig
from lmdm_export.model.transformer import KV
from lmdm_export.sampling import Denoiser, NoiseSource, Velocity, cfg_combine, draw_noise

Sampler = Callable[..., Tensor]


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance: ``scale == 1`` runs the conditional branch only. The
    unconditional branch zeroes the cross-attention tokens and keeps the input-add groups and
    the global token (lmdm-reference §4.3)."""

    scale: float = 1.0
    rescale_phi: float = 0.0
    interval: tuple[float, float] = (0.0, 1.0)  # the noise levels t whose steps are guided

    @property
    def active(self) -> bool:
        return self.scale != 1.0

    def skips(self, t: Tensor) -> bool:
        """Whether active guidance leaves out the step at noise level ``t`` (``(B,)``, equal
        entries): outside ``interval``, both ends included."""
        lo, hi = self.interval
        return self.active and not lo <= float(t.reshape(-1)[0]) <= hi


def make_conditioning(model: DiffusionTransformer, cross_attn_cond: Tensor, global_cond: Tensor,
                      guidance: Guidance) -> Conditioning:
    """Project the prompt once; with guidance the batch is ``[cond | uncond]`` (``2B``)."""
    if guidance.active:
        cross_attn_cond = torch.cat((cross_attn_cond, torch.zeros_like(cross_attn_cond)))
        global_cond = torch.cat((global_cond, global_cond))
    return model.condition(cross_attn_cond, global_cond)


class _Session:
    """Shared parts: geometry, guidance batching, input-add construction."""

    def __init__(self, model: DiffusionTransformer, config: ModelConfig, cond: Conditioning,
                 guidance: Guidance, context: Tensor | None, batch: int) -> None:
        if config.stream is None:
            raise ValueError("this model has no streaming geometry (a base DiT): fine-tune it "
                             "into an LMDM first")
        self.model, self.config, self.cond, self.guidance = model, config, cond, guidance
        s = config.stream.context_frames
        param = next(model.parameters())
        if context is None:
            # Zero context with the inpaint mask set: how training presents "no context".
            context = torch.zeros(batch, config.dit.io_channels, s,
                                  device=param.device, dtype=param.dtype)
        if context.shape[-1] != s:
            raise ValueError(f"context has {context.shape[-1]} frames, the model's geometry "
                             f"needs {s} (pad with zeros on the left for a shorter one)")
        self.state = kv.StreamState(context=context)
        self.batch = context.shape[0]

    def snapshot(self) -> kv.StreamState:
        return self.state.snapshot()

    def restore(self, state: kv.StreamState) -> None:
        """Continue from a snapshot (the snapshot itself stays untouched)."""
        self.state = state.snapshot()

    def _double(self, x: Tensor) -> Tensor:
        return torch.cat((x, x)) if self.guidance.active else x

    def _guide(self, v: Tensor, t: Tensor) -> Velocity:
        if not self.guidance.active:
            return Velocity(v, v)
        v_cond, v_uncond = v.chunk(2)
        if self.guidance.skips(t):  # a cache-building step outside the interval
            return Velocity(v_cond, v_cond)
        return Velocity(cfg_combine(v_cond, v_uncond, self.guidance.scale,
                                    rescale_phi=self.guidance.rescale_phi), v_uncond)

    def _cond_half(self) -> Conditioning:
        """The conditional half of a doubled conditioning: batch ``B``."""
        b = self.batch
        return Conditioning(KV(self.cond.cross.k[:, :b], self.cond.cross.v[:, :b]),
                            self.cond.global_embed[:b])

    def _cache_half(self, cache: KV) -> KV:
        """The conditional half of a doubled cache ``(L, 2B, H, s, Dh)``."""
        return KV(cache.k[:, :self.batch], cache.v[:, :self.batch])

    def _add(self, clean: Tensor | None, like: Tensor) -> Tensor | None:
        return kv.build_input_add(self.config.dit, clean=clean, batch=like.shape[0],
                                  frames=like.shape[-1], device=like.device, dtype=like.dtype)


class BlockCausalSession(_Session):
    """Block-causal streaming: bootstrap once, then a fused step + cached steps per block."""

    def block_denoiser(self) -> Denoiser:
        stream, first = self.config.stream, [True]

        def denoise(x: Tensor, t: Tensor) -> Velocity:
            state = self.state
            if not first[0] and self.guidance.skips(t):
                v = kv.cached_step(self.model, stream, self._cond_half(),
                                   cache=self._cache_half(state.cache), target=x,
                                   target_add=self._add(None, x), t=t)
                return Velocity(v, v)
            x, t = self._double(x), self._double(t)
            target_add = self._add(None, x)
            if state.cache is None:
                context = self._double(state.context)
                v, state.cache = kv.bootstrap_step(
                    self.model, stream, self.cond, context=context,
                    context_add=self._add(context, context), target=x,
                    target_add=target_add, t=t)
            elif first[0]:
                if state.pending is None:
                    raise RuntimeError("commit() the previous block before the next one")
                pending = self._double(state.pending)
                v, state.cache = kv.fused_step(
                    self.model, stream, self.cond, cache=state.cache, pending=pending,
                    pending_add=self._add(pending, pending), target=x, target_add=target_add,
                    t=t)
                state.pending = None
            else:
                v = kv.cached_step(self.model, stream, self.cond, cache=state.cache, target=x,
                                   target_add=target_add, t=t)
            first[0] = False
            return self._guide(v, t)

        return denoise

    def commit(self, block: Tensor) -> None:
        self.state.pending = block
        self.state.blocks += 1


class EncDecSession(_Session):
    """Enc-dec streaming: per block, prefill the context once, then decoder steps."""

    def block_denoiser(self) -> Denoiser:
        prefilled: dict[str, KV] = {}

        def denoise(x: Tensor, t: Tensor) -> Velocity:
            if "cache" not in prefilled:
                context = self._double(self.state.context)
                prefilled["cache"] = kv.prefill(self.model, self.cond, context=context,
                                            context_add=self._add(context, context))
            if self.guidance.skips(t):
                v = kv.decoder_step(self.model, self._cond_half(),
                                    cache=self._cache_half(prefilled["cache"]), target=x,
                                    target_add=self._add(None, x), t=t)
                return Velocity(v, v)
            x, t = self._double(x), self._double(t)
            v = kv.decoder_step(self.model, self.cond, cache=prefilled["cache"], target=x,
                                target_add=self._add(None, x), t=t)
            return self._guide(v, t)

        return denoise

    def commit(self, block: Tensor) -> None:
        self.state.context = torch.cat((self.state.context, block), -1)[..., block.shape[-1]:]
        self.state.blocks += 1


class OutpaintSession(_Session):
    """The baseline: N full uncached passes over ``[context | target]`` per block, with RePaint
    replacement of the context by a freshly noised copy at every step (lmdm-reference §2)."""

    def __init__(self, *args, generator: torch.Generator | NoiseSource | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = generator

    def block_denoiser(self) -> Denoiser:
        s = self.config.stream.context_frames

        def denoise(x: Tensor, t: Tensor) -> Velocity:
            context = self.state.context
            eps = draw_noise(context.shape, x, self.generator)
            tc = t[:, None, None].to(x.dtype)
            noisy_context = (1 - tc) * context + tc * eps
            window = torch.cat((noisy_context, x), dim=-1)
            add = torch.cat((self._add(context, context), self._add(None, x)), dim=-1)
            positions = torch.arange(1, window.shape[-1] + 1, device=x.device)
            if self.guidance.skips(t):
                v, _ = self.model.step(window, t, self._cond_half(), positions=positions,
                                       global_position=0, input_add=add)
                return Velocity(v[..., s:], v[..., s:])
            v, _ = self.model.step(self._double(window), self._double(t), self.cond,
                                   positions=positions, global_position=0,
                                   input_add=self._double(add))
            return self._guide(v[..., s:], t)

        return denoise

    commit = EncDecSession.commit


SESSIONS = {"block-causal": BlockCausalSession, "enc-dec": EncDecSession,
            "outpaint": OutpaintSession}


def make_session(method: str, model: DiffusionTransformer, config: ModelConfig,
                 cond: Conditioning, *, guidance: Guidance = Guidance(),
                 context: Tensor | None = None, batch: int = 1,
                 generator: torch.Generator | NoiseSource | None = None) -> _Session:
    """``method``: ``"block-causal"``, ``"enc-dec"`` or ``"outpaint"`` (the baseline)."""
    if method not in SESSIONS:
        raise ValueError(f"unknown streaming method {method!r}: use one of {sorted(SESSIONS)}")
    kwargs = {"generator": generator} if method == "outpaint" else {}
    return SESSIONS[method](model, config, cond, guidance, context, batch, **kwargs)


def stream_blocks(session: _Session, blocks: int, *, sampler: Sampler, ts: Tensor,
                  generator: torch.Generator | NoiseSource | None = None,
                  cfg_pp: str | None = None) -> Iterator[Tensor]:
    """Generate ``blocks`` blocks, yielding each clean block ``(B, C, c)`` as it is done."""
    config = session.config
    param = next(session.model.parameters())
    shape = (session.batch, config.dit.io_channels, config.stream.block_frames)
    for _ in range(blocks):
        noise = draw_noise(shape, param, generator)
        block = sampler(session.block_denoiser(), noise, ts.to(param.device),
                        generator=generator, cfg_pp=cfg_pp)
        session.commit(block)
        yield block
