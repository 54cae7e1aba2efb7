"""The bundle manifest: the contract between the torch side (which writes it) and the runtime.

A bundle is a folder holding ``manifest.json``, ONNX graphs, their shared weight files, tokenizer
files and a model card. This module defines the manifest's schema as plain dataclasses, reads and
validates it, and checks every file's sha256; :mod:`lmdm_export.bundle` writes it. It never
imports torch. ``docs/bundle-format.md`` explains the format to developers of other hosts.

Every problem raises :class:`BundleError` naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "lmdm-bundle"
# Version 2 added sampler.cfg_interval; version-1 manifests read with its default.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"

# Roles of the graphs a bundle may hold (docs/bundle-format.md says when each is called).
ROLES = {
    "text_encoder": "prompt token ids -> conditioning tokens",
    "conditioning": "conditioning tokens + numbers -> per-layer cross-attention K/V, global embed",
    "bc_bootstrap": "block-causal: first step over the whole window; returns the cache",
    "bc_fused": "block-causal: first step of a later block; evicts, appends, returns the new cache",
    "bc_cached": "block-causal: a later step of a block over the cache",
    "ed_prefill": "enc-dec: encoder pass over the context; returns the cache",
    "ed_decoder": "enc-dec: a step of the target over the prefilled cache",
    "outpaint": "baseline: one full uncached pass over the window",
    "vae_decoder": "latents -> audio",
    "vae_encoder": "audio -> latents (the VAE mean)",
}


class BundleError(RuntimeError):
    """A bundle that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, ONNX element type name, shape of ints and dim names."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    role: str
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # One set of values for the named dims that makes a valid call, e.g. {"batch": 2}.
    example_dims: dict[str, int] = field(default_factory=dict)
    # Shared external weight files this graph reads (listed in Manifest.weights).
    weights: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> GraphSpec:
        return cls(role=d["role"], file=d["file"], sha256=d["sha256"],
                   inputs=tuple(TensorSpec.from_dict(x) for x in d["inputs"]),
                   outputs=tuple(TensorSpec.from_dict(x) for x in d["outputs"]),
                   example_dims=dict(d.get("example_dims", {})),
                   weights=tuple(d.get("weights", ())))

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph {self.role} has no input {name!r}")


@dataclass(frozen=True)
class Geometry:
    """Sizes the runtime needs; it never holds a literal geometry of its own."""

    sample_rate: int
    audio_channels: int
    latent_channels: int
    downsampling_ratio: int
    context_frames: int
    block_frames: int
    layers: int
    heads: int
    head_dim: int
    embed_dim: int
    cond_tokens: int
    cond_dim: int
    text_tokens: int
    # Latent frames of context the VAE decoder needs on each side of a frame (its receptive
    # field); the streaming decoder holds this many frames back. Optional in format 1: bundles
    # written before it existed carry the Oobleck decoder's measured 12.
    decoder_receptive_frames: int = 12

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.block_frames

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.downsampling_ratio

    @property
    def block_seconds(self) -> float:
        return self.block_frames / self.latent_rate


@dataclass(frozen=True)
class Control:
    """An input-add group: ``channels`` per frame at ``offset`` in the ``input_add`` tensor,
    laid out ``[mask | features]``."""

    name: str
    channels: int
    offset: int


@dataclass(frozen=True)
class SamplerDefaults:
    """``cfg_interval``: the noise levels ``[t_lo, t_hi]`` whose steps are guided (both ends
    included); the others run the conditional branch alone at batch 1. ``(0, 1)``: every
    step."""

    name: str = "pingpong"
    steps: int = 8
    cfg_scale: float = 1.0
    cfg_pp: str | None = None
    logsnr_min: float = -6.0
    logsnr_max: float = 2.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cfg_interval", check_cfg_interval(self.cfg_interval))


