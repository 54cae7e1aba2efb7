"""The render plan: every piece of the corpus and the variants it will be rendered as.

All random choices that name an item (label, soundfont, transposition, tempo factor, kit, loop
rate) are drawn here, in the parent process, from a generator seeded by ``(config.seed,
piece_id)``. So a piece's items do not depend on which other pieces are in the run (a
``--limit`` run renders a subset of the full corpus's items, identical to theirs), and a
resumed run plans exactly the same items.
The split is decided per piece (:func:`split_of`), never per item.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from lmdm_export.data.config import DataConfig
from lmdm_export.data.drums import STYLES
from lmdm_export.data.scores import PieceRef, list_pieces


@dataclass(frozen=True)
class Variant:
    """One item: a rendering of a piece. Unused fields stay at their defaults per kind."""

    item_id: str  # "<piece_id>--v<k>"; also the audio path below audio/
    seed: int  # drives the humanisation and the excerpt position of this item
    label: str
    soundfont: str = ""  # SoundfontConfig.name ("" for recorded loops)
    transpose: int = 0
    tempo_factor: float = 1.0  # > 1 plays faster
    bpm: float = 0.0  # drums: the groove's tempo
    kit: int = 0  # drums: GM kit preset
    rate: float = 1.0  # loops: varispeed factor


@dataclass(frozen=True)
class Job:
    """One piece and its variants: the unit of work of a worker process (parsed once)."""

    kind: str  # "score" | "drums" | "electronic" | "loop"
    source: str  # ScoreSource name, "drums", "percussion", "electronic" or "loops"
    piece_id: str
    split: str
    variants: tuple[Variant, ...]
    ref: PieceRef | None = None  # scores
    style: str = ""  # drums
    loop: str = ""  # loops: LoopInfo.name


def piece_rng(seed: int, piece_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{piece_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def split_of(seed: int, piece_id: str, val_fraction: float) -> str:
    """"val" for a fixed pseudo-random ``val_fraction`` of piece ids, else "train"."""
    digest = hashlib.sha256(f"split:{seed}:{piece_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "little") / 2**64 < val_fraction else "train"


def safe_id(text: str) -> str:
    """Ids double as relative paths: keep letters, digits, ``._-/``; map the rest to ``_``."""
    return re.sub(r"[^A-Za-z0-9._/-]", "_", text)


def plan_corpus(config: DataConfig, limit: int | None = None) -> list[Job]:
    """Every job of the corpus; ``limit`` (or ``config.piece_limit``) caps pieces per source."""
    limit = limit if limit is not None else config.piece_limit
    jobs: list[Job] = []
    for source in config.scores:
        refs = list_pieces(source)
        cap = min(x for x in (source.max_pieces, limit, len(refs)) if x is not None)
        for ref in _sample(refs, cap, config.seed):
            ref = PieceRef(ref.source, safe_id(ref.piece_id), ref.corpus_path, ref.number)
            jobs.append(_score_job(config, source, ref))
    for name, grooves in (("drums", config.drums), ("percussion", config.percussion),
                          ("electronic", config.electronic)):
        if grooves is None:
            continue
        per_style = grooves.patterns_per_style if limit is None else min(
            grooves.patterns_per_style, max(1, limit // len(grooves.styles)))
        for index in range(per_style):
            for style in grooves.styles:
                jobs.append(_drum_job(config, name, style, index))
    if config.loops is not None:
        loops = config.loops.loops if limit is None else config.loops.loops[:limit]
        jobs.extend(_loop_job(config, info.name, info.label) for info in loops)
    return jobs


def _sample(refs: list[PieceRef], count: int, seed: int) -> list[PieceRef]:
    """``count`` refs ranked by a hash of their id, in their original order. Nested: the
    pieces of a smaller count are among those of a larger one, so ``--limit`` runs render a
    subset of the full corpus; and a capped collection is sampled across all of its files
    (every Palestrina mass, not the first alphabetically)."""
    if count >= len(refs):
        return refs
    ranked = sorted(refs, key=lambda r: hashlib.sha256(f"pick:{seed}:{r.piece_id}".encode())
                    .digest())
    keep = {r.piece_id for r in ranked[:count]}
    return [r for r in refs if r.piece_id in keep]


def _score_job(config: DataConfig, source, ref: PieceRef) -> Job:
    rng = piece_rng(config.seed, ref.piece_id)
    labels = _cycle(source.labels, source.variants, rng)
    variants = tuple(
        Variant(
            item_id=f"{ref.piece_id}--v{k}",
            seed=int(rng.integers(2**31)),
            label=label,
            soundfont=_soundfont(config, rng),
            transpose=int(rng.integers(config.transpose_range[0], config.transpose_range[1] + 1)),
            tempo_factor=float(rng.uniform(*config.tempo_factor_range)),
        )
        for k, label in enumerate(labels))
    return Job("score", source.name, ref.piece_id,
               split_of(config.seed, ref.piece_id, config.val_fraction), variants, ref=ref)


def _drum_job(config: DataConfig, source: str, style: str, index: int) -> Job:
    """One groove of ``source`` ("drums", "percussion" or "electronic", also the piece id's
    folder); an electronic track's key is drawn when it is rendered."""
    drums = config.groove_source(source)
    piece_id = f"{source}/{style}-{index:03d}"
    rng = piece_rng(config.seed, piece_id)
    lo = max(drums.bpm_range[0], STYLES[style].bpm[0])
    hi = min(drums.bpm_range[1], STYLES[style].bpm[1])
    variant = Variant(item_id=f"{piece_id}--v0", seed=int(rng.integers(2**31)), label=drums.label,
                      soundfont=_soundfont(config, rng), bpm=float(rng.uniform(lo, max(lo, hi))),
                      kit=int(rng.choice(drums.kits)))
    kind = "electronic" if source == "electronic" else "drums"
    return Job(kind, source, piece_id, split_of(config.seed, piece_id, config.val_fraction),
               (variant,), style=style)


def _loop_job(config: DataConfig, name: str, label: str) -> Job:
    loops = config.loops
    piece_id = f"loops/{safe_id(name)}"
    rng = piece_rng(config.seed, piece_id)
    variants = tuple(
        Variant(item_id=f"{piece_id}--v{k}", seed=int(rng.integers(2**31)), label=label,
                rate=float(rng.uniform(*loops.rate_range)))
        for k in range(loops.variants))
    return Job("loop", "loops", piece_id, split_of(config.seed, piece_id, config.val_fraction),
               variants, loop=name)


def _cycle(labels: tuple[str, ...], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` labels, each used once before any repeats (distinct timbres per piece)."""
    out: list[str] = []
    while len(out) < count:
        out.extend(rng.permutation(list(labels)).tolist())
    return out[:count]


def _soundfont(config: DataConfig, rng: np.random.Generator) -> str:
    weights = np.array([s.weight for s in config.soundfonts], dtype=float)
    index = int(rng.choice(len(weights), p=weights / weights.sum()))
    return config.soundfonts[index].name
