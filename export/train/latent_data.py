"""Latent shards in memory, and random training windows drawn from them.

The whole default corpus is about 2.6 M latent frames x 32 channels in float16 (170 MB), so the
shards are loaded once and windows are plain slices. Every item was padded to at least the
encoder's ``min_frames`` (loops looped), so any window up to that length fits every item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LatentSet:
    """Items of one split: latents (sum_T, D) float16 with ``offsets`` (n + 1,), and per item
    its caption, label and piece."""

    latents: np.ndarray
    offsets: np.ndarray
    captions: list[str]
    labels: list[str]
    piece_ids: list[str]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.captions)

    def item(self, i: int) -> np.ndarray:
        return self.latents[self.offsets[i]:self.offsets[i + 1]]


def load_latents(folder: str | Path, split: str) -> LatentSet:
    root = Path(folder)
    index_path = root / "index.json"
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: encode the corpus first with "
                                f"`lmdm-bridge data encode --codec runs/codec/release.pt "
                                f"--corpus data/corpus --out {root}`")
    index = json.loads(index_path.read_text())
    chunks, lengths, captions, labels, pieces = [], [], [], [], []
    for name in index["shards"]:
        with np.load(root / name) as z:
            # Each z[...] access reads and decompresses the whole array again: read it once
            # (per item, 3,890 items held 3,890 copies of their shard: 24 GB and the OOM killer).
            latents, offsets, keep = z["latents"], z["offsets"], z["splits"] == split
            for i in np.flatnonzero(keep):
                chunks.append(latents[offsets[i]:offsets[i + 1]])
                lengths.append(offsets[i + 1] - offsets[i])
            captions += [str(c) for c in z["captions"][keep]]
            labels += [str(c) for c in z["labels"][keep]]
            pieces += [str(c) for c in z["piece_ids"][keep]]
    if not chunks:
        raise ValueError(f"{root} has no items in split {split!r}")
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    return LatentSet(np.concatenate(chunks), offsets, captions, labels, pieces)


def item_weights(data: LatentSet, label_balance: float = 0.0) -> np.ndarray:
    """Sampling probabilities (n,) of the items: by length within a label, and each label with
    probability proportional to ``frames_label ** (1 - label_balance)``.

    ``label_balance`` 0 samples every frame equally (a label's share is its share of the
    audio); 1 gives every label the same share. The default corpus has 4.8 minutes of each of
    its loop labels (electronic, percussion) beside hours of chorales, so at 0 a model sees
    them in 1 window of 380; 0.5 (1 in 70) is the usual temperature-sampling compromise.
    """
    if not 0.0 <= label_balance <= 1.0:
        raise ValueError(f"label_balance {label_balance} must be in [0, 1]")
    lengths = data.lengths.astype(np.float64)
    labels = np.asarray(data.labels)
    p = np.empty_like(lengths)
    for label in np.unique(labels):
        own = labels == label
        total = lengths[own].sum()
        p[own] = lengths[own] / total * total ** (1.0 - label_balance)
    return p / p.sum()


class WindowSampler:
    """Random windows of ``frames`` latent frames, items drawn by :func:`item_weights`:
    ``batch(n)`` -> (latents (n, D, frames) float32, item indices (n,))."""

    def __init__(self, data: LatentSet, frames: int, seed: int, *,
                 label_balance: float = 0.0) -> None:
        short = int((data.lengths < frames).sum())
        if short:
            raise ValueError(f"{short} items are shorter than the {frames}-frame window: "
                             "re-encode with a larger min_frames")
        self.data, self.frames = data, frames
        self.p = item_weights(data, label_balance)
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.rng.choice(len(self.data), size=n, p=self.p)
        out = np.empty((n, self.data.latents.shape[1], self.frames), dtype=np.float32)
        for j, i in enumerate(idx):
            start = self.data.offsets[i] + self.rng.integers(0, self.data.lengths[i] - self.frames
                                                             + 1)
            out[j] = self.data.latents[start:start + self.frames].T
        return out, idx

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def fixed_windows(data: LatentSet, n: int, frames: int, seed: int = 4321
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` deterministic validation windows and their item indices."""
    return WindowSampler(data, frames, seed).batch(n)
