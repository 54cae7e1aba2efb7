"""``lmdm-bridge train arc``: ARC-Forcing post-training of a fine-tuned LMDM (lmdm-reference §4.2).

Per optimiser step, for a batch of real latent sequences ``X`` of ``s + n c`` frames:

1. **Rollout context dropout** in *shift mode*: with ``context_uncond`` all context, else with
   ``context_partial`` the k ~ U{1..n_ctx} oldest chunks are dropped by prepending zeros and
   shifting the sequence right, so the real continuation stays aligned with the fake one.
2. **Self-rollout** through the block-causal KV-cached streaming path (bootstrap, then a fused step
   per chunk; the same :class:`~lmdm_export.rollout.BlockCausalSession` inference uses). Chunk j
   runs ``k_j ~ U{1..K_max-1}`` ping-pong steps from t = 1 on the ``K_max``-step logSNR schedule;
   only the last step keeps gradients (the generator learns to finish from t in
   {1, .99, .97, .88, .66}); each chunk enters the next context detached.
3. **Discriminator**: a trainable copy of the *base* DiT (bidirectional, no masks) run on fake and
   real, both noised with the same eps at ``t_g = sigmoid(-U[-6, 2])``; hidden states after block
   ``feature_block`` over the rolled-out frames only feed a ConvNeXt head giving patch scores.
4. **Losses**, with ``Delta = D(real) - D(fake)`` per patch: generator ``softplus(Delta)``;
   discriminator ``softplus(-Delta)`` plus ``contrastive_weight * softplus(-(D(real, c) -
   D(real, c_rolled)))`` where ``c_rolled`` gives item i the prompt of item i + 1 (a rolled copy;
   the reference mutated its metadata in place, bug 8).
5. **Flow anchor** (``flow_weight``, not in the reference; 0 leaves it out): generator steps
   add the fine-tune's own loss (rectified flow on the target block, routing and dropouts as
   the LMDM stage) on real windows ending at each rolled-out chunk, weighted by
   ``flow_weight``. The adversarial term alone moved this small model away from the data
   wherever the discriminator did not look (docs/default-model-history.md, session 16).
6. **Moment hold** (``moment_weight``, not in the reference; 0 leaves it out): generator steps
   add the squared distance between the rolled-out chunks' per-channel mean and standard
   deviation and the real continuation's (over batch and frames), the ``spread`` the log
   shows: every ARC run on the default model widened its rollouts past the data (spread
   0.9 -> 1.1) and grew louder.
7. **Schedule**: ``schedule`` is a string of G and D letters cycled over steps ("GD" alternates,
   as the reference; "GDD" gives the discriminator two steps per generator step), after
   ``disc_warmup`` discriminator-only steps (the reference has none; 0 reproduces it).

Decisions where the reference is off (lmdm-reference §6 bug 10): the discriminator's features
cover exactly the rolled-out frames (the reference kept the last context frame by an off-by-one);
``k_j`` is drawn from {1..K_max-1} as the reference does, documented rather than silent.

Under ``torchrun`` the rollout calls the DiT's step functions rather than ``forward``, so DDP's
hooks would not see them: gradients are averaged explicitly (:func:`_average_gradients`), and
every rank draws the same ``k_j`` from a step-seeded generator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmdm_export.model.dit import DiffusionTransformer
from lmdm_export.model.lmdm import LMDM
from lmdm_export.model.transformer import KV
from lmdm_export.presets import DefaultGeometry
from lmdm_export.release import load_release_model, release_payload
from lmdm_export.rollout import BlockCausalSession, Guidance, make_conditioning
from lmdm_export.sampling import draw_noise, logsnr_schedule
from lmdm_export.train import loop
from lmdm_export.train.diffusion import (
    CachedEncoder,
    DiffusionTrainConfig,
    DiTTrainee,
    batch_loss,
    build_model,
    make_batch,
)
from lmdm_export.train.latent_data import WindowSampler, load_latents
from lmdm_export.train.model_source import init_from_weights, source_config, stage_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArcTrainConfig:
    latents: str = "data/latents"
    out: str = "runs/arc"
    init: str = "runs/lmdm/release.pt"  # the fine-tuned LMDM (the generator starts here)
    base: str = "runs/base/release.pt"  # the discriminator's DiT starts from the base model
    # With `base_model` (a preset or a stable-audio-tools model_config.json), `base` is that
    # model's weights file instead of a release: e.g. Stable Audio Open Small's own checkpoint,
    # the base an LMDM fine-tuned from it started from (lmdm_export.train.model_source).
    base_model: str = ""
    text_encoders: dict[str, str] = field(default_factory=dict)
    steps: int = 400  # optimiser steps, generator and discriminator together
    schedule: str = "GD"
    # Discriminator-only steps before the schedule starts (counted in ``steps``): a generator
    # step against an untrained head follows the head's random preference, which on the default
    # model steadily widened the rolled-out latents' spread past the data's.
    disc_warmup: int = 0
    batch: int = 4
    rollout_chunks: int = 4
    k_max: int = 6
    feature_block: int = 4
    head_width: int = 64
    contrastive_weight: float = 2.0
    lr: float = 1e-5
    disc_lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    context_uncond: float = 0.25
    context_partial: float = 0.1
    cfg_dropout: float = 0.1
    # Classifier-free guidance in the rollout (1 = none, as the reference): a small model that
    # ships guided is rolled out as it will be sampled, so the discriminator judges guided
    # chunks and the generator learns to finish them; the interval as the export's
    # --cfg-interval.
    rollout_cfg: float = 1.0
    rollout_cfg_interval: tuple[float, float] = (0.0, 1.0)
    label_balance: float = 0.0  # as in the diffusion stages (latent_data.item_weights)
    # The LMDM stage's loss beside the adversarial one in generator steps (module docstring,
    # step 5); its noise levels as that stage's ``timesteps``, its context dropout as above.
    flow_weight: float = 0.0
    flow_timesteps: str = "shifted-uniform"
    flow_group_dropout: float = 0.1
    moment_weight: float = 0.0  # the rollouts' channel statistics held to the data's (step 6)
    precision: str = "fp32"  # or "bf16": mixed precision (loop.autocast)
    seed: int = 0
    checkpoint_minutes: float = 5.0

    def __post_init__(self) -> None:
        loop.check_precision(self.precision)
        if not self.schedule or set(self.schedule) - {"G", "D"}:
            raise ValueError(f"schedule {self.schedule!r} must be a string of G and D letters")
        if not 0 <= self.disc_warmup < self.steps:
            raise ValueError(f"disc_warmup {self.disc_warmup} must be in 0..steps-1")
        if self.k_max < 2:
            raise ValueError("k_max must be >= 2 (k_j is drawn from 1..k_max-1)")
        lo, hi = self.rollout_cfg_interval
        if self.rollout_cfg < 1 or not 0 <= lo <= hi <= 1:
            raise ValueError(f"rollout_cfg {self.rollout_cfg} must be >= 1 and "
                             f"rollout_cfg_interval {self.rollout_cfg_interval} a range in [0, 1]")
        if self.flow_weight < 0 or self.moment_weight < 0:
            raise ValueError(f"flow_weight {self.flow_weight} and moment_weight "
                             f"{self.moment_weight} must be >= 0 (0: leave the term out)")
        _ = self.flow_config  # a DiffusionTrainConfig checks flow_timesteps

    @property
    def flow_config(self) -> DiffusionTrainConfig:
        """The flow anchor's batch settings, in the LMDM stage's terms (make_batch)."""
        return DiffusionTrainConfig(timesteps=self.flow_timesteps, cfg_dropout=self.cfg_dropout,
                                    group_dropout=self.flow_group_dropout,
                                    context_uncond=self.context_uncond,
                                    context_partial=self.context_partial)

    @property
    def guidance(self) -> Guidance:
        return Guidance(scale=self.rollout_cfg, interval=self.rollout_cfg_interval)


class ConvNeXtBlock1d(nn.Module):
    """Depthwise k7 -> LayerNorm -> pointwise x4 -> GELU -> zero-initialised pointwise, residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dw = nn.Conv1d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.dw(x).transpose(1, 2))
        return x + self.down(F.gelu(self.up(h))).transpose(1, 2)


