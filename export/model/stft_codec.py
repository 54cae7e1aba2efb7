"""A small STFT-domain codec for CPU-trained default models.

The Oobleck VAE upsamples 2048x in the time domain, which is most of its cost. This codec works
on STFT frames instead: the encoder reads log-magnitudes, the decoder predicts the log-magnitude
(and, in one mode, the phase) of every frame and an inverse STFT turns them into audio, so the
expensive part runs at the frame rate (86 frames/s at 22.05 kHz, hop 256) rather than the sample
rate.

Phase comes one of two ways (``StftCodecConfig.phase``):

* ``"learned"``: the decoder's head predicts it per bin and frame (Vocos). Trained by the
  MR-STFT distance alone, this stalled on the polyphonic corpus (docs/default-model-history.md);
* ``"peak-locked"``: a phase vocoder. Every bin takes the frequency of the strongest bin within
  ``PEAK_REACH`` bins of it, refined by a parabola through that peak's log-magnitude and its two
  neighbours, and its phase advances by that frequency times the hop from frame to frame
  (a cumulative sum, so held notes keep their true pitch instead of the 21.5 Hz grid a
  shift-equivariant decoder of phase-blind latents falls on). Frames are synthesised in the
  zero-phase convention (window centred on the frame), in which all bins of a stationary
  partial share one phase, so starting every bin at 0 is coherent. The decoder then only
  predicts log-magnitudes, and the accumulated phase is state the streaming decoder carries
  (``decode_with_phase``).

``phase_iterations`` refines the peak-locked phase at decode time with that many iterations of
fast Griffin-Lim (Perraudin et al. 2013: project onto consistent spectrograms by an inverse and a
forward STFT, keep the decoded magnitudes, momentum 0.99). Peak-locking gives every bin of a
peak's region one frequency, which is right for a steady partial and wrong for its skirts, for
onsets and for noise (rendered as clusters of steady partials); two iterations take most of that
back (measured: the Fréchet distance of real clips resynthesised from their true magnitudes
falls from 4.0x real-vs-real to 1.6x, docs/default-model-history.md). It changes the audio only: the
phase the streaming decoder carries stays the peak-locked one, so streams still continue across
decodes, and each iteration widens the decoder's reach by one FFT window.

``linear_path`` adds a linear encoder and decoder beside the convolutional ones: a projection of
the ``2 ** downsamples`` log-magnitude frames of each latent frame onto ``latent_dim``
directions and its transpose, initialised from the principal components of training audio
(:meth:`StftCodec.fit_linear_path`); the convolutional branches start at zero and learn the
residual. Measured on the default corpus, 32 principal components alone keep the tonal
structure of polyphonic clips (tonal energy 0.99 with peak-locked phase). With
``residual_branches = false`` there are no convolutional branches: the linear path is the whole
codec, nothing runs at decode but one transposed convolution per latent frame, the phase and the
inverse STFT, and the decoder's reach is the overlap-add and the phase iterations alone. With
128 components (``configs/train/codec-linear.toml``) a classifier trained on real audio tells
its output from real audio far less well than that of the default model's trained 32-component
codec with branches; the default DiT recipe samples its latents worse
(docs/default-model-history.md, session 8).

Both transforms are convolutions with fixed DFT bases (``stft_basis``), so they export to plain
ONNX (Conv / ConvTranspose) and stream: the STFT pads ``(n_fft - hop) / 2`` zeros per side and
the inverse trims as many, giving exactly ``N / hop`` frames for N samples and back.

The decoder's ``calibration`` buffer (C * bins,) is a log-magnitude offset per bin, added to the
decoded magnitudes at synthesis only (the peak-locked phase is derived from the uncalibrated
ones, so it and the phase a stream carries do not depend on it). It starts at zero; ``export
--calibrate`` fits it on real audio (:mod:`lmdm_export.calibration`), because a decoder trained
on log-magnitude distances under-predicts the power of noisy high bins (the mean of a log is
below the log of the mean) and overlap-add loses more where the phase is least consistent:
the shipped codec's output was 4-7 dB short above 4 kHz.

Latents are normalised per channel (``latent_mean`` / ``latent_std`` buffers, set from data after
training by :meth:`StftCodec.set_latent_stats`) so the diffusion model sees roughly unit-variance
inputs; ``encode`` returns normalised latents and ``decode`` expects them.

Shapes: audio (B, audio_channels, N), latents (B, latent_dim, N / downsampling_ratio).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmdm_export.model.autoencoder import VAEBottleneck

PHASE_MODES = ("learned", "peak-locked")
# Bins to each side in which a bin looks for the peak whose frequency it takes: a Hann window's
# main lobe is 4 bins wide.
PEAK_REACH = 2


@dataclass(frozen=True)
class StftCodecConfig:
    """Geometry of the STFT codec. ``downsamples`` stride-2 stages sit between the frame rate and
    the latent rate, so ``downsampling_ratio = hop * 2 ** downsamples``."""

    audio_channels: int = 1
    sample_rate: int = 22050
    latent_dim: int = 32
    n_fft: int = 1024
    hop: int = 256
    downsamples: int = 2
    encoder_width: int = 256
    encoder_blocks: int = 2
    decoder_width: int = 320
    decoder_latent_blocks: int = 2
    decoder_frame_blocks: int = 6
    kernel: int = 7
    phase: str = "learned"  # or "peak-locked" (see the module docstring)
    linear_path: bool = False
    # False: no convolutional branches, the linear path is the whole codec (needs linear_path)
    residual_branches: bool = True
    phase_iterations: int = 0  # fast Griffin-Lim at decode, peak-locked only (module docstring)

    def __post_init__(self) -> None:
        for name in ("audio_channels", "sample_rate", "latent_dim", "n_fft", "hop",
                     "encoder_width", "decoder_width", "kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StftCodecConfig.{name} must be a positive int, got {value!r}")
        if self.n_fft % self.hop or (self.n_fft - self.hop) % 2:
            raise ValueError(f"StftCodecConfig: n_fft {self.n_fft} must be a multiple of hop "
                             f"{self.hop} with an even difference (symmetric padding)")
        if self.kernel % 2 == 0:
            raise ValueError(f"StftCodecConfig.kernel must be odd, got {self.kernel}")
        if self.phase not in PHASE_MODES:
            raise ValueError(f"StftCodecConfig.phase must be one of {PHASE_MODES}, "
                             f"got {self.phase!r}")
        if (not isinstance(self.phase_iterations, int) or isinstance(self.phase_iterations, bool)
                or self.phase_iterations < 0):
            raise ValueError("StftCodecConfig.phase_iterations must be an int >= 0, got "
                             f"{self.phase_iterations!r}")
        if not self.residual_branches and not (self.linear_path and self.phase == "peak-locked"):
            raise ValueError("StftCodecConfig.residual_branches = false leaves the linear path "
                             "as the whole codec: it needs linear_path = true and phase = "
                             "'peak-locked'")
        if self.phase_iterations and self.phase != "peak-locked":
            raise ValueError("StftCodecConfig.phase_iterations refines the peak-locked phase: "
                             f"it needs phase = 'peak-locked', not {self.phase!r}")

    def geometry_differences(self, other: StftCodecConfig) -> list[str]:
        """Names of the fields in which ``other`` differs, the decode-time
        ``phase_iterations`` aside: an empty list means one's weights fit the other."""
        mine, theirs = asdict(self), asdict(other)
        return sorted(k for k in mine if k != "phase_iterations" and mine[k] != theirs[k])

    @property
    def downsampling_ratio(self) -> int:
        """Audio samples per latent frame (1024 with the defaults: 21.5 frames/s at 22.05 kHz)."""
        return self.hop * 2 ** self.downsamples

    @property
    def receptive_frames(self) -> int:
        """Latent frames on each side that can change a decoded frame's audio (rounded up): the
        latent-rate convolutions, the transposed upsamplers, the frame-rate blocks (a frame-rate
        step is 2^-downsamples latent frames), half an FFT window of overlap-add, and a whole
        window per phase iteration (an inverse and a forward STFT)."""
        half = self.kernel // 2
        latent = half * (1 + self.decoder_latent_blocks) + self.downsamples
        frames = half * self.decoder_frame_blocks / 2 ** self.downsamples
        if not self.residual_branches:  # the linear path maps each latent frame to its own
            latent = frames = 0
        overlap = self.n_fft * (0.5 + self.phase_iterations) / self.downsampling_ratio
        return math.ceil(latent + frames + overlap)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def frames_per_latent(self) -> int:
        return 2 ** self.downsamples


