"""The training pipeline on a tiny synthetic corpus: codec transforms, every stage, resume,
DDP with gloo, and release -> export -> verify.

The corpus is two labels of synthetic audio (harmonic tones, noise bursts) written as FLAC in the
layout ``lmdm-bridge data render`` produces; geometries are shrunk so each stage runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from lmdm_export.model.stft_codec import StftCodec, StftCodecConfig  # noqa: E402
from lmdm_export.presets import DefaultGeometry  # noqa: E402
from lmdm_export.train import loop  # noqa: E402
from lmdm_export.train.arc import ArcTrainConfig  # noqa: E402
from lmdm_export.train.arc import train as train_arc  # noqa: E402
from lmdm_export.train.codec import CodecTrainConfig, load_codec  # noqa: E402
from lmdm_export.train.codec import train as train_codec  # noqa: E402
from lmdm_export.train.codec_probe import partial_recall, pitch_report, tone_frequency  # noqa: E402,E501
from lmdm_export.train.diffusion import DiffusionTrainConfig, train_base, train_lmdm  # noqa: E402
from lmdm_export.train.latents import encode_corpus  # noqa: E402

RATE = 8000
# The default recipe's kind: phase from the magnitudes, a linear path fitted to principal
# components (the learned-phase kind is covered by the transform and receptive-field tests).
TINY_CODEC = StftCodecConfig(sample_rate=RATE, latent_dim=4, n_fft=64, hop=16, downsamples=1,
                             encoder_width=16, encoder_blocks=1, decoder_width=16,
                             decoder_latent_blocks=1, decoder_frame_blocks=1,
                             phase="peak-locked", linear_path=True)
TINY_GEOMETRY = DefaultGeometry(width=32, depth=2, heads=1, cond_dim=16, prompt_tokens=8,
                                context_frames=8, block_frames=4)
ROOT = Path(__file__).resolve().parents[1]


def _write_corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    records = []
    for label, caption in (("organ", "church organ chorale"), ("drums", "drum kit groove")):
        for k in range(4):
            split = "val" if k == 3 else "train"
            t = np.arange(int(RATE * 1.5)) / RATE
            if label == "organ":
                f0 = 220 * 2 ** (k / 12)
                x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * 0.2
            else:
                x = rng.standard_normal(t.shape) * np.exp(-((t * 4) % 1) * 8) * 0.3
            rel = f"audio/{label}/{label}-{k}.flac"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, x.astype(np.float32), RATE)
            records.append({"id": f"{label}-{k}", "label": label, "caption": caption,
                            "split": split, "piece_id": f"{label}-{k}", "sample_rate": RATE,
                            "path": rel, "duration": len(t) / RATE,
                            "stems": [{"voice": "all", "path": rel, "program": 0}]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Corpus -> codec -> latents -> base -> lmdm (block-causal) -> arc, all tiny."""
    work = tmp_path_factory.mktemp("train")
    corpus = _write_corpus(work / "corpus")
    codec_cfg = CodecTrainConfig(corpus=str(corpus), out=str(work / "codec"), codec=TINY_CODEC,
                                 steps=3, batch=2, crop_frames=16, warmup=1, val_every=3,
                                 loss_resolutions=(64, 128), kl_weight=0.0,
                                 sample_latents=False, val_clips=2, val_frames=16,
                                 stats_clips=4, linear_fit_clips=6)
    train_codec(codec_cfg)
    encode_corpus(work / "codec" / "release.pt", corpus, work / "latents", min_frames=32)
    common = dict(latents=str(work / "latents"), codec=str(work / "codec" / "release.pt"),
                  geometry=TINY_GEOMETRY, batch=2, warmup=1, val_every=2, val_windows=2)
    train_base(DiffusionTrainConfig(out=str(work / "base"), steps=2, **common))
    train_lmdm(DiffusionTrainConfig(out=str(work / "lmdm"), init=str(work / "base" / "release.pt"),
                                    steps=2, timesteps="shifted-uniform", **common))
    _tiny_arc(work, work / "arc")
    return work


def _tiny_arc(work: Path, out: Path, **options) -> list[dict]:
    """Three tiny ARC steps (D warm-up, then G, D) from ``work``'s LMDM and base into ``out``;
    the logged steps."""
    train_arc(ArcTrainConfig(latents=str(work / "latents"), out=str(out),
                             init=str(work / "lmdm" / "release.pt"),
                             base=str(work / "base" / "release.pt"), steps=3, batch=2,
                             rollout_chunks=2, feature_block=1, head_width=8, disc_warmup=1,
                             **options))
    return [r for r in map(json.loads, (out / "log.jsonl").open()) if "phase" in r]


# -- the codec's transforms --------------------------------------------------------------------


def test_stft_codec_transforms_invert_exactly_and_match_their_onnx_form(monkeypatch):
    """STFT -> iSTFT with the true magnitude and phase is the identity (zero padding, exact
    window-sum normalisation), and the FFT form used in training equals the DFT-convolution form
    the ONNX export takes."""
    import lmdm_export.model.stft_codec as module

    codec = StftCodec(StftCodecConfig())
    x = torch.randn(2, 1, 1024 * 12) * 0.1
    re, im = codec.spectrum(x)
    logmag = torch.log(torch.sqrt(re**2 + im**2)).flatten(1, 2)
    phase = torch.atan2(im, re).flatten(1, 2)
    assert (codec.inverse(logmag, phase) - x).abs().max() < 1e-6
    monkeypatch.setattr(module, "_exporting", lambda: True)
    re2, im2 = codec.spectrum(x)
    assert (re - re2).abs().max() < 1e-4 * re.abs().max()
    assert (codec.inverse(logmag, phase) - x).abs().max() < 1e-6


def test_peak_locked_phase_keeps_held_tones_in_tune():
    """Resynthesised from their true magnitudes with the peak-locked phase, held harmonic tones
    keep their pitch to a few cents (a phase-blind codec's grid puts 440 Hz 37 cents flat) and
    do not repeat every latent hop."""
    codec = StftCodec(StftCodecConfig(phase="peak-locked"))
    shift = codec.zero_phase_shift

    def resynthesise(x):
        logmag = codec.log_magnitude(x)
        return codec.inverse(logmag, codec.peak_locked_phase(logmag) + shift)

    report = pitch_report(resynthesise, 22050, codec.config.downsampling_ratio)
    assert report["median_abs_error_cents"] < 5
    assert min(report["periodicity"].values()) > 0.5


def test_partial_recall_finds_moved_partials():
    """A clip's own partials are all recalled; the same chord a quarter tone up, or smeared
    into noise, loses them, whatever its tonal energy."""
    rate = 22050
    t = np.arange(rate * 2) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 440.0)) * 0.1
    moved = sum(np.sin(2 * np.pi * f * 2 ** (0.5 / 12) * t) for f in (220.0, 277.2, 329.6,
                                                                    440.0)) * 0.1
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.1
    assert partial_recall(chord, chord) == 1.0
    assert partial_recall(chord, moved) < 0.05
    assert partial_recall(chord, noise) < 0.3
    assert partial_recall(chord[:1000], chord[:1000]) is None


