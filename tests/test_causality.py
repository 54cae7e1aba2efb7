"""Causality by gradients: what each output may depend on, checked as exact zeros of gradients.

* block-causal: no output chunk depends on a later chunk; with one layer, none depends on a chunk
  beyond its sliding window (deeper layers widen the receptive field inside the window, as in
  the reference); a streaming step never depends on the chunk its cache just evicted;
* both patterns: context outputs (velocities and cached keys/values) depend neither on the
  timestep nor on the noisy target, nor on the noisy latents of the context frames themselves.
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from lmdm_export.model import cache as kv  # noqa: E402
from lmdm_export.model.dit import DiffusionTransformer  # noqa: E402
from lmdm_export.model.masks import block_causal_predicate, materialize, window_mask  # noqa: E402
from lmdm_export.rollout import Guidance, make_conditioning  # noqa: E402

from .conftest import randomize_  # noqa: E402


def _model(preset, depth=None, seed=0):
    dit = preset.config.dit
    if depth is not None:
        dit = dataclasses.replace(dit, depth=depth)
    model = randomize_(DiffusionTransformer(dit), seed).double()
    gen = torch.Generator().manual_seed(seed)
    cond = make_conditioning(model, torch.randn(1, 3, dit.cond_token_dim, generator=gen).double(),
                             torch.randn(1, dit.global_cond_dim, generator=gen).double(),
                             Guidance())
    return model, dit, cond


def _chunk_jacobian(model, dit, cond, frames, chunk, mask, *, context_frames):
    """|d out[chunk q] / d in[chunk k]| summed, as a (chunks, chunks) matrix, over a sequence of
    ``frames`` latent frames whose first ``context_frames`` are clean context."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, dit.io_channels, frames, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    target = frames - context_frames
    add = torch.cat((kv.build_input_add(dit, clean=x[..., :context_frames], batch=1,
                                        frames=context_frames, dtype=x.dtype),
                     kv.build_input_add(dit, clean=None, batch=1, frames=target,
                                        dtype=x.dtype)), -1)
    r = kv.router(context_frames, target, batch=1, dtype=x.dtype)
    v, _ = model.step(x, torch.full((1,), 0.6, dtype=x.dtype), cond,
                      positions=torch.arange(1, frames + 1), global_position=0, router=r,
                      input_add=add, mask=mask)
    n = frames // chunk
    jac = torch.zeros(n, n, dtype=torch.float64)
    for q in range(n):
        (g,) = torch.autograd.grad(v[..., q * chunk:(q + 1) * chunk].sum(), x, retain_graph=True)
        jac[q] = g.abs().sum(dim=1)[0].view(n, chunk).sum(-1)
    return jac


def test_block_causal_outputs_ignore_later_chunks(tiny_preset):
    s, c = tiny_preset.config.stream.context_frames, tiny_preset.config.stream.block_frames
    model, dit, cond = _model(tiny_preset)
    frames = 3 * (s + c)  # a long sequence: 15 chunks, sliding window of 4
    index = torch.arange(frames + 1)
    n = s // c
    mask = materialize(block_causal_predicate(chunk=c, latent_frames=frames, lookback=n - 1),
                       index, index)
    jac = _chunk_jacobian(model, dit, cond, frames, c, mask, context_frames=frames - c)
    later = torch.triu(torch.ones_like(jac, dtype=torch.bool), diagonal=1)
    assert jac[later].max() == 0.0, "an output depends on a later chunk"
    assert (jac.diagonal() > 0).all()


def test_single_layer_sees_exactly_its_window(tiny_preset):
    s, c = tiny_preset.config.stream.context_frames, tiny_preset.config.stream.block_frames
    n = s // c
    model, dit, cond = _model(tiny_preset, depth=1)
    frames = 2 * (s + c)
    index = torch.arange(frames + 1)
    mask = materialize(block_causal_predicate(chunk=c, latent_frames=frames, lookback=n - 1),
                       index, index)
    jac = _chunk_jacobian(model, dit, cond, frames, c, mask, context_frames=frames - c)
    q, k = torch.meshgrid(torch.arange(len(jac)), torch.arange(len(jac)), indexing="ij")
    inside = (k <= q) & (k >= q - (n - 1))
    assert jac[~inside].max() == 0.0, "an output depends on a chunk outside its window"
    assert (jac[inside] > 0).all(), "an output ignores a chunk inside its window"