class DiscriminatorHead(nn.Module):
    """Hidden states (B, D, T) -> patch scores (B, T / 4): weight-norm conv to ``w``, three stages
    of two ConvNeXt blocks with stride-1/2/2 downsampling convs to w/2w/4w, a conv to 1."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.inp = nn.utils.parametrizations.weight_norm(nn.Conv1d(dim, width, 7, padding=3))
        stages, ch = [], width
        for i, stride in enumerate((1, 2, 2)):
            out = width * 2 ** i
            stages += [nn.Conv1d(ch, out, 3 if stride == 1 else 4, stride=stride,
                                 padding=1), ConvNeXtBlock1d(out), ConvNeXtBlock1d(out)]
            ch = out
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv1d(ch, 1, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.stages(self.inp(h)))[:, 0]


class Discriminator(nn.Module):
    """A base DiT cut after ``feature_block`` blocks, plus the head."""

    def __init__(self, base: LMDM, feature_block: int, head_width: int) -> None:
        super().__init__()
        if not 1 <= feature_block <= base.config.dit.depth:
            raise ValueError(f"feature_block {feature_block} is not in 1..{base.config.dit.depth}")
        self.conditioner = base.conditioner
        self.dit = base.dit
        self.dit.transformer.layers = self.dit.transformer.layers[:feature_block]
        self.head = DiscriminatorHead(base.config.dit.embed_dim, head_width)

    def forward(self, x: Tensor, t: Tensor, metadata: list[dict], skip: int) -> Tensor:
        """Scores (B, P) of latents ``x (B, C, T)`` at noise ``t (B,)``, over frames ``skip..T``."""
        out = self.conditioner(metadata, x.device)
        dit: DiffusionTransformer = self.dit
        cond = dit.condition(out["cross_attn_cond"], out["global_cond"])
        h = dit.embed_latents(x, None, None)
        h = torch.cat((h, dit.global_token(t, cond)), dim=1)
        positions = torch.arange(1, x.shape[-1] + 1, device=x.device)
        positions = torch.cat((positions, positions.new_tensor([0])))
        h, _ = dit.transformer(h, positions, None, None, cond.cross)
        return self.head(h[:, skip:x.shape[-1]].transpose(1, 2)).float()


def shift_dropout(x: Tensor, *, chunk: int, context_chunks: int, p_uncond: float,
                  p_partial: float, gen: torch.Generator) -> Tensor:
    """Shift-mode context dropout of sequences (B, C, L): prepend ``k`` chunks of zeros and shift
    right (dropping the tail), k = all context chunks with ``p_uncond``, k ~ U{1..n} with
    ``p_partial``."""
    out = x.clone()
    for i in range(x.shape[0]):
        u = float(torch.rand((), generator=gen))
        if u < p_uncond:
            k = context_chunks
        elif u < p_uncond + p_partial:
            k = int(torch.randint(1, context_chunks + 1, (), generator=gen))
        else:
            continue
        z = k * chunk
        out[i] = torch.cat((torch.zeros_like(x[i, :, :z]), x[i, :, :x.shape[-1] - z]), -1)
    return out


def self_rollout(lmdm: LMDM, cross: Tensor, glob: Tensor, context: Tensor, ks: list[int],
                 ts: Tensor, gen: torch.Generator, *, grad: bool,
                 guidance: Guidance | None = None) -> Tensor:
    """Roll out ``len(ks)`` chunks after ``context (B, C, s)`` through the streaming KV cache.

    Chunk j runs ``ks[j]`` ping-pong steps on the ``guidance``-combined velocity; only its last
    keeps gradients (when ``grad``, through both branches when guided). Returns the chunks
    ``(B, C, n c)``; each one entered the next context detached. Runs on ``context``'s device
    (``ts`` there too); the noise comes from the CPU generator ``gen``.
    """
    config, guidance = lmdm.config, guidance or Guidance()
    with torch.set_grad_enabled(grad):
        cond = make_conditioning(lmdm.dit, cross, glob, guidance)
    session = BlockCausalSession(lmdm.dit, config, cond, guidance, context, context.shape[0])
    shape = (context.shape[0], config.dit.io_channels, config.stream.block_frames)
    chunks = []
    for k in ks:
        denoise = session.block_denoiser()
        x = draw_noise(shape, context, gen)
        for i in range(k):
            t = ts[i].expand(shape[0])
            with torch.set_grad_enabled(grad and i == k - 1):
                x0_hat = x - ts[i] * denoise(x, t).guided
            if i < k - 1:
                eps = draw_noise(shape, context, gen)
                x = (1 - ts[i + 1]) * x0_hat + ts[i + 1] * eps
        chunks.append(x0_hat)
        session.commit(x0_hat.detach())
        cache = session.state.cache
        session.state.cache = KV(cache.k.detach(), cache.v.detach())
    return torch.cat(chunks, -1)


def flow_loss(lmdm: LMDM, x: Tensor, captions: list[str], cfg: ArcTrainConfig,
              gen: torch.Generator) -> Tensor:
    """The LMDM stage's loss on the real windows of ``x (B, C, s + n c)`` (on the CPU) that end
    at each of its n chunks (B n windows of s + c frames): the flow anchor (module docstring,
    step 5), on the model's device."""
    s, c = lmdm.config.stream.context_frames, lmdm.config.stream.block_frames
    n = (x.shape[-1] - s) // c
    windows = torch.cat([x[..., j * c:j * c + s + c] for j in range(n)])
    batch = make_batch(windows, captions * n, "lmdm", lmdm.config, cfg.flow_config,
                       gen).to(next(lmdm.dit.parameters()).device)  # drawn on the CPU
    return batch_loss(DiTTrainee(lmdm), batch)[0]