def stft_basis(n_fft: int) -> tuple[Tensor, Tensor]:
    """Hann-windowed DFT bases ``(analysis, synthesis)``, each (2 * bins, 1, n_fft).

    Analysis rows are ``w[n] cos(2 pi k n / N)`` and ``-w[n] sin(...)`` (real, imaginary part);
    synthesis rows are the inverse real DFT (Hermitian weights 1, 2, ..., 2, 1 over N) times the
    synthesis window, so overlap-add divided by the summed squared window inverts the analysis.
    """
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * k * n / n_fft
    analysis = torch.cat((torch.cos(angle) * window, -torch.sin(angle) * window))
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0
    synthesis = torch.cat((torch.cos(angle), -torch.sin(angle))) * torch.cat((weight, weight))
    synthesis = synthesis * window / n_fft
    return analysis.float()[:, None], synthesis.float()[:, None]


def _wrap(phase: Tensor) -> Tensor:
    """Angles to [-pi, pi)."""
    return torch.remainder(phase + math.pi, 2 * math.pi) - math.pi


def peak_frequencies(logmag: Tensor) -> Tensor:
    """(B, bins, F) log-magnitudes -> (B, bins, F): for every bin, the position in bins of the
    strongest bin within ``PEAK_REACH`` of it, refined by a parabola through that bin's
    log-magnitude and its neighbours' (within half a bin). Built from pads, slices, argmax and
    gather, so it exports to plain ONNX."""
    bins = logmag.shape[1]
    # A real signal's spectrum is mirrored at 0 and at the Nyquist bin, so the parabola at the
    # edge bins takes the mirrored neighbour. Nothing here depends on other frames or on the
    # decode's length, so a stream's decodes agree on every frame they share.
    edge = torch.cat((logmag[:, 1:2], logmag, logmag[:, -2:-1]), dim=1)
    left, centre, right = edge[:, :-2], edge[:, 1:-1], edge[:, 2:]
    curve = left - 2 * centre + right
    safe = torch.where(curve < -1e-6, curve, torch.full_like(curve, -1.0))
    offset = torch.where(curve < -1e-6, 0.5 * (left - right) / safe,
                         torch.zeros_like(curve)).clamp(-0.5, 0.5)
    r = PEAK_REACH
    floor = torch.full_like(logmag[:, :r], -1e4)  # below any log-magnitude: never the peak
    padded = torch.cat((floor, logmag, floor), dim=1)
    window = torch.stack([padded[:, j:j + bins] for j in range(2 * r + 1)], dim=-1)
    index = torch.arange(bins, device=logmag.device).view(1, bins, 1)
    peak = (index + window.argmax(dim=-1) - r).clamp(0, bins - 1)
    return peak.to(logmag.dtype) + torch.gather(offset, 1, peak)


