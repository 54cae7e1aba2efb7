"""``lmdm-bridge train autoencoder``: the STFT codec (:mod:`lmdm_export.model.stft_codec`).

Loss: multi-resolution STFT distance of the decoded audio + ``kl_weight`` x KL per latent
element; for a peak-locked codec, whose phase follows from its magnitudes, the same two terms
on the decoder's log-magnitudes at the codec's own STFT grid (no inverse STFT in the loop). A
codec with a linear path first fits it to the principal components of ``linear_fit_clips``
train clips, so training starts from that linear codec and learns the residual. Batches are
random crops of the train split with a random gain (so quiet input encodes well too). Every
``val_every`` steps the fixed validation clips are reconstructed through the posterior mean and
the MR-STFT distance, SI-SDR, and the tonal energy and partial recall of tonal clips'
reconstructions are logged. At the end the per-channel latent statistics of the train split are
folded into the codec (the DiT sees unit-variance latents) and ``release.pt`` plus
``report.json`` are written; the report puts the codec's figures beside Griffin-Lim on the true
magnitudes, white noise and the real clips' tonal energy, and adds the pitch of held harmonic
tones through the codec (:mod:`.codec_probe`).

Fine-tuning the decoder (``init`` a released codec, ``freeze_encoder``): the encoder, its
linear path and the latent statistics stay bit for bit, so the latents, and every diffusion
stage trained on them, stay valid; only the decoder trains. ``adversarial_weight`` adds a
spectrogram discriminator's hinge loss and ``feature_weight`` its feature matching
(:mod:`.spectrogram_gan`) to the log-magnitude distance, for a peak-locked codec; discriminator
and decoder steps alternate every step. ``latent_noise`` decodes noisy latents toward the clean
spectrogram.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lmdm_export.eval.tonal import NON_TONAL_LABELS
from lmdm_export.model.stft_codec import StftCodec, StftCodecConfig
from lmdm_export.train import loop
from lmdm_export.train.codec_probe import median_partial_recall, median_tonal_energy, pitch_report
from lmdm_export.train.corpus import CropSampler, fixed_clips, read_items
from lmdm_export.train.spectral import griffin_lim, log_magnitude_distance, mr_stft, si_sdr
from lmdm_export.train.spectrogram_gan import (
    SpectrogramDiscriminator,
    discriminator_loss,
    feature_matching,
    generator_loss,
    random_window,
    split_real_fake,
)

log = logging.getLogger(__name__)
RELEASE_KIND = "stft-codec"


LATENT_SCALES = ("channel", "global", "floor")


@dataclass(frozen=True)
class CodecTrainConfig:
    corpus: str = "data/corpus"
    out: str = "runs/codec"
    codec: StftCodecConfig = field(default_factory=StftCodecConfig)
    steps: int = 3500
    batch: int = 8
    crop_frames: int = 32  # latent frames per crop: 32 x 1024 samples = 1.49 s at 22.05 kHz
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    kl_weight: float = 5e-4  # per latent element
    sample_latents: bool = True  # train through sampled latents (a VAE) or the posterior mean
    loss_resolutions: tuple[int, ...] = (512, 1024, 2048)  # FFT sizes of the MR-STFT distance
    gain_db_range: tuple[float, float] = (-12.0, 0.0)
    grad_clip: float = 1.0
    seed: int = 0
    val_every: int = 1000
    val_clips: int = 24
    val_frames: int = 64
    stats_clips: int = 256
    # How latents are normalised for the diffusion stages: "channel", each channel to unit
    # variance (every channel weighs alike in the diffusion loss); "global", one scale for all
    # channels, so a linear codec's principal components keep their variance spectrum and
    # diffusion resolves the coarse ones at higher noise levels than the fine detail;
    # "floor", each channel by its own std but no less than channel `latent_floor_channel`'s:
    # a linear codec's leading components at unit variance as under "channel", the components
    # from that one on keeping their spectrum below it, as under "global".
    latent_scale: str = "channel"
    latent_floor_channel: int = 32
    linear_fit_clips: int = 512  # train clips of val_frames for the linear path's components
    checkpoint_minutes: float = 5.0
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's, for the codec and the discriminator
    # Fine-tuning (module docstring): a released codec to start from, and whether its encoder
    # (and so its latents) stays fixed.
    init: str = ""
    freeze_encoder: bool = False
    adversarial_weight: float = 0.0  # the discriminator's hinge loss; 0: no discriminator
    feature_weight: float = 0.0  # its feature matching
    disc_width: int = 32
    disc_layers: int = 5
    disc_lr: float = 2e-4
    disc_frames: int = 64  # STFT frames of each crop the discriminator sees (random window)
    # Gaussian noise added to the latents before decoding, in units of the latent statistics
    # (what the DiT sees), meant to make the decoder tolerate the generator's errors (on the
    # default model it did not: docs/default-model-history.md, session 7). Needs `init` (a fresh
    # codec's statistics are not set yet).
    latent_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.freeze_encoder and not self.init:
            raise ValueError("CodecTrainConfig.freeze_encoder keeps a trained encoder: set "
                             "`init` to the codec release it comes from")
        if (self.adversarial_weight or self.feature_weight) and self.codec.phase != "peak-locked":
            raise ValueError("CodecTrainConfig.adversarial_weight / feature_weight train "
                             "against a discriminator on the decoder's log-magnitudes: they "
                             "need codec.phase = 'peak-locked'")
        if self.latent_noise and not self.init:
            raise ValueError("CodecTrainConfig.latent_noise is in units of a trained codec's "
                             "latent statistics: set `init` to its release")
        if self.latent_scale not in LATENT_SCALES:
            raise ValueError(f"CodecTrainConfig.latent_scale must be one of {LATENT_SCALES}, "
                             f"got {self.latent_scale!r}")
        if self.latent_scale == "floor" and not 0 <= self.latent_floor_channel < \
                self.codec.latent_dim:
            raise ValueError(f"CodecTrainConfig.latent_floor_channel must be a channel of the "
                             f"codec's {self.codec.latent_dim}, got {self.latent_floor_channel}")
        if self.adversarial_weight < 0 or self.feature_weight < 0 or self.latent_noise < 0:
            raise ValueError("CodecTrainConfig.adversarial_weight, feature_weight and "
                             "latent_noise must be >= 0")

    @property
    def adversarial(self) -> bool:
        return self.adversarial_weight > 0 or self.feature_weight > 0


class CodecTrainee(nn.Module):
    """encode (sampled) -> decode -> reconstruction loss in one forward, so DDP sees a single
    call; returns ``(reconstruction loss, KL, decoded log-magnitudes, true log-magnitudes)``,
    the last two (B, C * bins, F) for a peak-locked codec and None for a learned-phase one.
    A frozen encoder runs without gradients."""

    def __init__(self, codec: StftCodec, resolutions: tuple[int, ...], sample: bool,
                 freeze_encoder: bool = False, latent_noise: float = 0.0) -> None:
        super().__init__()
        self.codec = codec
        self.resolutions = resolutions
        self.sample = sample
        self.freeze_encoder = freeze_encoder
        self.latent_noise = latent_noise
        if freeze_encoder:
            codec.encoder.requires_grad_(False)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        codec = self.codec
        if codec.config.phase == "learned":
            z, kl = codec.encode_with_kl(audio, sample=self.sample)
            return mr_stft(codec.decode(z), audio, self.resolutions), kl, None, None
        logmag = codec.log_magnitude(audio)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            z, kl = codec.bottleneck(codec.encoder(logmag), sample=self.sample)
        if self.latent_noise and self.training:
            z = z + self.latent_noise * codec.latent_std[:, None] * torch.randn_like(z)
        pred, _ = codec.decoder(z)
        return log_magnitude_distance(pred, logmag), kl, pred, logmag


def read_codec_release(path: str | Path) -> dict:
    """The payload of a released codec: ``kind``, ``config`` and ``state_dict``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"codec {path} not found: train it with "
                                "`lmdm-bridge train autoencoder`")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("kind") != RELEASE_KIND:
        raise ValueError(f"{path} is not a released STFT codec: train it with "
                         "`lmdm-bridge train autoencoder`")
    return payload


