"""Engine behaviour on the tiny bundle: determinism, prompt changes and re-bootstraps, ejection,
snapshot/restore, reset, prompt blends, device buffers, the bundle's providers and description.

Equalities here are exact: the same graphs run on the same inputs in the same order. Which graph
ran is read from the bundle's per-role call counts.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("torch")  # only to export the bundle

from lmdm_bridge.bundle import Bundle, choose_providers  # noqa: E402
from lmdm_bridge.engine import Engine  # noqa: E402
from lmdm_bridge.text import dominant, normalize_prompt  # noqa: E402

from .engine_support import PROMPT, tiny_bundle  # noqa: E402

OTHER = "solo cello, slow and sad"


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


def _engine(bundle, prompt=PROMPT, **kwargs):
    engine = Engine(bundle, **kwargs)
    engine.set_prompt(prompt)
    return engine


def _blocks(engine, n):
    return np.stack([engine.next_block() for _ in range(n)])


def _calls(bundle):
    return {role: s.calls for role, s in bundle.stats.items()}


def _delta(before, after):
    """Calls per role between two ``_calls`` readings (roles that ran only)."""
    return {r: n - before.get(r, 0) for r, n in after.items() if n != before.get(r, 0)}


@pytest.mark.parametrize("method", ["block-causal", "enc-dec", "outpaint"])
def test_same_seed_same_blocks_other_seed_other_blocks(bundle, method):
    a = _blocks(_engine(bundle, method=method, seed=5, cfg_scale=2.0), 3)
    b = _blocks(_engine(bundle, method=method, seed=5, cfg_scale=2.0), 3)
    c = _blocks(_engine(bundle, method=method, seed=6, cfg_scale=2.0), 3)
    assert a.shape == (3, bundle.geometry.latent_channels, bundle.geometry.block_frames)
    assert a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_graph_calls_per_block(bundle):
    steps = bundle.manifest.sampler.steps
    engine = _engine(bundle, seed=0)
    before = _calls(bundle)
    engine.next_block()
    assert _delta(before, _calls(bundle)) == {"bc_bootstrap": 1, "bc_cached": steps - 1}
    before = _calls(bundle)
    engine.next_block()
    assert _delta(before, _calls(bundle)) == {"bc_fused": 1, "bc_cached": steps - 1}
    assert all(s.seconds > 0 for s in engine.stats.values())
    assert engine.last_block_seconds > 0


def test_new_dominant_prompt_rebootstraps_and_a_blend_keeps_the_cache(bundle):
    engine = _engine(bundle, seed=1)
    _blocks(engine, 3)
    before = _calls(bundle)
    engine.set_prompt([(PROMPT, 0.7), (OTHER, 0.3)])  # same dominant prompt
    engine.next_block()
    delta = _delta(before, _calls(bundle))
    assert delta.get("bc_fused") == 1 and "bc_bootstrap" not in delta

    snapshot = engine.snapshot()
    before = _calls(bundle)
    engine.set_prompt([(PROMPT, 0.3), (OTHER, 0.7)])  # the dominant prompt changes
    switched = _blocks(engine, 2)
    delta = _delta(before, _calls(bundle))
    assert delta.get("bc_bootstrap") == 1 and delta.get("bc_fused") == 1

    # The re-bootstrap is a fresh stream started from the last s clean frames as context.
    fresh = _engine(bundle, [(PROMPT, 0.3), (OTHER, 0.7)], context=snapshot.history[0])
    fresh.state.rng = snapshot.rng
    assert np.array_equal(_blocks(fresh, 2), switched)


def test_prompt_change_in_enc_dec_needs_no_rebootstrap(bundle):
    engine = _engine(bundle, method="enc-dec", seed=1)
    engine.next_block()
    engine.set_prompt(OTHER)
    before = _calls(bundle)
    engine.next_block()
    assert set(_delta(before, _calls(bundle))) == {"ed_prefill", "ed_decoder"}


@pytest.mark.parametrize("method", ["block-causal", "enc-dec", "outpaint"])
def test_eject_changes_the_output(bundle, method):
    s = bundle.geometry.context_frames
    kept, ejected = (_engine(bundle, method=method, seed=2) for _ in range(2))
    _blocks(kept, 5)
    _blocks(ejected, 5)
    ejected.eject(s // 2)
    assert not ejected.state.history[..., :s // 2].any()
    before = _calls(bundle)
    a, b = kept.next_block(), ejected.next_block()
    if method == "block-causal":
        assert _delta(before, _calls(bundle)).get("bc_bootstrap") == 1  # ejected only
    assert np.abs(a - b).max() > 1e-3
    with pytest.raises(ValueError, match="eject"):
        ejected.eject(s + 1)


@pytest.mark.parametrize("method,scale", [("block-causal", 1.0), ("block-causal", 3.0),
                                          ("enc-dec", 3.0), ("outpaint", 1.0)])
def test_snapshot_restore_replays(bundle, method, scale):
    engine = _engine(bundle, method=method, cfg_scale=scale, seed=4)
    _blocks(engine, 2)
    snapshot = engine.snapshot()
    history = snapshot.history.copy()
    first = _blocks(engine, 3)
    assert np.array_equal(snapshot.history, history), "a snapshot must not follow the stream"
    engine.restore(snapshot)
    assert np.array_equal(_blocks(engine, 3), first)
    engine.restore(snapshot)  # the snapshot is reusable
    assert np.array_equal(_blocks(engine, 3), first)


def test_reset_replays_from_the_start(bundle):
    engine = _engine(bundle, seed=8)
    first = _blocks(engine, 3)
    engine.reset()
    assert engine.state.block == 0
    assert np.array_equal(_blocks(engine, 3), first)


def test_device_buffers_give_the_same_stream(bundle):
    """The OrtValue path (CUDA's) exercised on CPU: same blocks, and snapshot/restore works."""
    device = Bundle(bundle.root, providers="cpu", device_buffers=True, check_files=False)
    engine = _engine(device, seed=4, cfg_scale=3.0)
    assert not isinstance(engine.state.cache_k, np.ndarray)
    want = _blocks(_engine(bundle, seed=4, cfg_scale=3.0), 4)
    got = _blocks(engine, 2)
    snapshot = engine.snapshot()
    got = np.concatenate([got, _blocks(engine, 2)])
    assert np.array_equal(got, want)
    engine.restore(snapshot)
    assert np.array_equal(_blocks(engine, 2), want[2:])
    # Steps outside a guidance interval read the cache's conditional half through the host.
    interval = (0.3, 0.99)
    want = _blocks(_engine(bundle, seed=4, cfg_scale=3.0, cfg_interval=interval), 3)
    assert np.array_equal(_blocks(_engine(device, seed=4, cfg_scale=3.0, cfg_interval=interval),
                                  3), want)


@pytest.mark.parametrize("method", ["block-causal", "enc-dec", "outpaint"])
def test_an_empty_guidance_interval_is_the_unguided_stream(bundle, method):
    """No step of the schedule has t = 0, so the interval [0, 0] guides none: every step takes
    the conditional branch alone (batch 1 but for the cache-building first), and the blocks are
    those of CFG 1 up to the rounding of batch 2 against batch 1. A partial interval differs
    from both ends."""
    unguided = _blocks(_engine(bundle, method=method, seed=2), 3)
    empty = _blocks(_engine(bundle, method=method, seed=2, cfg_scale=3.0,
                            cfg_interval=(0.0, 0.0)), 3)
    np.testing.assert_allclose(empty, unguided, rtol=0, atol=1e-5)
    guided = _blocks(_engine(bundle, method=method, seed=2, cfg_scale=3.0), 3)
    part = _blocks(_engine(bundle, method=method, seed=2, cfg_scale=3.0,
                           cfg_interval=(0.3, 0.99)), 3)
    assert np.abs(guided - unguided).max() > 0.1
    assert np.abs(part - guided).max() > 1e-3 and np.abs(part - unguided).max() > 1e-3


def test_live_settings_take_effect_at_the_next_block(bundle):
    engine = _engine(bundle, seed=3)
    _blocks(engine, 2)
    engine.set_steps(3)
    before = _calls(bundle)
    engine.next_block()
    assert _delta(before, _calls(bundle)) == {"bc_fused": 1, "bc_cached": 2}

    engine.set_cfg(2.5)  # guidance on: batch 2, the cache is rebuilt from the history
    before = _calls(bundle)
    engine.next_block()
    assert _delta(before, _calls(bundle)) == {"bc_bootstrap": 1, "bc_cached": 2}
    engine.set_cfg(4.0)  # another scale keeps the cache
    before = _calls(bundle)
    engine.next_block()
    assert _delta(before, _calls(bundle)) == {"bc_fused": 1, "bc_cached": 2}

    twins = [_engine(bundle, seed=3) for _ in range(3)]
    for twin, seed in zip(twins, (9, 9, 10), strict=True):
        twin.next_block()
        twin.reseed(seed)
    a, b, c = (twin.next_block() for twin in twins)
    assert np.array_equal(a, b) and not np.array_equal(a, c)

    # A guidance interval set mid-stream applies from the next block, keeping the cache.
    engine, twin = (_engine(bundle, seed=3, cfg_scale=3.0) for _ in range(2))
    _blocks(engine, 2), _blocks(twin, 2)
    engine.set_cfg_interval(0.3, 0.99)
    before = _calls(bundle)
    changed = engine.next_block()
    assert _delta(before, _calls(bundle)) == {"bc_fused": 1, "bc_cached": 7}
    assert np.abs(changed - twin.next_block()).max() > 1e-3


def test_blends_are_normalised_weighted_sums(bundle):
    engine = _engine(bundle)
    conditioner = engine.conditioner
    blend = conditioner.blend([(PROMPT, 3.0), (OTHER, 1.0)])
    want = 0.75 * conditioner.tokens(PROMPT) + 0.25 * conditioner.tokens(OTHER)
    np.testing.assert_allclose(blend, want, rtol=0, atol=1e-6)
    assert normalize_prompt([("a", 1), ("b", 2), ("a", 1)]) == (("a", 0.5), ("b", 0.5))
    assert dominant(normalize_prompt([("a", 1), ("b", 3)])) == "b"
    with pytest.raises(ValueError, match="empty"):
        engine.set_prompt([])
    with pytest.raises(ValueError, match="positive sum"):
        engine.set_prompt([("a", 1.0), ("b", -2.0)])


def test_prompt_cache_is_bounded(bundle):
    engine = Engine(bundle, prompt_cache=2)
    before = _calls(bundle).get("text_encoder", 0)
    for prompt in ("one", "two", "one", "three", "one"):
        engine.set_prompt(prompt)
    assert len(engine.conditioner._tokens) == 2
    assert _calls(bundle)["text_encoder"] - before == 3  # "one" stayed cached throughout


def test_settings_are_checked(bundle):
    with pytest.raises(RuntimeError, match="set_prompt"):
        Engine(bundle).next_block()
    with pytest.raises(ValueError, match="method"):
        Engine(bundle, method="diagonal")
    with pytest.raises(ValueError, match="sampler"):
        Engine(bundle, sampler="heun")
    with pytest.raises(ValueError, match="cfg_pp"):
        Engine(bundle, cfg_pp="sometimes")
    with pytest.raises(ValueError, match="t_lo <= t_hi"):
        Engine(bundle, cfg_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="two noise levels"):
        Engine(bundle, cfg_interval=(0.5,))
    with pytest.raises(ValueError, match="context"):
        Engine(bundle, context=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="number conditioner"):
        Engine(bundle, numbers={"bpm": 120.0})


def test_providers_fall_back_to_cpu_with_a_logged_note(caplog):
    with caplog.at_level(logging.WARNING, logger="lmdm_bridge.bundle"):
        providers = choose_providers("cuda")
    if providers[0] == "CPUExecutionProvider":
        assert "CUDA was requested" in caplog.text
    assert providers[-1] == "CPUExecutionProvider"
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="providers"):
        choose_providers("tpu")


def test_run_checks_inputs_and_info_describes_the_bundle(bundle):
    with pytest.raises(ValueError, match="latents"):
        bundle.run("vae_decoder", audio=np.zeros((1, 2, 8), np.float32))
    text = bundle.info()
    for needle in ("block-causal", "bc_fused", "cache_k", "weights.bin", "total",
                   "CPUExecutionProvider"):
        assert needle in text, needle
