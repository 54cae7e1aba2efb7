"""StreamingDecoder: streamed audio equals the offline decode after the declared latency, and its
seams are no louder than the rest of the signal.

The tiny bundle's VAE is random but seeded, at SAO's 2048x with the same receptive field (about
10 latent frames each way), so its seams behave like the real ones. Latents come from the
engine: 8 blocks of 4 frames.

Seam measure: the difference ``streamed (aligned) - offline`` in windows of +-512 samples (a
quarter latent frame, 12 ms) around each hand-over point, against the rest of the signal. A
step at a hand-over reaches the output through the decoder's last stages, whose dilated
convolutions spread it over a few hundred samples (+-39 at the output rate, +-156 one stage up),
so the window holds a click while leaving 7/8 of every 4-frame block as "rest". The first and
last block are left out of the rest: the stream's start and its flushed tail have no seam.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from lmdm_bridge.decode import StreamingDecoder  # noqa: E402
from lmdm_bridge.engine import Engine  # noqa: E402

from .engine_support import PROMPT, tiny_bundle  # noqa: E402

BLOCKS = 8


@pytest.fixture(scope="module")
def stream():
    """``(bundle, latents (C, BLOCKS * c), offline audio (channels, samples))``."""
    bundle = tiny_bundle()
    engine = Engine(bundle, seed=3)
    engine.set_prompt(PROMPT)
    latents = np.concatenate([engine.next_block() for _ in range(BLOCKS)], axis=-1)
    offline = bundle.run("vae_decoder", latents=latents[None])["audio"][0]
    return bundle, latents, offline


def _streamed(decoder, latents, c):
    parts = [decoder.push(latents[:, k * c:(k + 1) * c]) for k in range(BLOCKS)]
    assert all(p.shape == (decoder.channels, c * decoder.ratio) for p in parts)
    tail = decoder.flush()
    assert tail.shape == (decoder.channels, decoder.latency)
    return np.concatenate([*parts, tail], axis=-1)


def _seam_energies(diff, handovers, block, half_window):
    """Mean squared difference near the hand-over points and elsewhere (see module doc)."""
    near = np.zeros(diff.shape[-1], bool)
    for h in handovers:
        near[max(0, h - half_window):max(0, h + half_window)] = True
    rest = ~near
    rest[:block] = rest[-block:] = False
    return float(np.mean(diff[:, near] ** 2)), float(np.mean(diff[:, rest] ** 2))


def test_default_overlap_streams_the_offline_decode(stream):
    bundle, latents, offline = stream
    g = bundle.geometry
    decoder = StreamingDecoder(bundle)
    assert decoder.latency == decoder.hold * g.downsampling_ratio == 12 * 2048
    out = _streamed(decoder, latents, g.block_frames)
    assert out.shape[-1] == offline.shape[-1] + decoder.latency
    assert not out[:, :decoder.latency].any(), "the latency is leading silence"
    aligned = out[:, decoder.latency:]
    err = float(np.abs(aligned - offline).max())
    print(f"default decoder: max abs error vs offline {err:.2e} (signal RMS "
          f"{np.sqrt(np.mean(offline ** 2)):.3f})")
    # The windows cover the receptive field, so every emitted sample is computed from the same
    # latents as offline (observed: bit-exact); 1e-5 leaves room for length-dependent kernels.
    assert err <= 1e-5


@pytest.mark.parametrize("overlap", [{}, {"left_frames": 4, "hold_frames": 4, "fade_frames": 4}],
                         ids=["default", "short-overlap"])
def test_seams_are_not_louder_than_the_rest(stream, overlap):
    bundle, latents, offline = stream
    g = bundle.geometry
    r, c = g.downsampling_ratio, g.block_frames
    decoder = StreamingDecoder(bundle, **overlap)
    aligned = _streamed(decoder, latents, c)[:, decoder.latency:]
    handovers = [k * c * r - decoder.latency for k in range(1, BLOCKS)]
    seam, rest = _seam_energies(aligned - offline, handovers, c * r, r // 4)
    print(f"{overlap or 'default'}: seam energy {seam:.2e}, rest {rest:.2e}")
    # With a short overlap (4 frames, under the receptive field) the error is real (~-40 dB),
    # and the crossfade over the whole block spreads it instead of leaving a step at the seam.
    assert seam <= rest


def test_the_seam_measure_sees_clicks(stream):
    """Blocks decoded on their own: the same measure finds the seams several times louder."""
    bundle, latents, offline = stream
    g = bundle.geometry
    r, c = g.downsampling_ratio, g.block_frames
    naive = np.concatenate([bundle.run("vae_decoder", latents=latents[None, :, k * c:(k + 1) * c])
                            ["audio"][0] for k in range(BLOCKS)], axis=-1)
    seam, rest = _seam_energies(naive - offline, [k * c * r for k in range(1, BLOCKS)],
                                 c * r, r // 4)
    print(f"naive per-block decode: seam energy {seam:.2e}, rest {rest:.2e}")
    assert seam > 4 * rest


def test_reset_restarts_and_bad_settings_are_named(stream):
    bundle, latents, _ = stream
    c = bundle.geometry.block_frames
    decoder = StreamingDecoder(bundle, left_frames=2, hold_frames=2, fade_frames=1)
    first = decoder.push(latents[:, :c]).copy()
    decoder.push(latents[:, c:2 * c])
    decoder.reset()
    assert np.array_equal(decoder.push(latents[:, :c]), first)
    with pytest.raises(ValueError, match="fade"):
        StreamingDecoder(bundle, hold_frames=1, fade_frames=2)
    with pytest.raises(ValueError, match="latents must be"):
        decoder.push(latents[:3])
