"""Rendering one job (a piece and its variants) in a worker process.

Per item: build the performance, render mix and stems, normalise the mix to the configured
peak and apply the *same* gain to every stem (so the stems still sum to the mix), write the
audio, then the record. The record is written last: it marks the item as done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lmdm_export.data import captions, electronic
from lmdm_export.data.config import DataConfig
from lmdm_export.data.drums import KIT_NAMES, STYLES, bars_for, groove
from lmdm_export.data.loops import cc0_files, tile, varispeed
from lmdm_export.data.performance import (
    Performance,
    drop_empty_voices,
    excerpt,
    jitter_velocities,
    scale_time,
    transpose,
)
from lmdm_export.data.plan import Job, Variant, piece_rng
from lmdm_export.data.records import write_audio_atomic, write_json_atomic
from lmdm_export.data.scores import ScorePiece, load_piece
from lmdm_export.data.synth import Synth, to_output

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4  # a render quieter than this (float peak) is a failure, not an item


@dataclass(frozen=True)
class JobResult:
    piece_id: str
    rendered: int  # items written by this call
    audio_seconds: float  # of mixes written by this call
    failure: str = ""  # why the piece (or some item) was not rendered


class Worker:
    """Per-process state: config, output folder, one lazily started synthesiser."""

    def __init__(self, config: DataConfig, out_dir: Path) -> None:
        self.config = config
        self.out = Path(out_dir)
        self._synth: Synth | None = None
        self._cc0: dict | None = None

    @property
    def synth(self) -> Synth:
        if self._synth is None:
            self._synth = Synth(self.config.sample_rate)
        return self._synth

    def run(self, job: Job) -> JobResult:
        start = time.perf_counter()
        try:
            if job.kind == "score":
                result = self._score(job)
            elif job.kind == "drums":
                result = self._drums(job)
            elif job.kind == "electronic":
                result = self._electronic(job)
            else:
                result = self._loop(job)
        except Exception as exc:  # noqa: BLE001 - a broken piece must not stop the corpus
            reason = f"{type(exc).__name__}: {exc}"
            write_json_atomic(failure_path(self.out, job.piece_id), {"reason": reason})
            log.warning("skipped %s (%s)", job.piece_id, reason)
            return JobResult(job.piece_id, 0, 0.0, reason)
        log.debug("%s: %d items in %.1f s", job.piece_id, result.rendered,
                  time.perf_counter() - start)
        return result

    # -- the four kinds of job ------------------------------------------------------------

    def _score(self, job: Job) -> JobResult:
        source = self.config.score_source(job.source)
        piece = load_piece(job.ref, source)
        if piece.performance.duration < source.min_seconds:
            raise ValueError(f"{piece.performance.duration:.2f} s is shorter than "
                             f"min_seconds {source.min_seconds}")
        done = seconds = 0
        for v in job.variants:
            rng = np.random.default_rng(v.seed)
            label = self.config.label(v.label)
            perf = Performance(tuple(
                dataclasses.replace(voice, program=label.program_for_voice(i))
                for i, voice in enumerate(piece.performance.voices)))
            perf = scale_time(transpose(perf, v.transpose), 1.0 / v.tempo_factor)
            if perf.duration > source.max_seconds:
                perf = _random_excerpt(perf, source.max_seconds, rng)
            perf = drop_empty_voices(jitter_velocities(perf, self.config.velocity_jitter, rng))
            bpm = piece.bpm * v.tempo_factor
            key = captions.key_name(piece.tonic_pc, piece.mode, v.transpose)
            caption = captions.score_caption(label.caption, piece.form, key, bpm)
            seconds += self._write_synth_item(job, v, perf, caption, piece_fields(piece, key, bpm),
                                              licence=source.licence)
            done += 1
        return JobResult(job.piece_id, done, seconds)

    def _drums(self, job: Job) -> JobResult:
        drums = self.config.groove_source(job.source)
        (v,) = job.variants
        rng = np.random.default_rng(v.seed)
        seconds = float(rng.uniform(*drums.seconds_range))
        perf = groove(job.style, v.bpm, bars_for(job.style, v.bpm, seconds), v.kit, rng,
                      timing_jitter_ms=drums.timing_jitter_ms,
                      velocity_jitter=drums.velocity_jitter)
        style = STYLES[job.style]
        # Its own stream, so the wording leaves the groove's draws as they were.
        wording = piece_rng(self.config.seed, f"caption:{job.piece_id}")
        if style.family == "hand":
            caption = captions.hand_percussion_caption(style.caption, v.bpm, wording)
        else:
            caption = captions.drum_caption(style.caption, KIT_NAMES.get(v.kit, f"kit {v.kit}"),
                                            v.bpm, wording)
        fields = {"title": f"{style.caption} groove", "composer": "",
                  "copyright": "", "key": None, "tempo": float(v.bpm)}
        written = self._write_synth_item(job, v, perf, caption, fields,
                                         licence="generated by lmdm_export.data.drums")
        return JobResult(job.piece_id, 1, written)

    def _electronic(self, job: Job) -> JobResult:
        source = self.config.groove_source(job.source)
        (v,) = job.variants
        rng = np.random.default_rng(v.seed)
        seconds = float(rng.uniform(*source.seconds_range))
        parts = electronic.TRACKS[job.style]
        tonic = int(rng.integers(12))
        mode = "minor" if rng.random() < parts.minor else "major"
        perf = electronic.track(job.style, v.bpm, bars_for(job.style, v.bpm, seconds), v.kit,
                                tonic, mode, rng, timing_jitter_ms=source.timing_jitter_ms,
                                velocity_jitter=source.velocity_jitter)
        key = captions.key_name(tonic, mode)
        fields = {"title": f"{parts.caption} track", "composer": "", "copyright": "",
                  "key": key, "tempo": float(v.bpm)}
        written = self._write_synth_item(
            job, v, perf, captions.electronic_caption(parts.caption, key, v.bpm), fields,
            licence="generated by lmdm_export.data.electronic")
        return JobResult(job.piece_id, 1, written)

    def _loop(self, job: Job) -> JobResult:
        loops = self.config.loops
        info = self.config.loop(job.loop)
        if self._cc0 is None:
            self._cc0 = cc0_files(loops.copyright_file)
        record = self._cc0.get(f"{info.name}.flac")
        if record is None:
            raise ValueError(f"{info.name}.flac is not listed as CC0 in {loops.copyright_file}")
        audio, rate_in = sf.read(Path(loops.directory) / record.name, dtype="float32",
                                 always_2d=True)
        bpm0 = 60.0 * info.beats * rate_in / len(audio)
        sr = self.config.sample_rate
        seconds = 0.0
        for v in job.variants:
            out = varispeed(audio, rate_in, v.rate, sr)
            out = out.mean(axis=1, keepdims=True) if self.config.channels == 1 else out
            out = tile(out, int(round(loops.seconds * sr)), fade_frames=sr // 100)
            out = out[:, 0] if self.config.channels == 1 else out
            gain = _peak_gain(out, self.config.peak_dbfs)
            rel = self._audio_rel(v.item_id)
            write_audio_atomic(self.out / rel, out * gain, sr)
            bpm = bpm0 * v.rate
            self._write_record(job, v, {
                "path": rel, "caption": captions.loop_caption(info.caption, bpm),
                "title": info.name, "composer": "", "copyright": record.copyright,
                "duration": len(out) / sr,
                "tempo": float(bpm), "key": None, "program": None, "soundfont": None,
                "licence": f"CC0 ({record.copyright}; {record.source_url}), "
                           "Debian package sonic-pi-samples",
                "stems": []})
            seconds += len(out) / sr
        return JobResult(job.piece_id, len(job.variants), seconds)

    # -- shared writing ------------------------------------------------------------------------

    def _write_synth_item(self, job: Job, v: Variant, perf: Performance, caption: str,
                          fields: dict[str, Any], licence: str) -> float:
        """Render, normalise, write mix + stems + record; returns the mix's length in s."""
        soundfont = self.config.soundfont(v.soundfont)
        mix, stems = self.synth.render(perf, soundfont.path, self.config.tail_seconds)
        mix_out = to_output(mix, self.config.channels)
        if np.abs(mix_out).max() < SILENCE_PEAK:
            raise ValueError(f"{v.item_id} rendered silent")
        gain = _peak_gain(mix_out, self.config.peak_dbfs)
        sr = self.config.sample_rate
        rel = self._audio_rel(v.item_id)
        stem_entries = []
        if len(perf.voices) == 1:  # the stem would be the mix itself: point at it, no copy
            voice = perf.voices[0]
            stem_entries.append({"voice": voice.name, "path": rel, "program": voice.program})
        else:
            for voice, stem in zip(perf.voices, stems, strict=True):
                stem_rel = f"stems/{v.item_id}/{voice.name}.{self.config.audio_format}"
                write_audio_atomic(self.out / stem_rel,
                                   to_output(stem, self.config.channels) * gain, sr)
                stem_entries.append({"voice": voice.name, "path": stem_rel,
                                     "program": voice.program})
        write_audio_atomic(self.out / rel, mix_out * gain, sr)
        duration = mix.shape[1] / sr
        self._write_record(job, v, {
            "path": rel, "caption": caption, "duration": duration,
            "program": perf.voices[0].program, "soundfont": soundfont.name,
            "licence": f"{licence}; rendered with {soundfont.name} ({soundfont.licence})",
            "stems": stem_entries, **fields})
        return duration

    def _write_record(self, job: Job, v: Variant, fields: dict[str, Any]) -> None:
        record = {
            "id": v.item_id, "label": v.label, "source": job.source, "kind": job.kind,
            "piece_id": job.piece_id, "split": job.split,
            "sample_rate": self.config.sample_rate, "channels": self.config.channels,
            "transposition": v.transpose, "tempo_factor": v.tempo_factor, **fields}
        write_json_atomic(record_path(self.out, v.item_id), record)

    def _audio_rel(self, item_id: str) -> str:
        return f"audio/{item_id}.{self.config.audio_format}"


def piece_fields(piece: ScorePiece, key: str, bpm: float) -> dict[str, Any]:
    return {"title": piece.title, "composer": piece.composer, "copyright": piece.copyright,
            "key": key, "tempo": float(bpm)}


def record_path(out: Path, item_id: str) -> Path:
    return Path(out) / "records" / f"{item_id}.json"


def failure_path(out: Path, piece_id: str) -> Path:
    return Path(out) / "failed" / f"{piece_id}.json"


def _peak_gain(audio: np.ndarray, peak_dbfs: float) -> float:
    peak = float(np.abs(audio).max())
    return 10.0 ** (peak_dbfs / 20.0) / peak if peak > 0 else 1.0


def _random_excerpt(perf: Performance, length: float, rng: np.random.Generator) -> Performance:
    """``length`` seconds starting at a random note onset (so the excerpt opens on a note)."""
    latest = perf.duration - length
    onsets = sorted({n.start for v in perf.voices for n in v.notes if n.start <= latest})
    start = onsets[int(rng.integers(len(onsets)))] if onsets else 0.0
    return excerpt(perf, start, length)
