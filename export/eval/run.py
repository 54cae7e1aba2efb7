"""``lmdm-bridge eval run``: prompt adherence, Fréchet distance, tonal energy, drift and speed of
one or more bundles against real validation audio.

Per label, ``clips`` clips of 3 s are generated from ``prompts`` different captions of that
label's validation pieces (train captions where a label has none), split evenly over the
prompts, and compared with two disjoint real reference sets of the same size (A and B, from
different pieces; :func:`lmdm_export.eval.clips.reference_sets`):

* **adherence**: the share of generated clips the classifier assigns to the prompted label;
* **FD**: Fréchet distance of the generated clips' embeddings to set A, pooled over labels and
  per label; beside it real-vs-real (B against A) and white-noise-vs-real (noise at the RMS of
  A's clips), always on the same clip counts, because FD's small-sample bias is large;
* **tonal energy**: median over the clips of tonal labels (drums and loops excluded);
* **drift**: for each of ``stream_labels``, ``streams`` streams of ``stream_minutes`` (each
  from its own seed, on the label's prompts in turn), cut into ``segment_seconds`` segments;
  adherence, FD and tonal energy per segment (pooled over all streams, FD against A with equal
  per-label counts), the first minute against the last, and FD's least-squares trend per minute
  over the segments with two standard errors: OLS over the segments, and over redrawn streams
  (:func:`lmdm_export.eval.trend.stream_bootstrap_error`, two or more streams per label). Every
  bundle after the first gets the same trend of its segments' FD minus the first bundle's
  (``paired_trend``). One stream per label gives 10 clips per label and segment, whose FD moves
  by several units from segment to segment; more streams narrow that noise;
* **speed**: real-time factor of each bundle over all of the above, decode included;
* **codec ceiling**: set B encoded and decoded by each bundle's own autoencoder, scored as
  generated clips are (adherence, FD to A, tonal energy): what the generator would reach with
  perfect latents, so the FD that the codec alone costs stands beside the bundle's.

The report is ``report.json`` plus ``report.md`` (:mod:`lmdm_export.eval.report`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmdm_export.eval.classifier import LabelClassifier, classify, load_classifier
from lmdm_export.eval.clips import cut_clips, reference_sets
from lmdm_export.eval.frechet import frechet_distance
from lmdm_export.eval.generate import BundleSource
from lmdm_export.eval.motion import spectral_motion
from lmdm_export.eval.report import markdown_report
from lmdm_export.eval.tonal import NON_TONAL_LABELS, tonal_energy
from lmdm_export.eval.trend import segment_trend, stream_bootstrap_error
from lmdm_export.train.corpus import Item, read_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    bundles: tuple[tuple[str, str], ...]  # (name, folder)
    classifier: str = "runs/classifier/classifier.pt"
    corpus: str = "data/corpus"
    out: str = "runs/eval"
    clips: int = 16  # generated clips per label (and per real reference set)
    prompts: int = 4  # different captions per label
    labels: tuple[str, ...] | None = None  # None: every label of the classifier
    stream_minutes: float = 5.0
    stream_labels: tuple[str, ...] = ("piano", "strings", "drums")
    streams: int = 1  # drift streams per stream label
    segment_seconds: float = 30.0
    seed: int = 0
    steps: int | None = None
    cfg: float | None = None
    cfg_interval: tuple[float, float] | None = None
    method: str | None = None
    providers: str = "cpu"
    threads: int | None = None


@dataclass
class LabelRef:
    """One label's real material: captions to prompt with and reference clip sets A and B."""

    label: str
    split: str  # "val", or "train" for labels without validation pieces
    captions: list[str]
    real_a: np.ndarray  # (n, samples)
    real_b: np.ndarray
    emb_a: np.ndarray | None = None  # (n, 64): their classifier embeddings
    emb_b: np.ndarray | None = None


@dataclass
class Scored:
    """Clips through the classifier: predictions (n,), embeddings (n, 64), tonal (n,), rms (n,),
    spectral motion (n,)."""

    pred: np.ndarray
    emb: np.ndarray
    tonal: np.ndarray
    rms: np.ndarray
    motion: np.ndarray


def _score(model: LabelClassifier, clips: np.ndarray, tonal: bool) -> Scored:
    pred, emb = classify(model, clips)
    ton = np.array([tonal_energy(c) for c in clips]) if tonal else np.zeros(0)
    return Scored(pred, emb, ton, np.sqrt((clips.astype(np.float64) ** 2).mean(axis=1)),
                  spectral_motion(clips, model.spec.sample_rate))