def moment_loss(fake: Tensor, real: Tensor) -> Tensor:
    """Squared distance of the per-channel mean and standard deviation of ``fake`` from
    ``real`` (both (B, C, T), statistics over batch and frames), averaged over channels: the
    moment hold (module docstring, step 6)."""
    fake = fake.float()
    mf, sf = fake.mean((0, 2)), fake.std((0, 2))
    mr, sr = real.mean((0, 2)), real.std((0, 2))
    return ((mf - mr).square() + (sf - sr).square()).mean()


def _conditioning(lmdm: LMDM, metadata: list[dict], drop: Tensor) -> tuple[Tensor, Tensor]:
    """Prompt tokens with the ``drop (B,)`` items zeroed and the global conditioning, on the
    generator's device."""
    device = next(lmdm.dit.parameters()).device
    out = lmdm.conditioner(metadata, device)
    return out["cross_attn_cond"] * (~drop.to(device))[:, None, None], out["global_cond"]


def _load(path: str) -> tuple[LMDM, dict]:
    """A release with the prompt encoder memoised (training captions repeat)."""
    model, payload = load_release_model(path)
    prompt = model.conditioner.conditioners["prompt"]
    prompt.encoder = CachedEncoder(prompt.encoder)
    return model, payload


def _load_base(cfg: ArcTrainConfig) -> LMDM:
    """The base model the discriminator's trunk starts from: a base-stage release, or
    ``base_model``'s stable-audio-tools weights ``base``."""
    if not cfg.base_model:
        model, payload = _load(cfg.base)
        if payload["stage"] != "base":
            raise ValueError(f"{cfg.base} is not a base-stage release (or set `base_model` to "
                             "read it as a stable-audio-tools checkpoint)")
        return model
    config = stage_config(source_config(cfg.base_model, cfg.text_encoders), "base",
                          pattern="block-causal", geometry=DefaultGeometry())
    model = build_model(config)  # the prompt encoder memoised, as _load's
    kept = init_from_weights(model, cfg.base)
    if kept:
        raise ValueError(f"{cfg.base} does not hold the whole base model {cfg.base_model} "
                         f"({len(kept)} tensors missing, e.g. {kept[0]})")
    return model.eval()


