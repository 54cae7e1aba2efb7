"""``lmdm-bridge eval codec``: what a peak-locked STFT codec costs in Fréchet distance, and
which half of it.

``eval run`` reports real set B through each bundle's autoencoder (the ceiling a generator
reaches with perfect latents). This splits that figure for a trained
:class:`~lmdm_export.model.stft_codec.StftCodec` (its torch release, so its spectra are at
hand): real set B, resynthesised four ways, each scored against set A like generated clips:

* **STFT round trip**: the true magnitudes with the true phase; the analysis-synthesis alone
  (it should equal real-vs-real);
* **peak-locked phase**: the true magnitudes with the codec's phase rule (each bin advancing at
  its spectral peak's frequency): the ceiling of the phase model;
* **codec magnitudes**: the decoded magnitudes with the true phase: the cost of the magnitude
  model;
* **codec**: encode and decode, both costs together;
* with ``phase_iterations`` N > 0, two more rows: the true magnitudes and the codec, each with the
  peak-locked phase refined by N iterations of fast Griffin-Lim (what ``export
  --phase-iterations N`` builds into the decoder graph).

With ``calibrate`` (a corpus) each decoder is first calibrated as ``export --calibrate`` would
for its phase iterations, so the codec rows match a calibrated bundle's codec row in ``eval
run``; the rows with the true magnitudes never pass through the decoder and do not change, and
``codec_magnitudes`` keeps the true phase, so its calibration (fitted with the peak-locked one)
is only indicative there.

The reference sets are ``eval run``'s (same corpus, seed and clip counts), so the figures sit
beside its table; each row also gives the clips' median spectral motion
(:mod:`.motion`) beside real set B's. Writes ``codec.json`` to the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lmdm_export.calibration import calibrate
from lmdm_export.eval.classifier import classify, load_classifier
from lmdm_export.eval.clips import through_codec
from lmdm_export.eval.motion import spectral_motion
from lmdm_export.eval.run import EvalConfig, _fd, _references
from lmdm_export.model.stft_codec import StftCodec
from lmdm_export.train.codec import load_codec

log = logging.getLogger(__name__)

WAYS = ("stft_round_trip", "peak_locked_phase", "codec_magnitudes", "codec")


@dataclass(frozen=True)
class CodecCeilingConfig:
    codec: str = "runs/codec/release.pt"
    classifier: str = "runs/classifier/classifier.pt"
    corpus: str = "data/corpus"
    out: str = "runs/eval-codec"
    clips: int = 16  # real clips per label and per reference set
    seed: int = 0
    phase_iterations: int = 0  # > 0: also the two ways with Griffin-Lim refinement
    # A rendered corpus: each decoder variant's spectral calibration is fitted on its train split
    # with that variant's phase iterations, as ``export --calibrate`` does (the fit depends on
    # the decode settings); None keeps the release's (a training release's is zero).
    calibrate: str | None = None


def resynthesise(codec: StftCodec, audio: torch.Tensor, way: str) -> torch.Tensor:
    """``audio (B, C, N)``, N a multiple of the codec's downsampling ratio -> the same audio
    resynthesised one of :data:`WAYS`."""
    if way == "codec":
        return codec.decode(codec.encode(audio, sample=False))
    if way == "codec_magnitudes":
        logmag, _ = codec.decoder(codec._denormalise(codec.encode(audio, sample=False)))
        logmag = codec.calibrated(logmag)
    else:
        logmag = codec.log_magnitude(audio)
    if way == "peak_locked_phase":
        return codec.consistent_inverse(logmag, codec.peak_locked_phase(logmag)
                                        + codec.zero_phase_shift)
    if way not in ("stft_round_trip", "codec_magnitudes"):
        raise ValueError(f"unknown resynthesis {way!r}: use one of {', '.join(WAYS)}")
    re, im = codec.spectrum(audio)
    return codec.inverse(logmag, torch.atan2(im, re).flatten(1, 2))  # the true phase


def _through(codec: StftCodec, clips: np.ndarray, rate: int, way: str) -> np.ndarray:
    """Mono ``clips (n, samples)`` at ``rate`` -> resynthesised at ``rate``, same shape."""
    cfg = codec.config
    return through_codec(clips, rate, cfg.sample_rate, cfg.audio_channels,
                         cfg.downsampling_ratio,
                         lambda audio: resynthesise(codec, torch.from_numpy(audio), way)[0].numpy())


@torch.no_grad()
def codec_ceiling(cfg: CodecCeilingConfig) -> dict:
    """Run the resyntheses; writes ``codec.json`` to ``cfg.out`` and returns it."""
    model = load_classifier(cfg.classifier)
    spec = model.spec
    trained = load_codec(cfg.codec)
    if trained.config.phase != "peak-locked":
        raise ValueError(f"{cfg.codec} is not a peak-locked STFT codec (phase = "
                         f"{trained.config.phase!r}): eval run's codec row measures any codec")

    def variant(iterations: int) -> StftCodec:
        codec = StftCodec(dataclasses.replace(trained.config, phase_iterations=iterations))
        codec.load_state_dict(trained.state_dict())
        codec.eval()
        if cfg.calibrate:
            calibrate(codec, cfg.calibrate)
        return codec

    plain = variant(0)
    ways = [(way, way, plain) for way in WAYS]  # (row, resynthesis, codec)
    if cfg.phase_iterations:
        refined = variant(cfg.phase_iterations)
        ways += [(f"{way}+gl{cfg.phase_iterations}", way, refined)
                 for way in ("peak_locked_phase", "codec")]
    labels = list(spec.labels)
    run_cfg = EvalConfig(bundles=(), classifier=cfg.classifier, corpus=cfg.corpus,
                         clips=cfg.clips, seed=cfg.seed)
    refs = _references(run_cfg, labels, spec.clip_samples, spec.sample_rate,
                       {lab: cfg.clips for lab in labels})
    counts = {lab: min(cfg.clips, len(refs[lab].real_a), len(refs[lab].real_b))
              for lab in labels}
    emb_a = {lab: classify(model, refs[lab].real_a[:n])[1] for lab, n in counts.items()}
    emb_b = [classify(model, refs[lab].real_b[:n])[1] for lab, n in counts.items()]
    real_vs_real = _fd(emb_b, list(emb_a.values()))
    real_motion = float(np.median(np.concatenate([
        spectral_motion(refs[lab].real_b[:n], spec.sample_rate) for lab, n in counts.items()])))
    rows = {}
    for name, way, used in ways:
        clips = {lab: _through(used, refs[lab].real_b[:n], spec.sample_rate, way)
                 for lab, n in counts.items()}
        embs = {lab: classify(model, audio)[1] for lab, audio in clips.items()}
        fd = _fd(list(embs.values()), list(emb_a.values()))
        motion = float(np.median(np.concatenate([spectral_motion(audio, spec.sample_rate)
                                                 for audio in clips.values()])))
        rows[name] = {"fd": fd, "fd_ratio": fd / real_vs_real if real_vs_real else None,
                      "fd_per_label": {lab: _fd([embs[lab]], [emb_a[lab]]) for lab in labels},
                      "motion": motion}
        log.info("%-22s FD %.2f (x%.2f real-vs-real), spectral motion %.3f (real B %.3f)",
                 name, fd, rows[name]["fd_ratio"], motion, real_motion)
    report = {"config": asdict(cfg), "clips": sum(counts.values()),
              "real_vs_real_fd": real_vs_real, "motion_real": real_motion, "ways": rows}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
