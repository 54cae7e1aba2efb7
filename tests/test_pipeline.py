"""The decode stage: decoding beside generation changes nothing in the audio.

``render`` (engine and decoder overlapped on two threads) must equal the plain sequential loop
``decoder.push(engine.next_block())`` sample for sample, events included; the stage keeps
order, resets in order, and a failed decode surfaces where it is collected without wedging the
stage.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("torch")

from lmdm_bridge.bundle import Bundle, default_threads  # noqa: E402
from lmdm_bridge.decode import StreamingDecoder  # noqa: E402
from lmdm_bridge.engine import Engine  # noqa: E402
from lmdm_bridge.events import Event  # noqa: E402
from lmdm_bridge.pipeline import DecodeStage  # noqa: E402
from lmdm_bridge.render import render  # noqa: E402

from .engine_support import PROMPT, tiny_bundle, tiny_model_and_bundle  # noqa: E402


def _sequential(bundle, blocks, seed, prompt_at=None):
    """The reference: one thread, each block decoded before the next is sampled."""
    engine = Engine(bundle, seed=seed)
    decoder = StreamingDecoder(bundle)
    engine.set_prompt(PROMPT)
    parts = []
    for b in range(blocks):
        if prompt_at is not None and b == prompt_at[0]:
            engine.set_prompt(prompt_at[1])
        parts.append(decoder.push(engine.next_block()))
    return np.concatenate(parts, axis=-1)


def test_render_equals_the_sequential_loop():
    bundle = tiny_bundle()
    g = bundle.geometry
    seconds = 5 * g.block_seconds
    audio, stats = render(bundle, prompt=PROMPT, seconds=seconds, seed=4)
    decoder_latency = StreamingDecoder(bundle).latency
    blocks = stats.blocks
    reference = _sequential(bundle, blocks, seed=4)
    total = audio.shape[-1]
    np.testing.assert_array_equal(audio, reference[:, decoder_latency:decoder_latency + total])
    assert stats.block_median > 0 and 0 < stats.time_to_first_audio < stats.wall_seconds


def test_render_with_a_prompt_change_equals_the_sequential_loop():
    bundle = tiny_bundle()
    g = bundle.geometry
    change = Event(time=2 * g.block_seconds, kind="prompt", value="another prompt")
    audio, stats = render(bundle, prompt=PROMPT, seconds=4 * g.block_seconds, seed=1,
                          events=[change])
    latency = StreamingDecoder(bundle).latency
    reference = _sequential(bundle, stats.blocks, seed=1, prompt_at=(2, "another prompt"))
    np.testing.assert_array_equal(audio, reference[:, latency:latency + audio.shape[-1]])


def test_stage_keeps_order_and_resets_after_the_block_in_flight():
    bundle = tiny_bundle()
    engine = Engine(bundle, seed=2)
    engine.set_prompt(PROMPT)
    latents = [engine.next_block() for _ in range(4)]
    reference = StreamingDecoder(bundle)
    expected = [reference.push(z) for z in latents[:3]]
    reference.reset()
    expected.append(reference.push(latents[3]))

    stage = DecodeStage(StreamingDecoder(bundle))
    try:
        got = []
        assert stage.take() is None and not stage.in_flight
        for z in latents[:3]:
            buffer = z.copy()
            previous = stage.submit(buffer)
            buffer[:] = np.nan  # the stage copied the latents: reusing the array is safe
            if previous is not None:
                got.append(previous)
        assert stage.in_flight
        got.append(stage.take())
        stage.submit(latents[0])  # in flight when the reset comes: dropped, then a new stream
        stage.reset()
        assert not stage.in_flight
        stage.submit(latents[3])
        got.append(stage.take())
    finally:
        stage.close()
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


def test_a_failed_decode_raises_where_it_is_collected_and_the_stage_goes_on():
    bundle = tiny_bundle()
    c = bundle.geometry.block_frames
    stage = DecodeStage(StreamingDecoder(bundle))
    try:
        stage.submit(np.zeros((3, c), np.float32))  # wrong latent channels
        with pytest.raises(ValueError, match="latents must be"):
            stage.take()
        stage.submit(np.zeros((3, c), np.float32))
        stage.discard()  # a failed decode in flight is dropped quietly
        stage.submit(np.zeros((bundle.geometry.latent_channels, c), np.float32))
        assert stage.take().shape[-1] == c * bundle.geometry.downsampling_ratio
    finally:
        stage.close()


def test_default_threads_split_the_cores_between_generator_and_decoder():
    cores = len(os.sched_getaffinity(0))
    assert default_threads() == max(1, cores // 2)
    bundle = Bundle(tiny_model_and_bundle()[1], providers="cpu")
    assert bundle.threads == default_threads()
    options = bundle.session("vae_decoder").get_session_options()
    assert options.intra_op_num_threads == default_threads()
