"""Conditioning: per-key conditioners and the container that assembles the DiT's inputs.

Stable Audio Open Small conditions on two keys (cond_dim 768):

* ``prompt``: T5-base tokens, 64 x 768, padding zeroed;
* ``seconds_total``: a learned-Fourier number embedding, 1 x 768.

Cross-attention takes ``concat(prompt, seconds_total)`` along tokens (65 tokens) and the global
condition is the ``seconds_total`` embedding (768). ``Conditioners`` reproduces stable-audio-tools'
``MultiConditioner`` plus the assembly in its
``ConditionedDiffusionModelWrapper.get_conditioning_inputs``, and keeps SAT's parameter names, so a
SAT checkpoint's ``conditioner.*`` subtree loads strictly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from .text_encoders import MiniLMParams, MiniLMTextConditioner, T5Params, T5TextConditioner

# ---------------------------------------------------------------------------------------------
# Number conditioner
# ---------------------------------------------------------------------------------------------


class LearnedFourierFeatures(nn.Module):
    """x (B,) -> [x, sin(2 pi x w), cos(2 pi x w)] (B, 1 + dim), w (dim/2,) learned.

    The raw value is kept next to the features so the embedding stays monotone-informative even
    where the sinusoids alias. Initialised like SAT's ``LearnedPositionalEmbedding``:
    w ~ N(0, 16^2).
    """

    def __init__(self, dim: int = 256, std: float = 16.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier feature dim must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2) * std)  # name fixed by SAT checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(-1)  # (B, 1)
        # Multiplied in SAT's order (x * w * 2 * pi) so float32 results agree bit for bit.
        freqs = x * self.weights.unsqueeze(0) * 2 * math.pi  # (B, dim/2)
        return torch.cat((x, freqs.sin(), freqs.cos()), dim=-1)  # (B, 1 + dim)


class NumberEmbedder(nn.Module):
    """Normalised value (B,) -> (B, features): Fourier features then a Linear.

    ``embedding`` is a Sequential so that parameter names are SAT's
    (``embedding.0.weights``, ``embedding.1.weight``, ``embedding.1.bias``).
    """

    def __init__(self, features: int, fourier_dim: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Sequential(
            LearnedFourierFeatures(fourier_dim), nn.Linear(fourier_dim + 1, features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


@dataclass(frozen=True)
class NumberParams:
    """A scalar clamped to [min_val, max_val] and normalised to [0, 1] before embedding."""

    min_val: float = 0.0
    max_val: float = 1.0

    def __post_init__(self) -> None:
        if not self.max_val > self.min_val:
            raise ValueError(
                f"number max_val ({self.max_val}) must exceed min_val ({self.min_val})"
            )

    @property
    def num_tokens(self) -> int:
        return 1


class NumberConditioner(nn.Module):
    """Floats -> one conditioning token each (e.g. SAO's ``seconds_total`` in [0, 256])."""

    def __init__(self, output_dim: int, min_val: float = 0.0, max_val: float = 1.0) -> None:
        super().__init__()
        if not max_val > min_val:
            raise ValueError(f"number max_val ({max_val}) must exceed min_val ({min_val})")
        self.output_dim = output_dim
        self.min_val = min_val
        self.max_val = max_val
        self.embedder = NumberEmbedder(output_dim)

    @classmethod
    def from_params(cls, params: NumberParams, output_dim: int) -> NumberConditioner:
        return cls(output_dim, params.min_val, params.max_val)

    def forward(
        self, values: Sequence[float], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """values: B numbers. Returns embedding (B, 1, output_dim), mask (B, 1) bool (all True)."""
        x = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)
        x = (x.clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        x = x.to(self.embedder.embedding[1].weight.dtype)
        emb = self.embedder(x).unsqueeze(1)  # (B, 1, D)
        return emb, torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device)


# ---------------------------------------------------------------------------------------------
# Registry and configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionerType:
    """A registry entry: the typed parameters of a conditioner and how to build it."""

    params_cls: type
    build: Callable[[Any, int], nn.Module]  # (params, cond_dim) -> module


CONDITIONER_TYPES: dict[str, ConditionerType] = {
    "number": ConditionerType(NumberParams, NumberConditioner.from_params),
    "t5": ConditionerType(T5Params, T5TextConditioner.from_params),
    "minilm": ConditionerType(MiniLMParams, MiniLMTextConditioner.from_params),
}


@dataclass(frozen=True)
class ConditionerSpec:
    """One conditioner: the metadata key it reads (``id``), its ``type`` and typed ``params``."""

    id: str
    type: str
    params: NumberParams | T5Params | MiniLMParams

    def __post_init__(self) -> None:
        if self.type not in CONDITIONER_TYPES:
            raise ValueError(
                f"conditioner {self.id!r}: unknown type {self.type!r}; "
                f"known: {sorted(CONDITIONER_TYPES)}"
            )
        expected = CONDITIONER_TYPES[self.type].params_cls
        if not isinstance(self.params, expected):
            raise TypeError(
                f"conditioner {self.id!r} of type {self.type!r} needs {expected.__name__}, "
                f"got {type(self.params).__name__}"
            )

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> ConditionerSpec:
        """Reads SAT's layout, ``{"id": ..., "type": ..., "config": {...}}``; unknown keys fail."""
        kind = entry["type"]
        if kind not in CONDITIONER_TYPES:
            raise ValueError(
                f"unknown conditioner type {kind!r}; known: {sorted(CONDITIONER_TYPES)}"
            )
        params_cls = CONDITIONER_TYPES[kind].params_cls
        config = dict(entry.get("config", {}))
        unknown = set(config) - {f.name for f in fields(params_cls)}
        if unknown:
            raise ValueError(
                f"conditioner {entry['id']!r} ({kind}): unknown keys {sorted(unknown)}"
            )
        return cls(entry["id"], kind, params_cls(**config))


@dataclass(frozen=True)
class ConditioningConfig:
    """All conditioners and how their outputs feed the DiT.

    Every conditioner outputs ``cond_dim`` features per token. ``cross_attention_ids`` are
    concatenated along tokens in the given order; ``global_ids`` (one token each) along features.
    """

    cond_dim: int
    conditioners: tuple[ConditionerSpec, ...]
    cross_attention_ids: tuple[str, ...] = ()
    global_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cond_dim < 1:
            raise ValueError(f"cond_dim must be >= 1, got {self.cond_dim}")
        ids = [spec.id for spec in self.conditioners]
        if len(set(ids)) != len(ids):
            raise ValueError(f"conditioner ids must be unique, got {ids}")
        for role, used in (("cross_attention_ids", self.cross_attention_ids),
                           ("global_ids", self.global_ids)):
            unknown = [i for i in used if i not in ids]
            if unknown:
                raise ValueError(f"{role} names unknown conditioners {unknown}; known: {ids}")
        for i in self.global_ids:
            if self.spec(i).params.num_tokens != 1:
                raise ValueError(
                    f"global conditioner {i!r} must produce one token (SAT squeezes the token axis)"
                )

    def spec(self, conditioner_id: str) -> ConditionerSpec:
        for spec in self.conditioners:
            if spec.id == conditioner_id:
                return spec
        raise KeyError(f"no conditioner with id {conditioner_id!r}")

    @property
    def num_cross_attention_tokens(self) -> int:
        """Tc of ``cross_attn_cond`` (65 for SAO Small)."""
        return sum(self.spec(i).params.num_tokens for i in self.cross_attention_ids)

    @property
    def global_cond_dim(self) -> int:
        """Feature width of ``global_cond`` (768 for SAO Small)."""
        return self.cond_dim * len(self.global_ids)


def sao_small_conditioning(t5_model_dir: str, cond_dim: int = 768) -> ConditioningConfig:
    """Stable Audio Open Small: T5-base prompt (64 tokens) + seconds_total in [0, 256]."""
    return ConditioningConfig(
        cond_dim=cond_dim,
        conditioners=(
            ConditionerSpec("prompt", "t5", T5Params(t5_model_dir, max_length=64)),
            ConditionerSpec("seconds_total", "number", NumberParams(0.0, 256.0)),
        ),
        cross_attention_ids=("prompt", "seconds_total"),
        global_ids=("seconds_total",),
    )


def minilm_conditioning(cond_dim: int = 768, max_length: int = 64) -> ConditioningConfig:
    """SAO Small's layout with the offline MiniLM prompt encoder in place of T5."""
    return ConditioningConfig(
        cond_dim=cond_dim,
        conditioners=(
            ConditionerSpec("prompt", "minilm", MiniLMParams(max_length=max_length)),
            ConditionerSpec("seconds_total", "number", NumberParams(0.0, 256.0)),
        ),
        cross_attention_ids=("prompt", "seconds_total"),
        global_ids=("seconds_total",),
    )


# ---------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------


class Conditioners(nn.Module):
    """Builds every conditioner of a ``ConditioningConfig`` and assembles the DiT's inputs.

    State dict keys are ``conditioners.<id>.*``, as under SAT's ``conditioner.`` prefix. Frozen
    text transformers are not part of it (see ``text_encoders``).
    """

    def __init__(self, config: ConditioningConfig) -> None:
        super().__init__()
        self.config = config
        self.conditioners = nn.ModuleDict(
            {s.id: CONDITIONER_TYPES[s.type].build(s.params, config.cond_dim)
             for s in config.conditioners}
        )

    def encode_each(
        self, metadata: Sequence[Mapping[str, Any]], device: torch.device | str
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """metadata: B dicts keyed by conditioner id.

        Returns id -> (tokens (B, T, cond_dim), mask (B, T) bool), in config order.
        """
        out = {}
        for cid, conditioner in self.conditioners.items():
            missing = [b for b, item in enumerate(metadata) if cid not in item]
            if missing:
                raise KeyError(f"metadata items {missing} lack the conditioning key {cid!r}")
            out[cid] = conditioner([item[cid] for item in metadata], device)
        return out

    def forward(
        self, metadata: Sequence[Mapping[str, Any]], device: torch.device | str
    ) -> dict[str, torch.Tensor | None]:
        """Returns the DiT's conditioning (None where the config names no ids):

        * ``cross_attn_cond`` (B, Tc, cond_dim) float, Tc = ``config.num_cross_attention_tokens``;
        * ``cross_attn_mask`` (B, Tc) bool, False on text padding;
        * ``global_cond`` (B, global_cond_dim) float.
        """
        encoded = self.encode_each(metadata, device)
        cross = [encoded[i] for i in self.config.cross_attention_ids]
        # SAT concatenates the (B, 1, D) global embeddings along features and squeezes the token
        # axis, i.e. it takes the single token; the config guarantees there is exactly one.
        globals_ = [encoded[i][0][:, 0] for i in self.config.global_ids]
        return {
            "cross_attn_cond": torch.cat([t for t, _ in cross], dim=1) if cross else None,
            "cross_attn_mask": torch.cat([m for _, m in cross], dim=1) if cross else None,
            "global_cond": torch.cat(globals_, dim=-1) if globals_ else None,
        }
