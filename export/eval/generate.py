"""Generated audio for evaluation, through the runtime's own streaming render path.

:class:`BundleSource` wraps one bundle and renders prompts with :func:`lmdm_bridge.render.render`
(the engine's block loop plus the click-free streaming decoder: exactly what ``lmdm-bridge
render`` writes), in-process. It keeps the timing of every render, so the real-time factor is
measured on the very audio being evaluated, decode included: audio seconds over wall seconds
(prompt encoding and the engine's set-up per render included), and the steady-state figure of
one block's audio over the median block time. A short warm-up render first loads every graph,
so session creation is not billed to the bundle.

:meth:`BundleSource.resynthesise` passes real clips through the bundle's own autoencoder (encode,
then one whole decode): the codec's ceiling, what the generator would score with perfect latents.
It is not timed.
"""

from __future__ import annotations

import numpy as np

from lmdm_bridge.bundle import Bundle
from lmdm_bridge.decode import whole_decode_feeds
from lmdm_bridge.render import render
from lmdm_export.eval.clips import through_codec, to_mono_rate


class BundleSource:
    """Renders prompts from the bundle at ``path`` as mono audio at ``target_rate``."""

    def __init__(self, name: str, path: str, target_rate: int, *, providers: str = "cpu",
                 threads: int | None = None, steps: int | None = None,
                 cfg: float | None = None, method: str | None = None,
                 cfg_interval: tuple[float, float] | None = None) -> None:
        self.name, self.path, self.target_rate = name, str(path), target_rate
        self.bundle = Bundle(path, providers=providers, threads=threads)
        self.settings = {"steps": steps, "cfg": cfg, "method": method,
                         "cfg_interval": cfg_interval}
        self.audio_seconds = 0.0
        self.wall_seconds = 0.0
        self.block_medians: list[float] = []
        self.sampler: dict = {}
        render(self.bundle, prompt="warm-up", seconds=self.bundle.geometry.block_seconds,
               **self.settings)

    def render(self, prompt: str, seconds: float, seed: int) -> np.ndarray:
        """``seconds`` of ``prompt`` -> mono float32 (samples,) at the target rate."""
        audio, stats = render(self.bundle, prompt=prompt, seconds=seconds, seed=seed,
                              **self.settings)
        self.audio_seconds += stats.seconds
        self.wall_seconds += stats.wall_seconds
        self.block_medians.append(stats.block_median)
        self.sampler = {"method": stats.method, "steps": stats.steps, "cfg": stats.cfg,
                        "cfg_interval": list(stats.cfg_interval)}
        return to_mono_rate(audio, self.bundle.geometry.sample_rate, self.target_rate)

    def resynthesise(self, clips: np.ndarray) -> np.ndarray:
        """Mono ``clips (n, samples)`` at the target rate -> the same clips encoded and decoded
        (one whole decode) by the bundle's autoencoder, ``(n, samples)``."""
        g = self.bundle.geometry
        spec = self.bundle.spec("vae_decoder")

        def codec(audio: np.ndarray) -> np.ndarray:
            latents = self.bundle.run("vae_encoder", audio=audio)["latents"]
            return self.bundle.run("vae_decoder", **whole_decode_feeds(spec, latents))["audio"][0]

        return through_codec(clips, self.target_rate, g.sample_rate, g.audio_channels,
                             g.downsampling_ratio, codec)

    def timing(self) -> dict:
        """Real-time factors over everything rendered so far (audio s per wall s)."""
        g = self.bundle.geometry
        block = float(np.median(self.block_medians)) if self.block_medians else float("nan")
        return {
            "realtime_factor": self.audio_seconds / max(self.wall_seconds, 1e-9),
            "realtime_factor_steady": g.block_seconds / block,
            "audio_seconds": self.audio_seconds,
            "wall_seconds": self.wall_seconds,
            "block_seconds": g.block_seconds,
            "block_median": block,
        }

    def describe(self) -> dict:
        g = self.bundle.geometry
        return {"path": self.path, "preset": self.bundle.manifest.model.get("preset"),
                "sample_rate": g.sample_rate, "audio_channels": g.audio_channels,
                "device": self.bundle.device, **self.sampler}
