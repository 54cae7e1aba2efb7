"""The block engine: a bundle's DiT graphs, a sampler and an explicit stream state -> one latent
block after another.

This is the runtime twin of :func:`lmdm_export.rollout.stream_blocks`, step for step and draw
for draw (``tests/test_engine_parity.py`` replays the engine's noise into the torch rollout).
The per-block plan:

1. draw the block's starting noise ``(1, C, c)`` (never duplicated for guidance);
2. run the sampler (:mod:`lmdm_bridge.sampling`) on the method's block denoiser. Its first call
   builds the context's keys/values, every later call reuses them:

   * ``block-causal``: ``bc_bootstrap`` over ``[history | target]`` on the first block, after a
     change of the dominant prompt or after :meth:`Engine.eject`; otherwise ``bc_fused`` over
     ``[pending | target]``, which also slides the cache. Later steps: ``bc_cached``.
   * ``enc-dec``: ``ed_prefill`` over the history, then ``ed_decoder`` for every step.
   * ``outpaint``: every step draws fresh RePaint noise ``(1, C, s)`` for the context and runs
     ``outpaint`` over the whole window.

   Ping-pong draws one re-noise ``(1, C, c)`` after every step but the last;
3. commit the clean block: it slides into the history (the last ``s`` clean frames) and, in
   block-causal, becomes ``pending``.

Classifier-free guidance runs batch 2 ``[cond; uncond]`` with ``x`` and ``input_add``
duplicated and combines ``v = v_u + scale (v_c - v_u)``; the caches then hold batch 2. With a
guidance interval ``[t_lo, t_hi]`` narrower than ``[0, 1]``, a step whose noise level lies
outside it takes the conditional velocity alone: the cache-building first step still runs at
batch 2 (later steps may need the unconditional half of the cache), every other such step runs
at batch 1 on the conditional half of the conditioning and of the cache, copied once per block.

Everything sized by the window or the cache is preallocated (:mod:`lmdm_bridge.state`); the
graphs write their outputs into those buffers. What the hot path still allocates are the
sampler's few ``(C, c)`` temporaries per step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np

from lmdm_bridge.bundle import Buffer, Bundle, CallStats
from lmdm_bridge.manifest import check_cfg_interval
from lmdm_bridge.sampling import (
    CFGPP_VARIANTS,
    SAMPLERS,
    NoiseSource,
    Velocity,
    cfg_combine,
    logsnr_schedule,
)
from lmdm_bridge.state import FeedBuffers, StreamState, batch_axis, batch_half
from lmdm_bridge.text import Prompt, PromptConditioner, WeightedPrompt, dominant, normalize_prompt

# The graphs each streaming method calls.
METHODS = {"block-causal": ("bc_bootstrap", "bc_fused", "bc_cached"),
           "enc-dec": ("ed_prefill", "ed_decoder"),
           "outpaint": ("outpaint",)}


class Engine:
    """Plays a bundle block by block.

    Settings default to the manifest's: ``method`` (its ``pattern``; or ``"block-causal"``,
    ``"enc-dec"``, ``"outpaint"``), ``steps``, ``sampler`` (``"pingpong"``, ``"euler"``, ``"ab2"``),
    ``cfg_scale`` (1: no guidance), ``cfg_pp`` (``"textbook"``, ``"lmdm-code"``, or ``"off"``),
    ``cfg_interval`` (``(t_lo, t_hi)``: the noise levels whose steps are guided).
    ``seed`` seeds the noise; ``noise(shape) -> float32 array`` replaces the generator (e.g. to
    record or replay draws). ``context (C, s)``: clean latents to start from (zeros: "no
    context", as training presents it). ``numbers``: number conditioner values. ``providers``
    and ``threads`` configure the :class:`~lmdm_bridge.bundle.Bundle` when given a path.
    """

    def __init__(self, bundle: Bundle | str | Path, *, method: str | None = None,
                 steps: int | None = None, sampler: str | None = None,
                 cfg_scale: float | None = None, cfg_pp: str | None = None,
                 cfg_interval: tuple[float, float] | None = None, rescale_phi: float = 0.0,
                 seed: int = 0, noise: NoiseSource | None = None,
                 context: np.ndarray | None = None, numbers: dict[str, float] | None = None,
                 prompt_cache: int = 64, providers: str = "auto",
                 threads: int | None = None) -> None:
        self.bundle = (bundle if isinstance(bundle, Bundle)
                       else Bundle(bundle, providers=providers, threads=threads))
        m = self.bundle.manifest
        self.geometry = g = m.geometry
        self.method = method or m.pattern
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: use one of {sorted(METHODS)}")
        for role in METHODS[self.method]:
            # Load every graph the loop needs now: a missing or broken graph fails here, and no
            # session is created mid-stream (loading the fused graph at the second block would
            # stall playback for seconds on a large model).
            self.bundle.session(role)
        self.set_steps(m.sampler.steps if steps is None else steps)
        self.sampler = sampler or m.sampler.name
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: use one of {sorted(SAMPLERS)}")
        self.cfg_scale = float(m.sampler.cfg_scale if cfg_scale is None else cfg_scale)
        cfg_pp = m.sampler.cfg_pp if cfg_pp is None else cfg_pp
        self.cfg_pp = None if cfg_pp in (None, "off") else cfg_pp
        if self.cfg_pp is not None and self.cfg_pp not in CFGPP_VARIANTS:
            raise ValueError(f"cfg_pp must be 'off' or one of {CFGPP_VARIANTS}, got {cfg_pp!r}")
        if self.cfg_pp is not None and self.sampler == "ab2":
            raise ValueError("the ab2 sampler has no CFG++ variant: use cfg_pp 'off' or the "
                             "euler sampler")
        self.rescale_phi = rescale_phi
        self.cfg_interval = check_cfg_interval(m.sampler.cfg_interval if cfg_interval is None
                                               else cfg_interval)
        self.guidance = self.cfg_scale != 1.0
        self.batch = 2 if self.guidance else 1
        self.seed = seed
        self.conditioner = PromptConditioner(self.bundle, cache_size=prompt_cache,
                                             numbers=numbers)
        self._noise = noise
        shape = (1, g.latent_channels, g.context_frames)
        self._context = np.zeros(shape, np.float32)
        if context is not None:
            context = np.asarray(context, np.float32)
            if context.size != self._context.size or context.shape[-2:] != shape[1:]:
                raise ValueError(f"context has shape {context.shape}, the geometry needs "
                                 f"{shape[1:]} (pad with zeros on the left for less)")
            self._context[:] = context.reshape(shape)
        self._feeds = FeedBuffers(self.bundle, self.method, self.batch)
        self._unguided: UnguidedBuffers | None = None  # batch-1 steps outside cfg_interval
        self._allocate_unguided()
        self.state = self._fresh_state()
        self._prompt: WeightedPrompt | None = None
        self._dominant: str | None = None
        self._cond: dict[str, Buffer] = {}
        self._cond_half: dict[str, Buffer] = {}
        self.last_block_seconds = 0.0

    # -- prompt --------------------------------------------------------------------------------

    @property
    def prompt(self) -> WeightedPrompt | None:
        return self._prompt

    def set_prompt(self, prompt: Prompt) -> None:
        """Condition the next blocks on a prompt or ``[(prompt, weight), ...]`` (weights are
        normalised). In block-causal, a new dominant (largest-weight) prompt re-bootstraps the
        cache at the next block, with the last ``s`` clean frames as context; a blend that keeps
        the dominant prompt keeps the cache (lmdm-reference §4.4)."""
        weighted = normalize_prompt(prompt)
        cond = self.conditioner.condition(weighted, guidance=self.guidance)
        self._cond = {name: self.bundle.to_device(value)
                      for name, value in cond._asdict().items()}
        # The conditional half, for the steps outside the guidance interval.
        self._cond_half = ({name: self.bundle.to_device(value)
                            for name, value in batch_half(self.bundle, "conditioning",
                                                          cond._asdict()).items()}
                           if self.guidance else {})
        self._prompt, self._dominant = weighted, dominant(weighted)

    # -- settings (take effect at the next block) ------------------------------------------------

    def set_steps(self, steps: int) -> None:
        """Sampler steps per block (the schedule is recomputed)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        sampler = self.bundle.manifest.sampler
        self.steps = steps
        self.ts = logsnr_schedule(steps, logsnr_min=sampler.logsnr_min,
                                  logsnr_max=sampler.logsnr_max, dtype=np.float32)

    def set_cfg(self, scale: float) -> None:
        """The guidance scale. Switching guidance on or off changes the batch (1 <-> 2), so the
        feed buffers and caches are reallocated, the prompt is conditioned again and a
        block-causal stream re-bootstraps from its last ``s`` clean frames."""
        self.cfg_scale = float(scale)
        if (self.cfg_scale != 1.0) == self.guidance:
            return
        self.guidance = self.cfg_scale != 1.0
        self.batch = 2 if self.guidance else 1
        self._feeds = FeedBuffers(self.bundle, self.method, self.batch)
        self._allocate_unguided()
        fresh = self._fresh_state()
        self.state.cache_k, self.state.cache_v = fresh.cache_k, fresh.cache_v
        self.state.cache_prompt = None
        if self._prompt is not None:
            self.set_prompt(self._prompt)

    def set_cfg_interval(self, t_lo: float, t_hi: float) -> None:
        """Guide only the steps whose noise level ``t`` lies in ``[t_lo, t_hi]``; the others
        run the conditional branch alone at batch 1 (from the next block; the stream and the
        caches stay)."""
        self.cfg_interval = check_cfg_interval((t_lo, t_hi))
        self._allocate_unguided()

    def reseed(self, seed: int) -> None:
        """Draw the following noise from a generator seeded with ``seed`` (also what
        :meth:`reset` returns to)."""
        self.seed = seed
        self.state.rng = np.random.default_rng(seed)

    # -- stream --------------------------------------------------------------------------------

    def next_block(self) -> np.ndarray:
        """Generate, commit and return the next block of clean latents, ``(C, c)`` float32."""
        if not self._cond:
            raise RuntimeError("set_prompt() before the first block")
        start = time.perf_counter()
        g = self.geometry
        x = self._draw((1, g.latent_channels, g.block_frames))  # 1. starting noise
        block = SAMPLERS[self.sampler](self._denoiser(), x, self.ts, noise=self._draw,
                                       cfg_pp=self.cfg_pp)  # 2. the sampler's steps
        self._commit(block)  # 3.
        self.last_block_seconds = time.perf_counter() - start
        return block[0]

    def eject(self, frames: int) -> None:
        """Zero the oldest ``frames`` context frames to weaken their pull (the reference's
        ``eject_buffer_n``, in frames). Block-causal re-bootstraps at the next block, since its
        cache holds the context's keys/values."""
        s = self.geometry.context_frames
        if not 0 <= frames <= s:
            raise ValueError(f"eject takes 0..{s} frames (the context), got {frames}")
        if frames:
            self.state.history[..., :frames] = 0.0
            self.state.cache_prompt = None

    def reset(self) -> None:
        """Back to the first block: the initial context, no cache, the noise re-seeded. The
        prompt and settings stay."""
        self._copy_state(self._fresh_state(allocate_cache=False), self.state)

    def snapshot(self) -> StreamState:
        """A host copy of the stream state that later blocks cannot change."""
        st = self.state
        host = self.bundle.to_host
        return StreamState(
            history=st.history.copy(), pending=st.pending.copy(),
            cache_k=None if st.cache_k is None else host(st.cache_k),
            cache_v=None if st.cache_v is None else host(st.cache_v),
            rng=copy.deepcopy(st.rng), has_pending=st.has_pending,
            cache_prompt=st.cache_prompt, block=st.block)

    def restore(self, snapshot: StreamState) -> None:
        """Continue from a snapshot (which stays untouched): with the same prompt and a seeded
        generator the stream replays identically. A snapshot taken under another dominant
        prompt re-bootstraps a block-causal cache."""
        self._copy_state(snapshot, self.state)

    @property
    def stats(self) -> dict[str, CallStats]:
        """Per graph role: calls and seconds (the bundle's, shared with its other users)."""
        return self.bundle.stats

    # -- internals -----------------------------------------------------------------------------

    def _fresh_state(self, allocate_cache: bool = True) -> StreamState:
        """The state before the first block. Its cache content is never read (the first block
        bootstraps or prefills), so a reset keeps the old buffers instead of allocating."""
        g = self.geometry
        cache = None
        if allocate_cache and self.method != "outpaint":
            shape = (g.layers, self.batch, g.heads, g.context_frames, g.head_dim)
            cache = (self.bundle.buffer(shape), self.bundle.buffer(shape))
        return StreamState(
            history=self._context.copy(),
            pending=np.zeros((1, g.latent_channels, g.block_frames), np.float32),
            cache_k=None if cache is None else cache[0],
            cache_v=None if cache is None else cache[1],
            rng=np.random.default_rng(self.seed))

    def _copy_state(self, src: StreamState, dst: StreamState) -> None:
        """Copy ``src`` into ``dst``'s buffers (so preallocated and device memory is reused)."""
        for f in fields(StreamState):
            value = getattr(src, f.name)
            if f.name in ("history", "pending"):
                np.copyto(getattr(dst, f.name), value)
            elif f.name in ("cache_k", "cache_v"):
                if value is not None:
                    self.bundle.copy_from_host(getattr(dst, f.name), self.bundle.to_host(value))
            elif f.name == "rng":
                dst.rng = copy.deepcopy(value)
            else:
                setattr(dst, f.name, value)

    def _draw(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._noise is None:
            return self.state.rng.standard_normal(shape, dtype=np.float32)
        out = np.asarray(self._noise(tuple(shape)), dtype=np.float32)
        if out.shape != tuple(shape):
            raise ValueError(f"the noise source returned {out.shape} for {tuple(shape)}")
        return out

    def _allocate_unguided(self) -> None:
        """The batch-1 buffers, once guidance is on with an interval narrower than [0, 1]."""
        if self.guidance and self.cfg_interval != (0.0, 1.0) and self._unguided is None:
            self._unguided = UnguidedBuffers(self.bundle, self.method)

    def _unguided_at(self, t: np.floating) -> bool:
        """Whether a guided stream skips guidance at noise level ``t`` (outside the interval)."""
        lo, hi = self.cfg_interval
        return self.guidance and not lo <= t <= hi

    def _guide(self, v: np.ndarray, t: np.floating) -> Velocity:
        """``v (B, C, c)`` -> guided and unconditional velocity ``(1, C, c)``. The arrays may
        view the velocity buffer: the samplers use them before the next graph call."""
        if not self.guidance:
            return Velocity(v, v)
        if self._unguided_at(t):  # a cache-building step outside the interval
            return Velocity(v[:1], v[:1])
        return Velocity(cfg_combine(v[:1], v[1:], self.cfg_scale, rescale_phi=self.rescale_phi),
                        v[1:])

    def _dit_feeds(self, x: np.ndarray, add: np.ndarray, cache: bool) -> dict:
        f = self._feeds
        feeds = {"x": x, "input_add": add, "t": f.t, **self._cond}
        if cache:
            feeds.update(cache_k=self.state.cache_k, cache_v=self.state.cache_v)
        return feeds

    def _unguided_step(self, role: str, x: np.ndarray, t: np.floating) -> Velocity:
        """A cached step at batch 1 on the conditional half (``UnguidedBuffers.halve`` must
        have run in this block)."""
        u = self._unguided
        f = u.feeds
        f.t.fill(t)
        f.step_x[:] = x
        feeds = {"x": f.step_x, "input_add": f.step_add, "t": f.t, **self._cond_half,
                 "cache_k": u.cache_k, "cache_v": u.cache_v}
        self.bundle.run_into(role, feeds, {"velocity": f.velocity})
        return Velocity(f.velocity, f.velocity)

    def _denoiser(self) -> Callable[[np.ndarray, np.floating], Velocity]:
        return {"block-causal": self._block_causal, "enc-dec": self._enc_dec,
                "outpaint": self._outpaint}[self.method]()

    def _block_causal(self):
        st, f = self.state, self._feeds
        s, c = self.geometry.context_frames, self.geometry.block_frames
        first, halved = [True], [False]

        def denoise(x: np.ndarray, t: np.floating) -> Velocity:
            if not first[0] and self._unguided_at(t):
                if not halved[0]:
                    self._unguided.halve(st.cache_k, st.cache_v)
                    halved[0] = True
                return self._unguided_step("bc_cached", x, t)
            f.t.fill(t)
            if first[0] and st.cache_prompt != self._dominant:
                # Bootstrap: the window [history | target]; the history's K/V become the cache
                # (the pending block, if any, is the newest part of the history).
                f.window_x[:, :, :s] = st.history
                f.window_x[:, :, s:] = x
                f.window_add[:, f.features, :s] = st.history
                self._swap_cache("bc_bootstrap", self._dit_feeds(f.window_x, f.window_add, False))
                st.cache_prompt, st.has_pending = self._dominant, False
            elif first[0]:
                if not st.has_pending:
                    raise RuntimeError("a block-causal cache without a pending block")
                # Fused: [pending | target]; the new cache is [c1 .. c_{n-1} | pending].
                f.fused_x[:, :, :c] = st.pending
                f.fused_x[:, :, c:] = x
                f.fused_add[:, f.features, :c] = st.pending
                self._swap_cache("bc_fused", self._dit_feeds(f.fused_x, f.fused_add, True))
                st.has_pending = False
            else:
                f.step_x[:] = x
                self.bundle.run_into("bc_cached", self._dit_feeds(f.step_x, f.step_add, True),
                                     {"velocity": f.velocity})
            first[0] = False
            return self._guide(f.velocity, t)

        return denoise

    def _swap_cache(self, role: str, feeds: dict) -> None:
        """Run a cache-building graph into the spare buffers, then swap them in."""
        st, f = self.state, self._feeds
        self.bundle.run_into(role, feeds, {"velocity": f.velocity,
                                           "new_cache_k": f.new_cache_k,
                                           "new_cache_v": f.new_cache_v})
        st.cache_k, f.new_cache_k = f.new_cache_k, st.cache_k
        st.cache_v, f.new_cache_v = f.new_cache_v, st.cache_v

    def _enc_dec(self):
        st, f = self.state, self._feeds
        # The prefill: the context's K/V for this block's steps.
        f.window_x[:] = st.history
        f.window_add[:, f.features] = st.history
        feeds = {"x": f.window_x, "input_add": f.window_add, "cross_k": self._cond["cross_k"],
                 "cross_v": self._cond["cross_v"]}
        self.bundle.run_into("ed_prefill", feeds,
                             {"new_cache_k": st.cache_k, "new_cache_v": st.cache_v})
        halved = [False]

        def denoise(x: np.ndarray, t: np.floating) -> Velocity:
            if self._unguided_at(t):
                if not halved[0]:
                    self._unguided.halve(st.cache_k, st.cache_v)
                    halved[0] = True
                return self._unguided_step("ed_decoder", x, t)
            f.t.fill(t)
            f.step_x[:] = x
            self.bundle.run_into("ed_decoder", self._dit_feeds(f.step_x, f.step_add, True),
                                 {"velocity": f.velocity})
            return self._guide(f.velocity, t)

        return denoise

    def _outpaint(self):
        st, s = self.state, self.geometry.context_frames
        guided, unguided = self._feeds, self._unguided and self._unguided.feeds
        for f in filter(None, (guided, unguided)):
            f.window_add[:, f.features, :s] = st.history

        def denoise(x: np.ndarray, t: np.floating) -> Velocity:
            # RePaint: the context re-noised to the target's level with fresh noise.
            eps = self._draw(st.history.shape)
            skip = self._unguided_at(t)
            f = unguided if skip else guided
            f.t.fill(t)
            f.window_x[:, :, :s] = (1 - t) * st.history + t * eps
            f.window_x[:, :, s:] = x
            feeds = {"x": f.window_x, "input_add": f.window_add, "t": f.t,
                     **(self._cond_half if skip else self._cond)}
            self.bundle.run_into("outpaint", feeds, {"velocity": f.velocity})
            return self._guide(f.velocity[..., s:], t)

        return denoise

    def _commit(self, block: np.ndarray) -> None:
        """``block (1, C, c)`` slides into the history; block-causal also keeps it pending."""
        st = self.state
        s, c = self.geometry.context_frames, self.geometry.block_frames
        if c >= s:
            st.history[:] = block[..., c - s:]
        else:
            st.history[..., :s - c] = st.history[..., c:]
            st.history[..., s - c:] = block
        if self.method == "block-causal":
            st.pending[:] = block
            st.has_pending = True
        st.block += 1


class UnguidedBuffers:
    """Batch-1 feeds for the steps outside the guidance interval, and the conditional half of
    the context's keys/values they read (``cache_k``/``cache_v``, ``(L, 1, H, s, Dh)``; none
    for outpainting), refreshed by :meth:`halve` once per block after the cache is built."""

    def __init__(self, bundle: Bundle, method: str) -> None:
        self.bundle = bundle
        self.feeds = FeedBuffers(bundle, method, 1)
        self.cache_k = self.cache_v = None
        if method == "block-causal":  # batch-1 cache outputs no graph call writes: reused
            self.cache_k, self.cache_v = self.feeds.new_cache_k, self.feeds.new_cache_v
        elif method == "enc-dec":
            g = bundle.manifest.geometry
            shape = (g.layers, 1, g.heads, g.context_frames, g.head_dim)
            self.cache_k, self.cache_v = bundle.buffer(shape), bundle.buffer(shape)
        if method != "outpaint":
            role = "bc_cached" if method == "block-causal" else "ed_decoder"
            axis = batch_axis(bundle.manifest.graph(role), "cache_k")
            self._first = (slice(None),) * axis + (slice(0, 1),)

    def halve(self, cache_k: Buffer, cache_v: Buffer) -> None:
        """Copy the conditional half of a batch-2 cache into ``cache_k``/``cache_v``."""
        for src, dst in ((cache_k, self.cache_k), (cache_v, self.cache_v)):
            if isinstance(src, np.ndarray):
                np.copyto(dst, src[self._first])
            else:  # device buffers: through the host (a few MB per block)
                self.bundle.copy_from_host(dst, self.bundle.to_host(src)[self._first])
