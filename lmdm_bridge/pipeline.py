"""Decoding beside generation: the streaming decoder on its own thread, one block behind.

A block's cost is the DiT's sampler steps, then the VAE decoder. Neither graph keeps two cores
busy on a small model: onnxruntime's intra-op threads mostly wait on each other (on 2 cores the
default bundle's block takes 150-190 ms with one thread per core and 115-135 ms with a single
thread, ``docs/performance.md``). So each stage gets its share of the cores and the decoder runs
on its own thread while the engine samples the next block: onnxruntime releases the GIL inside
a graph call, and the two stages touch no common state (the latents are copied on submit).

Throughput becomes that of the slower stage rather than of the sum; the audio of a block is
ready ``decode`` seconds after its latents, as without the overlap. Order is kept by a single
worker: audio comes out in the order the latents went in, and a reset queued behind a decode
runs after it.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from lmdm_bridge.decode import StreamingDecoder


class DecodeStage:
    """Runs :meth:`StreamingDecoder.push` on a worker thread, one block at a time.

    ``submit(latents)`` starts decoding ``latents (C, F)`` and returns at once; ``take()`` waits
    for that decode and returns its audio ``(channels, F * ratio)``. At most one decode is in
    flight: ``submit`` first waits for the previous one and returns its audio (or None).
    A failed decode raises from the ``take``/``submit`` that collects it. ``done_at``: the
    ``time.perf_counter()`` at which the audio last taken was ready.
    """

    def __init__(self, decoder: StreamingDecoder) -> None:
        self.decoder = decoder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmdm-decode")
        self._pending: Future | None = None
        self.done_at = 0.0

    @property
    def in_flight(self) -> bool:
        """Whether a submitted block's audio has not been taken yet."""
        return self._pending is not None

    @property
    def ready(self) -> bool:
        """Whether :meth:`take` would return without waiting."""
        return self._pending is not None and self._pending.done()

    def submit(self, latents: np.ndarray) -> np.ndarray | None:
        """Queue ``latents (C, F)`` for decoding; returns the previous block's audio (None when
        nothing was in flight). The latents are copied: the caller may reuse its array."""
        previous = self.take()
        self._pending = self._pool.submit(self._decode, np.array(latents, np.float32))
        return previous

    def take(self) -> np.ndarray | None:
        """Wait for the block in flight and return its audio (None when there is none)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        audio, self.done_at = pending.result()
        return audio

    def discard(self) -> None:
        """Drop the block in flight (its decode finishes first, so the decoder's state stays
        consistent); a failed decode is dropped with it."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()

    def reset(self) -> None:
        """Drop the block in flight and start a new stream."""
        self.discard()
        self.decoder.reset()

    def _decode(self, latents: np.ndarray) -> tuple[np.ndarray, float]:
        return self.decoder.push(latents), time.perf_counter()

    def close(self) -> None:
        """Drop the block in flight and stop the worker thread."""
        self.discard()
        self._pool.shutdown(wait=True)
