"""The onnxruntime engine equals the torch side: tokenizer, conditioning and whole streams.

Streams: the engine draws its noise from a recording source; the torch rollout
(:func:`lmdm_export.rollout.stream_blocks`) replays exactly those draws, in order, through its
noise callable. Both run 4 blocks of the tiny model (every DiT weight random) for each method,
sampler and guidance setting, and must agree to 1e-4: the graphs alone differ from eager torch
by ~1e-6 (kernel and fusion differences), and 4 blocks x 8 steps of feedback through the cache
and the context grow that by at most a few times (the printed maxima are ~1e-6 to 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lmdm_bridge.engine import Engine  # noqa: E402
from lmdm_bridge.text import PromptConditioner, PromptTokenizer  # noqa: E402
from lmdm_export.rollout import (  # noqa: E402
    Guidance,
    make_conditioning,
    make_session,
    stream_blocks,
)
from lmdm_export.sampling import SAMPLERS, logsnr_schedule  # noqa: E402

from .engine_support import PROMPT, tiny_bundle, tiny_model_and_bundle  # noqa: E402

TOL = 1e-4
BLOCKS = 4


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_bundle()[0], tiny_bundle()


def _seconds(bundle):
    return bundle.manifest.numbers["seconds_total"][2]


def _torch_conditioning(model, bundle, prompt, scale):
    cross, glob = model.conditioning_inputs([{"prompt": prompt,
                                              "seconds_total": _seconds(bundle)}])
    return make_conditioning(model.dit, cross, glob, Guidance(scale=scale))


def test_tokenizer_matches_the_torch_side(tiny):
    model, bundle = tiny
    hf = model.conditioner.conditioners[bundle.manifest.text.conditioner_id].encoder.tokenizer
    length = bundle.manifest.text.max_length
    prompts = [PROMPT, "", "Café – naïve piano, 東京 at 3am!!",
               "an extremely long prompt that goes on and on about synthesizers, tape delay, "
               "spring reverb, swung hi-hats and a choir far beyond the token limit"]
    ids, mask = PromptTokenizer(bundle)(prompts)
    want = hf(prompts, truncation=True, max_length=length, padding="max_length")
    assert ids.shape == mask.shape == (len(prompts), length)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == want["input_ids"]
    assert mask.tolist() == want["attention_mask"]
    assert mask[-1].all(), "the long prompt must fill every position (it was truncated)"


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_conditioning_matches_make_conditioning(tiny, scale):
    model, bundle = tiny
    got = PromptConditioner(bundle).condition(PROMPT, guidance=scale != 1.0)
    with torch.inference_mode():
        want = _torch_conditioning(model, bundle, PROMPT, scale)
    pairs = {"cross_k": (got.cross_k, want.cross.k), "cross_v": (got.cross_v, want.cross.v),
             "global_embed": (got.global_embed, want.global_embed)}
    for name, (g, w) in pairs.items():
        assert g.shape == tuple(w.shape), name
        err = float(np.abs(g - w.numpy()).max())
        print(f"conditioning (scale {scale}) {name}: max abs error {err:.2e}")
        assert err <= TOL * max(1.0, float(w.abs().max())), name


METHODS = ("block-causal", "enc-dec", "outpaint")
EVERY_STEP = (0.0, 1.0)
# Guidance on the 8-step schedule's t = 0.982 .. 0.5 only: the cache-building first step (t = 1)
# and the second (0.993) run unguided, then the guided steps, then the last (0.269) at batch 1.
INTERVAL = (0.3, 0.99)
CASES = [(method, sampler, scale, None, EVERY_STEP)
         for method in METHODS for sampler in ("pingpong", "euler") for scale in (1.0, 3.0)]
CASES += [("block-causal", "pingpong", 3.0, "lmdm-code", EVERY_STEP),
          ("enc-dec", "euler", 3.0, "textbook", EVERY_STEP),
          ("outpaint", "euler", 3.0, "lmdm-code", EVERY_STEP)]
CASES += [(method, "ab2", scale, None, EVERY_STEP) for method in METHODS for scale in (1.0, 3.0)]
CASES += [(method, "ab2", 3.0, None, INTERVAL) for method in METHODS]
CASES += [("block-causal", "pingpong", 3.0, "lmdm-code", INTERVAL),
          ("enc-dec", "euler", 3.0, "textbook", INTERVAL)]


@pytest.mark.parametrize("method,sampler,scale,cfg_pp,interval", CASES)
def test_engine_equals_torch_rollout(tiny, method, sampler, scale, cfg_pp, interval):
    model, bundle = tiny
    steps = bundle.manifest.sampler.steps
    rng = np.random.default_rng(123)
    draws = []

    def record(shape):
        draws.append(rng.standard_normal(shape, dtype=np.float32))
        return draws[-1]

    engine = Engine(bundle, method=method, sampler=sampler, cfg_scale=scale,
                    cfg_pp=cfg_pp or "off", cfg_interval=interval, noise=record)
    engine.set_prompt(PROMPT)
    got = np.stack([engine.next_block() for _ in range(BLOCKS)])

    replay = iter(draws)

    def replayed(shape, like):
        draw = next(replay)
        assert draw.shape == tuple(shape), "the engine and the rollout draw in another order"
        return torch.from_numpy(draw).to(like)

    guidance = Guidance(scale=scale, interval=interval)
    with torch.inference_mode():
        cond = _torch_conditioning(model, bundle, PROMPT, scale)
        session = make_session(method, model.dit, model.config, cond, guidance=guidance,
                               batch=1, generator=replayed)
        want = torch.stack([b[0] for b in stream_blocks(
            session, BLOCKS, sampler=SAMPLERS[sampler], ts=logsnr_schedule(steps),
            generator=replayed, cfg_pp=cfg_pp)]).numpy()
    assert next(replay, None) is None, "the rollout drew less noise than the engine"
    per_block = len(draws) // BLOCKS
    renoise = steps - 1 if sampler == "pingpong" else 0
    assert per_block == 1 + renoise + (steps if method == "outpaint" else 0)
    err = float(np.abs(got - want).max())
    print(f"{method} {sampler} cfg {scale} cfg_pp {cfg_pp} interval {interval}: "
          f"max abs error {err:.2e} "
          f"(latents up to {np.abs(want).max():.2f})")
    assert err <= TOL