def load_codec(path: str | Path) -> StftCodec:
    """A released codec (``release.pt`` of this stage)."""
    payload = read_codec_release(path)
    codec = StftCodec(StftCodecConfig(**payload["config"]))
    codec.load_state_dict(payload["state_dict"])
    return codec.eval()


def reconstruct(codec: StftCodec, audio: Tensor) -> Tensor:
    """(B, C, N) -> (B, C, N) through the posterior mean, on the codec's device; returned on
    ``audio``'s."""
    device = next(codec.parameters()).device
    with torch.no_grad():
        return codec.decode(codec.encode(audio.to(device), sample=False)).to(audio.device)


def evaluate(codec: StftCodec, clips: Tensor, resolutions: tuple[int, ...],
             tonal_clips: Tensor) -> dict[str, float | None]:
    """MR-STFT distance and SI-SDR on ``clips``, tonal energy of ``tonal_clips``' reconstructions
    and their RMS over the real clips' RMS."""
    recon = reconstruct(codec, clips)
    figures = {"mr_stft": float(mr_stft(recon, clips, resolutions)),
               "si_sdr_median": float(si_sdr(recon, clips).median()),
               "tonal_energy": None, "tonal_rms_ratio": None, "partial_recall": None}
    if len(tonal_clips):
        tonal_recon = reconstruct(codec, tonal_clips)
        rms = tonal_recon.pow(2).mean().sqrt() / tonal_clips.pow(2).mean().sqrt().clamp(min=1e-9)
        figures.update(tonal_energy=median_tonal_energy(tonal_recon),
                       tonal_rms_ratio=round(float(rms), 4),
                       partial_recall=median_partial_recall(tonal_clips, tonal_recon))
    return figures


