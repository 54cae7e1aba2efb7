"""Reading the rendered corpus (``lmdm-bridge data render``) for training: items and audio crops.

The corpus is ``metadata.jsonl`` (one record per rendered item, with its split, label, caption
and stems) plus FLAC files. Crops are read with ``soundfile``'s seek, so nothing is loaded whole.
Items shorter than a crop are looped (sonic-pi loops are a few seconds long), which is what a
loop is for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass(frozen=True)
class Item:
    id: str
    path: Path
    label: str
    caption: str
    split: str
    piece_id: str
    frames: int
    sample_rate: int
    stems: tuple[Path, ...]


def read_items(corpus: str | Path, split: str | None = None) -> list[Item]:
    """Items of ``corpus`` (a folder with ``metadata.jsonl``), optionally of one split."""
    root = Path(corpus)
    meta = root / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: render the corpus first with "
                                f"`lmdm-bridge data render --out {root}`")
    items = []
    with open(meta, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if split is not None and r["split"] != split:
                continue
            sr = int(r["sample_rate"])
            items.append(Item(
                id=r["id"], path=root / r["path"], label=r["label"], caption=r["caption"],
                split=r["split"], piece_id=r["piece_id"], frames=int(round(r["duration"] * sr)),
                sample_rate=sr,
                stems=tuple(root / s["path"] for s in r.get("stems", ())
                            if s["path"] != r["path"])))
    if not items:
        raise ValueError(f"{meta} has no items{f' in split {split!r}' if split else ''}")
    return items


def read_crop(path: Path, start: int, length: int) -> np.ndarray:
    """``length`` mono samples from ``start`` (float32), looping short files and padding none."""
    with sf.SoundFile(str(path)) as f:
        total = f.frames
        if total >= length:
            f.seek(min(start, total - length))
            x = f.read(length, dtype="float32", always_2d=True)
        else:
            x = f.read(dtype="float32", always_2d=True)
            x = np.tile(x, (length // max(1, total) + 1, 1))[:length]
    return x.mean(axis=1)


class CropSampler:
    """Random crops weighted by duration: ``batch(n)`` -> (n, 1, length) float32."""

    def __init__(self, items: list[Item], length: int, seed: int) -> None:
        self.items = items
        self.length = length
        weights = np.array([max(it.frames, length) for it in items], dtype=np.float64)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> np.ndarray:
        out = np.empty((n, 1, self.length), dtype=np.float32)
        for i, k in enumerate(self.rng.choice(len(self.items), size=n, p=self.p)):
            item = self.items[k]
            start = int(self.rng.integers(0, max(1, item.frames - self.length)))
            out[i, 0] = read_crop(item.path, start, self.length)
        return out

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def fixed_clips(items: list[Item], n: int, length: int, seed: int = 1234) -> np.ndarray:
    """``n`` deterministic clips (n, 1, length) spread over ``items`` (for validation)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))[:n]
    clips = np.empty((len(order), 1, length), dtype=np.float32)
    for i, k in enumerate(order):
        item = items[k]
        clips[i, 0] = read_crop(item.path, max(0, (item.frames - length) // 2), length)
    return clips
