"""The block engine's memory: the stream state carried between blocks and the preallocated
graph inputs, both sized once from the bundle's geometry (style §10: explicit state, named like
the ONNX I/O, no per-block allocation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmdm_bridge.bundle import Buffer, Bundle
from lmdm_bridge.manifest import GraphSpec


@dataclass
class StreamState:
    """Everything a stream carries from one block to the next (``B`` = 2 under guidance).

    * ``history (1, C, s)``: the last ``s`` clean frames, oldest first: the context of enc-dec
      and outpainting, the bootstrap context of block-causal;
    * ``pending (1, C, c)``: block-causal, the last clean block, not yet in the cache;
    * ``cache_k``, ``cache_v (L, B, H, s, Dh)``: block-causal, the context's keys/values at
      positions ``1..s``; enc-dec, the current block's prefill; None for outpainting. Opaque
      :data:`~lmdm_bridge.bundle.Buffer` s (device memory under CUDA; host copies in a
      snapshot);
    * ``cache_prompt``: the dominant prompt the block-causal cache was built under; None when
      there is no cache (the next block bootstraps);
    * ``block``: blocks committed so far; ``rng``: the noise generator.
    """

    history: np.ndarray
    pending: np.ndarray
    cache_k: Buffer | None
    cache_v: Buffer | None
    rng: np.random.Generator
    has_pending: bool = False
    cache_prompt: str | None = None
    block: int = 0


class FeedBuffers:
    """Preallocated graph inputs of one method (batch ``B``), laid out so a window's context
    and target are views of one contiguous array. Input-add: the inpaint group's mask is 1 on
    context frames and 0 on target frames once and for all; only its features (the clean
    latents) are written per block; every other group stays zero."""

    def __init__(self, bundle: Bundle, method: str, batch: int) -> None:
        m = bundle.manifest
        g = m.geometry
        inpaint = next((c for c in m.controls if c.name == "inpaint"), None)
        if inpaint is None or inpaint.channels != 1 + g.latent_channels:
            raise ValueError("the bundle's model has no inpaint control of 1 + latent_channels "
                             "channels: it cannot take a clean context")
        self.features = slice(inpaint.offset + 1, inpaint.offset + 1 + g.latent_channels)
        self.mask = inpaint.offset
        self.add_channels = sum(c.channels for c in m.controls)
        b, ch, s, c = batch, g.latent_channels, g.context_frames, g.block_frames
        self.t = np.zeros(b, np.float32)
        if method == "block-causal":
            self.window_x, self.window_add = self._window(b, ch, s, c)  # bootstrap
            self.fused_x, self.fused_add = self._window(b, ch, c, c)
        elif method == "enc-dec":
            self.window_x, self.window_add = self._window(b, ch, s, 0)  # prefill
        else:
            self.window_x, self.window_add = self._window(b, ch, s, c)
        self.step_x, self.step_add = self._window(b, ch, 0, c)
        out = s + c if method == "outpaint" else c
        self.velocity = np.zeros((b, ch, out), np.float32)
        if method == "block-causal":
            shape = (g.layers, b, g.heads, s, g.head_dim)
            self.new_cache_k, self.new_cache_v = bundle.buffer(shape), bundle.buffer(shape)

    def _window(self, b: int, ch: int, context: int, target: int) -> tuple[np.ndarray, ...]:
        x = np.zeros((b, ch, context + target), np.float32)
        add = np.zeros((b, self.add_channels, context + target), np.float32)
        add[:, self.mask, :context] = 1.0
        return x, add


def batch_axis(spec: GraphSpec, name: str) -> int:
    """The position of the dynamic ``batch`` dim in a graph input or output, e.g. 1 in the
    caches' ``(L, batch, H, s, Dh)``."""
    for tensor in spec.inputs + spec.outputs:
        if tensor.name == name:
            return list(tensor.shape).index("batch")
    raise KeyError(f"graph {spec.role} has no tensor {name!r}")


def batch_half(bundle: Bundle, role: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first item (the conditional branch of a guided batch) of each of ``role``'s tensors,
    as contiguous arrays with a batch of 1."""
    spec = bundle.manifest.graph(role)
    return {name: np.take(value, [0], axis=batch_axis(spec, name))
            for name, value in arrays.items()}
