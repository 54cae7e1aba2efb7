"""Streaming VAE decoding: latent blocks in, click-free audio out, with a declared latency.

Decoding each block on its own clicks at the seams: the decoder's convolutions see zero padding
where the neighbouring blocks should be. The Oobleck decoder at 2048x reaches about 10 latent
frames to each side (measured: a perturbed frame changes the audio of its 10 neighbours each
way, on random weights of both the ``sao-small`` and the ``tiny`` preset).

So each push decodes ``[left context | held frames | new block]`` and emits audio only up to
``hold`` frames before the newest frame; those frames wait for the next block to give them
right context. Where the new decode takes over from the previous one, the two are mixed with a
linear crossfade over ``fade`` frames. Both decode the same latents and differ at most by small
edge errors, i.e. they are strongly correlated, and for correlated signals the linear
(constant-sum) fade keeps the amplitude constant, where an equal-power fade would add up to
3 dB in the middle of every seam.

Every push of ``F`` frames returns exactly ``F * downsampling_ratio`` samples; the stream is the
offline decode delayed by :attr:`StreamingDecoder.latency` = ``hold * downsampling_ratio``
samples (the first pushes start with that many zeros), and :meth:`StreamingDecoder.flush`
returns the held tail.

A decoder graph that takes ``phase`` and ``phase_frame`` (a peak-locked STFT codec, whose
phase advances from frame to frame by each partial's frequency) is stateful: every decode
starts from the phase the previous decode computed for the first held frame, the first frame
this decode emits, so the phase runs on across seams as in one offline decode (to float
rounding: the phase is a running sum, and a decode's edge frames may differ in the last bits).

Defaults, in latent frames: ``left = hold = 12``, covering the receptive field with a margin,
so each emitted sample is computed from the same latents as in an offline decode (bit-exact on
the tiny bundle, ``tests/test_engine_decode.py``). Left context costs decode time only; held
frames cost latency: 12 frames are 24,576 samples, 0.56 s at 44.1 kHz (8 frames, 0.37 s, leave
an edge error near -60 dB re the signal's RMS on random weights). ``fade = 2`` frames (capped at
the block length): the previous decode keeps at least 10 frames of right context across it, so
the fade only matters when a trained decoder reaches further than measured or ``hold`` is set
lower, and then turns the residual step into a 93 ms ramp.
"""

from __future__ import annotations

import numpy as np

from lmdm_bridge.bundle import Bundle
from lmdm_bridge.manifest import GraphSpec

# Latent frames of context on each side that cover the Oobleck decoder's receptive field (the
# default of manifests that do not state their decoder's; the STFT codec states its own).
RECEPTIVE_FRAMES = 12
DEFAULT_FADE_FRAMES = 2


def is_stateful(spec: GraphSpec) -> bool:
    """Whether the ``vae_decoder`` graph ``spec`` carries phase from decode to decode."""
    return "phase" in {t.name for t in spec.inputs}


