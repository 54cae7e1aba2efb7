"""The label classifier: a 4-layer CNN on log-mel with a 64-d penultimate embedding.

The design is the one calibrated in the feasibility study (``default-model-feasibility.md``,
section 5): four conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool), global average and max
pooling, a 64-d ReLU embedding, a linear head. Widths 8-16-32-64 on a 512-sample hop cost a
sixth of 16-32-64-64 on a 256 hop (0.3 s against 1.8 s per batch of 32 on one busy core), which
is what lets it train in minutes beside another training job. The embedding is what
the Fréchet distance is measured in; the head's argmax is what prompt adherence counts.

``classifier.pt`` holds the labels, the sample rate and clip length it was trained at, the
architecture's sizes and the weights, so an evaluation never guesses any of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lmdm_export.eval.melspec import LogMel

KIND = "lmdm-label-classifier"


@dataclass(frozen=True)
class ClassifierSpec:
    labels: tuple[str, ...]
    sample_rate: int = 22050
    clip_seconds: float = 3.0
    bands: int = 64
    n_fft: int = 1024
    hop: int = 512  # 43 frames/s: timbre needs no finer steps, and it halves the cost
    widths: tuple[int, ...] = (8, 16, 32, 64)
    embed_dim: int = 64

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)


class LabelClassifier(nn.Module):
    """(B, samples) mono audio at ``spec.sample_rate`` -> (logits (B, labels), emb (B, 64))."""

    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__()
        self.spec = spec
        self.logmel = LogMel(spec.sample_rate, spec.bands, spec.n_fft, spec.hop)
        self.norm = nn.BatchNorm2d(1)  # learns the log-mel level, so no hand-set offset
        layers, c_in = [], 1
        for c in spec.widths:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * c_in, spec.embed_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(spec.embed_dim, len(spec.labels))

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        h = self.convs(self.norm(self.logmel(audio)))  # (B, C, bands / 16, frames / 16)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        emb = self.embed(pooled)
        return self.head(self.dropout(emb)), emb


def save_classifier(model: LabelClassifier, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = asdict(model.spec)
    torch.save({"kind": KIND, "spec": {**spec, "labels": list(spec["labels"]),
                                       "widths": list(spec["widths"])},
                "state_dict": model.state_dict()}, path)


def load_classifier(path: str | Path) -> LabelClassifier:
    """A saved classifier in eval mode; a missing or foreign file is a named error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier {path} not found: train one with `lmdm-bridge eval "
                                "classifier --corpus data/corpus --out runs/classifier`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("kind") != KIND:
        raise ValueError(f"{path} is not a label classifier written by `lmdm-bridge eval "
                         "classifier`")
    raw = blob["spec"]
    spec = ClassifierSpec(**{**raw, "labels": tuple(raw["labels"]),
                             "widths": tuple(raw["widths"])})
    model = LabelClassifier(spec)
    model.load_state_dict(blob["state_dict"])
    return model.eval()


@torch.no_grad()
def classify(model: LabelClassifier, clips: np.ndarray,
             batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``clips (N, clip_samples)`` -> (predicted label index (N,), embeddings (N, 64))."""
    model.eval()
    preds, embs = [], []
    for i in range(0, len(clips), batch):
        logits, emb = model(torch.from_numpy(np.ascontiguousarray(clips[i:i + batch])))
        preds.append(logits.argmax(1).numpy())
        embs.append(emb.numpy().astype(np.float64))
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros((0, model.spec.embed_dim))
    return np.concatenate(preds), np.concatenate(embs)
