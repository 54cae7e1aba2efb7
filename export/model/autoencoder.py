"""The Oobleck VAE of Stable Audio Open: config, presets, Gaussian bottleneck and wrapper.

``OobleckAutoencoder`` is our implementation of stable-audio-tools 0.0.20 ``AudioAutoencoder``
with an Oobleck encoder/decoder and the ``vae`` bottleneck (the ``pretransform.model`` of a SAT
diffusion model). Its ``state_dict()`` keys equal SAT's (``encoder.layers.*``,
``decoder.layers.*``; the bottleneck has no parameters), so SAT checkpoints load with
``strict=True``.

Shapes: audio (B, audio_channels, N), latents (B, latent_dim, N / downsampling_ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmdm_export.model.oobleck import OobleckDecoder, OobleckEncoder


@dataclass(frozen=True)
class OobleckConfig:
    """Geometry of an Oobleck VAE.

    ``c_mults[i]`` is the width multiplier (of ``channels``) after downsampling block i, whose
    stride is ``strides[i]``. ``latent_dim`` counts latent channels; the encoder emits twice as
    many (mean and scale). Lists are accepted and stored as tuples, so configs read from JSON
    work and the dataclass stays hashable.
    """

    audio_channels: int = 2
    channels: int = 128
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    latent_dim: int = 64
    use_snake: bool = True
    final_tanh: bool = False
    sample_rate: int = 44100

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_mults", tuple(self.c_mults))
        object.__setattr__(self, "strides", tuple(self.strides))
        for name in ("audio_channels", "channels", "latent_dim", "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"OobleckConfig.{name} must be a positive int, got {value!r}")
        if not self.strides:
            raise ValueError("OobleckConfig.strides must name at least one downsampling block")
        if len(self.c_mults) != len(self.strides):
            raise ValueError(
                "OobleckConfig.c_mults and OobleckConfig.strides need one entry per block, got "
                f"{len(self.c_mults)} c_mults {self.c_mults} and "
                f"{len(self.strides)} strides {self.strides}"
            )
        if any(not isinstance(m, int) or m < 1 for m in self.c_mults):
            raise ValueError(f"OobleckConfig.c_mults must be positive ints, got {self.c_mults}")
        # Kernel 2s with padding ceil(s/2) maps lengths exactly (N -> N/s -> N) only for even s;
        # an odd stride would make decode(encode(x)) one sample short per block.
        if any(not isinstance(s, int) or s < 2 or s % 2 for s in self.strides):
            raise ValueError(f"OobleckConfig.strides must be even ints >= 2, got {self.strides}")

    @property
    def downsampling_ratio(self) -> int:
        """Audio samples per latent frame: the product of the strides (2048 for SAO)."""
        return math.prod(self.strides)


OOBLECK_PRESETS: MappingProxyType[str, OobleckConfig] = MappingProxyType(
    {
        # Stable Audio Open Small's VAE: stereo 44.1 kHz, 64 latent channels, 2048x.
        "sao-small": OobleckConfig(),
        # Debug size for unit tests: same layer types, SAO's 2048x rate (so seconds mean the same
        # number of blocks), a few channels: runs in milliseconds on CPU.
        "tiny": OobleckConfig(
            audio_channels=2,
            channels=4,
            c_mults=(1, 2, 2, 4),
            strides=(4, 8, 8, 8),
            latent_dim=8,
            use_snake=True,
            final_tanh=False,
            sample_rate=44100,
        ),
    }
)


def oobleck_preset(name: str) -> OobleckConfig:
    """The config registered as ``name`` in ``OOBLECK_PRESETS``."""
    try:
        return OOBLECK_PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown Oobleck preset {name!r}; choose one of {sorted(OOBLECK_PRESETS)}"
        ) from None


class VAEBottleneck(nn.Module):
    """Diagonal Gaussian bottleneck; no parameters.

    Splits encoder features (B, 2D, T) into mean and raw scale (B, D, T) each, with
    ``std = softplus(scale) + 1e-4`` (the floor keeps log-variance finite).
    """

    _STD_FLOOR = 1e-4

    def forward(
        self, h: Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Returns ``(latents, kl)``: latents (B, D, T) and a scalar KL term.

        ``sample=False`` returns the mean (deterministic). Sampling draws unit noise with
        ``torch.randn`` from ``generator`` (the global RNG when None) in the input's dtype and
        device; with the global RNG this reproduces SAT's ``randn_like`` draw exactly.

        ``kl`` is ``sum_channels(mean^2 + var - log var - 1)`` averaged over batch and time:
        twice the textbook KL to N(0, I). The factor is SAT's, kept so its training configs'
        KL loss weights mean the same here.
        """
        mean, scale = h.chunk(2, dim=1)
        std = F.softplus(scale) + self._STD_FLOOR
        var = std * std
        kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean()
        if not sample:
            return mean, kl
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return noise * std + mean, kl


class OobleckAutoencoder(nn.Module):
    """Oobleck VAE: ``encode`` audio to latents, ``decode`` latents to audio.

    Device and dtype follow the inputs and the parameters; constructor ``device``/``dtype``
    place the parameters at creation.
    """

    def __init__(
        self,
        config: OobleckConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        factory = {"device": device, "dtype": dtype}
        self.encoder = OobleckEncoder(
            config.audio_channels,
            config.channels,
            config.c_mults,
            config.strides,
            2 * config.latent_dim,
            use_snake=config.use_snake,
            **factory,
        )
        self.bottleneck = VAEBottleneck()
        self.decoder = OobleckDecoder(
            config.audio_channels,
            config.channels,
            config.c_mults,
            config.strides,
            config.latent_dim,
            use_snake=config.use_snake,
            final_tanh=config.final_tanh,
            **factory,
        )

    def encode(
        self, audio: Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Audio (B, audio_channels, N) -> latents (B, latent_dim, N / downsampling_ratio).

        ``sample=False`` gives the posterior mean; otherwise one draw from ``generator``.
        """
        latents, _ = self.encode_with_kl(audio, sample=sample, generator=generator)
        return latents

    def encode_with_kl(
        self, audio: Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Like ``encode``, also returning the scalar KL term for training (see VAEBottleneck)."""
        self._check_audio(audio)
        return self.bottleneck(self.encoder(audio), sample=sample, generator=generator)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, latent_dim, T) -> audio (B, audio_channels, T * downsampling_ratio)."""
        if latents.ndim != 3 or latents.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"latents must be (B, {self.config.latent_dim}, T), got {tuple(latents.shape)}"
            )
        return self.decoder(latents)

    def _check_audio(self, audio: Tensor) -> None:
        cfg = self.config
        if audio.ndim != 3 or audio.shape[1] != cfg.audio_channels:
            raise ValueError(
                f"audio must be (B, {cfg.audio_channels}, N), got {tuple(audio.shape)}"
            )
        if audio.shape[-1] % cfg.downsampling_ratio:
            raise ValueError(
                f"audio length {audio.shape[-1]} is not a multiple of the downsampling ratio "
                f"{cfg.downsampling_ratio}; pad it first"
            )