def test_linear_path_fits_the_principal_components():
    """Log-magnitudes that span fewer directions than the latent has channels pass the fitted
    linear path unchanged; the convolutional branches start at zero, so the codec starts as
    exactly that linear codec."""
    cfg = StftCodecConfig(latent_dim=4, n_fft=64, hop=16, downsamples=1, encoder_width=16,
                          encoder_blocks=1, decoder_width=16, decoder_latent_blocks=1,
                          decoder_frame_blocks=1, phase="peak-locked", linear_path=True)
    codec = StftCodec(cfg).eval()
    g = torch.Generator().manual_seed(0)
    rows, f = cfg.bins, cfg.frames_per_latent
    basis = torch.randn(3, rows * f, generator=g)  # rank 3 around a mean, stacked frames
    mean = torch.randn(rows, 1, generator=g).repeat(1, f).flatten()
    frames = torch.randn(40, 3, generator=g) @ basis + mean
    logmag = frames.reshape(8, 5, rows, f).permute(0, 2, 1, 3).reshape(8, rows, 5 * f)
    assert codec.fit_linear_path(logmag) == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        z, _ = codec.bottleneck(codec.encoder(logmag), sample=False)
        rebuilt, phase = codec.decoder(z)
    assert phase is None
    assert (rebuilt - logmag).abs().max() < 1e-3 * logmag.abs().max()


LINEAR_CODEC = dataclasses.replace(TINY_CODEC, residual_branches=False)


def test_a_linear_codec_is_the_fitted_linear_path_alone():
    """``residual_branches = false`` (the default model's codec since session 8): no
    convolution, only the principal components, so it encodes and decodes exactly what a codec
    with the branches does before they train; each latent frame decodes to its own STFT frames,
    so its reach is the overlap-add and the phase iterations alone."""
    full, linear = StftCodec(TINY_CODEC).eval(), StftCodec(LINEAR_CODEC).eval()
    assert sorted(name for name, _ in linear.named_parameters()) == [
        "decoder.linear.bias", "decoder.linear.weight", "encoder.linear.bias",
        "encoder.linear.weight"]
    g = torch.Generator().manual_seed(3)
    r = LINEAR_CODEC.downsampling_ratio
    audio = 0.1 * torch.randn(4, 1, 24 * r, generator=g)
    audio += 0.3 * torch.sin(torch.arange(24 * r) * 0.37)
    for codec in (full, linear):
        codec.fit_linear_path(codec.log_magnitude(audio))
    with torch.no_grad():
        z = linear.encode(audio, sample=False)
        torch.testing.assert_close(z, full.encode(audio, sample=False))
        torch.testing.assert_close(linear.decode(z), full.decode(z), rtol=1e-4, atol=1e-5)
        bumped = z.clone()
        bumped[..., 10] += 1.0
        moved = (linear.decoder(bumped)[0] - linear.decoder(z)[0]).abs().amax(dim=(0, 1))
    f = LINEAR_CODEC.frames_per_latent
    assert torch.nonzero(moved).flatten().tolist() == list(range(10 * f, 11 * f))
    for iterations in (0, 1, 3):  # half a window of overlap-add, a window per iteration
        cfg = dataclasses.replace(LINEAR_CODEC, phase_iterations=iterations)
        assert cfg.receptive_frames == math.ceil(cfg.n_fft * (0.5 + iterations) / r)
    with pytest.raises(ValueError, match="needs linear_path = true and phase = 'peak-locked'"):
        dataclasses.replace(LINEAR_CODEC, linear_path=False)
    with pytest.raises(ValueError, match="needs linear_path = true and phase = 'peak-locked'"):
        dataclasses.replace(LINEAR_CODEC, phase="learned")


def test_tone_frequency_and_the_pitch_report_on_known_signals():
    """The pitch probe finds a tone's frequency to a cent, reports no error or periodicity change
    for a transparent codec, and catches a codec that can only return signals periodic in one
    latent hop (what a phase-blind encoder with a shift-equivariant decoder does to a stationary
    tone): 440 Hz comes back on the 21.5 Hz grid, 37 cents flat, with periodicity 0."""
    rate, hop = 22050, 1024
    t = np.arange(rate * 2) / rate
    for f in (97.0, 440.0, 1234.5):
        assert abs(1200 * np.log2(tone_frequency(np.sin(2 * np.pi * f * t), rate) / f)) < 1
    transparent = pitch_report(lambda x: x, rate, hop)
    assert transparent["median_abs_error_cents"] < 1
    assert transparent["periodicity"] == transparent["periodicity_input"]
    assert min(transparent["periodicity_input"].values()) > 0.5  # no input repeats every hop

    def periodic(x):  # one hop of the 440 Hz tone repeated: partials on the sample_rate/hop grid
        n = x.shape[-1]
        return x[..., :hop].repeat(1, 1, n // hop)

    snapped = pitch_report(periodic, rate, hop, tones=(440.0,))
    # the fundamental (strongest partial) moves to the grid line nearest 440 Hz: 20 x 21.53 Hz
    assert snapped["error_cents"]["440"] == pytest.approx(1200 * np.log2(20 * rate / hop / 440),
                                                          abs=2)
    assert snapped["periodicity"]["440"] < 1e-3


def test_phase_iterations_make_the_spectrogram_consistent():
    """Fast Griffin-Lim from the peak-locked phase: the audio's own STFT magnitudes come closer
    to the magnitudes decoded (here the true ones of a chord over noise) with every iteration,
    and the peak-locked start is far from consistent (its skirts and the noise are wrong)."""
    rate = 22050
    t = torch.arange(rate) / rate
    chord = sum(torch.sin(2 * torch.pi * f * t) for f in (196.0, 246.9, 293.7)) * 0.1
    x = (chord + 0.02 * torch.randn(rate, generator=torch.Generator().manual_seed(0)))
    x = x[None, None, :1024 * 20]
    errors = []
    for k in (0, 1, 2, 4):
        codec = StftCodec(StftCodecConfig(phase="peak-locked", phase_iterations=k))
        logmag = codec.log_magnitude(x)
        y = codec.consistent_inverse(logmag, codec.peak_locked_phase(logmag)
                                     + codec.zero_phase_shift)
        re, im = codec.spectrum(y)
        mag, target = torch.sqrt(re ** 2 + im ** 2).flatten(1, 2), logmag.exp()
        errors.append(float((mag - target).norm() / target.norm()))
    assert errors[0] > 0.3
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False))
    assert errors[1] < 0.8 * errors[0]


def test_phase_iterations_are_checked():
    with pytest.raises(ValueError, match="phase_iterations must be an int >= 0"):
        StftCodecConfig(phase="peak-locked", phase_iterations=-1)
    with pytest.raises(ValueError, match="needs phase = 'peak-locked'"):
        StftCodecConfig(phase="learned", phase_iterations=1)
    plain = StftCodecConfig(phase="peak-locked")
    refined = StftCodecConfig(phase="peak-locked", phase_iterations=2)
    # each iteration reaches one more FFT window (one latent frame at the defaults) each way
    assert refined.receptive_frames == plain.receptive_frames + 2


