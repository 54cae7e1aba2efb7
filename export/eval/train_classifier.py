"""``lmdm-bridge eval classifier``: train the label classifier and report its held-out accuracy.

Batches are random 3 s crops of the train split: a label is drawn with probability proportional
to (its audio duration) ** ``label_power``, then an item weighted by its length, then a start;
each crop gets a random gain of ``gain_db`` so the classifier does not key on loudness, which
generated audio does not match. ``label_power`` 0.5 sits between balanced sampling (0) and the
corpus' own proportions (1). Balanced sampling made the two-piece sonic-pi "electronic" label a
prior strong enough to claim 22% of the held-out drum grooves in a 3-minute trial (their
"electronic kit" sounds like those loops); proportions would let large labels drown small ones.
Training runs for a wall-clock budget (``minutes``) or a number of ``steps`` with AdamW and a
cosine learning rate over that budget; reading the next batch overlaps the current step.

Held-out accuracy is measured on the validation split (pieces never seen in training): up to
``val_clips`` non-overlapping clips per item, per label and overall. Labels with no validation
pieces (the sonic-pi loops) get no held-out figure; their accuracy on fixed train clips is
reported beside the others as ``seen_accuracy``, which shows fit, not generalisation.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmdm_export.eval.classifier import (
    ClassifierSpec,
    LabelClassifier,
    classify,
    save_classifier,
)
from lmdm_export.train.corpus import Item, read_crop, read_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    corpus: str = "data/corpus"
    out: str = "runs/classifier"
    minutes: float = 6.0
    # A step budget instead of the wall-clock one (``minutes`` then does not count): the same
    # classifier whatever the machine's speed and load, so evaluations on different machines
    # share their yardstick.
    steps: int | None = None
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    gain_db: tuple[float, float] = (-20.0, 6.0)
    label_power: float = 0.5  # label drawn with p ~ duration ** label_power
    clip_seconds: float = 3.0
    val_clips: int = 4  # per validation item
    seen_clips: int = 16  # per label, from the train split
    seed: int = 0
    log_every_s: float = 30.0

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps} (leave it out for the "
                             "time budget)")


class LabelCrops:
    """Random crops (batch, samples) with random gain and their label indices; labels drawn with
    p ~ duration ** ``label_power``."""

    def __init__(self, items: list[Item], labels: tuple[str, ...], clip_samples: int,
                 gain_db: tuple[float, float], label_power: float, seed: int) -> None:
        self.by_label = [[it for it in items if it.label == lab] for lab in labels]
        frames = [np.array([max(it.frames, 1) for it in group], dtype=np.float64)
                  for group in self.by_label]
        self.weights = [f / f.sum() for f in frames]
        label_p = np.array([f.sum() for f in frames]) ** label_power
        self.label_p = label_p / label_p.sum()
        self.clip_samples, self.gain_db = clip_samples, gain_db
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = self.rng.choice(len(self.by_label), size=n, p=self.label_p)
        audio = np.empty((n, self.clip_samples), dtype=np.float32)
        for i, lab in enumerate(labels):
            group = self.by_label[lab]
            item = group[self.rng.choice(len(group), p=self.weights[lab])]
            start = int(self.rng.integers(0, max(1, item.frames - self.clip_samples)))
            gain = 10 ** (self.rng.uniform(*self.gain_db) / 20)
            audio[i] = gain * read_crop(item.path, start, self.clip_samples)
        return audio, labels


def fixed_clips(items: list[Item], per_item: int, clip_samples: int) -> np.ndarray:
    """Up to ``per_item`` evenly spaced non-overlapping clips of every item: (n, samples)."""
    clips = []
    for it in items:
        windows = max(1, it.frames // clip_samples)
        for k in np.linspace(0, windows - 1, min(per_item, windows)).round().astype(int):
            clips.append(read_crop(it.path, int(k) * clip_samples, clip_samples))
    return np.stack(clips) if clips else np.zeros((0, clip_samples), dtype=np.float32)


def _accuracy_by_label(model: LabelClassifier, items: list[Item], per_item: int) -> dict:
    """{label: {"accuracy", "clips", "pieces"}} plus the confusion counts, on ``items``."""
    labels = model.spec.labels
    index = {lab: i for i, lab in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    pieces = defaultdict(set)
    for lab in labels:
        group = [it for it in items if it.label == lab]
        if not group:
            continue
        pred, _ = classify(model, fixed_clips(group, per_item, model.spec.clip_samples))
        np.add.at(confusion[index[lab]], pred, 1)
        pieces[lab] = {it.piece_id for it in group}
    per_label = {}
    for lab, row in zip(labels, confusion, strict=True):
        if row.sum():
            per_label[lab] = {"accuracy": float(row[index[lab]] / row.sum()),
                              "clips": int(row.sum()), "pieces": len(pieces[lab])}
    return {"per_label": per_label, "confusion": confusion.tolist()}


def _read_split(corpus: str, split: str) -> list[Item]:
    try:
        return read_items(corpus, split)
    except ValueError:  # a corpus without that split
        return []


def train_classifier(cfg: ClassifierTrainConfig) -> dict:
    """Train, evaluate, write ``classifier.pt`` and ``report.json`` to ``cfg.out``; returns the
    report."""
    train_items = read_items(cfg.corpus, "train")
    val_items = _read_split(cfg.corpus, "val")
    rates = {it.sample_rate for it in train_items + val_items}
    if len(rates) != 1:
        raise ValueError(f"corpus {cfg.corpus} mixes sample rates {sorted(rates)}")
    spec = ClassifierSpec(labels=tuple(sorted({it.label for it in train_items})),
                          sample_rate=rates.pop(), clip_seconds=cfg.clip_seconds)
    torch.manual_seed(cfg.seed)
    model = LabelClassifier(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    crops = LabelCrops(train_items, spec.labels, spec.clip_samples, cfg.gain_db,
                       cfg.label_power, cfg.seed)
    budget = cfg.minutes * 60
    log.info("classifier: %d labels, %d train items, %d val items, %s", len(spec.labels),
             len(train_items), len(val_items),
             f"{cfg.steps} steps" if cfg.steps else f"{cfg.minutes:.1f} min budget")

    start = last_log = time.monotonic()
    step, losses, hits = 0, [], []
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(crops.batch, cfg.batch)
        while True:
            progress = (step / cfg.steps if cfg.steps is not None
                        else (time.monotonic() - start) / budget)
            if progress >= 1:
                break
            audio, labels = pending.result()
            pending = pool.submit(crops.batch, cfg.batch)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
            model.train()
            logits, _ = model(torch.from_numpy(audio))
            target = torch.from_numpy(labels)
            loss = F.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            hits.append((logits.argmax(1) == target).float().mean().item())
            if time.monotonic() - last_log >= cfg.log_every_s:
                last_log = time.monotonic()
                log.info("step %d (%.0f s): loss %.3f, batch accuracy %.3f", step,
                         last_log - start, np.mean(losses[-50:]), np.mean(hits[-50:]))
        pending.result()
    train_seconds = time.monotonic() - start

    model.eval()
    held = _accuracy_by_label(model, val_items, cfg.val_clips)
    seen_items = [it for lab in spec.labels
                  for it in [x for x in train_items if x.label == lab][:cfg.seen_clips]]
    seen = _accuracy_by_label(model, seen_items, 1)["per_label"]
    per_label = {}
    for lab in spec.labels:
        row = held["per_label"].get(lab)
        per_label[lab] = row if row else {"accuracy": None, "clips": 0, "pieces": 0,
                                          "note": "no held-out pieces"}
        per_label[lab]["seen_accuracy"] = seen[lab]["accuracy"]
    scored = [r for r in per_label.values() if r["accuracy"] is not None]
    clips = sum(r["clips"] for r in scored)
    report = {
        "classifier": "classifier.pt",
        "labels": list(spec.labels),
        "spec": {k: v for k, v in asdict(spec).items() if k != "labels"},
        "config": asdict(cfg),
        "steps": step,
        "train_seconds": train_seconds,
        "train_loss_last50": float(np.mean(losses[-50:])) if losses else None,
        "heldout": {
            "split": "val",
            "accuracy": (sum(r["accuracy"] * r["clips"] for r in scored) / clips
                         if clips else None),
            "balanced_accuracy": (float(np.mean([r["accuracy"] for r in scored]))
                                  if scored else None),
            "clips": clips,
            "labels_without_heldout": [lab for lab, r in per_label.items()
                                       if r["accuracy"] is None],
            "per_label": per_label,
            "confusion": held["confusion"],
        },
    }
    out = Path(cfg.out)
    save_classifier(model, out / "classifier.pt")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