def _exporting() -> bool:
    """ONNX export takes the convolution form of the transforms (plain Conv/ConvTranspose ops);
    training and torch inference take the FFT form. Both compute the same numbers."""
    return torch.onnx.is_in_onnx_export()


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (kernel k) -> LayerNorm -> Linear x3 -> GELU -> Linear, residual, with a
    learned per-channel scale initialised small so a deep stack starts near identity."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.pw1 = nn.Linear(width, 3 * width)
        self.pw2 = nn.Linear(3 * width, width)
        self.gamma = nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, width, T) -> (B, width, T)."""
        h = self.dwconv(x).transpose(1, 2)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class StftEncoder(nn.Module):
    """Log-magnitude STFT (B, bins, N / hop) -> (B, 2 * latent_dim, N / ratio): mean and scale.
    Without residual branches the scale is 0 (the codec is deterministic)."""

    def __init__(self, cfg: StftCodecConfig) -> None:
        super().__init__()
        w = cfg.encoder_width
        self.residual = cfg.residual_branches
        if self.residual:
            self.embed = nn.Conv1d(cfg.bins * cfg.audio_channels, w, cfg.kernel,
                                   padding=cfg.kernel // 2)
            self.stages = nn.ModuleList(
                nn.Sequential(*(ConvNeXtBlock(w, cfg.kernel) for _ in range(cfg.encoder_blocks)))
                for _ in range(cfg.downsamples + 1))
            self.downs = nn.ModuleList(nn.Conv1d(w, w, 4, stride=2, padding=1)
                                       for _ in range(cfg.downsamples))
            self.norm = nn.LayerNorm(w)
            self.out = nn.Conv1d(w, 2 * cfg.latent_dim, 1)
        self.linear = None
        if cfg.linear_path:
            f = cfg.frames_per_latent
            self.linear = nn.Conv1d(cfg.bins * cfg.audio_channels, cfg.latent_dim, f, stride=f)
            if self.residual:
                nn.init.zeros_(self.out.weight)  # the residual branch starts silent
                nn.init.zeros_(self.out.bias)

    def forward(self, logmag: Tensor) -> Tensor:
        if not self.residual:
            mean = self.linear(logmag)
            return torch.cat((mean, torch.zeros_like(mean)), dim=1)
        h = self.embed(logmag)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        out = self.out(self.norm(h.transpose(1, 2)).transpose(1, 2))
        if self.linear is not None:
            mean, scale = out.chunk(2, dim=1)
            out = torch.cat((mean + self.linear(logmag), scale), dim=1)
        return out


class StftDecoder(nn.Module):
    """Latents (B, latent_dim, T) -> (log-magnitude, phase), each (B, channels * bins, T * 2^d);
    the phase is None when ``config.phase`` is ``"peak-locked"`` (derived from the magnitudes)."""

    def __init__(self, cfg: StftCodecConfig) -> None:
        super().__init__()
        w = cfg.decoder_width
        self.residual = cfg.residual_branches
        self.predicts_phase = cfg.phase == "learned"
        outputs = cfg.bins * cfg.audio_channels
        if self.residual:
            self.embed = nn.Conv1d(cfg.latent_dim, w, cfg.kernel, padding=cfg.kernel // 2)
            self.latent_blocks = nn.Sequential(
                *(ConvNeXtBlock(w, cfg.kernel) for _ in range(cfg.decoder_latent_blocks)))
            self.ups = nn.ModuleList(nn.ConvTranspose1d(w, w, 4, stride=2, padding=1)
                                     for _ in range(cfg.downsamples))
            self.frame_blocks = nn.Sequential(
                *(ConvNeXtBlock(w, cfg.kernel) for _ in range(cfg.decoder_frame_blocks)))
            self.norm = nn.LayerNorm(w)
            self.head = nn.Linear(w, 2 * outputs if self.predicts_phase else outputs)
        # The spectral calibration (module docstring); zero until `export --calibrate` fits it.
        self.register_buffer("calibration", torch.zeros(outputs))
        self.linear = None
        if cfg.linear_path:
            f = cfg.frames_per_latent
            self.linear = nn.ConvTranspose1d(cfg.latent_dim, outputs, f, stride=f)
            if self.residual:
                nn.init.zeros_(self.head.weight)  # the residual branch starts silent
                nn.init.zeros_(self.head.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Releases written before the calibration existed decode uncalibrated.
        state_dict.setdefault(prefix + "calibration", torch.zeros_like(self.calibration))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.residual:  # peak-locked (a learned phase needs the branches' head)
            return self.linear(z), None
        h = self.latent_blocks(self.embed(z))
        for up in self.ups:
            h = up(h)
        h = self.frame_blocks(h)
        out = self.head(self.norm(h.transpose(1, 2))).transpose(1, 2)
        if not self.predicts_phase:
            return out + self.linear(z) if self.linear is not None else out, None
        logmag, phase = out.chunk(2, dim=1)
        if self.linear is not None:
            logmag = logmag + self.linear(z)
        return logmag, phase


class StftCodec(nn.Module):
    """Encoder + Gaussian bottleneck + decoder with the same interface as the Oobleck VAE."""

    # Log-magnitudes are clamped from below so silence has a finite, learnable encoding.
    LOG_FLOOR = 1e-5
    # exp() of the predicted log-magnitude is capped: an untrained or extrapolating decoder must
    # not emit inf, which the streaming crossfade would spread over a whole block.
    LOG_CEIL = 6.0
    # Fast Griffin-Lim's momentum (Perraudin et al. 2013 recommend 0.99).
    GL_MOMENTUM = 0.99

    def __init__(self, config: StftCodecConfig) -> None:
        super().__init__()
        self.config = config
        analysis, synthesis = stft_basis(config.n_fft)
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.register_buffer("window_sq", torch.hann_window(config.n_fft)[None, None] ** 2,
                             persistent=False)
        # (C * bins, 1): pi k, from the zero-phase convention of the peak-locked phase to the
        # frame-start one of ``inverse`` (a window centred on the frame is N / 2 samples late).
        k = torch.arange(config.bins, dtype=torch.float32)
        self.register_buffer("zero_phase_shift",
                             (math.pi * k).repeat(config.audio_channels)[:, None],
                             persistent=False)
        self.register_buffer("latent_mean", torch.zeros(config.latent_dim))
        self.register_buffer("latent_std", torch.ones(config.latent_dim))
        self.encoder = StftEncoder(config)
        self.bottleneck = VAEBottleneck()
        self.decoder = StftDecoder(config)

    @property
    def pad(self) -> int:
        return (self.config.n_fft - self.config.hop) // 2

    def spectrum(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Audio (B, C, N) -> real and imaginary STFT parts, each (B, C, bins, N / hop)."""
        b, c, n = audio.shape
        x = F.pad(audio.reshape(b * c, 1, n), (self.pad, self.pad))
        if _exporting():
            re, im = F.conv1d(x, self.analysis, stride=self.config.hop).chunk(2, dim=1)
        else:  # the same transform by FFT: 5x cheaper to train through
            spec = torch.stft(x[:, 0], self.config.n_fft, self.config.hop,
                              window=self.window_sq.sqrt()[0, 0], center=False,
                              return_complex=True)
            re, im = spec.real, spec.imag
        return re.reshape(b, c, *re.shape[1:]), im.reshape(b, c, *im.shape[1:])

    def log_magnitude(self, audio: Tensor) -> Tensor:
        """Audio (B, C, N) -> log-magnitude (B, C * bins, N / hop)."""
        re, im = self.spectrum(audio)
        mag = torch.sqrt(re * re + im * im + self.LOG_FLOOR ** 2)
        return torch.log(mag).flatten(1, 2)

    def inverse(self, logmag: Tensor, phase: Tensor) -> Tensor:
        """(B, C * bins, F) log-magnitude and phase -> audio (B, C, F * hop)."""
        mag = torch.exp(logmag.clamp(max=self.LOG_CEIL))
        return self._synthesise(mag * torch.cos(phase), mag * torch.sin(phase))

    def consistent_inverse(self, logmag: Tensor, phase: Tensor) -> Tensor:
        """:meth:`inverse` after ``phase_iterations`` of fast Griffin-Lim from ``phase``: the
        magnitudes stay, the phase moves toward one that an STFT of the audio reproduces."""
        iterations = self.config.phase_iterations
        if not iterations:
            return self.inverse(logmag, phase)
        mag = torch.exp(logmag.clamp(max=self.LOG_CEIL))
        re, im = mag * torch.cos(phase), mag * torch.sin(phase)
        prev_re = prev_im = None
        for _ in range(iterations):
            proj_re, proj_im = (part.flatten(1, 2) for part in self.spectrum(
                self._synthesise(re, im)))
            t_re, t_im = proj_re, proj_im
            if prev_re is not None:
                t_re = proj_re + self.GL_MOMENTUM * (proj_re - prev_re)
                t_im = proj_im + self.GL_MOMENTUM * (proj_im - prev_im)
            prev_re, prev_im = proj_re, proj_im
            scale = mag / torch.sqrt(t_re * t_re + t_im * t_im + self.LOG_FLOOR ** 4)
            re, im = t_re * scale, t_im * scale
        return self._synthesise(re, im)

    def _synthesise(self, re: Tensor, im: Tensor) -> Tensor:
        """(B, C * bins, F) real and imaginary STFT parts -> audio (B, C, F * hop)."""
        cfg = self.config
        b, _, frames = re.shape
        re = re.reshape(b * cfg.audio_channels, cfg.bins, frames)
        im = im.reshape(b * cfg.audio_channels, cfg.bins, frames)
        if _exporting():
            y = F.conv_transpose1d(torch.cat((re, im), dim=1), self.synthesis, stride=cfg.hop)
        else:  # inverse real FFT per frame, windowed, then overlap-add: the same as the basis
            segments = torch.fft.irfft(torch.complex(re, im), n=cfg.n_fft, dim=1)
            segments = segments * self.window_sq.sqrt()[0, 0, :, None]
            y = F.fold(segments, output_size=(1, (frames - 1) * cfg.hop + cfg.n_fft),
                       kernel_size=(1, cfg.n_fft), stride=(1, cfg.hop))[:, 0]
        env = F.conv_transpose1d(torch.ones(1, 1, frames, dtype=y.dtype, device=y.device),
                                 self.window_sq, stride=cfg.hop)
        y = (y / env.clamp(min=1e-3))[..., self.pad:self.pad + frames * cfg.hop]
        return y.reshape(b, cfg.audio_channels, frames * cfg.hop)

    def peak_locked_phase(self, logmag: Tensor, phase: Tensor | None = None,
                          phase_frame: Tensor | None = None) -> Tensor:
        """(B, C * bins, F) log-magnitudes -> phase (B, C * bins, F) in the zero-phase
        convention, advancing per frame by each bin's peak frequency times the hop.

        ``phase`` (B, C * bins), wrapped, is the phase at frame ``phase_frame`` (an int64
        tensor of one element); both default to 0 (the start of a stream). The returned phase
        is wrapped to [-pi, pi)."""
        cfg = self.config
        b, rows, frames = logmag.shape
        peaks = peak_frequencies(logmag.detach().reshape(b * cfg.audio_channels, cfg.bins,
                                                          frames)).reshape(b, rows, frames)
        # Wrapping each advance keeps the running sum small, so float32 keeps its precision.
        advance = _wrap(peaks * (2 * math.pi * cfg.hop / cfg.n_fft))
        total = torch.cumsum(advance, dim=-1)
        if phase_frame is None:
            start = total[..., :1]  # the phase at frame 0 is 0
        else:
            start = torch.index_select(total, 2, phase_frame.reshape(1))
        if phase is not None:
            start = start - phase[..., None]
        return _wrap(total - start)

    def decode_with_phase(self, latents: Tensor, phase: Tensor, phase_frame: Tensor
                          ) -> tuple[Tensor, Tensor]:
        """A stretch of a stream for a peak-locked codec: normalised latents (B, D, T), the
        phase (B, C * bins) at STFT frame ``phase_frame`` of this stretch -> audio (B, C,
        T * ratio) and the phase of every STFT frame (B, C * bins, T * 2^d), from which the
        caller takes the next stretch's starting phase."""
        if self.config.phase != "peak-locked":
            raise ValueError("decode_with_phase needs a codec with phase = 'peak-locked'")
        logmag, _ = self.decoder(self._denormalise(latents))
        phases = self.peak_locked_phase(logmag, phase, phase_frame)
        return (self.consistent_inverse(self.calibrated(logmag), phases + self.zero_phase_shift),
                phases)

    def calibrated(self, logmag: Tensor) -> Tensor:
        """Decoded log-magnitudes (B, C * bins, F) with the decoder's spectral calibration."""
        return logmag + self.decoder.calibration[:, None]

    @torch.no_grad()
    def fit_linear_path(self, logmag: Tensor) -> float:
        """Set the linear path to the principal components of log-magnitudes (N, C * bins,
        F), F a multiple of ``2 ** downsamples``: the encoder projects each latent frame's
        stacked log-magnitude frames onto the top ``latent_dim`` components, the decoder maps
        back. Returns the share of variance the components keep."""
        cfg = self.config
        enc, dec = self.encoder.linear, self.decoder.linear
        if enc is None or dec is None:
            raise ValueError("fit_linear_path needs a codec with linear_path = true")
        f, rows = cfg.frames_per_latent, logmag.shape[1]
        stacked = logmag.reshape(len(logmag), rows, -1, f).permute(0, 2, 1, 3).reshape(-1, rows * f)
        # One mean per bin (not per bin and frame within the stack): the decoder's bias can
        # only add that, so the components are fitted around it.
        row_mean = stacked.reshape(-1, rows, f).mean(dim=(0, 2))
        mean = row_mean[:, None].expand(rows, f).reshape(-1)
        _, sv, vh = torch.linalg.svd((stacked - mean).double(), full_matrices=False)
        basis = vh[:cfg.latent_dim].float()  # (D, rows * f)
        enc.weight.copy_(basis.reshape(cfg.latent_dim, rows, f))
        enc.bias.copy_(-(basis @ mean))
        dec.weight.copy_(basis.reshape(cfg.latent_dim, rows, f))
        dec.bias.copy_(row_mean)
        energy = sv.pow(2)
        return float(energy[:cfg.latent_dim].sum() / energy.sum())

    def encode_with_kl(self, audio: Tensor, *, sample: bool = True,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Audio (B, C, N) -> (normalised latents (B, D, N / ratio), scalar KL)."""
        self._check_audio(audio)
        z, kl = self.bottleneck(self.encoder(self.log_magnitude(audio)), sample=sample,
                                generator=generator)
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None], kl

    def encode(self, audio: Tensor, *, sample: bool = True,
               generator: torch.Generator | None = None) -> Tensor:
        return self.encode_with_kl(audio, sample=sample, generator=generator)[0]

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, D, T) -> audio (B, C, T * downsampling_ratio)."""
        if latents.ndim != 3 or latents.shape[1] != self.config.latent_dim:
            raise ValueError(f"latents must be (B, {self.config.latent_dim}, T), "
                             f"got {tuple(latents.shape)}")
        logmag, phase = self.decoder(self._denormalise(latents))
        if phase is None:
            phase = self.peak_locked_phase(logmag) + self.zero_phase_shift
        return self.consistent_inverse(self.calibrated(logmag), phase)

    def _denormalise(self, latents: Tensor) -> Tensor:
        return latents * self.latent_std[:, None] + self.latent_mean[:, None]

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """Fold per-channel statistics of raw latents (D,) into the normalisation."""
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std.clamp(min=1e-4))

    def _check_audio(self, audio: Tensor) -> None:
        cfg = self.config
        if audio.ndim != 3 or audio.shape[1] != cfg.audio_channels:
            raise ValueError(f"audio must be (B, {cfg.audio_channels}, N), "
                             f"got {tuple(audio.shape)}")
        if audio.shape[-1] % cfg.downsampling_ratio:
            raise ValueError(f"audio length {audio.shape[-1]} is not a multiple of the "
                             f"downsampling ratio {cfg.downsampling_ratio}; pad it first")
