"""``lmdm-bridge train base`` and ``lmdm-bridge train lmdm``: the diffusion stages.

**base**: a bidirectional text-conditioned DiT on whole windows, rectified flow
(``x_t = (1 - t) x0 + t eps``, target ``v = eps - x0``, lmdm-reference §1), logit-normal t,
prompt dropout for CFG, EMA weights released.

**lmdm**: fine-tunes the base into an LMDM exactly as the reference's ``saos_block_causal`` /
``saos_encdec`` configs do (lmdm-reference §4.1): the window is ``[context s | target c]``; the
whole window is noised and the context routed away (router 0 on context, the clean context enters
through the ``inpaint`` input-add group); the loss covers target frames only; context dropout
zeroes all context (``context_uncond``) or the k ~ U{1..n} oldest chunks in place
(``context_partial``, the mask still marking them as context); CFG dropout zeroes the prompt
tokens and, independently, each input-add group's features; timesteps are uniform with the
reference's resolution shift; the attention mask is the pattern's training mask. The new
``to_input_add_embed`` starts random, everything else from the base (shapes must match).

Design decision (the reference leaves it implicit): router and loss mask follow the geometry,
not the dropped group, so a dropped ``inpaint`` group means "context present but unknown"
rather than turning context frames into noisy targets.

Prompts: MiniLM is frozen, so its hidden states are computed once per distinct caption
(:class:`CachedEncoder`); the learned projection and the number conditioner train with the DiT.
The release (``release.pt``, see :mod:`lmdm_export.release`) holds the DiT and conditioner
weights, the geometry and the codec it was trained with, so ``lmdm-bridge export --checkpoint``
builds the whole bundle from it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lmdm_export.model import cache as kv
from lmdm_export.model.lmdm import LMDM, ModelConfig
from lmdm_export.model.masks import window_mask
from lmdm_export.model.stft_codec import StftCodecConfig
from lmdm_export.presets import DefaultGeometry, default_model_config
from lmdm_export.release import load_release, release_payload, release_state
from lmdm_export.train import loop
from lmdm_export.train.codec import read_codec_release
from lmdm_export.train.latent_data import LatentSet, WindowSampler, fixed_windows, load_latents
from lmdm_export.train.latents import codec_fingerprint
from lmdm_export.train.model_source import (
    init_from_state,
    init_from_weights,
    source_config,
    stage_config,
)

log = logging.getLogger(__name__)
BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TIMESTEP_MODES = ("logit-normal", "shifted-uniform")


@dataclass(frozen=True)
class DiffusionTrainConfig:
    latents: str = "data/latents"
    codec: str = "runs/codec/release.pt"  # the default family's codec release
    out: str = "runs/base"
    init: str | None = None  # lmdm: the base stage's release.pt
    # The SAO family (lmdm_export.train.model_source): a preset ("sao-small", "tiny") or a
    # stable-audio-tools model_config.json, initialised from `weights`; "" = the default family.
    model: str = ""
    weights: str | None = None
    text_encoders: dict[str, str] = field(default_factory=dict)  # e.g. {"t5-base": "/m/t5-base"}
    # The default family's sizes; for the SAO family only context_frames and block_frames
    # count (the window of a base stage, the stream of an LMDM whose source has none).
    geometry: DefaultGeometry = field(default_factory=DefaultGeometry)
    pattern: str = "block-causal"  # lmdm: "block-causal" or "enc-dec"
    steps: int = 2000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema: float = 0.999
    timesteps: str = "logit-normal"
    # An extra resolution-style shift t' = s t / (1 + (s - 1) t) on top of the mode's own
    # (SD3's, composed with the reference's for shifted-uniform): s > 1 trains the high noise
    # levels more, where smooth, large-spread latent channels are decided.
    timestep_shift: float = 1.0
    cfg_dropout: float = 0.1
    group_dropout: float = 0.1
    context_uncond: float = 0.2
    context_partial: float = 0.3
    label_balance: float = 0.0  # 0: windows by audio length; 1: every label equally often
    precision: str = "fp32"  # or "bf16": mixed precision (loop.autocast)
    seed: int = 0
    val_every: int = 250
    val_windows: int = 64
    checkpoint_minutes: float = 5.0

    def __post_init__(self) -> None:
        loop.check_precision(self.precision)
        if self.timesteps not in TIMESTEP_MODES:
            raise ValueError(f"timesteps {self.timesteps!r} is not one of {TIMESTEP_MODES}")
        if not (math.isfinite(self.timestep_shift) and self.timestep_shift > 0):
            raise ValueError(f"timestep_shift must be a positive number, got {self.timestep_shift}"
                             " (1 leaves the mode's distribution as it is)")


class CachedEncoder:
    """A frozen text encoder's ``(prompts, max_length, device) -> (hidden, mask)`` with a
    per-prompt memo: training captions repeat, and MiniLM would otherwise dominate a step.

    Each new prompt is encoded on its own: in a batch, CPU matrix kernels may round a prompt's
    states differently depending on its batch mates, which depend on what the memo already
    holds, so a resumed run (empty memo) would drift from an uninterrupted one in the last bits.
    """

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.model_dir = encoder.model_dir
        self.width = encoder.width
        self.memo: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}

    def __call__(self, prompts: list[str], max_length: int, device) -> tuple[Tensor, Tensor]:
        for p in sorted({p for p in prompts if (p, max_length) not in self.memo}):
            hidden, mask = self.encoder([p], max_length, "cpu")
            self.memo[(p, max_length)] = (hidden[0], mask[0])
        pairs = [self.memo[(p, max_length)] for p in prompts]
        return (torch.stack([h for h, _ in pairs]).to(device),
                torch.stack([m for _, m in pairs]).to(device))


class DiTTrainee(nn.Module):
    """Conditioners + DiT in one forward (what DDP wraps). ``drop_text (B,)`` zeroes the
    cross-attention tokens of those items: the unconditional branch of CFG (rollout.Guidance)."""

    def __init__(self, model: LMDM) -> None:
        super().__init__()
        self.conditioner = model.conditioner
        self.dit = model.dit

    def forward(self, x_t: Tensor, t: Tensor, metadata: list[dict], drop_text: Tensor, *,
                router: Tensor | None = None, input_add: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        out = self.conditioner(metadata, x_t.device)
        cross = out["cross_attn_cond"] * (~drop_text)[:, None, None].to(x_t.dtype)
        return self.dit(x_t, t, cross, out["global_cond"], router=router, input_add=input_add,
                        mask=mask)


def model_config(cfg: DiffusionTrainConfig, stage: str, codec: StftCodecConfig) -> ModelConfig:
    return default_model_config(cfg.geometry, streaming=stage == "lmdm", pattern=cfg.pattern,
                                codec=codec)


def stage_model(cfg: DiffusionTrainConfig, stage: str, *, log_init: bool) -> LMDM:
    """The stage's model, initialised: the default family from ``codec`` (+ ``init``'s DiT and
    conditioners), the SAO family from ``weights`` and then ``init``."""
    if not cfg.model:
        if cfg.weights is not None or cfg.text_encoders:
            raise ValueError("`weights` and `text_encoders` belong to a stable-audio-tools model: "
                             "set `model` too (a preset or its model_config.json), or leave them "
                             "out for the default family")
        codec = read_codec_release(cfg.codec)
        model = build_model(model_config(cfg, stage, StftCodecConfig(**codec["config"])))
        model.autoencoder.load_state_dict(codec["state_dict"])  # carried into the release
        parts: tuple[str, ...] = ("conditioner", "dit")
    else:
        source = source_config(cfg.model, cfg.text_encoders)
        model = build_model(stage_config(source, stage, pattern=cfg.pattern,
                                         geometry=cfg.geometry))
        if cfg.weights is None and cfg.init is None:
            raise ValueError(f"model {cfg.model!r} needs `weights` (or `init`, a release of an "
                             "earlier stage): its VAE encoded the latents and must be the one "
                             "trained with")
        if cfg.weights is not None:
            kept = init_from_weights(model, cfg.weights)
            if log_init:
                log.info("initialised from %s; not in it: %s", cfg.weights, kept)
        parts = ("autoencoder", "conditioner", "dit")
    if cfg.init:
        kept = init_from_state(model, release_state(load_release(cfg.init)), parts=parts)
        if log_init:
            log.info("initialised from %s; fresh: %s", cfg.init, kept)
    elif stage == "lmdm" and not cfg.weights:
        raise ValueError("the lmdm stage fine-tunes a base model: set `init` to the base "
                         "stage's release.pt (or `model` and `weights` to a stable-audio-tools "
                         "checkpoint)")
    return model


def build_model(config: ModelConfig) -> LMDM:
    model = LMDM(config)
    prompt = model.conditioner.conditioners["prompt"]
    prompt.encoder = CachedEncoder(prompt.encoder)
    return model


def shift_t(t: Tensor, sigma: float) -> Tensor:
    """The resolution shift t' = sigma t / (1 + (sigma - 1) t): monotone, fixes 0 and 1, and
    shifts compose by multiplying their sigmas."""
    return sigma * t / (1 + (sigma - 1) * t)


def sample_t(n: int, mode: str, frames: int, gen: torch.Generator, shift: float = 1.0) -> Tensor:
    """Noise levels (n,) in (0, 1): logit-normal, or the reference's stratified uniform with the
    resolution shift sigma = exp(0.5 + 0.65 (T' - 256) / 3840), T' = max(T, 256)
    (lmdm-reference §4.1); then ``shift`` on top of either."""
    if mode == "logit-normal":
        return shift_t(torch.sigmoid(torch.randn(n, generator=gen)), shift)
    u = (torch.arange(n) + torch.rand(n, generator=gen)) / n
    u = u[torch.randperm(n, generator=gen)].clamp(1e-4, 1 - 1e-4)
    sigma = math.exp(0.5 + 0.65 * (max(frames, 256) - 256) / 3840)
    return shift_t(u, sigma * shift)


def drop_context(context: Tensor, *, chunk: int, p_uncond: float, p_partial: float,
                 gen: torch.Generator) -> Tensor:
    """Context dropout (B, C, s): all of it with ``p_uncond``; else with ``p_partial`` the
    k ~ U{1..n} oldest chunks, zeroed in place (no shift), n = s / chunk."""
    b, n = context.shape[0], context.shape[-1] // chunk
    u = torch.rand(b, generator=gen)
    k = torch.randint(1, n + 1, (b,), generator=gen)
    keep = torch.ones(b, 1, context.shape[-1])
    frame = torch.arange(context.shape[-1])
    for i in range(b):
        if u[i] < p_uncond:
            keep[i] = 0
        elif u[i] < p_uncond + p_partial:
            keep[i, 0, frame < k[i] * chunk] = 0
    return context * keep


@dataclass
class Batch:
    """One training batch: model inputs plus the per-frame loss weights."""

    x_t: Tensor
    t: Tensor
    target: Tensor
    metadata: list[dict]
    drop_text: Tensor
    router: Tensor | None
    input_add: Tensor | None
    mask: Tensor | None
    loss_mask: Tensor  # (1 or B, 1, T): 1 where the loss counts

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device`` (drawn on the CPU, so a run's draws do not depend on it)."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{k: v.to(device) if isinstance(v, Tensor) else v
                        for k, v in moved.items()})


def make_batch(x0: Tensor, captions: list[str], stage: str, config: ModelConfig,
               cfg: DiffusionTrainConfig, gen: torch.Generator, *, train: bool = True,
               t: Tensor | None = None) -> Batch:
    b, _, frames = x0.shape
    seconds = frames / config.latent_rate
    metadata = [{"prompt": c, "seconds_total": seconds} for c in captions]
    if t is None:
        t = sample_t(b, cfg.timesteps, frames, gen, cfg.timestep_shift)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    drop_text = (torch.rand(b, generator=gen) < cfg.cfg_dropout) if train else \
        torch.zeros(b, dtype=torch.bool)
    if stage == "base":
        return Batch(x_t, t, eps - x0, metadata, drop_text, None, None, None,
                     torch.ones(1, 1, frames))
    stream = config.stream
    s, c = stream.context_frames, stream.block_frames
    context = x0[..., :s]
    if train:
        context = drop_context(context, chunk=c, p_uncond=cfg.context_uncond,
                               p_partial=cfg.context_partial, gen=gen)
    input_add = torch.cat((kv.build_input_add(config.dit, clean=context, batch=b, frames=s),
                           kv.build_input_add(config.dit, clean=None, batch=b, frames=c)), -1)
    if train and cfg.group_dropout > 0:
        # Each input-add group is dropped independently (lmdm-reference §4.1 CFG dropout).
        start = 0
        for group in config.dit.input_add_groups:
            drop = torch.rand(b, generator=gen) < cfg.group_dropout
            input_add[drop, start:start + group.channels] = 0
            start += group.channels
    router = kv.router(s, c, batch=b)
    mask = window_mask(stream.pattern, context_frames=s, block_frames=c)
    return Batch(x_t, t, eps - x0, metadata, drop_text, router, input_add, mask,
                 router.clone())


def batch_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """:func:`weighted_loss` of ``model`` (a :class:`DiTTrainee`, or DDP around one) on
    ``batch``."""
    v = model(batch.x_t, batch.t, batch.metadata, batch.drop_text, router=batch.router,
              input_add=batch.input_add, mask=batch.mask)
    return weighted_loss(v, batch)


def weighted_loss(v: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Mean squared error over the counted frames, in fp32 whatever ``v``'s precision:
    (scalar, per item (B,))."""
    err = (v.float() - batch.target).pow(2) * batch.loss_mask
    per_item = err.sum((1, 2)) / (batch.loss_mask.sum((1, 2)) * v.shape[1])
    return per_item.mean(), per_item


def _check_latents_match(latents: str, codec: nn.Module, cfg: DiffusionTrainConfig) -> None:
    """The latents must come from this very codec: a retrained codec makes old shards stale."""
    index = json.loads((Path(latents) / "index.json").read_text())
    if index.get("codec_fingerprint") != codec_fingerprint(codec):
        how = (f"--model {cfg.model} --weights {cfg.weights}" if cfg.model else
               f"--codec {cfg.codec}")
        raise ValueError(f"{latents} was encoded with another codec ({index.get('codec')}) than "
                         f"this stage's: re-encode it with `lmdm-bridge data encode {how} "
                         f"--corpus CORPUS --out {latents}` (delete it first)")


class Ema:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(module.state_dict())

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].lerp_(value, 1 - self.decay)
            else:
                self.shadow[name].copy_(value)


def train_stage(stage: str, cfg: DiffusionTrainConfig, *, resume: bool = False) -> Path:
    d = loop.init_distributed()
    run_dir = Path(cfg.out)
    if d.main:
        loop.check_resume(run_dir, resume)
    loop.seed_everything(cfg.seed + d.rank)
    model = stage_model(cfg, stage, log_init=d.main)
    config = model.config
    frames = (config.stream.window_frames if config.stream is not None else
              cfg.geometry.context_frames + cfg.geometry.block_frames)
    train_set, val_set = load_latents(cfg.latents, "train"), load_latents(cfg.latents, "val")
    sampler = WindowSampler(train_set, frames, seed=cfg.seed * 1000 + d.rank,
                            label_balance=cfg.label_balance)
    val_x, val_idx = fixed_windows(val_set, cfg.val_windows, frames)

    _check_latents_match(cfg.latents, model.autoencoder, cfg)
    trainee = DiTTrainee(model).to(d.device)
    ddp = loop.wrap_ddp(trainee, d)
    params = [p for p in trainee.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = Ema(trainee, cfg.ema)
    ckpt = loop.Checkpointer(run_dir, d)
    step = 0
    state = ckpt.load() if resume else None
    if state is not None:
        trainee.load_state_dict(state["model"])
        ema.shadow = {k: v.to(d.device) for k, v in state["ema"].items()}  # loaded on the CPU
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        loop.set_rng_state(state["rng"][min(d.rank, len(state["rng"]) - 1)])
        sampler.set_state(state["sampler"][min(d.rank, len(state["sampler"]) - 1)])
    runlog = loop.RunLog(run_dir, d, cfg.steps, cfg)
    first, last_save = step, time.monotonic()
    buckets: dict[str, list[float]] = {}
    while step < cfg.steps:
        # Seeded per step, so a resumed run draws what the uninterrupted one would have.
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + d.rank * 104729 + step)
        lr = loop.cosine_lr(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x0, idx = sampler.batch(cfg.batch)
        batch = make_batch(torch.from_numpy(x0), [train_set.captions[i] for i in idx], stage,
                           config, cfg, gen).to(d.device)
        with loop.autocast(cfg.precision, d.device):
            loss, per_item = batch_loss(ddp, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema.update(trainee)
        step += 1
        for name, (total, count) in loop.noise_buckets(batch.t, per_item.detach(),
                                                       BUCKETS).items():
            acc = buckets.setdefault(name, [0.0, 0])
            acc[0] += total
            acc[1] += count
        loss_m = float(loop.all_reduce_mean(loss.detach(), d))
        runlog.progress(step, first, loss=loss_m)
        if step % 25 == 0:
            runlog.write({"step": step, "loss": loss_m, "lr": lr, "grad_norm": float(grad),
                          "loss_by_t": {k: round(s / n, 5) for k, (s, n) in
                                        sorted(buckets.items())}})
            buckets.clear()
        if d.main and (step % cfg.val_every == 0 or step == cfg.steps):
            runlog.write({"step": step, "val": validate(trainee, ema, val_x, val_idx, val_set,
                                                        stage, config, cfg)})
        if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes or step == cfg.steps:
            ckpt.save({"model": trainee.state_dict(), "ema": ema.shadow,
                       "optimizer": opt.state_dict(), "step": step,
                       "rng": loop.gather_objects(loop.rng_state(), d),
                       "sampler": loop.gather_objects(sampler.state(), d), "config": asdict(cfg)})
            last_save = time.monotonic()
    loop.check_replicas(trainee, d, runlog)
    runlog.close()
    trainee.load_state_dict(ema.shadow)
    return ckpt.release("release.pt", release_payload(model, stage=stage, steps=step))


@torch.no_grad()
def validate(trainee: DiTTrainee, ema: Ema, val_x: np.ndarray, val_idx: np.ndarray,
             val_set: LatentSet, stage: str, config: ModelConfig,
             cfg: DiffusionTrainConfig) -> dict[str, float]:
    """Loss of the EMA weights on fixed windows at a fixed grid of t (no dropout)."""
    device = next(trainee.parameters()).device
    live = copy.deepcopy(trainee.state_dict())
    trainee.load_state_dict(ema.shadow)
    gen = torch.Generator().manual_seed(99)
    out = {}
    x0 = torch.from_numpy(val_x)
    captions = [val_set.captions[i] for i in val_idx]
    for level in (0.1, 0.3, 0.5, 0.7, 0.9):
        t = torch.full((len(x0),), level)
        batch = make_batch(x0, captions, stage, config, cfg, gen, train=False, t=t).to(device)
        out[f"t{level}"] = round(float(batch_loss(trainee, batch)[0]), 5)
    out["mean"] = round(sum(out.values()) / len(out), 5)
    trainee.load_state_dict(live)
    return out


def train_base(cfg: DiffusionTrainConfig, *, resume: bool = False) -> Path:
    return train_stage("base", cfg, resume=resume)


def train_lmdm(cfg: DiffusionTrainConfig, *, resume: bool = False) -> Path:
    return train_stage("lmdm", cfg, resume=resume)
