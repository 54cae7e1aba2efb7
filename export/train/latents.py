"""Pre-encoding the corpus into latent shards: ``lmdm-bridge data encode``.

The diffusion stages never touch audio: every item (and, with ``stems``, every stem, for the
jamming control later) is encoded once with the codec's posterior mean. Items shorter than
``min_frames`` latent frames (sonic-pi loops) are looped in the audio domain first, so a loop
encodes as a seamless loop and every item fills a training window.

Layout of ``out/``::

    index.json                 codec path, config and weight fingerprint, shards, item count,
                               frames per split
    shard-00000.npz            latents (sum_T, D) float16, offsets (n + 1,), ids, captions,
                               labels, splits, piece_ids; with stems also stem_latents,
                               stem_offsets, stem_owner (index of the item each stem belongs to)

Shards are written to a temp name and renamed; an interrupted run resumes at the first missing
shard.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lmdm_export.model.autoencoder import OobleckAutoencoder
from lmdm_export.model.stft_codec import StftCodec
from lmdm_export.train.corpus import Item, read_items
from lmdm_export.train.loop import fingerprint

log = logging.getLogger(__name__)
SHARD_ITEMS = 256
Autoencoder = StftCodec | OobleckAutoencoder


def codec_fingerprint(codec: Autoencoder) -> str:
    """The digest latent shards record of the codec that made them: its weights, but not the
    decode-time spectral calibration, which changes no latent (and which releases written
    before it existed lack, so their latents stay valid)."""
    return fingerprint(codec, skip=("decoder.calibration",))


def _load_audio(path: Path, ratio: int, min_frames: int, sample_rate: int,
                channels: int) -> np.ndarray:
    """An item as the codec hears it: (channels, N) at its ``sample_rate`` (polyphase resampling
    when the corpus has another rate; mono downmixed, or repeated into every channel), N a
    multiple of ``ratio`` and at least ``min_frames`` latent frames (shorter items looped)."""
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        from scipy.signal import resample_poly

        step = Fraction(sample_rate, rate)
        x = resample_poly(x, step.numerator, step.denominator, axis=0).astype(np.float32)
    x = x.mean(axis=1, keepdims=True).T if channels == 1 or x.shape[1] != channels else x.T
    x = np.ascontiguousarray(np.broadcast_to(x, (channels, x.shape[1])))
    n = x.shape[1]
    need = max(min_frames * ratio, -(-n // ratio) * ratio)
    if n < min_frames * ratio:
        x = np.tile(x, (1, need // max(1, n) + 1))
    return np.pad(x, ((0, 0), (0, max(0, need - x.shape[1]))))[:, :need]


@torch.no_grad()
def _encode(codec: Autoencoder, audio: np.ndarray, chunk_frames: int = 2048) -> np.ndarray:
    """Audio (C, N) -> latents (N / ratio, D) float16, in chunks to bound memory.

    Chunks overlap by 16 latent frames on each side so the encoder's receptive field sees real
    neighbours at every seam, as in one pass over the whole item."""
    ratio = codec.config.downsampling_ratio
    frames, margin = audio.shape[1] // ratio, 16
    out = []
    for start in range(0, frames, chunk_frames):
        lo, hi = max(0, start - margin), min(frames, start + chunk_frames + margin)
        x = torch.from_numpy(audio[:, lo * ratio:hi * ratio])[None]
        z = codec.encode(x, sample=False)[0].T
        out.append(z[start - lo:start - lo + min(chunk_frames, frames - start)])
    return torch.cat(out).numpy().astype(np.float16)


def encode_corpus(codec_path: str | Path | None, corpus: str | Path, out: str | Path, *,
                  stems: bool = False, min_frames: int = 384, limit: int | None = None,
                  model: str = "", weights: str | Path | None = None) -> Path:
    """Encode ``corpus`` into shards in ``out`` with the codec release ``codec_path`` (the
    default family) or, with ``model`` (a preset or a stable-audio-tools model_config.json),
    the Oobleck VAE in ``weights`` (:mod:`lmdm_export.train.model_source`)."""
    if model:
        from lmdm_export.train.model_source import load_autoencoder

        if weights is None:
            raise ValueError(f"encoding with {model!r} needs its weights (the checkpoint whose "
                             "VAE the diffusion stages will use)")
        codec: Autoencoder = load_autoencoder(model, weights)
        source = f"{model} ({weights})"
    else:
        from lmdm_export.train.codec import load_codec

        if codec_path is None:
            raise ValueError("encoding needs a codec release or a model and its weights")
        codec, source = load_codec(codec_path), str(codec_path)
    cfg = codec.config
    ratio = cfg.downsampling_ratio
    items = read_items(corpus)
    if limit is not None:
        items = items[:limit]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for k, first in enumerate(range(0, len(items), SHARD_ITEMS)):
        name = f"shard-{k:05d}.npz"
        shards.append(name)
        if (out / name).exists():
            continue
        _write_shard(out / name, items[first:first + SHARD_ITEMS], codec, min_frames, stems)
        log.info("encoded %s (%d/%d items)", name, min(first + SHARD_ITEMS, len(items)),
                 len(items))
    frames: dict[str, int] = {}
    for name in shards:
        with np.load(out / name) as z:
            for split, n in zip(z["splits"], np.diff(z["offsets"]), strict=True):
                frames[str(split)] = frames.get(str(split), 0) + int(n)
    index = {"codec": source, "codec_config": asdict(cfg),
             "codec_fingerprint": codec_fingerprint(codec),
             "latent_rate": cfg.sample_rate / ratio, "sample_rate": cfg.sample_rate,
             "audio_channels": cfg.audio_channels, "items": len(items),
             "stems": stems, "min_frames": min_frames, "frames": frames, "shards": shards}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return out


def _write_shard(path: Path, items: list[Item], codec: Autoencoder, min_frames: int,
                 stems: bool) -> None:
    cfg = codec.config
    hear = dict(ratio=cfg.downsampling_ratio, min_frames=min_frames,
                sample_rate=cfg.sample_rate, channels=cfg.audio_channels)
    latents, offsets = [], [0]
    stem_latents, stem_offsets, stem_owner = [], [0], []
    for i, item in enumerate(items):
        z = _encode(codec, _load_audio(item.path, **hear))
        latents.append(z)
        offsets.append(offsets[-1] + len(z))
        for stem in item.stems if stems else ():
            s = _encode(codec, _load_audio(stem, **hear))
            stem_latents.append(s)
            stem_offsets.append(stem_offsets[-1] + len(s))
            stem_owner.append(i)
    arrays = {
        "latents": np.concatenate(latents), "offsets": np.asarray(offsets, np.int64),
        "ids": np.asarray([it.id for it in items]),
        "captions": np.asarray([it.caption for it in items]),
        "labels": np.asarray([it.label for it in items]),
        "splits": np.asarray([it.split for it in items]),
        "piece_ids": np.asarray([it.piece_id for it in items]),
    }
    if stems:
        dim = codec.config.latent_dim
        arrays.update(stem_latents=np.concatenate(stem_latents) if stem_latents
                      else np.zeros((0, dim), np.float16),
                      stem_offsets=np.asarray(stem_offsets, np.int64),
                      stem_owner=np.asarray(stem_owner, np.int64))
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
