"""Typed, frozen configuration of the LMDM DiT and of its streaming geometry.

Every size the model, the cache and the rollout use comes from here; nothing downstream holds a
literal geometry (lmdm-reference §6, bugs 2-4: one geometry source of truth).
"""

from __future__ import annotations

from dataclasses import dataclass

ATTENTION_PATTERNS = ("enc-dec", "block-causal")
CACHED_STEP_MASKS = ("full", "window")
ROPE_MODES = ("fixed",)


@dataclass(frozen=True)
class InputAddGroup:
    """One named group of per-frame conditioning channels added to the token embeddings.

    The groups of a model are concatenated in config order along channels and projected by one
    bias-free ``Linear(sum(channels) -> embed_dim)`` (``to_input_add_embed``), so a checkpoint
    of the reference code loads unchanged. A new control (accompaniment, sketch) is a new group:
    its columns are appended to that projection, nothing else changes. The layout inside a group
    is ``[mask (1 channel) | features]``, mask = 1 where the control is given.
    """

    name: str
    channels: int

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"input-add group name {self.name!r} must be an identifier")
        if self.channels < 1:
            raise ValueError(f"input-add group {self.name!r} needs at least one channel")


def inpaint_group(io_channels: int) -> InputAddGroup:
    """The inpainting group: mask (1 on given/context frames) and the masked clean latents."""
    return InputAddGroup("inpaint", 1 + io_channels)


@dataclass(frozen=True)
class DiTConfig:
    """Geometry of the Stable Audio Open Small DiT (lmdm-reference §1) plus LMDM's input-add groups.

    ``rotary_dim`` follows stable-audio-tools: ``max(head_dim // 2, 32)`` dims of each head are
    rotated, the rest pass unrotated.
    """

    io_channels: int = 64
    embed_dim: int = 1024
    depth: int = 16
    num_heads: int = 8
    cond_token_dim: int = 768
    global_cond_dim: int = 768
    ff_mult: int = 4
    timestep_features_dim: int = 256
    rope_base: float = 10000.0
    qk_norm_eps: float = 1e-6
    input_add_groups: tuple[InputAddGroup, ...] = ()

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.rotary_dim > self.head_dim or self.rotary_dim % 2:
            raise ValueError(
                f"rotary dims {self.rotary_dim} must be even and fit the head dim {self.head_dim}"
                " (stable-audio-tools rotates max(head_dim // 2, 32) dims: use head_dim >= 32)")
        names = [g.name for g in self.input_add_groups]
        if len(set(names)) != len(names):
            raise ValueError(f"input-add group names must be unique, got {names}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return max(self.head_dim // 2, 32)

    @property
    def input_add_channels(self) -> int:
        return sum(g.channels for g in self.input_add_groups)

    def group(self, name: str) -> InputAddGroup:
        for g in self.input_add_groups:
            if g.name == name:
                return g
        raise KeyError(f"the model has no input-add group {name!r} "
                       f"(it has {[g.name for g in self.input_add_groups]})")


@dataclass(frozen=True)
class StreamConfig:
    """Block-wise streaming geometry (lmdm-reference §0, §3.3-3.5).

    ``context_frames`` (s) clean frames precede each ``block_frames`` (o = c) target block; the
    block-causal pattern needs ``s = n * c``. ``cached_step_mask`` picks what the cached steps of
    a block-causal block see (see :func:`lmdm_export.model.masks.cached_step_mask`).
    """

    pattern: str = "block-causal"
    context_frames: int = 192
    block_frames: int = 48
    rope_mode: str = "fixed"
    cached_step_mask: str = "full"

    def __post_init__(self) -> None:
        if self.pattern not in ATTENTION_PATTERNS:
            raise ValueError(f"pattern {self.pattern!r} is not one of {ATTENTION_PATTERNS}")
        if self.cached_step_mask not in CACHED_STEP_MASKS:
            raise ValueError(
                f"cached_step_mask {self.cached_step_mask!r} is not one of {CACHED_STEP_MASKS}")
        if self.rope_mode not in ROPE_MODES:
            raise ValueError(f"rope_mode {self.rope_mode!r} is not one of {ROPE_MODES}")
        if self.block_frames < 1 or self.context_frames < 1:
            raise ValueError("context_frames and block_frames must be positive")
        if self.pattern == "block-causal" and self.context_frames % self.block_frames:
            raise ValueError(
                f"block-causal streaming needs context_frames ({self.context_frames}) to be a "
                f"multiple of block_frames ({self.block_frames})")

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.block_frames

    @property
    def context_chunks(self) -> int:
        return self.context_frames // self.block_frames