def _stream_inputs(dit, stream, seed=1):
    gen = torch.Generator().manual_seed(seed)
    s, c, d = stream.context_frames, stream.block_frames, dit
    cache = kv.KV(torch.randn(d.depth, 1, d.num_heads, s, d.head_dim, generator=gen,
                              dtype=torch.float64),
                  torch.randn(d.depth, 1, d.num_heads, s, d.head_dim, generator=gen,
                              dtype=torch.float64))
    pending = torch.randn(1, d.io_channels, c, generator=gen, dtype=torch.float64)
    target = torch.randn(1, d.io_channels, c, generator=gen, dtype=torch.float64)
    return cache, pending, target


def test_fused_step_forgets_the_evicted_chunk(tiny_preset):
    """Neither the target velocity nor the new cache depends on the oldest cached chunk."""
    stream = tiny_preset.config.stream
    model, dit, cond = _model(tiny_preset)
    cache, pending, target = _stream_inputs(dit, stream)
    cache = kv.KV(cache.k.requires_grad_(True), cache.v.requires_grad_(True))
    c = stream.block_frames
    v, new = kv.fused_step(
        model, stream, cond, cache=cache, pending=pending,
        pending_add=kv.build_input_add(dit, clean=pending, batch=1, frames=c, dtype=pending.dtype),
        target=target, target_add=kv.build_input_add(dit, clean=None, batch=1, frames=c,
                                                     dtype=target.dtype),
        t=torch.full((1,), 0.9, dtype=torch.float64))
    for out in (v, new.k, new.v):
        gk, gv = torch.autograd.grad(out.square().sum(), (cache.k, cache.v), retain_graph=True)
        assert gk[..., :c, :].abs().max() == 0 and gv[..., :c, :].abs().max() == 0
        assert gk[..., c:, :].abs().max() > 0


@pytest.mark.parametrize("mode,sees_oldest", [("window", False), ("full", True)])
def test_cached_step_window_switch(tiny_preset, mode, sees_oldest):
    """``window`` hides the oldest cached chunk from the target as training does; ``full`` (the
    reference's unmasked step) does not - the documented train/inference mismatch."""
    stream = dataclasses.replace(tiny_preset.config.stream, cached_step_mask=mode)
    model, dit, cond = _model(tiny_preset)
    cache, _, target = _stream_inputs(dit, stream)
    cache = kv.KV(cache.k.requires_grad_(True), cache.v)
    c = stream.block_frames
    v = kv.cached_step(model, stream, cond, cache=cache, target=target,
                       target_add=kv.build_input_add(dit, clean=None, batch=1, frames=c,
                                                     dtype=target.dtype),
                       t=torch.full((1,), 0.5, dtype=torch.float64))
    (g,) = torch.autograd.grad(v.square().sum(), cache.k)
    assert (g[..., :c, :].abs().max() > 0) == sees_oldest


@pytest.mark.parametrize("pattern", ["enc-dec", "block-causal"])
def test_context_ignores_time_and_noisy_inputs(tiny_preset, pattern):
    """Context velocities and keys/values have exactly zero gradient w.r.t. t, the noisy target
    and the (routed-away) noisy latents of the context frames."""
    s, c = tiny_preset.config.stream.context_frames, tiny_preset.config.stream.block_frames
    model, dit, cond = _model(tiny_preset)
    gen = torch.Generator().manual_seed(2)
    clean = torch.randn(1, dit.io_channels, s, generator=gen, dtype=torch.float64)
    noisy = torch.randn(1, dit.io_channels, s + c, generator=gen,
                        dtype=torch.float64).requires_grad_(True)
    t = torch.full((1,), 0.4, dtype=torch.float64, requires_grad=True)
    add = torch.cat((kv.build_input_add(dit, clean=clean, batch=1, frames=s, dtype=clean.dtype),
                     kv.build_input_add(dit, clean=None, batch=1, frames=c, dtype=clean.dtype)),
                    -1)
    v, cache = model.step(noisy, t, cond, positions=torch.arange(1, s + c + 1),
                          global_position=0, router=kv.router(s, c, batch=1, dtype=clean.dtype),
                          input_add=add,
                          mask=window_mask(pattern, context_frames=s, block_frames=c))
    context_out = v[..., :s].square().sum() + cache.k[..., :s, :].square().sum() \
        + cache.v[..., :s, :].square().sum()
    g_noisy, g_t = torch.autograd.grad(context_out, (noisy, t), allow_unused=True,
                                   retain_graph=True)
    assert g_t is None or g_t.abs().max() == 0
    assert g_noisy is None or g_noisy.abs().max() == 0
    (g_target,) = torch.autograd.grad(v[..., s:].sum(), noisy)
    assert g_target[..., s:].abs().max() > 0
