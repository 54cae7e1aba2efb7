"""An adversarial term for the peak-locked codec's decoder: a discriminator on log-magnitudes.

The codec's decoder is trained to regress log-magnitudes (``log_magnitude_distance``), and a
regression of what the latents leave uncertain returns its mean: partials' skirts, noise and
onsets come out smooth, which a classifier trained on real renders tells apart easily
(docs/default-model-history.md: the codec's magnitudes with the true phase are 4.3x real-vs-real in
Fréchet distance). A discriminator on the spectrogram asks the decoder for magnitudes that look
drawn from real audio instead (MelGAN / HiFi-GAN / Vocos do the same with waveform and
spectrogram discriminators; here the decoder's output is the codec grid's log-magnitudes, so
the discriminator reads those directly and no inverse STFT runs in the loop).

Losses: hinge (real logits pushed above 1, fake below -1) and feature matching (L1 between the
discriminator's hidden maps of decoded and real spectrograms, each normalised by its count),
as in MelGAN.

Shapes: log-magnitudes (B, C * bins, F) in, as :meth:`StftCodec.log_magnitude` returns them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SpectrogramDiscriminator(nn.Module):
    """2-D convolutions over (frequency, time) of a log-magnitude spectrogram, with the bin's
    relative frequency as a second input channel (a convolution alone cannot tell a low
    partial from a high one, and what is plausible differs: noise at the top, partials below).

    The first layer strides 4 bins (a Hann window's main lobe: a partial stays one feature)
    and the next ``layers - 2`` halve the frequency axis; time is never downsampled (the codec's
    frames are its unit of error). Sized for CPU training: a forward and backward pass on 16
    spectrograms of 513 bins x 64 frames at width 32 takes 0.14 s on 2 cores, the default
    decoder's on its batch of 8 crops 0.23 s. The output is a map of logits, one per
    (frequency patch, frame)."""

    def __init__(self, bins: int, width: int = 32, layers: int = 5) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError(f"SpectrogramDiscriminator needs at least 3 layers, got {layers}")
        self.bins = bins
        first = max(1, width // 2)
        convs = [nn.Conv2d(2, first, (9, 3), stride=(4, 1), padding=(4, 1)),
                 nn.Conv2d(first, width, (5, 3), stride=(2, 1), padding=(2, 1))]
        convs += [nn.Conv2d(width, width, (5, 3), stride=(2, 1), padding=(2, 1))
                  for _ in range(layers - 3)]
        convs.append(nn.Conv2d(width, width, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(convs)
        self.out = nn.Conv2d(width, 1, (3, 3), padding=(1, 1))
        self.register_buffer("position", torch.linspace(-1, 1, bins)[:, None], persistent=False)

    def forward(self, logmag: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, rows, F) log-magnitudes, rows a multiple of ``bins`` (channels stacked) ->
        (logits (B', 1, bins', F), hidden maps) with B' = B * rows / bins."""
        b, rows, frames = logmag.shape
        if rows % self.bins:
            raise ValueError(f"the discriminator reads {self.bins} bins per channel, got "
                             f"{rows} rows")
        # Log-magnitudes span about -11.5 (the codec's floor) to +3: centre and scale them.
        x = (logmag.reshape(-1, 1, self.bins, frames) + 4.0) / 4.0
        x = torch.cat((x, self.position.expand(len(x), 1, self.bins, frames)), dim=1)
        hidden = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            hidden.append(x)
        return self.out(x), hidden


def random_window(real: Tensor, fake: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """The same random stretch of ``frames`` frames of two (B, rows, F) spectrograms (all of
    them when F <= frames), drawn from torch's global generator (seeded and checkpointed by
    the training loop): the discriminator sees a part of each crop, for its cost."""
    total = real.shape[-1]
    if total <= frames:
        return real, fake
    start = int(torch.randint(0, total - frames + 1, ()))
    return real[..., start:start + frames], fake[..., start:start + frames]


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss of the discriminator."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Hinge loss of the generator (the decoder)."""
    return -fake_logits.mean()


def feature_matching(real_hidden: list[Tensor], fake_hidden: list[Tensor]) -> Tensor:
    """Mean L1 between the discriminator's hidden maps of real (detached) and decoded
    spectrograms, averaged over layers."""
    total = sum((fake - real.detach()).abs().mean()
                for real, fake in zip(real_hidden, fake_hidden, strict=True))
    return total / len(real_hidden)


def split_real_fake(logits: Tensor, hidden: list[Tensor]) -> tuple[Tensor, Tensor, list[Tensor],
                                                                    list[Tensor]]:
    """Outputs of one discriminator call on ``cat((real, fake))`` -> real and fake halves (one
    call per step: DistributedDataParallel expects one forward per backward)."""
    real_logits, fake_logits = logits.chunk(2)
    halves = [h.chunk(2) for h in hidden]
    return real_logits, fake_logits, [h[0] for h in halves], [h[1] for h in halves]