def whole_decode_feeds(spec: GraphSpec, latents: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs of the ``vae_decoder`` graph ``spec`` for decoding ``latents (B, C, F)`` as one
    whole stream: a stateful decoder starts at phase 0 in frame 0."""
    feeds = {"latents": np.asarray(latents, np.float32)}
    if is_stateful(spec):
        feeds["phase"] = np.zeros((len(latents), spec.input("phase").shape[1]), np.float32)
        feeds["phase_frame"] = np.zeros(1, np.int64)
    return feeds


class StreamingDecoder:
    """Latent blocks ``(C, F)`` -> audio ``(channels, F * downsampling_ratio)``, click-free.

    ``left_frames``: latent frames of left context decoded in front of the emitted audio;
    ``hold_frames``: frames held back until the next push gives them right context (this is
    the latency); ``fade_frames``: crossfade length, at most ``hold_frames`` (the previous
    decode covers only the held frames) and at most the frames of every push.
    """

    def __init__(self, bundle: Bundle, *, left_frames: int | None = None,
                 hold_frames: int | None = None, fade_frames: int | None = None) -> None:
        g = bundle.manifest.geometry
        c = g.block_frames
        self.bundle = bundle
        reach = g.decoder_receptive_frames
        self.left = reach if left_frames is None else left_frames
        self.hold = reach if hold_frames is None else hold_frames
        self.fade = min(DEFAULT_FADE_FRAMES, c, self.hold) if fade_frames is None else fade_frames
        if self.left < 0 or self.hold < 0 or not 0 <= self.fade <= self.hold:
            raise ValueError(f"need left >= 0, hold >= 0 and 0 <= fade <= hold frames, got "
                             f"left={self.left}, hold={self.hold}, fade={self.fade}")
        self.ratio = g.downsampling_ratio
        self.channels = g.audio_channels
        self.latent_channels = g.latent_channels
        self.sample_rate = g.sample_rate
        n = self.fade * self.ratio
        # Weight of the new decode at each sample of the crossfade (the previous one gets 1 - w).
        self._ramp = ((np.arange(n, dtype=np.float32) + 0.5) / max(n, 1)).astype(np.float32)
        self._history = np.zeros((1, self.latent_channels, self.left + self.hold), np.float32)
        self._tail = np.zeros((self.channels, self.hold * self.ratio), np.float32)
        self._window = np.zeros((1, self.latent_channels, self.left + self.hold + c), np.float32)
        self._audio = np.zeros((1, self.channels, self._window.shape[-1] * self.ratio),
                               np.float32)
        spec = bundle.manifest.graph("vae_decoder")
        self._stateful = is_stateful(spec)
        if self._stateful:
            dims = spec.example_dims
            self._spectral = dims["spectral_frames"] // dims["frames"]  # STFT frames per frame
            self._phase = np.zeros((1, spec.input("phase").shape[1]), np.float32)
            self._phases = np.zeros((1, self._phase.shape[1],
                                     self._window.shape[-1] * self._spectral), np.float32)
        self.reset()

    @property
    def latency(self) -> int:
        """Samples by which the stream lags the offline decode: the held frames."""
        return self.hold * self.ratio

    def reset(self) -> None:
        """Start a new stream."""
        self._have = 0  # valid (newest) frames in the history
        self._frames = 0  # frames pushed so far
        self._tail[:] = 0.0
        if self._stateful:  # a stream starts at phase 0 in its first frame, as offline
            self._phase[:] = 0.0
            self._phase_at = 0  # the stream's STFT frame that self._phase belongs to

    def push(self, latents: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Decode the next ``latents (C, F)`` (or ``(1, C, F)``); returns ``(channels, F *
        ratio)`` samples (into ``out`` when given), the stream delayed by :attr:`latency`."""
        z = np.asarray(latents, np.float32)
        if z.ndim == 3:
            z = z[0]
        if z.ndim != 2 or z.shape[0] != self.latent_channels:
            raise ValueError(f"latents must be (C={self.latent_channels}, frames), got "
                             f"{np.shape(latents)}")
        frames, r = z.shape[-1], self.ratio
        if frames < self.fade:
            raise ValueError(f"a push of {frames} frames is shorter than the {self.fade}-frame "
                             "crossfade")
        h = self._have
        n = h + frames
        # 1. The window [left context | held frames | new block]; its first frame is T - n.
        if n == self._window.shape[-1]:
            window, into = self._window, {"audio": self._audio}
        else:  # warm-up (short history) or an unusual push size
            window, into = np.empty((1, self.latent_channels, n), np.float32), {}
        window[0, :, :h] = self._history[0, :, self._history.shape[-1] - h:]
        window[0, :, h:] = z
        feeds = {"latents": window}
        start_frame = self._frames - h  # the stream's latent frame at the window's start
        if self._stateful:
            feeds["phase"] = self._phase
            feeds["phase_frame"] = np.array([self._phase_at - start_frame * self._spectral],
                                            np.int64)
            if into:
                into["phases"] = self._phases
        result = self.bundle.run_into("vae_decoder", feeds, into)
        audio = (self._audio if into else result["audio"])[0]  # (channels, n * r)
        if self._stateful:
            self._carry_phase(self._phases if into else result["phases"], start_frame,
                              self._frames + frames)
        # 2. Emit frames [T - F - hold, T - hold); those before frame 0 are the latency's zeros.
        if out is None:
            out = np.empty((self.channels, frames * r), np.float32)
        start = (n - frames - self.hold) * r  # window sample of the first emitted sample
        lead = min(frames * r, max(0, -start))
        out[:, :lead] = 0.0
        out[:, lead:] = audio[:, start + lead:start + frames * r]
        # 3. Crossfade from the previous decode's version of the held frames.
        end = self.fade * r
        if self._frames > 0 and end > lead:
            old = self._tail[:, lead:end]
            out[:, lead:end] = old + self._ramp[lead:end] * (out[:, lead:end] - old)
        # 4. Keep this decode of the newest `hold` frames and the latents the next window needs.
        tail_start = (n - self.hold) * r
        skip = min(self.hold * r, max(0, -tail_start))
        self._tail[:, :skip] = 0.0
        self._tail[:, skip:] = audio[:, tail_start + skip:]
        keep = min(n, self._history.shape[-1])
        if keep:
            self._history[0, :, self._history.shape[-1] - keep:] = window[0, :, n - keep:]
        self._have = keep
        self._frames += frames
        return out

    def _carry_phase(self, phases: np.ndarray, start_frame: int, end_frame: int) -> None:
        """Keep the phase of the first held frame (the next decode's first emitted frame),
        decoded here with the rest of the held frames as its right context. While the window is
        shorter than ``hold``, the next one starts where this one did and the old anchor stays
        valid."""
        held = end_frame - self.hold
        if held >= start_frame:
            self._phase[:] = phases[:, :, (held - start_frame) * self._spectral]
            self._phase_at = held * self._spectral

    def flush(self) -> np.ndarray:
        """End the stream: the held ``(channels, latency)`` samples (decoded without right
        context, as the end of an offline decode is); then the decoder is reset."""
        tail = self._tail.copy()
        self.reset()
        return tail