def check_cfg_interval(interval) -> tuple[float, float]:
    """``(t_lo, t_hi)`` with ``0 <= t_lo <= t_hi <= 1``, as floats; anything else is refused."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"cfg_interval must be two noise levels [t_lo, t_hi], got {interval!r}"
                         ) from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"cfg_interval [{lo:g}, {hi:g}] must satisfy 0 <= t_lo <= t_hi <= 1")
    return lo, hi


def describe_cfg_interval(interval: tuple[float, float]) -> str:
    """`` on t in [lo, hi]`` for a guidance interval, nothing for every step."""
    return "" if interval == (0.0, 1.0) else " on t in [{:g}, {:g}]".format(*interval)


@dataclass(frozen=True)
class TextSpec:
    """How prompts become ``text_encoder`` inputs: a tokenizers-library ``tokenizer.json``,
    padded and truncated to ``max_length``."""

    encoder: str
    tokenizer: str
    max_length: int
    conditioner_id: str = "prompt"


@dataclass(frozen=True)
class Manifest:
    format: str
    format_version: int
    created_by: str
    dtype: str
    model: dict[str, Any]
    geometry: Geometry
    pattern: str
    cached_step_mask: str
    rope_mode: str
    sampler: SamplerDefaults
    controls: tuple[Control, ...]
    numbers: dict[str, tuple[float, float, float]]  # number conditioner id -> (min, max, default)
    text: TextSpec
    graphs: dict[str, GraphSpec]
    weights: dict[str, str]  # shared weight file -> sha256
    extra_files: dict[str, str] = field(default_factory=dict)  # other files -> sha256

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        return cls(
            format=d["format"], format_version=d["format_version"], created_by=d["created_by"],
            dtype=d["dtype"], model=dict(d["model"]), geometry=Geometry(**d["geometry"]),
            pattern=d["pattern"], cached_step_mask=d["cached_step_mask"],
            rope_mode=d["rope_mode"], sampler=SamplerDefaults(**d["sampler"]),
            controls=tuple(Control(**c) for c in d["controls"]),
            numbers={k: tuple(v) for k, v in d["numbers"].items()},
            text=TextSpec(**d["text"]),
            graphs={k: GraphSpec.from_dict(v) for k, v in d["graphs"].items()},
            weights=dict(d["weights"]), extra_files=dict(d.get("extra_files", {})))

    def graph(self, role: str) -> GraphSpec:
        try:
            return self.graphs[role]
        except KeyError:
            raise BundleError(f"the bundle has no {role!r} graph ({ROLES.get(role, 'unknown')}); "
                              f"it has {sorted(self.graphs)}: re-export it") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: str | Path, *, check_files: bool = True) -> Manifest:
    """Read and validate ``bundle/manifest.json``; with ``check_files`` verify every sha256."""
    root = Path(bundle)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle folder {root} does not exist (export one with "
                          "`lmdm-bridge export ... --out DIR`)")
    if not path.is_file():
        raise BundleError(f"{path} is missing: {root} is not a bundle")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not readable JSON ({exc}): re-export the bundle") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{path} is not an {FORMAT} manifest")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{path} has format version {version!r}; this lmdm-bridge reads up to "
                          f"{FORMAT_VERSION}: upgrade lmdm-bridge (pip install -U lmdm-bridge)")
    try:
        manifest = Manifest.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path} is malformed (missing or wrong entry {exc}): re-export the "
                          "bundle") from exc
    for role in manifest.graphs:
        if role not in ROLES:
            raise BundleError(f"{path} lists an unknown graph role {role!r}")
    if check_files:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every graph, weight and extra file must exist and match its sha256."""
    expected = {g.file: g.sha256 for g in manifest.graphs.values()}
    expected.update(manifest.weights)
    expected.update(manifest.extra_files)
    for name, digest in sorted(expected.items()):
        file = root / name
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing: re-export or re-copy the bundle")
        actual = sha256_file(file)
        if actual != digest:
            raise BundleError(f"bundle file {file} is corrupt: sha256 {actual[:12]}... does not "
                              f"match the manifest's {digest[:12]}...; re-copy or re-export it")