def _median(values: list[np.ndarray]) -> float | None:
    joined = np.concatenate(values) if values else np.zeros(0)
    return float(np.median(joined)) if len(joined) else None


def _fd(a: list[np.ndarray], b: list[np.ndarray]) -> float | None:
    a_all, b_all = np.concatenate(a), np.concatenate(b)
    return frechet_distance(a_all, b_all) if min(len(a_all), len(b_all)) >= 2 else None


def _references(cfg: EvalConfig, labels: list[str], clip_samples: int, sample_rate: int,
                needed: dict[str, int]) -> dict[str, LabelRef]:
    by_split: dict[str, list[Item]] = {}
    for split in ("val", "train"):
        try:
            by_split[split] = read_items(cfg.corpus, split)
        except ValueError:  # no items in that split
            by_split[split] = []
    refs = {}
    for i, label in enumerate(labels):
        split = "val" if any(it.label == label for it in by_split["val"]) else "train"
        items = [it for it in by_split[split] if it.label == label]
        if not items:
            raise ValueError(f"label {label!r} has no items in corpus {cfg.corpus}")
        if any(it.sample_rate != sample_rate for it in items):
            raise ValueError(f"corpus {cfg.corpus} is not at the classifier's rate "
                             f"{sample_rate} Hz")
        rng = np.random.default_rng(cfg.seed + i)
        captions = sorted({it.caption for it in items})
        captions = [captions[k] for k in rng.permutation(len(captions))][:cfg.prompts]
        a, b = reference_sets(items, clip_samples, needed[label], seed=cfg.seed + i)
        refs[label] = LabelRef(label, split, captions, a, b)
    return refs