def _average_gradients(params: list[Tensor], d: loop.Dist) -> None:
    if d.world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= d.world


def train(cfg: ArcTrainConfig, *, resume: bool = False) -> Path:
    d = loop.init_distributed()
    run_dir = Path(cfg.out)
    if d.main:
        loop.check_resume(run_dir, resume)
    loop.seed_everything(cfg.seed + d.rank)
    generator_model, payload = _load(cfg.init)
    if payload["stage"] not in ("lmdm", "arc") or payload["pattern"] != "block-causal":
        raise ValueError(f"{cfg.init} is a {payload['stage']} ({payload['pattern']}) release: ARC "
                         "needs a block-causal LMDM from `lmdm-bridge train lmdm`")
    base_model = _load_base(cfg)
    # The DiTs and conditioners train on the job's device; the codecs stay unused on the CPU.
    for part in (generator_model.dit, generator_model.conditioner):
        part.to(d.device)
    generator_model.train()
    disc = Discriminator(base_model.train(), cfg.feature_block, cfg.head_width).to(d.device)
    stream = generator_model.config.stream
    s, c = stream.context_frames, stream.block_frames
    frames = s + cfg.rollout_chunks * c
    data = load_latents(cfg.latents, "train")
    sampler = WindowSampler(data, frames, seed=cfg.seed * 1000 + d.rank,
                            label_balance=cfg.label_balance)
    g_params = [p for p in [*generator_model.dit.parameters(),
                            *generator_model.conditioner.parameters()] if p.requires_grad]
    d_params = [p for p in disc.parameters() if p.requires_grad]
    g_opt = torch.optim.AdamW(g_params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                              weight_decay=cfg.weight_decay)
    d_opt = torch.optim.AdamW(d_params, lr=cfg.disc_lr, betas=cfg.betas, eps=cfg.eps,
                              weight_decay=cfg.weight_decay)
    ckpt = loop.Checkpointer(run_dir, d)
    step = 0
    state = ckpt.load() if resume else None
    if state is not None:
        generator_model.dit.load_state_dict(state["generator"])
        generator_model.conditioner.load_state_dict(state["generator_conditioner"])
        disc.load_state_dict(state["discriminator"])
        g_opt.load_state_dict(state["g_opt"])
        d_opt.load_state_dict(state["d_opt"])
        step = state["step"]
        loop.set_rng_state(state["rng"][min(d.rank, len(state["rng"]) - 1)])
        sampler.set_state(state["sampler"][min(d.rank, len(state["sampler"]) - 1)])
    ts = logsnr_schedule(cfg.k_max).to(d.device)
    seconds = frames / generator_model.config.latent_rate
    runlog = loop.RunLog(run_dir, d, cfg.steps, cfg)
    first, last_save = step, time.monotonic()
    while step < cfg.steps:
        after = step - cfg.disc_warmup
        phase = "D" if after < 0 else cfg.schedule[after % len(cfg.schedule)]
        shared = torch.Generator().manual_seed(cfg.seed * 15485863 + step)  # same on all ranks
        ks = [int(k) for k in torch.randint(1, cfg.k_max, (cfg.rollout_chunks,),
                                            generator=shared)]
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + d.rank * 104729 + step)
        # Every draw is made on the CPU from the step's generator, then moved: a run draws the
        # same whichever device it trains on.
        x, idx = sampler.batch(cfg.batch)
        real = shift_dropout(torch.from_numpy(x), chunk=c, context_chunks=stream.context_chunks,
                             p_uncond=cfg.context_uncond, p_partial=cfg.context_partial,
                             gen=gen).to(d.device)
        captions = [data.captions[i] for i in idx]
        metadata = [{"prompt": p, "seconds_total": seconds} for p in captions]
        drop = torch.rand(cfg.batch, generator=gen) < cfg.cfg_dropout
        train_g = phase == "G"
        for p in d_params:
            p.requires_grad_(not train_g)
        with loop.autocast(cfg.precision, d.device):  # losses in fp32 (Discriminator, moment_loss)
            with torch.set_grad_enabled(train_g):
                cross, glob = _conditioning(generator_model, metadata, drop)
            fake_tail = self_rollout(generator_model, cross, glob, real[..., :s], ks, ts, gen,
                                     grad=train_g, guidance=cfg.guidance)
            fake = torch.cat((real[..., :s], fake_tail), -1)
            t_g = torch.sigmoid(-(torch.rand(cfg.batch, generator=gen) * 8 - 6)).to(d.device)
            eps = draw_noise(real.shape, real, gen)
            tg = t_g[:, None, None]
            real_g, fake_g = (1 - tg) * real + tg * eps, (1 - tg) * fake + tg * eps
            if train_g:
                with torch.no_grad():
                    d_real = disc(real_g, t_g, metadata, s)
                d_fake = disc(fake_g, t_g, metadata, s)
                loss = F.softplus(d_real - d_fake).mean()
                values = {"loss_g": float(loss.detach())}
                if cfg.flow_weight:
                    anchor = flow_loss(generator_model, torch.from_numpy(x), captions, cfg, gen)
                    loss = loss + cfg.flow_weight * anchor
                    values["loss_flow"] = float(anchor.detach())
                if cfg.moment_weight:
                    held = moment_loss(fake_tail, real[..., s:])
                    loss = loss + cfg.moment_weight * held
                    values["loss_moment"] = float(held.detach())
                params, opt = g_params, g_opt
            else:
                rolled = metadata[1:] + metadata[:1]  # a rolled copy: item i gets item i+1's prompt
                d_real = disc(real_g, t_g, metadata, s)
                d_fake = disc(fake_g.detach(), t_g, metadata, s)
                d_shuffled = disc(real_g, t_g, rolled, s)
                loss_d = F.softplus(-(d_real - d_fake)).mean()
                loss_c = F.softplus(-(d_real - d_shuffled)).mean()
                loss = loss_d + cfg.contrastive_weight * loss_c
                values = {"loss_d": float(loss_d.detach()), "loss_c": float(loss_c.detach())}
                params, opt = d_params, d_opt
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(params, d)
        grad = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        runlog.progress(step, first, **values)
        # The rolled-out chunks' spread against the real continuation's: the first sign of a
        # generator that sharpens past the data (> 1) or still blurs (< 1).
        spread = float(fake_tail.detach().std() / real[..., s:].std().clamp_min(1e-8))
        runlog.write({"step": step, "phase": phase, "ks": ks, "grad_norm": float(grad),
                      "t_g_mean": float(t_g.mean()), "spread": spread, **values})
        if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes or step == cfg.steps:
            ckpt.save({"generator": generator_model.dit.state_dict(),
                       "generator_conditioner": generator_model.conditioner.state_dict(),
                       "discriminator": disc.state_dict(), "g_opt": g_opt.state_dict(),
                       "d_opt": d_opt.state_dict(), "step": step,
                       "rng": loop.gather_objects(loop.rng_state(), d),
                       "sampler": loop.gather_objects(sampler.state(), d), "config": asdict(cfg)})
            last_save = time.monotonic()
    loop.check_replicas(generator_model.dit, d, runlog)
    loop.check_replicas(disc, d, runlog)
    runlog.close()
    return ckpt.release("release.pt", release_payload(generator_model, stage="arc", steps=step))