@torch.no_grad()
def baselines(clips: Tensor, cfg: CodecTrainConfig) -> dict[str, float]:
    """Griffin-Lim (32 iterations) on the true magnitudes at the codec's FFT size, and white
    noise at the clips' RMS: the reference points of the MR-STFT distance."""
    g = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(clips.shape, generator=g) * clips.pow(2).mean(-1, keepdim=True).sqrt()
    gl = griffin_lim(clips, n_fft=cfg.codec.n_fft)
    res = cfg.loss_resolutions
    return {"griffin_lim_mr_stft": float(mr_stft(gl, clips, res)),
            "griffin_lim_si_sdr_median": float(si_sdr(gl, clips).median()),
            "noise_mr_stft": float(mr_stft(noise, clips, res))}


@torch.no_grad()
def latent_stats(codec: StftCodec, clips: np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (D,) of raw posterior means over ``clips``, on the CPU."""
    device, raw = next(codec.parameters()).device, []
    for chunk in np.array_split(clips, max(1, len(clips) // 16)):
        h = codec.encoder(codec.log_magnitude(torch.from_numpy(chunk).to(device)))
        raw.append(h.chunk(2, dim=1)[0].cpu())
    z = torch.cat(raw).transpose(0, 1).flatten(1)
    return z.mean(1), z.std(1)


def train(cfg: CodecTrainConfig, *, resume: bool = False) -> Path:
    d = loop.init_distributed()
    run_dir = Path(cfg.out)
    if d.main:
        loop.check_resume(run_dir, resume)
    loop.seed_everything(cfg.seed + d.rank)
    ratio = cfg.codec.downsampling_ratio
    train_items = read_items(cfg.corpus, "train")
    val_items = read_items(cfg.corpus, "val")
    rates = {it.sample_rate for it in train_items + val_items}
    if rates != {cfg.codec.sample_rate}:
        raise ValueError(f"the corpus is at {sorted(rates)} Hz but codec.sample_rate is "
                         f"{cfg.codec.sample_rate}: set codec.sample_rate to the corpus rate or "
                         "render the corpus at the codec's rate")
    sampler = CropSampler(train_items, cfg.crop_frames * ratio, seed=cfg.seed * 1000 + d.rank)
    val = torch.from_numpy(fixed_clips(val_items, cfg.val_clips, cfg.val_frames * ratio))
    val_tonal = tonal_clips(val_items, cfg)

    codec = StftCodec(cfg.codec).to(d.device)
    if cfg.init and not resume:
        codec.load_state_dict(initial_codec(cfg).state_dict())
    elif cfg.codec.linear_path and not resume:  # deterministic clips: every rank fits the same
        kept = codec.fit_linear_path(codec.log_magnitude(torch.from_numpy(fixed_clips(
            train_items, cfg.linear_fit_clips, cfg.val_frames * ratio, seed=cfg.seed + 7)
            ).to(d.device)))
        log.info("linear path: %d principal components keep %.1f%% of the log-magnitude "
                 "variance", cfg.codec.latent_dim, 100 * kept)
    trainee = CodecTrainee(codec, cfg.loss_resolutions, cfg.sample_latents, cfg.freeze_encoder,
                           cfg.latent_noise)
    model = loop.wrap_ddp(trainee, d)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            betas=cfg.betas, weight_decay=cfg.weight_decay)
    disc = opt_d = None
    if cfg.adversarial:
        disc_module = SpectrogramDiscriminator(cfg.codec.bins, cfg.disc_width, cfg.disc_layers)
        disc = loop.wrap_ddp(disc_module.to(d.device), d)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    ckpt = loop.Checkpointer(run_dir, d)
    step = 0
    state = ckpt.load() if resume else None
    if state is not None:
        codec.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None:
            loop.unwrap(disc).load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["discriminator_optimizer"])
        step = state["step"]
        loop.set_rng_state(state["rng"][d.rank] if d.rank < len(state["rng"]) else state["rng"][0])
        sampler.set_state(state["sampler"][min(d.rank, len(state["sampler"]) - 1)])
    runlog = loop.RunLog(run_dir, d, cfg.steps, cfg)
    first, last_save = step, time.monotonic()
    lo, hi = cfg.gain_db_range
    while step < cfg.steps:
        # Seeded per step, so a resumed run draws what the uninterrupted one would have.
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + d.rank * 104729 + step)
        lr = loop.cosine_lr(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(sampler.batch(cfg.batch))
        gain_db = lo + (hi - lo) * torch.rand(cfg.batch, 1, 1, generator=gen)
        x = (x * 10 ** (gain_db / 20)).to(d.device)
        rec, kl, fake, real = model(x)
        loss = rec + cfg.kl_weight * kl / cfg.codec.latent_dim
        extra = {}
        if disc is not None:
            extra = adversarial_step(disc, opt_d, real, fake, cfg)
            loss = loss + extra.pop("decoder_loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        opt.step()
        step += 1
        rec_m = float(loop.all_reduce_mean(rec.detach(), d))
        kl_m = float(loop.all_reduce_mean(kl.detach(), d)) / cfg.codec.latent_dim
        extra = {k: float(loop.all_reduce_mean(v, d)) for k, v in extra.items()}
        runlog.progress(step, first, rec=rec_m, kl=kl_m, **extra)
        if step % 50 == 0 or step == cfg.steps:
            # "reconstruction": the MR-STFT distance, or the grid distance of a peak-locked codec
            runlog.write({"step": step, "reconstruction": rec_m, "kl_per_element": kl_m, "lr": lr,
                          "grad_norm": float(grad), **extra})
        if d.main and (step % cfg.val_every == 0 or step == cfg.steps):
            codec.eval()
            runlog.write({"step": step,
                          "val": evaluate(codec, val, cfg.loss_resolutions, val_tonal)})
            codec.train()
        if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes or step == cfg.steps:
            ckpt.save(_state(codec, opt, step, sampler, cfg, d, disc, opt_d))
            last_save = time.monotonic()
    loop.check_replicas(codec, d, runlog)
    runlog.close()
    return finalize(cfg, codec, ckpt, val, val_tonal, train_items, d)


def initial_codec(cfg: CodecTrainConfig) -> StftCodec:
    """The released codec ``cfg.init`` to fine-tune; its config must be ``cfg.codec`` (up to
    the decode-time ``phase_iterations``), or the weights would not fit."""
    codec = load_codec(cfg.init)
    differ = cfg.codec.geometry_differences(codec.config)
    if differ:
        raise ValueError(f"init codec {cfg.init} has another geometry than the config's "
                         "[codec] table: " + ", ".join(
                             f"{k} = {getattr(codec.config, k)!r} there, "
                             f"{getattr(cfg.codec, k)!r} here" for k in differ))
    return codec


def adversarial_step(disc: nn.Module, opt_d: torch.optim.Optimizer, real: Tensor, fake: Tensor,
                     cfg: CodecTrainConfig) -> dict[str, Tensor]:
    """One discriminator update on true vs decoded log-magnitudes (B, rows, F), then the
    decoder's adversarial and feature-matching terms through the updated discriminator
    (``decoder_loss``, with gradients to ``fake`` only) and detached figures for the log."""
    real, fake = random_window(real.detach(), fake, cfg.disc_frames)
    logits, hidden = disc(torch.cat((real, fake.detach())))
    real_logits, fake_logits, _, _ = split_real_fake(logits, hidden)
    d_loss = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
    opt_d.step()
    # The decoder's pass: the discriminator's parameters get gradients here too; they are
    # cleared before its next update and never stepped with them.
    logits, hidden = disc(torch.cat((real, fake)))
    _, fake_logits, real_hidden, fake_hidden = split_real_fake(logits, hidden)
    adv = generator_loss(fake_logits)
    fm = feature_matching(real_hidden, fake_hidden)
    return {"decoder_loss": cfg.adversarial_weight * adv + cfg.feature_weight * fm,
            "disc": d_loss.detach(), "adv": adv.detach(), "fm": fm.detach()}


def tonal_clips(val_items, cfg: CodecTrainConfig) -> Tensor:
    """The fixed validation clips of tonal labels, (B, 1, N) like ``fixed_clips``; (0, 1, N)
    when there are none."""
    items = [it for it in val_items if it.label not in NON_TONAL_LABELS]
    length = cfg.val_frames * cfg.codec.downsampling_ratio
    if not items:
        return torch.zeros(0, 1, length)
    return torch.from_numpy(fixed_clips(items, cfg.val_clips, length))


def _state(codec: StftCodec, opt, step: int, sampler: CropSampler, cfg, d: loop.Dist,
           disc: nn.Module | None = None, opt_d=None) -> dict:
    rngs = loop.gather_objects(loop.rng_state(), d)
    samplers = loop.gather_objects(sampler.state(), d)
    state = {"model": codec.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "rng": rngs, "sampler": samplers, "config": asdict(cfg)}
    if disc is not None:
        state.update(discriminator=loop.unwrap(disc).state_dict(),
                     discriminator_optimizer=opt_d.state_dict())
    return state


def finalize(cfg: CodecTrainConfig, codec: StftCodec, ckpt: loop.Checkpointer, val: Tensor,
             val_tonal: Tensor, train_items, d: loop.Dist) -> Path:
    """Fold latent statistics, write ``release.pt`` and ``report.json`` (rank 0)."""
    codec.eval()
    clips = fixed_clips(train_items, cfg.stats_clips, cfg.val_frames * cfg.codec.downsampling_ratio,
                        seed=cfg.seed + 99)
    mean, std = latent_stats(codec, clips)
    scale = std  # the report keeps each channel's own spread
    if cfg.latent_scale == "global":  # unit variance over all channels together
        scale = std.pow(2).mean().sqrt().expand_as(std).clone()
    elif cfg.latent_scale == "floor":
        scale = std.clamp(min=float(std[cfg.latent_floor_channel]))
    if not cfg.freeze_encoder:  # a frozen encoder keeps the statistics its latents were made with
        codec.set_latent_stats(mean, scale)
    path = ckpt.release("release.pt", {"kind": RELEASE_KIND, "config": asdict(cfg.codec),
                                       "state_dict": codec.state_dict()})
    if d.main:
        report = {"val_clips": len(val), "val_seconds": val.shape[-1] / cfg.codec.sample_rate,
                  "codec": evaluate(codec, val, cfg.loss_resolutions, val_tonal),
                  **baselines(val, cfg), "tonal_energy_real": median_tonal_energy(val_tonal),
                  "held_tones": pitch_report(lambda x: reconstruct(codec, x),
                                             cfg.codec.sample_rate, cfg.codec.downsampling_ratio,
                                             channels=cfg.codec.audio_channels),
                  "latent_std_raw": [round(float(s), 3) for s in std]}
        (Path(cfg.out) / "report.json").write_text(json.dumps(report, indent=1))
        log.info("codec report: %s", report)
    return path
