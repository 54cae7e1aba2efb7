"""A playable model: a bundle's engine and streaming decoder, warmed up before it plays.

The first call of an onnxruntime session is slower than the ones after it (memory planning,
kernel selection, lazily initialised thread pools): on ``sao-small`` the first block-causal block
takes several times a steady block, and a daemon that reported ready before paying that would
start with an underrun. :func:`warm_up` therefore runs every graph of the block loop and the
decoder at the window shapes of the steady state, then puts the engine and the decoder back
exactly where they were, so the stream after a warm-up is the stream without one, draw for draw.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmdm_bridge.bundle import Bundle
from lmdm_bridge.decode import StreamingDecoder
from lmdm_bridge.engine import Engine
from lmdm_bridge.text import Prompt

# Blocks a warm-up generates: the first bootstraps the cache (bc_bootstrap or ed_prefill), the
# second takes the steady path (bc_fused); both run the cached step graph.
WARMUP_BLOCKS = 2


@dataclass
class Model:
    """``name`` (the bundle's folder name, as ``/lmdm/model`` and the status spell it), its
    :class:`Bundle`, :class:`Engine` and :class:`StreamingDecoder`, and how long the warm-up
    took in seconds."""

    name: str
    bundle: Bundle
    engine: Engine
    decoder: StreamingDecoder
    warmup_seconds: float

    @property
    def block_seconds(self) -> float:
        return self.bundle.geometry.block_seconds


def warm_up(engine: Engine, decoder: StreamingDecoder) -> float:
    """Run :data:`WARMUP_BLOCKS` blocks and enough decoder pushes to reach its steady window
    ``(1, C, left + hold + block)``, then restore both: the engine from a snapshot (cache,
    history, pending block and noise generator), the decoder by a reset. The engine needs a
    prompt. Returns the seconds spent."""
    start = time.perf_counter()
    snapshot = engine.snapshot()
    latents = np.zeros((engine.geometry.latent_channels, engine.geometry.block_frames),
                       np.float32)
    for _ in range(WARMUP_BLOCKS):
        latents = engine.next_block()
    # The decoder's window grows by one block per push until it holds left + hold frames.
    pushes = -(-(decoder.left + decoder.hold) // engine.geometry.block_frames) + 1
    for _ in range(pushes):
        decoder.push(latents)
    engine.restore(snapshot)
    decoder.reset()
    return time.perf_counter() - start


def load_model(path: str | Path, prompt: Prompt, *, method: str | None = None,
               steps: int | None = None, cfg: float | None = None, seed: int = 0,
               threads: int | None = None) -> Model:
    """Open the bundle at ``path`` (errors name the bundle and the problem: a
    :class:`~lmdm_bridge.manifest.BundleError` or ``ValueError``), condition it on ``prompt``
    and warm it up. ``steps``/``cfg`` None: the manifest's sampler defaults; ``threads``:
    onnxruntime's intra-op threads (None: its default)."""
    bundle = Bundle(path, threads=threads)
    engine = Engine(bundle, method=method, steps=steps, cfg_scale=cfg, seed=seed)
    engine.set_prompt(prompt)
    decoder = StreamingDecoder(bundle)
    seconds = warm_up(engine, decoder)
    return Model(Path(os.path.abspath(path)).name, bundle, engine, decoder, seconds)