def _noise_like(real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise clips with the RMS of each real clip."""
    noise = rng.standard_normal(real.shape).astype(np.float32)
    return noise * np.sqrt((real.astype(np.float64) ** 2).mean(axis=1, keepdims=True)
                           ).astype(np.float32)


def _generate_label(source: BundleSource, ref: LabelRef, n: int, clip_samples: int,
                    clip_seconds: float, seed: int) -> np.ndarray:
    """``n`` clips of ``ref.label``: ceil(n / prompts) consecutive clips per caption."""
    per_prompt = math.ceil(n / len(ref.captions))
    clips = []
    for k, caption in enumerate(ref.captions):
        if sum(len(c) for c in clips) >= n:
            break
        audio = source.render(caption, per_prompt * clip_seconds, seed=seed + k)
        clips.append(cut_clips(audio, clip_samples))
    return np.concatenate(clips)[:n]


@dataclass
class DriftStreams:
    """One bundle's drift streams as their error over redrawn streams needs them."""

    embeddings: dict[str, list[np.ndarray]]  # label -> one (clips, 64) array per stream
    real: dict[str, np.ndarray]  # label -> real set A's embeddings, the segments' reference
    per_segment: int  # clips per segment
    clip_seconds: float
    seed: int

    def redrawn_error(self, minus: DriftStreams | None = None) -> float | None:
        """:func:`stream_bootstrap_error` of these streams' trend, or of their segments' FD
        minus ``minus``'s (another bundle's streams of the same seeds)."""
        return stream_bootstrap_error(self.embeddings, self.real, self.per_segment,
                                      self.clip_seconds,
                                      minus=None if minus is None else minus.embeddings,
                                      seed=self.seed)


def _drift(source: BundleSource, model: LabelClassifier, refs: dict[str, LabelRef],
           cfg: EvalConfig, index: dict[str, int]) -> tuple[dict, DriftStreams]:
    """Adherence and FD per segment of ``cfg.streams`` long streams per stream label, pooled
    over streams and labels, and the streams themselves for pairing them with another bundle's.
    Stream k of a label plays the label's caption k (cycling) from seed ``seed + 1000 + k``, so
    every bundle renders the same streams and segments pair up."""
    spec = model.spec
    seconds = cfg.stream_minutes * 60
    per_segment = max(1, round(cfg.segment_seconds / spec.clip_seconds))
    per_minute = max(1, round(min(60.0, seconds) / spec.clip_seconds))
    streams: dict[str, list[Scored]] = {}
    prompts: dict[str, list[str]] = {}
    stream_rtf = {}
    for label in cfg.stream_labels:
        captions = refs[label].captions
        prompts[label] = [captions[k % len(captions)] for k in range(cfg.streams)]
        wall, audio_s = source.wall_seconds, source.audio_seconds
        streams[label] = []
        for k, caption in enumerate(prompts[label]):
            audio = source.render(caption, seconds, seed=cfg.seed + 1000 + k)
            streams[label].append(_score(model, cut_clips(audio, spec.clip_samples),
                                         tonal=label not in NON_TONAL_LABELS))
        stream_rtf[label] = ((source.audio_seconds - audio_s)
                             / max(source.wall_seconds - wall, 1e-9))
    total = min(len(s.pred) for runs in streams.values() for s in runs)

    def window(first: int, count: int) -> dict:
        hits, gen, real, tonal = {}, [], [], []
        for label, runs in streams.items():
            span = slice(first, first + count)
            hits[label] = float(np.mean([s.pred[span] == index[label] for s in runs]))
            gen += [s.emb[span] for s in runs]
            real.append(refs[label].emb_a[:count * cfg.streams])
            tonal += [s.tonal[span] for s in runs]
        return {"adherence": float(np.mean(list(hits.values()))), "adherence_per_label": hits,
                "fd": _fd(gen, real), "tonal_energy": _median(tonal),
                "clips_per_label": count * cfg.streams}

    segments = []
    for first in range(0, total - per_segment + 1, per_segment):
        row = window(first, per_segment)
        segments.append({"start": first * spec.clip_seconds,
                         "end": (first + per_segment) * spec.clip_seconds, **row})
    labels = list(streams)

    def real_vs_real(count: int) -> float | None:
        n = count * cfg.streams
        return _fd([refs[lab].emb_b[:n] for lab in labels], [refs[lab].emb_a[:n] for lab in labels])

    rendered = DriftStreams({lab: [s.emb[:total] for s in runs] for lab, runs in streams.items()},
                            {lab: refs[lab].emb_a for lab in labels}, per_segment,
                            spec.clip_seconds, cfg.seed)
    trend = segment_trend(segments)
    if trend is not None:
        trend["stream_bootstrap_error"] = rendered.redrawn_error()
    return {
        "labels": labels,
        "prompts": prompts,
        "streams_per_label": cfg.streams,
        "stream_seconds": seconds,
        "segment_seconds": per_segment * spec.clip_seconds,
        "segments": segments,
        "real_vs_real_fd_segment": real_vs_real(per_segment),
        "first_minute": window(0, per_minute),
        "last_minute": window(max(0, total - per_minute), per_minute),
        "real_vs_real_fd_minute": real_vs_real(per_minute),
        "fd_trend": trend,
        "stream_realtime_factor": stream_rtf,
    }, rendered


def _paired_trend(drift: dict, streams: DriftStreams,
                  first: tuple[str, dict, DriftStreams]) -> dict | None:
    """FD's trend of ``drift``'s segments minus those of ``first`` = (name, its drift, its
    streams), the first bundle with drift streams, whose streams have the same seeds and
    prompts; with the OLS error and the error over redrawn streams (the same draw for both)."""
    name, base, base_streams = first
    paired = segment_trend(drift["segments"], minus=base["segments"])
    if paired is None:
        return None
    paired["minus"] = name
    paired["stream_bootstrap_error"] = streams.redrawn_error(minus=base_streams)
    return paired


def evaluate(cfg: EvalConfig) -> dict:
    """Run the whole evaluation; writes ``report.json`` and ``report.md`` to ``cfg.out`` and
    returns the report."""
    started = time.monotonic()
    load = os.getloadavg()
    model = load_classifier(cfg.classifier)
    spec = model.spec
    labels = list(cfg.labels or spec.labels)
    unknown = [lab for lab in (*labels, *cfg.stream_labels) if lab not in spec.labels]
    if unknown:
        raise ValueError(f"label(s) {', '.join(unknown)} unknown to the classifier (it knows "
                         f"{', '.join(spec.labels)})")
    if not cfg.bundles:
        raise ValueError("no bundle to evaluate")
    if cfg.streams < 1:
        raise ValueError(f"--streams must be at least 1, got {cfg.streams}")
    index = {lab: i for i, lab in enumerate(spec.labels)}
    # real clips per reference set the drift needs: a minute of every stream of a label
    drift_clips = cfg.streams * math.ceil(min(60.0, cfg.stream_minutes * 60) / spec.clip_seconds)
    all_labels = list(dict.fromkeys([*labels, *cfg.stream_labels]))
    needed = {lab: max(cfg.clips if lab in labels else 0,
                       drift_clips if lab in cfg.stream_labels else 0) for lab in all_labels}
    refs = _references(cfg, all_labels, spec.clip_samples, spec.sample_rate, needed)
    if cfg.stream_minutes > 0:
        # Drift FDs compare a minute of every stream with as many real clips: fewer would bias
        # the first and last minute differently from the segments.
        have = {lab: min(len(refs[lab].real_a), len(refs[lab].real_b))
                for lab in cfg.stream_labels}
        short = [f"{lab} {n} of {drift_clips}" for lab, n in have.items() if n < drift_clips]
        if short:
            raise ValueError(f"too little real audio for {cfg.streams} drift stream(s) per "
                             f"label (real clips per reference set: {', '.join(short)}); pass "
                             "fewer --streams or other --stream-labels")
    rng = np.random.default_rng(cfg.seed)
    real, pred_b, noise = {}, {}, {}
    for lab, ref in refs.items():
        tonal = lab not in NON_TONAL_LABELS
        real[lab] = _score(model, ref.real_a, tonal)
        ref.emb_a = real[lab].emb
        pred_b[lab], ref.emb_b = classify(model, ref.real_b)
        noise[lab] = _score(model, _noise_like(ref.real_a, rng), tonal)
    counts = {lab: min(cfg.clips, len(refs[lab].real_a), len(refs[lab].real_b))
              for lab in labels}
    tonal_labels = [lab for lab in labels if lab not in NON_TONAL_LABELS]
    log.info("references: %s", ", ".join(f"{lab} {counts[lab]} ({refs[lab].split})"
                                         for lab in labels))

    reference = {
        "clips_per_label": counts,
        "clips": sum(counts.values()),
        "split_per_label": {lab: refs[lab].split for lab in labels},
        "prompts_per_label": {lab: refs[lab].captions for lab in labels},
        "real_vs_real_fd": _fd([refs[lab].emb_b[:counts[lab]] for lab in labels],
                               [refs[lab].emb_a[:counts[lab]] for lab in labels]),
        "noise_vs_real_fd": _fd([noise[lab].emb[:counts[lab]] for lab in labels],
                                [refs[lab].emb_a[:counts[lab]] for lab in labels]),
        "real_vs_real_fd_per_label": {
            lab: _fd([refs[lab].emb_b[:counts[lab]]], [refs[lab].emb_a[:counts[lab]]])
            for lab in labels},
        "classifier_accuracy_on_real": {  # on set B, which stands where generated clips do
            lab: float(np.mean(pred_b[lab][:counts[lab]] == index[lab])) for lab in labels},
        "tonal_energy_real": _median([real[lab].tonal[:counts[lab]] for lab in tonal_labels]),
        "tonal_energy_real_per_label": {
            lab: _median([real[lab].tonal[:counts[lab]]]) for lab in tonal_labels},
        "tonal_energy_noise": _median([noise[lab].tonal[:counts[lab]] for lab in tonal_labels]),
        "rms_real": _median([real[lab].rms[:counts[lab]] for lab in labels]),
        "motion_real": _median([real[lab].motion[:counts[lab]] for lab in labels]),
        "motion_real_per_label": {lab: _median([real[lab].motion[:counts[lab]]])
                                  for lab in labels},
        "motion_noise": _median([noise[lab].motion[:counts[lab]] for lab in labels]),
    }
    reference["classifier_accuracy_on_real_overall"] = float(np.mean(
        list(reference["classifier_accuracy_on_real"].values())))

    results = {}
    first_drift = None  # (name, drift, streams) of the bundle the others pair with
    for name, path in cfg.bundles:
        log.info("bundle %s (%s)", name, path)
        source = BundleSource(name, path, spec.sample_rate, providers=cfg.providers,
                              threads=cfg.threads, steps=cfg.steps, cfg=cfg.cfg,
                              method=cfg.method, cfg_interval=cfg.cfg_interval)
        gen = {}
        for i, lab in enumerate(labels):
            clips = _generate_label(source, refs[lab], counts[lab], spec.clip_samples,
                                    spec.clip_seconds, seed=cfg.seed + 100 * i)
            gen[lab] = _score(model, clips, lab not in NON_TONAL_LABELS)
            log.info("  %s: adherence %.2f", lab, np.mean(gen[lab].pred == index[lab]))
        adherence = {lab: float(np.mean(gen[lab].pred == index[lab])) for lab in labels}
        fd = _fd([gen[lab].emb for lab in labels],
                 [refs[lab].emb_a[:len(gen[lab].emb)] for lab in labels])
        result = {
            "adherence": float(np.mean(list(adherence.values()))),
            "adherence_per_label": adherence,
            "predicted_per_label": {
                lab: {spec.labels[k]: int(c) for k, c in zip(*np.unique(gen[lab].pred,
                                                                         return_counts=True),
                                                             strict=True)}
                for lab in labels},
            "fd": fd,
            "fd_ratio": (fd / reference["real_vs_real_fd"]
                         if fd is not None and reference["real_vs_real_fd"] else None),
            "fd_per_label": {lab: _fd([gen[lab].emb], [refs[lab].emb_a[:len(gen[lab].emb)]])
                             for lab in labels},
            "tonal_energy": _median([gen[lab].tonal for lab in tonal_labels]),
            "tonal_energy_per_label": {lab: _median([gen[lab].tonal]) for lab in tonal_labels},
            "rms": _median([gen[lab].rms for lab in labels]),
            "motion": _median([gen[lab].motion for lab in labels]),
            "motion_per_label": {lab: _median([gen[lab].motion]) for lab in labels},
        }
        result["codec"] = _codec_ceiling(source, model, refs, counts, index, tonal_labels,
                                         reference["real_vs_real_fd"])
        log.info("  codec on real B: adherence %.2f, FD %.2f", result["codec"]["adherence"],
                 result["codec"]["fd"])
        if cfg.stream_minutes > 0 and cfg.stream_labels:
            log.info("  drift: %.1f min streams of %s", cfg.stream_minutes,
                     ", ".join(cfg.stream_labels))
            result["drift"], streams = _drift(source, model, refs, cfg, index)
            if first_drift is None:
                first_drift = (name, result["drift"], streams)
            else:
                result["drift"]["paired_trend"] = _paired_trend(result["drift"], streams,
                                                                first_drift)
        result["speed"] = source.timing()
        result["bundle"] = source.describe()
        results[name] = result

    report = {
        "config": asdict(cfg),
        "classifier": {"path": str(cfg.classifier), "labels": list(spec.labels),
                       "heldout": _classifier_heldout(Path(cfg.classifier))},
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": list(load)},
        "clip_seconds": spec.clip_seconds,
        "sample_rate": spec.sample_rate,
        "labels": labels,
        "tonal_labels": tonal_labels,
        "reference": reference,
        "bundles": results,
        "wall_seconds": time.monotonic() - started,
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown_report(report), encoding="utf-8")
    return report


def _codec_ceiling(source: BundleSource, model: LabelClassifier, refs: dict[str, LabelRef],
                   counts: dict[str, int], index: dict[str, int], tonal_labels: list[str],
                   real_vs_real: float | None) -> dict:
    """Real set B through the bundle's autoencoder, scored against A like generated clips."""
    scored = {lab: _score(model, source.resynthesise(refs[lab].real_b[:n]),
                          lab not in NON_TONAL_LABELS) for lab, n in counts.items()}
    fd = _fd([scored[lab].emb for lab in counts], [refs[lab].emb_a[:n] for lab, n in
                                                    counts.items()])
    return {
        "adherence": float(np.mean([np.mean(scored[lab].pred == index[lab]) for lab in counts])),
        "fd": fd,
        "fd_ratio": fd / real_vs_real if fd is not None and real_vs_real else None,
        "fd_per_label": {lab: _fd([scored[lab].emb], [refs[lab].emb_a[:n]])
                         for lab, n in counts.items()},
        "tonal_energy": _median([scored[lab].tonal for lab in tonal_labels]),
        "rms": _median([scored[lab].rms for lab in counts]),
        "motion": _median([scored[lab].motion for lab in counts]),
    }


def _classifier_heldout(path: Path) -> dict | None:
    """The held-out figures from the classifier's own ``report.json``, when it sits beside it."""
    side = path.with_name("report.json")
    if not side.is_file():
        return None
    held = json.loads(side.read_text(encoding="utf-8")).get("heldout", {})
    return {k: held.get(k) for k in ("accuracy", "balanced_accuracy", "clips",
                                     "labels_without_heldout")}