def _calibration_codec() -> tuple[StftCodec, torch.Tensor]:
    """A fitted linear codec with one phase iteration (the shipped decode) and its clips."""
    cfg = dataclasses.replace(LINEAR_CODEC, phase_iterations=1)
    codec = StftCodec(cfg)
    n = 32 * cfg.downsampling_ratio
    gen, t = torch.Generator().manual_seed(4), torch.arange(n)
    audio = torch.stack([0.2 * torch.sin(t * (0.15 + 0.1 * k))
                         + 0.05 * torch.randn(n, generator=gen) for k in range(8)])[:, None]
    codec.fit_linear_path(codec.log_magnitude(audio))
    return codec, audio


def test_calibration_matches_the_resynthesis_power_and_finds_a_known_tilt():
    """The fitted calibration brings the codec's resynthesis to the clips' mean power per bin,
    and a decoder made 0.7 (log-magnitude, 6 dB) too quiet in its upper half is found out: the
    calibration rises by that much there and stays where it was below. It changes the audio,
    never the peak-locked phase a stream carries."""
    from lmdm_export.calibration import LIMIT_DB, fit_calibration

    codec, audio = _calibration_codec()
    before = fit_calibration(codec, audio)
    assert before.mean_error_db[-1] < 0.25 * before.mean_error_db[0]
    assert before.mean_error_db[-1] < 0.3
    reference = codec.decoder.calibration.clone()
    half = codec.config.bins // 2
    with torch.no_grad():
        codec.decoder.linear.bias[half:] -= 0.7
        codec.decoder.calibration.zero_()
    fit_calibration(codec, audio)
    shift = codec.decoder.calibration - reference
    assert float(shift[half:].median()) == pytest.approx(0.7, abs=0.05)
    assert float(shift[:half].abs().median()) < 0.02
    assert float(codec.decoder.calibration.abs().max()) <= LIMIT_DB / 20 * math.log(10) + 1e-6

    z = codec.encode(audio[:1], sample=False)
    args = (torch.zeros(1, codec.config.bins), torch.zeros(1, dtype=torch.int64))
    with torch.no_grad():
        calibrated, phases = codec.decode_with_phase(z, *args)
        codec.decoder.calibration.zero_()
        plain, plain_phases = codec.decode_with_phase(z, *args)
    assert torch.equal(phases, plain_phases)
    assert not torch.allclose(calibrated, plain)


def test_a_release_without_a_calibration_decodes_uncalibrated():
    """Codec weights saved before the calibration existed load with a zero one."""
    codec, _ = _calibration_codec()
    state = {k: v for k, v in codec.state_dict().items() if k != "decoder.calibration"}
    codec.decoder.calibration.fill_(1.0)
    codec.load_state_dict(state)
    assert not codec.decoder.calibration.any()


def test_latents_stay_valid_when_only_the_calibration_differs():
    """Latent shards record the codec's fingerprint; the decode-time calibration changes no
    latent, so it does not enter it (a weight does)."""
    from lmdm_export.train.latents import codec_fingerprint

    codec, _ = _calibration_codec()
    before = codec_fingerprint(codec)
    with torch.no_grad():
        codec.decoder.calibration.fill_(0.3)
        assert codec_fingerprint(codec) == before
        codec.decoder.linear.bias[0] += 1e-3
    assert codec_fingerprint(codec) != before


def test_stft_codec_receptive_field_bounds_the_streaming_hold():
    """A latent frame changes no audio beyond ``receptive_frames`` frames to either side: the
    streaming decoder's held frames (the manifest's ``decoder_receptive_frames``) suffice."""
    cfg = StftCodecConfig()
    torch.manual_seed(0)
    codec = StftCodec(cfg).eval()
    with torch.no_grad():  # full-strength residual branches, as after training
        for module in codec.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(1.0)
    frames, j, r = 48, 24, cfg.downsampling_ratio
    z = torch.randn(1, cfg.latent_dim, frames)
    bumped = z.clone()
    bumped[..., j] += 1.0
    with torch.no_grad():
        diff = (codec.decode(bumped) - codec.decode(z)).abs()[0, 0]
    changed = torch.nonzero(diff > 0).flatten()
    reach = cfg.receptive_frames
    assert changed.min() >= (j - reach) * r and changed.max() < (j + 1 + reach) * r
    assert changed.max() >= (j + reach - 1) * r  # and the bound is tight within two frames


# -- the stages ----------------------------------------------------------------------------------


def test_every_stage_writes_a_release_and_a_log(pipeline):
    report = json.loads((pipeline / "codec" / "report.json").read_text())
    assert {"codec", "griffin_lim_mr_stft", "noise_mr_stft", "tonal_energy_real",
            "held_tones"} <= set(report)
    assert report["codec"]["mr_stft"] > 0
    # the organ tones' figure (drums left out): far above white noise's 0.01 even on these
    # 64 ms clips, shorter than the metric's 2048-point window
    assert 0.3 < report["tonal_energy_real"] <= 1 and 0 <= report["codec"]["tonal_energy"] <= 1
    assert set(report["held_tones"]["error_cents"]) == {"110", "261.63", "440", "987.77"}
    log = [json.loads(line) for line in (pipeline / "codec" / "log.jsonl").read_text().splitlines()]
    assert any("tonal_energy" in r.get("val", {}) for r in log)
    index = json.loads((pipeline / "latents" / "index.json").read_text())
    assert index["items"] == 8 and set(index["frames"]) == {"train", "val"}
    for stage in ("base", "lmdm", "arc"):
        payload = torch.load(pipeline / stage / "release.pt", weights_only=False)
        assert payload["stage"] == stage
        records = [json.loads(line) for line in (pipeline / stage / "log.jsonl").open()]
        assert any(r.get("event") == "replicas" and r["identical"] for r in records)
    base_log = [json.loads(line) for line in (pipeline / "base" / "log.jsonl").open()]
    assert any("val" in r for r in base_log)
    arc_steps = [json.loads(line) for line in (pipeline / "arc" / "log.jsonl").open()]
    arc_steps = [r for r in arc_steps if "phase" in r]
    assert [r["phase"] for r in arc_steps] == ["D", "G", "D"]  # warm-up, then "GD"
    assert all(r["spread"] > 0 for r in arc_steps)


def test_the_lmdm_stage_also_trains_the_enc_dec_variant(pipeline, tmp_path):
    common = dict(latents=str(pipeline / "latents"), codec=str(pipeline / "codec" /
                  "release.pt"), geometry=TINY_GEOMETRY, batch=2, warmup=1, val_every=1,
                  val_windows=2)
    train_lmdm(DiffusionTrainConfig(out=str(tmp_path / "ed"), pattern="enc-dec", steps=1,
                                    init=str(pipeline / "base" / "release.pt"), **common))
    payload = torch.load(tmp_path / "ed" / "release.pt", weights_only=False)
    assert payload["stage"] == "lmdm" and payload["pattern"] == "enc-dec"
    with pytest.raises(ValueError, match="block-causal"):
        train_arc(ArcTrainConfig(latents=str(pipeline / "latents"), out=str(tmp_path / "arc"),
                                 init=str(tmp_path / "ed" / "release.pt"),
                                 base=str(pipeline / "base" / "release.pt"), steps=1))


