"""Offline rendering through the streaming engine: the same block loop the daemon plays.

:func:`render` streams ``seconds`` of audio block by block (applying timed events at block
boundaries), decodes with the click-free :class:`~lmdm_bridge.decode.StreamingDecoder`, writes a
WAV atomically and returns timing statistics: real-time factor, time to first audio and
per-block latency (median, p95).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lmdm_bridge.bundle import Bundle
from lmdm_bridge.decode import StreamingDecoder
from lmdm_bridge.engine import Engine
from lmdm_bridge.events import Event, due
from lmdm_bridge.manifest import describe_cfg_interval
from lmdm_bridge.pipeline import DecodeStage


@dataclass(frozen=True)
class RenderStats:
    seconds: float
    blocks: int
    wall_seconds: float
    realtime_factor: float  # audio seconds per wall second (>= 1 keeps up with playback)
    time_to_first_audio: float  # from the start (prompt encoding included) to the first samples
    block_median: float  # seconds between blocks' audio: generation beside decoding
    block_p95: float
    block_seconds: float  # audio per block
    method: str
    steps: int
    cfg: float
    cfg_interval: tuple[float, float]  # noise levels t whose steps were guided

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.seconds:.2f} s of audio in {self.wall_seconds:.2f} s: real-time factor "
                f"{self.realtime_factor:.2f}, first audio after {self.time_to_first_audio:.3f} s,"
                f" {self.blocks} blocks of {self.block_seconds:.2f} s: median "
                f"{self.block_median:.3f} s, p95 {self.block_p95:.3f} s "
                f"({self.method}, {self.steps} steps, CFG {self.cfg:g}"
                f"{describe_cfg_interval(self.cfg_interval)})")


class Progress:
    """A one-line progress bar on a terminal stream; silent when the stream is not a tty."""

    def __init__(self, total: int, stream=sys.stderr, label: str = "render") -> None:
        self.total, self.stream, self.label = total, stream, label
        self.enabled = hasattr(stream, "isatty") and stream.isatty()

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // max(self.total, 1)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{self.total} {note}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _apply(engine: Engine, event: Event) -> None:
    if event.kind in ("prompt", "prompts"):
        engine.set_prompt(event.value)
    elif event.kind == "cfg":
        engine.set_cfg(event.value)
    elif event.kind == "steps":
        engine.set_steps(event.value)
    elif event.kind == "seed":
        engine.reseed(event.value)
    elif event.kind == "eject":
        engine.eject(min(event.value, engine.geometry.context_frames))


# Output formats by file extension: WAV through soundfile (16-bit PCM, as before), the
# compressed ones through pedalboard's encoders (LAME for MP3, libvorbis for Ogg).
AUDIO_FORMATS = (".wav", ".flac", ".mp3", ".ogg")


def check_audio_path(path: Path) -> str:
    """The lower-case extension of an output path, or a ValueError naming the formats."""
    suffix = path.suffix.lower()
    if suffix not in AUDIO_FORMATS:
        raise ValueError(f"cannot write {path}: its extension must name a format, one of "
                         f"{', '.join(AUDIO_FORMATS)}")
    return suffix


def limit(audio: np.ndarray, sample_rate: int, ceiling_db: float = -0.3) -> np.ndarray:
    """``(channels, frames)`` audio through ``serve``'s safety limiter, its look-ahead latency
    taken back out: the same length and timing, every peak under ``ceiling_db`` dBFS, and audio
    that never comes near the ceiling unchanged."""
    from lmdm_bridge.audio.limiter import SafetyLimiter

    limiter = SafetyLimiter(sample_rate, ceiling_db=ceiling_db)
    tail = np.zeros((audio.shape[0], limiter.latency), np.float32)
    out = limiter(np.concatenate((audio.astype(np.float32), tail), axis=1))
    return out[:, limiter.latency:]


def write_audio_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """``audio (channels, samples)`` float32 -> a file whose extension names the format (see
    :data:`AUDIO_FORMATS`), via a temporary file in the same folder renamed into place, so a
    crash never leaves a half-written file."""
    suffix = check_audio_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{suffix}")
    try:
        if suffix == ".wav":
            sf.write(str(tmp), np.ascontiguousarray(audio.T), sample_rate, subtype="PCM_16",
                     format="WAV")
        else:
            from pedalboard.io import AudioFile

            quality = "V2" if suffix == ".mp3" else None  # LAME's transparent VBR preset
            with AudioFile(str(tmp), "w", sample_rate, audio.shape[0], quality=quality) as f:
                f.write(np.ascontiguousarray(np.clip(audio, -1.0, 1.0), np.float32))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def render(bundle: Bundle, *, prompt: str, seconds: float, seed: int = 0,
           steps: int | None = None, cfg: float | None = None, method: str | None = None,
           cfg_interval: tuple[float, float] | None = None, events: list[Event] | None = None,
           on_block: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, RenderStats]:
    """Stream ``seconds`` of audio; returns ``(audio (channels, samples), stats)``.

    Whole blocks are generated and the result trimmed to ``seconds``; the decoder's latency is
    compensated by generating the blocks that cover it and dropping the lead-in.
    """
    if not seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    start = time.perf_counter()
    engine = Engine(bundle, method=method, steps=steps, cfg_scale=cfg, cfg_interval=cfg_interval,
                    seed=seed)
    decoder = StreamingDecoder(bundle)
    g = bundle.geometry
    block_samples = g.block_frames * g.downsampling_ratio
    total = round(seconds * g.sample_rate)
    blocks = math.ceil((total + decoder.latency) / block_samples)
    events = list(events or [])
    engine.set_prompt(prompt)
    next_event = 0
    chunks, done_at = [], []
    stage = DecodeStage(decoder)  # each block decodes while the engine samples the next
    loop_start = time.perf_counter()
    try:
        for b in range(blocks + 1):
            if b < blocks:
                now, next_event = due(events, next_event, b * g.block_seconds)
                for event in now:
                    _apply(engine, event)
                audio = stage.submit(engine.next_block())
            else:
                audio = stage.take()
            if audio is None:
                continue
            chunks.append(audio)
            done_at.append(stage.done_at)
            if on_block is not None:
                on_block(len(chunks), blocks)
    finally:
        stage.close()
    # A block's time is the interval between two blocks' audio: with the overlap, the slower
    # of generation and decoding (the first one: generation, then decoding).
    block_times = np.diff([loop_start, *done_at])
    first_audio = done_at[0] - start
    audio = np.concatenate(chunks, axis=-1)[:, decoder.latency:decoder.latency + total]
    wall = time.perf_counter() - start
    stats = RenderStats(
        seconds=total / g.sample_rate, blocks=blocks, wall_seconds=wall,
        realtime_factor=(total / g.sample_rate) / wall, time_to_first_audio=first_audio,
        block_median=float(np.median(block_times)),
        block_p95=float(np.percentile(block_times, 95)), block_seconds=g.block_seconds,
        method=engine.method, steps=engine.steps, cfg=engine.cfg_scale,
        cfg_interval=engine.cfg_interval)
    return audio, stats