def test_bf16_mixed_precision_trains_close_to_fp32_and_releases_fp32(pipeline, tmp_path):
    """``precision = "bf16"``: the same seeded steps as fp32 end at a loss that differs (the
    forward passes ran in bfloat16) by little, the optimiser and the release stay fp32, and an
    ARC run with every term trains in it too; an unknown precision is refused by name."""
    common = dict(latents=str(pipeline / "latents"), codec=str(pipeline / "codec" /
                  "release.pt"), geometry=TINY_GEOMETRY, batch=2, warmup=1, val_every=5,
                  val_windows=2, init=str(pipeline / "base" / "release.pt"), steps=25,
                  timesteps="shifted-uniform")  # the loss is logged every 25 steps
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        train_lmdm(DiffusionTrainConfig(out=str(out), precision=precision, **common))
        log = [json.loads(line) for line in (out / "log.jsonl").open()]
        losses[precision] = [r["loss"] for r in log if "loss" in r]
        payload = torch.load(out / "release.pt", weights_only=False)
        assert {v.dtype for v in payload["dit"].values()} == {torch.float32}
    assert losses["fp32"] != losses["bf16"]
    assert len(losses["bf16"]) == 1 and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)
    steps = _tiny_arc(pipeline, tmp_path / "arc", precision="bf16", flow_weight=1.0,
                      moment_weight=1.0)
    assert all(math.isfinite(r["loss_d"] if r["phase"] == "D" else r["loss_g"]) for r in steps)
    assert math.isfinite(steps[1]["loss_flow"]) and math.isfinite(steps[1]["loss_moment"])
    with pytest.raises(ValueError, match="precision 'fp16'"):
        DiffusionTrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision 'fp16'"):
        ArcTrainConfig(precision="fp16")


def test_guided_rollout_combines_the_two_branches_and_keeps_gradients(pipeline):
    """``rollout_cfg``: a guided one-step chunk is ``x - (v_u + w (v_c - v_u))`` with the
    branches of two unguided rollouts on the same noise (the prompt, then zeros); a guided
    rollout of several chunks (the later ones through the doubled cache, the last step outside
    the interval on the conditional half) keeps gradients into the generator."""
    from lmdm_export.release import load_release_model
    from lmdm_export.rollout import Guidance
    from lmdm_export.sampling import logsnr_schedule
    from lmdm_export.train.arc import _conditioning, self_rollout

    model, _ = load_release_model(pipeline / "lmdm" / "release.pt")
    with torch.no_grad():  # two tiny steps leave the zero-initialised prompt paths near zero
        for p in model.dit.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    s, c = TINY_GEOMETRY.context_frames, TINY_GEOMETRY.block_frames
    metadata = [{"prompt": p, "seconds_total": 2.0} for p in ("organ tones", "noise bursts")]
    keep = torch.zeros(2, dtype=torch.bool)
    cross, glob = _conditioning(model, metadata, keep)
    context = torch.randn(2, model.config.dit.io_channels, s, generator=torch.Generator()
                          .manual_seed(1))
    ts = logsnr_schedule(6)

    def rollout(ks, cross, guidance=None, grad=False):
        return self_rollout(model, cross, glob, context, ks, ts, torch.Generator().manual_seed(2),
                            grad=grad, guidance=guidance)

    with torch.no_grad():
        # the rollout's first draw from its generator (seed 2) is the chunk's starting noise
        x = torch.randn(2, model.config.dit.io_channels, c, generator=torch.Generator()
                        .manual_seed(2))
        v_c, v_u = x - rollout([1], cross), x - rollout([1], torch.zeros_like(cross))
        guided = rollout([1], cross, Guidance(scale=3.0))
    torch.testing.assert_close(guided, x - (v_u + 3.0 * (v_c - v_u)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(guided, x - v_c, atol=1e-3)

    chunks = rollout([2, 5, 1], cross, Guidance(scale=3.0, interval=(0.45, 1.0)), grad=True)
    assert chunks.shape == (2, model.config.dit.io_channels, 3 * c)
    chunks.square().mean().backward()
    grads = [p.grad for p in model.dit.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    with pytest.raises(ValueError, match="rollout_cfg"):
        ArcTrainConfig(rollout_cfg=0.5)


def test_arc_flow_anchor_trains_on_the_windows_ending_at_each_chunk(pipeline, tmp_path,
                                                                  monkeypatch):
    """``flow_weight``: generator steps add the LMDM stage's loss on the real windows (context +
    target block) that end at each rolled-out chunk; discriminator steps do not."""
    from lmdm_export.release import load_release_model
    from lmdm_export.train import arc

    model, _ = load_release_model(pipeline / "lmdm" / "release.pt")
    s, c = TINY_GEOMETRY.context_frames, TINY_GEOMETRY.block_frames
    x = torch.randn(2, model.config.dit.io_channels, s + 3 * c)
    seen = {}
    make_batch = arc.make_batch

    def spy(windows, captions, stage, *args, **kwargs):
        seen.update(windows=windows, captions=captions, stage=stage)
        return make_batch(windows, captions, stage, *args, **kwargs)

    monkeypatch.setattr(arc, "make_batch", spy)
    cfg = ArcTrainConfig(flow_weight=1.0)
    loss = arc.flow_loss(model, x, ["a", "b"], cfg, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in model.dit.parameters())
    assert seen["stage"] == "lmdm" and seen["captions"] == ["a", "b"] * 3
    expected = torch.cat([x[..., j * c:j * c + s + c] for j in range(3)])
    torch.testing.assert_close(seen["windows"], expected)
    assert seen["windows"].shape[-1] == s + c
    torch.testing.assert_close(seen["windows"][4:], x[..., -(s + c):])  # the last chunk's
    monkeypatch.undo()

    steps = _tiny_arc(pipeline, tmp_path / "arc", flow_weight=0.5)
    assert [("loss_flow" in r) for r in steps] == [r["phase"] == "G" for r in steps]
    assert all(r["loss_flow"] > 0 for r in steps if r["phase"] == "G")
    with pytest.raises(ValueError, match="flow_weight"):
        ArcTrainConfig(flow_weight=-1.0)
    with pytest.raises(ValueError, match="timesteps"):
        ArcTrainConfig(flow_timesteps="cosine")


def test_arc_moment_hold_measures_the_rollouts_channel_statistics_against_the_data(pipeline,
                                                                                  tmp_path):
    """``moment_weight``: zero for rollouts with the data's per-channel mean and spread, the
    squared offsets otherwise; logged in generator steps only."""
    from lmdm_export.train.arc import moment_loss

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(3, 4, 50, generator=gen)
    assert float(moment_loss(real.clone(), real)) == 0
    reordered = real[..., torch.randperm(50, generator=gen)]
    assert float(moment_loss(reordered, real)) < 1e-10  # blind to the order of frames
    shuffled = real.flatten(1)[:, torch.randperm(200, generator=gen)].reshape(3, 4, 50)
    mean, std = real.mean((0, 2)), real.std((0, 2))
    wide = (real - mean[:, None]) * 1.5 + mean[:, None] + 0.2
    torch.testing.assert_close(moment_loss(wide, real),
                               (0.04 + (0.5 * std).square()).mean())
    assert float(moment_loss(shuffled, real)) > 0  # channels mixed: their statistics move
    fake = wide.clone().requires_grad_()
    moment_loss(fake, real).backward()
    assert float(fake.grad.abs().sum()) > 0

    steps = _tiny_arc(pipeline, tmp_path / "arc", moment_weight=1.0)
    assert [("loss_moment" in r) for r in steps] == [r["phase"] == "G" for r in steps]
    with pytest.raises(ValueError, match="moment_weight"):
        ArcTrainConfig(moment_weight=-0.1)


def test_codec_normalises_latents_to_unit_scale(pipeline):
    codec = load_codec(pipeline / "codec" / "release.pt")
    from lmdm_export.train.latent_data import load_latents

    data = load_latents(pipeline / "latents", "train")
    std = data.latents.astype(np.float32).std(0)
    assert np.all((std > 0.3) & (std < 3)), std
    assert codec.latent_std.min() > 0


@pytest.mark.parametrize("latent_scale", ["channel", "global", "floor"])
def test_a_linear_codec_is_fitted_without_gradient_steps(pipeline, tmp_path, latent_scale):
    """configs/train/codec-linear.toml's recipe (``steps = 0``): the principal components are
    fitted, the latent statistics folded, the release and report written; no training
    checkpoint. ``global`` scales all channels alike, so the components keep their order of
    variance; ``floor`` scales the channels from ``latent_floor_channel`` on alike, by that
    channel's spread, and those before it by their own."""
    cfg = CodecTrainConfig(corpus=str(pipeline / "corpus"), out=str(tmp_path / "codec"),
                           codec=LINEAR_CODEC, steps=0, loss_resolutions=(64, 128),
                           kl_weight=0.0, sample_latents=False, val_clips=2, val_frames=16,
                           stats_clips=4, linear_fit_clips=6, latent_scale=latent_scale,
                           latent_floor_channel=2)
    train_codec(cfg)
    codec = load_codec(tmp_path / "codec" / "release.pt")
    assert codec.config == LINEAR_CODEC and codec.latent_std.min() > 0
    report = json.loads((tmp_path / "codec" / "report.json").read_text())
    raw = report["latent_std_raw"]  # each channel's own spread, whatever the scale
    assert len(set(raw)) == len(raw) == 4
    scales = [round(float(s), 3) for s in codec.latent_std]
    want = {"channel": raw, "global": [round(float(np.sqrt(np.mean(np.square(raw)))), 3)] * 4,
            "floor": [max(s, raw[2]) for s in raw]}[latent_scale]
    assert scales == pytest.approx(want, abs=2e-3)
    assert report["codec"]["mr_stft"] > 0
    assert not (tmp_path / "codec" / "checkpoint.pt").exists()
    encode_corpus(tmp_path / "codec" / "release.pt", pipeline / "corpus", tmp_path / "latents",
                  min_frames=32)
    from lmdm_export.train.latent_data import load_latents

    latents = load_latents(tmp_path / "latents", "train").latents.astype(np.float32)
    assert latents.shape[-1] == LINEAR_CODEC.latent_dim and np.isfinite(latents).all()
    std = latents.std(0)
    if latent_scale == "global":  # the first principal component varies most
        assert std[0] == std.max() and std[0] > 1.5 * std[-1]
    with pytest.raises(ValueError, match="latent_scale must be one of"):
        dataclasses.replace(cfg, latent_scale="per-bin")
    with pytest.raises(ValueError, match="latent_floor_channel must be a channel"):
        dataclasses.replace(cfg, latent_scale="floor", latent_floor_channel=4)


def test_latent_shards_are_read_once(pipeline, monkeypatch):
    """Every access to an npz member decompresses it anew; reading the latents per item held a
    copy of the shard per item (24 GB on the default corpus)."""
    from lmdm_export.train.latent_data import load_latents

    reads = []
    original = np.lib.npyio.NpzFile.__getitem__

    def counting(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", counting)
    data = load_latents(pipeline / "latents", "train")
    shards = json.loads((pipeline / "latents" / "index.json").read_text())["shards"]
    assert len(data) > len(shards) and reads.count("latents") == len(shards)


def test_label_balance_moves_windows_from_long_labels_to_short_ones():
    """Two labels, 90 and 10 frames of audio: at balance 0 windows follow the audio (0.9 /
    0.1), at 1 each label gets half, at 0.5 the square roots (0.75 / 0.25); within a label
    items stay weighted by length, and sampled windows follow the weights."""
    from lmdm_export.train.latent_data import LatentSet, WindowSampler, item_weights

    lengths = [60, 30, 6, 4]
    data = LatentSet(np.zeros((sum(lengths), 2), np.float16),
                     np.concatenate(([0], np.cumsum(lengths))), ["a", "b", "c", "d"],
                     ["long", "long", "short", "short"], ["p", "q", "r", "s"])
    for balance, long_share in ((0.0, 0.9), (1.0, 0.5), (0.5, 3 / 4)):
        p = item_weights(data, balance)
        assert p.sum() == pytest.approx(1.0)
        assert p[:2].sum() == pytest.approx(long_share)
        assert p[0] / p[1] == pytest.approx(2.0) and p[2] / p[3] == pytest.approx(1.5)
    _, idx = WindowSampler(data, 4, seed=0, label_balance=1.0).batch(4000)
    assert np.mean(idx >= 2) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="label_balance"):
        item_weights(data, 1.5)


def test_timestep_shift_moves_training_to_high_noise_and_composes():
    """shift 1 leaves both modes as they were; shift 3 moves the logit-normal median from 0.5 to
    0.75 (3 * 0.5 / (1 + 2 * 0.5)); two shifts compose into one with the product sigma; a
    non-positive shift is refused."""
    from lmdm_export.train.diffusion import sample_t, shift_t

    for mode in ("logit-normal", "shifted-uniform"):
        plain = sample_t(4000, mode, 96, torch.Generator().manual_seed(0))
        same = sample_t(4000, mode, 96, torch.Generator().manual_seed(0), 1.0)
        assert torch.equal(plain, same)
        shifted = sample_t(4000, mode, 96, torch.Generator().manual_seed(0), 3.0)
        assert torch.allclose(shifted, shift_t(plain, 3.0))
        assert bool(((shifted > 0) & (shifted < 1)).all())
    median = sample_t(4000, "logit-normal", 96, torch.Generator().manual_seed(0), 3.0).median()
    assert float(median) == pytest.approx(0.75, abs=0.02)
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(shift_t(shift_t(t, 2.0), 1.5), shift_t(t, 3.0))
    with pytest.raises(ValueError, match="timestep_shift"):
        DiffusionTrainConfig(timestep_shift=0.0)


def test_resume_continues_exactly_where_the_run_stopped(pipeline, tmp_path):
    """Two steps, stop, resume for two more == four steps in one go (model, EMA, optimiser,
    data order and every RNG come back from the checkpoint)."""
    common = dict(latents=str(pipeline / "latents"), codec=str(pipeline / "codec" /
                  "release.pt"), geometry=TINY_GEOMETRY, batch=2, warmup=1, val_every=100,
                  val_windows=2)
    train_base(DiffusionTrainConfig(out=str(tmp_path / "once"), steps=4, **common))
    train_base(DiffusionTrainConfig(out=str(tmp_path / "twice"), steps=2, **common))
    train_base(DiffusionTrainConfig(out=str(tmp_path / "twice"), steps=4, **common), resume=True)
    once = torch.load(tmp_path / "once" / "checkpoint.pt", weights_only=False)
    twice = torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=False)
    assert once["step"] == twice["step"] == 4
    for name, value in once["model"].items():
        assert torch.equal(value, twice["model"][name]), name


def test_a_run_refuses_to_overwrite_or_to_resume_nothing(pipeline, tmp_path):
    common = dict(latents=str(pipeline / "latents"), codec=str(pipeline / "codec" /
                  "release.pt"), geometry=TINY_GEOMETRY, batch=2, steps=1, val_windows=2)
    with pytest.raises(FileNotFoundError, match="--resume"):
        train_base(DiffusionTrainConfig(out=str(tmp_path / "new"), **common), resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train_base(DiffusionTrainConfig(out=str(pipeline / "base"), **common))


def test_latents_of_another_codec_are_refused(pipeline, tmp_path):
    """A retrained codec makes old latent shards stale: the diffusion stages say so."""
    payload = torch.load(pipeline / "codec" / "release.pt", weights_only=False)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1e-3
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="re-encode"):
        train_base(DiffusionTrainConfig(latents=str(pipeline / "latents"),
                                        codec=str(tmp_path / "other.pt"),
                                        out=str(tmp_path / "base"), geometry=TINY_GEOMETRY,
                                        batch=2, steps=1, val_windows=2))


def test_the_train_command_rejects_unknown_config_keys(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('latents = "x"\nstepz = 3\n')
    result = subprocess.run([sys.executable, "-m", "lmdm_bridge", "train", "base", "--config",
                             str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "stepz" in result.stderr


@pytest.mark.parametrize(("dtype", "phase_iterations"),
                         [("fp32", None), ("fp32", 1), ("int8-all", None)])
def test_an_lmdm_release_exports_to_a_bundle_that_verifies(pipeline, tmp_path, dtype,
                                                            phase_iterations):
    """fp32 checks ONNX == torch tightly (the codec's DFT-convolution form included, with and
    without Griffin-Lim phase iterations); int8-all, the shipping form, stays within verify's
    int8 tolerance."""
    out = tmp_path / "bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # with phase iterations also another noise schedule and the embedded default's sampler,
    # which verify follows
    extra = [] if phase_iterations is None else ["--phase-iterations", str(phase_iterations),
                                                 "--logsnr-min", "-3", "--logsnr-max", "1"]
    sampler = "ab2" if phase_iterations else "pingpong"
    for args in (["export", "--checkpoint", str(pipeline / "arc" / "release.pt"), "--out",
                  str(out), "--sampler", sampler, "--steps", "4", "--dtype", dtype, *extra],
                 ["verify", str(out)]):
        result = subprocess.run([sys.executable, "-m", "lmdm_bridge", *args],
                                capture_output=True, text=True, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["geometry"]["sample_rate"] == RATE
    codec = dataclasses.replace(TINY_CODEC, phase_iterations=phase_iterations or 0)
    assert manifest["geometry"]["decoder_receptive_frames"] == codec.receptive_frames
    assert manifest["model"]["phase_iterations"] == (phase_iterations or 0)
    schedule = (-3.0, 1.0) if phase_iterations else (-6.0, 2.0)
    assert (manifest["sampler"]["logsnr_min"], manifest["sampler"]["logsnr_max"]) == schedule
    assert manifest["sampler"]["name"] == sampler
    source = torch.load(out / "source" / "release.pt", weights_only=False)
    assert source["codec"]["config"]["phase_iterations"] == (phase_iterations or 0)
    if phase_iterations:  # the training release has none: verify applies the manifest's
        result = subprocess.run([sys.executable, "-m", "lmdm_bridge", "verify", str(out),
                                 "--checkpoint", str(pipeline / "arc" / "release.pt")],
                                capture_output=True, text=True, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    if dtype == "fp32":
        _streamed_decode_equals_the_whole_decode(out)
    else:  # the text encoder quantized per output channel, the DiT per matrix (writer._convert)
        assert _int8_scale_sizes(out / "text_encoder.onnx") - {1}
        assert _int8_scale_sizes(out / "bc_cached.onnx") == {1}


def test_a_release_on_a_linear_codec_exports_streams_and_verifies(pipeline, tmp_path):
    """The default model's kind of codec through export and verify: the tiny LMDM's release
    with its codec swapped for a linear one of the same latent width (export and verify do not
    ask which codec made the training latents), decoded with two phase iterations."""
    payload = torch.load(pipeline / "lmdm" / "release.pt", weights_only=False)
    codec = StftCodec(LINEAR_CODEC)
    r = LINEAR_CODEC.downsampling_ratio
    audio = 0.2 * torch.sin(torch.arange(32 * r) * 0.21)[None, None] + 0.05 * torch.randn(
        2, 1, 32 * r, generator=torch.Generator().manual_seed(4))
    codec.fit_linear_path(codec.log_magnitude(audio))
    payload["codec"] = {"config": dataclasses.asdict(LINEAR_CODEC),
                        "state_dict": codec.state_dict()}
    torch.save(payload, tmp_path / "release.pt")
    out = tmp_path / "bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (["export", "--checkpoint", str(tmp_path / "release.pt"), "--out", str(out),
                  "--sampler", "ab2", "--steps", "4", "--phase-iterations", "2"],
                 ["verify", str(out)]):
        result = subprocess.run([sys.executable, "-m", "lmdm_bridge", *args],
                                capture_output=True, text=True, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["geometry"]["decoder_receptive_frames"] == dataclasses.replace(
        LINEAR_CODEC, phase_iterations=2).receptive_frames == 5  # 2.5 windows of 2 frames
    _streamed_decode_equals_the_whole_decode(out)


def _int8_scale_sizes(graph: Path) -> set[int]:
    """Sizes of the weight scales dynamic quantization added (1: one scale per matrix)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return {int(np.prod(t.dims)) for t in model.graph.initializer
            if t.name.endswith("_scale") and t.data_type == onnx.TensorProto.FLOAT}


def _streamed_decode_equals_the_whole_decode(bundle_dir: Path) -> None:
    """The peak-locked decoder's phase runs on across the streaming decoder's seams: blocks
    pushed one by one give the one-piece decode, delayed by the latency (to float rounding of
    the running phase sum); restarting the phase at every decode, as a stateless decoder
    would, leaves a far larger error."""
    from lmdm_bridge.bundle import Bundle
    from lmdm_bridge.decode import StreamingDecoder, whole_decode_feeds

    bundle = Bundle(bundle_dir)
    spec = bundle.manifest.graph("vae_decoder")
    assert {t.name for t in spec.inputs} == {"latents", "phase", "phase_frame"}
    g = bundle.manifest.geometry
    c, blocks = g.block_frames, 12
    latents = np.random.default_rng(5).standard_normal(
        (1, g.latent_channels, c * blocks)).astype(np.float32)
    whole = bundle.run("vae_decoder", **whole_decode_feeds(spec, latents))["audio"][0]
    decoder = StreamingDecoder(bundle)
    streamed = np.concatenate([decoder.push(latents[0, :, k * c:(k + 1) * c])
                               for k in range(blocks)], axis=-1)
    delay = decoder.latency
    settled = slice(delay + c * g.downsampling_ratio, streamed.shape[-1])
    error = streamed[:, settled] - whole[:, settled.start - delay:settled.stop - delay]
    rms = np.sqrt(np.mean(whole ** 2))
    assert np.sqrt(np.mean(error ** 2)) < 1e-4 * rms

    def restart(phases, start_frame, end_frame):  # the next decode starts again from phase 0
        decoder._phase[:] = 0.0
        window = min(end_frame - start_frame, decoder.left + decoder.hold)
        decoder._phase_at = (end_frame - window) * decoder._spectral

    decoder._carry_phase = restart
    decoder.reset()
    restarted = np.concatenate([decoder.push(latents[0, :, k * c:(k + 1) * c])
                                for k in range(blocks)], axis=-1)
    error = restarted[:, settled] - whole[:, settled.start - delay:settled.stop - delay]
    # 30x the carried phase's bound; Griffin-Lim iterations repair part of a restart (0.9 % of
    # the RMS with one, against over 3 % without)
    assert np.sqrt(np.mean(error ** 2)) > 3e-3 * rms


def _decoder_gan_config(pipeline: Path, out: Path, **changes) -> CodecTrainConfig:
    """A tiny decoder fine-tune of the pipeline's codec against the discriminator."""
    settings = dict(corpus=str(pipeline / "corpus"), out=str(out), codec=TINY_CODEC, steps=3,
                    batch=2, crop_frames=16, warmup=1, val_every=3, loss_resolutions=(64, 128),
                    kl_weight=0.0, sample_latents=False, val_clips=2, val_frames=16,
                    stats_clips=4, init=str(pipeline / "codec" / "release.pt"),
                    freeze_encoder=True, adversarial_weight=0.1, feature_weight=0.5,
                    disc_width=8, disc_layers=3, disc_frames=12, lr=1e-2, latent_noise=0.2)
    return CodecTrainConfig(**{**settings, **changes})


def test_a_decoder_fine_tuned_against_the_discriminator_keeps_the_latents(pipeline, tmp_path):
    """With the encoder frozen only the decoder's weights move: encoder, linear encoder and
    latent statistics stay bit for bit, so the diffusion stages' latents stay valid; the log
    carries the discriminator's figures and the checkpoint its state."""
    release = train_codec(_decoder_gan_config(pipeline, tmp_path / "gan"))
    before = torch.load(pipeline / "codec" / "release.pt", weights_only=False)["state_dict"]
    after = torch.load(release, weights_only=False)["state_dict"]
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("decoder.") for k in moved), moved
    assert "decoder.linear.weight" in moved  # the linear decoder trains too
    records = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").open()]
    last = [r for r in records if r.get("step") == 3 and "reconstruction" in r]
    assert last and {"disc", "adv", "fm"} <= set(last[0])
    state = torch.load(tmp_path / "gan" / "checkpoint.pt", weights_only=False)
    assert {"discriminator", "discriminator_optimizer"} <= set(state)
    assert json.loads((tmp_path / "gan" / "report.json").read_text())["codec"]["mr_stft"] > 0


def test_a_decoder_fine_tune_resumes_exactly(pipeline, tmp_path):
    """Two steps, stop, resume for two more == four in one go: the discriminator, its
    optimiser, the random windows it saw and the latent noise come back from the checkpoint
    too."""
    train_codec(_decoder_gan_config(pipeline, tmp_path / "once", steps=4, val_every=100))
    train_codec(_decoder_gan_config(pipeline, tmp_path / "twice", steps=2, val_every=100))
    train_codec(_decoder_gan_config(pipeline, tmp_path / "twice", steps=4, val_every=100),
                resume=True)
    once = torch.load(tmp_path / "once" / "checkpoint.pt", weights_only=False)
    twice = torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=False)
    # bit for bit on the CPU; on a GPU to float noise (cuDNN's convolution gradients sum in an
    # order of their own; the losses logged match to every printed digit)
    atol = 1e-5 if torch.cuda.is_available() else 0.0
    for part in ("model", "discriminator"):
        for name, value in once[part].items():
            torch.testing.assert_close(value, twice[part][name], rtol=0.0, atol=atol,
                                       msg=f"{part} {name}")


def test_decoder_fine_tune_settings_are_checked(pipeline, tmp_path):
    with pytest.raises(ValueError, match="init"):
        _decoder_gan_config(pipeline, tmp_path / "x", init="", latent_noise=0.0)
    with pytest.raises(ValueError, match="latent statistics"):
        _decoder_gan_config(pipeline, tmp_path / "x", init="", freeze_encoder=False)
    with pytest.raises(ValueError, match="peak-locked"):
        _decoder_gan_config(pipeline, tmp_path / "x", freeze_encoder=False,
                            codec=dataclasses.replace(TINY_CODEC, phase="learned"))
    with pytest.raises(ValueError, match="decoder_width = 16 there, 24 here"):
        train_codec(_decoder_gan_config(pipeline, tmp_path / "x",
                                        codec=dataclasses.replace(TINY_CODEC, decoder_width=24)))
    assert not (tmp_path / "x" / "release.pt").exists()


def test_the_discriminator_reads_each_channel_and_sees_a_window():
    from lmdm_export.train.spectrogram_gan import SpectrogramDiscriminator, random_window

    disc = SpectrogramDiscriminator(bins=33, width=8, layers=4)
    logits, hidden = disc(torch.randn(3, 2 * 33, 10))  # two audio channels stacked
    assert logits.shape == (6, 1, 3, 10) and len(hidden) == 4  # 33 bins / 4 / 2 / 2
    with pytest.raises(ValueError, match="33 bins"):
        disc(torch.randn(1, 40, 10))
    real, fake = torch.arange(20.0).reshape(1, 1, 20), -torch.arange(20.0).reshape(1, 1, 20)
    a, b = random_window(real, fake, 8)
    assert a.shape[-1] == 8 and torch.equal(a, -b)  # the same frames of both
    assert random_window(real, fake, 30)[0] is real


def _cli(*args) -> subprocess.CompletedProcess:
    """``lmdm-bridge ARGS`` in a subprocess on one thread, from the repository root."""
    return subprocess.run([sys.executable, "-m", "lmdm_bridge", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_export_with_a_fine_tuned_decoder_verifies_with_that_codec(pipeline, tmp_path):
    """``export --codec`` swaps in a decoder fine-tuned on the model's frozen encoder; the
    manifest records its digest, so ``verify --checkpoint`` of the training release alone
    refuses (it would compare another decoder) and passes with the same ``--codec``. A codec
    whose encoder differs is refused, and nothing is written."""
    codec = train_codec(_decoder_gan_config(pipeline, tmp_path / "gan"))
    release = pipeline / "arc" / "release.pt"
    out = tmp_path / "bundle"
    result = _cli("export", "--checkpoint", release, "--codec", codec, "--out", out,
                 "--no-source-weights", "--steps", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    from lmdm_export.release import decoder_digest, load_release_model, replace_decoder

    model = replace_decoder(load_release_model(release)[0], codec)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["decoder_digest"] == decoder_digest(model)
    assert "decoder of" in manifest["model"]["source"]
    result = _cli("verify", out, "--checkpoint", release)
    assert result.returncode != 0 and "--codec" in result.stderr
    result = _cli("verify", out, "--checkpoint", release, "--codec", codec)
    assert result.returncode == 0, result.stdout + result.stderr

    payload = torch.load(codec, weights_only=False)
    payload["state_dict"]["encoder.linear.bias"] += 1e-3
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    result = _cli("export", "--checkpoint", release, "--codec", other, "--out",
                 tmp_path / "refused", "--no-source-weights")
    assert result.returncode != 0
    assert "encoder.linear.bias" in result.stderr and "freeze_encoder" in result.stderr
    assert not (tmp_path / "refused").exists()


def test_export_calibrates_the_decoder_on_a_corpus_and_verify_follows(pipeline, tmp_path):
    """``export --calibrate CORPUS`` fits the decoder's spectral calibration with the exported
    decode settings; the manifest records it, so ``verify --checkpoint`` of the uncalibrated
    training release rebuilds the same decoder. A missing corpus is a named error and writes
    nothing."""
    release = pipeline / "arc" / "release.pt"
    out = tmp_path / "bundle"
    result = _cli("export", "--checkpoint", release, "--out", out, "--steps", "4",
                 "--phase-iterations", "1", "--calibrate", pipeline / "corpus")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    calibration = manifest["model"]["calibration"]
    assert len(calibration) == TINY_CODEC.bins and any(calibration)
    assert "calibrated on" in manifest["model"]["source"]
    source = torch.load(out / "source" / "release.pt", weights_only=False)
    assert source["codec"]["state_dict"]["decoder.calibration"].tolist() == calibration
    for args in ([], ["--checkpoint", release]):
        result = _cli("verify", out, *args)
        assert result.returncode == 0, result.stdout + result.stderr

    result = _cli("export", "--checkpoint", release, "--out", tmp_path / "refused",
                 "--calibrate", tmp_path / "no-corpus")
    assert result.returncode != 0 and "render the corpus" in result.stderr
    assert not (tmp_path / "refused").exists()


def test_two_gloo_processes_end_with_identical_parameters(pipeline, tmp_path):
    """``torchrun`` with two CPU processes (gloo): both exit 0, and the replicas' parameter
    fingerprints, gathered at the end, are equal."""
    config = tmp_path / "ddp.toml"
    config.write_text(
        f'latents = "{pipeline / "latents"}"\ncodec = "{pipeline / "codec" / "release.pt"}"\n'
        f'out = "{tmp_path / "ddp"}"\nsteps = 3\nbatch = 2\nwarmup = 1\nval_every = 100\n'
        f"val_windows = 2\n[geometry]\nwidth = 32\ndepth = 2\nheads = 1\ncond_dim = 16\n"
        f"prompt_tokens = 8\ncontext_frames = 8\nblock_frames = 4\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29500 + os.getpid() % 1000), "-m", "lmdm_bridge", "train", "base",
         "--config", str(config)], capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").open()]
    start = next(r for r in records if r.get("event") == "start")
    assert start["world"] == 2
    replicas = next(r for r in records if r.get("event") == "replicas")
    assert len(replicas["fingerprints"]) == 2 and replicas["identical"]


def _tensor_devices(value) -> set[str]:
    """The device types of every tensor in a checkpoint or release payload."""
    if isinstance(value, torch.Tensor):
        return {value.device.type}
    if isinstance(value, dict):
        return set().union(*map(_tensor_devices, value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(*map(_tensor_devices, value))
    return set()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_stages_train_on_cuda_as_they_do_on_the_cpu(pipeline, tmp_path, monkeypatch):
    """On a GPU every stage trains on ``cuda`` while batches, noise and dropout are drawn on the
    CPU from the step's seeded generator and moved: the same seeded codec, base, LMDM and ARC
    runs on CUDA (fp32, TF32 off) and on the CPU log the same losses to float tolerance, and the
    CUDA run's checkpoints and releases hold CPU tensors, so they resume, export and train the
    next stage on a machine without a GPU. (CI has none; run on one with
    ``pytest tests/test_train.py -k cuda``.)"""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.cuda.reset_peak_memory_stats()
    corpus = pipeline / "corpus"
    logs = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        with monkeypatch.context() as m:
            if device == "cpu":
                m.setattr(torch.cuda, "is_available", lambda: False)
            train_codec(CodecTrainConfig(
                corpus=str(corpus), out=str(out / "codec"), codec=TINY_CODEC, steps=3, batch=2,
                crop_frames=16, warmup=1, val_every=3, loss_resolutions=(64, 128),
                kl_weight=0.0, sample_latents=False, val_clips=2, val_frames=16, stats_clips=4,
                linear_fit_clips=6))
            # the shared latents, so the diffusion stages' comparison is theirs alone
            common = dict(latents=str(pipeline / "latents"),
                          codec=str(pipeline / "codec" / "release.pt"), geometry=TINY_GEOMETRY,
                          batch=2, warmup=1, val_every=2, val_windows=2, steps=4)
            train_base(DiffusionTrainConfig(out=str(out / "base"), **common))
            train_lmdm(DiffusionTrainConfig(out=str(out / "lmdm"), timesteps="shifted-uniform",
                                            init=str(out / "base" / "release.pt"), **common))
            train_arc(ArcTrainConfig(latents=str(pipeline / "latents"), out=str(out / "arc"),
                                     init=str(out / "lmdm" / "release.pt"),
                                     base=str(out / "base" / "release.pt"), steps=3, batch=2,
                                     rollout_chunks=2, feature_block=1, head_width=8,
                                     disc_warmup=1))
        if device == "cuda":  # the runs did train on the GPU
            assert torch.cuda.max_memory_allocated() > 0
        logs[device] = {stage: [json.loads(line) for line in (out / stage / "log.jsonl").open()]
                        for stage in ("codec", "base", "lmdm", "arc")}
        for stage in ("codec", "base", "lmdm", "arc"):
            assert (out / stage / "release.pt").exists()
            for path in (out / stage).glob("*.pt"):
                assert _tensor_devices(torch.load(path, weights_only=False)) == {"cpu"}, path

    # The codec's training loss (its validation figures go through the peak-locked phase, whose
    # peak picks turn float noise into different audio); the diffusion stages' validation loss.
    codec = [[r[k] for r in logs[device]["codec"] if "reconstruction" in r
              for k in ("reconstruction", "grad_norm")] for device in ("cuda", "cpu")]
    assert len(codec[1]) == 2 and codec[0] == pytest.approx(codec[1], rel=1e-3)
    for stage in ("base", "lmdm"):
        vals = [[r["val"]["mean"] for r in logs[device][stage] if "val" in r]
                for device in ("cuda", "cpu")]
        assert len(vals[1]) == 2 and vals[0] == pytest.approx(vals[1], rel=1e-3), stage
    arc = [[r for r in logs[device]["arc"] if "phase" in r] for device in ("cuda", "cpu")]
    assert [r["phase"] for r in arc[0]] == [r["phase"] for r in arc[1]] == ["D", "G", "D"]
    for cuda, cpu in zip(*arc, strict=True):
        loss = "loss_d" if cpu["phase"] == "D" else "loss_g"
        assert cuda[loss] == pytest.approx(cpu[loss], rel=1e-2, abs=1e-4), cpu["phase"]


def test_cosine_schedule_warms_up_then_decays():
    lrs = [loop.cosine_lr(s, base=1.0, warmup=10, total=100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[99] < 0.1 and all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
