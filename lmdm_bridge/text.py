"""Prompts -> the DiT's per-prompt conditioning, with the bundle's ``text_encoder`` and
``conditioning`` graphs (docs/bundle-format.md, "Conditioning").

1. Tokenize with the bundle's ``tokenizer.json`` (the ``tokenizers`` library), padded and
   truncated to ``manifest.text.max_length`` exactly as the torch side's Hugging Face tokenizer
   is called (``truncation=True, max_length=L, padding="max_length"``).
2. ``text_encoder`` -> tokens ``(L, cond_dim)``, padding rows zero. Kept in a bounded cache:
   live performance moves between a handful of prompts and blends of them.
3. A weighted blend is ``sum_i w_i tokens_i`` with the weights normalised to sum 1
   (lmdm-reference §4.4).
4. ``conditioning`` -> ``cross_k, cross_v (L, B, H, Tc, Dh)`` and ``global_embed (B, D)``: batch
   2 ``[cond; uncond]`` (``cond_scale`` 1, 0) under classifier-free guidance, else batch 1.
   Number conditioners (``seconds_total``) take the manifest's defaults unless overridden.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer

from lmdm_bridge.bundle import Bundle
from lmdm_bridge.manifest import BundleError

Prompt = str | Sequence[tuple[str, float]]
WeightedPrompt = tuple[tuple[str, float], ...]

# Pad tokens of the tokenizer families a bundle may carry, for a tokenizer.json saved without
# its padding settings.
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>")


class Conditioning(NamedTuple):
    """What every DiT step reads for the current prompt (batch ``B`` = 2 under guidance)."""

    cross_k: np.ndarray  # (L, B, H, Tc, Dh)
    cross_v: np.ndarray  # (L, B, H, Tc, Dh)
    global_embed: np.ndarray  # (B, D)


def normalize_prompt(prompt: Prompt) -> WeightedPrompt:
    """A prompt or ``[(prompt, weight), ...]`` as ``((prompt, weight), ...)`` with the weights
    summing to 1; repeated prompts are merged. Individual weights may be negative (pushing away
    from a prompt) as long as the sum is positive."""
    if isinstance(prompt, str):
        return ((prompt, 1.0),)
    merged: dict[str, float] = {}
    for item in prompt:
        text, weight = item
        if not isinstance(text, str):
            raise ValueError(f"a weighted prompt is a list of (str, weight) pairs, got {item!r}")
        merged[text] = merged.get(text, 0.0) + float(weight)
    if not merged:
        raise ValueError("an empty prompt blend: give at least one (prompt, weight) pair")
    total = sum(merged.values())
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"the weights of a prompt blend must have a positive sum to be "
                         f"normalised, got {total:g} for {list(merged.items())}")
    return tuple((text, weight / total) for text, weight in merged.items())


def dominant(prompt: WeightedPrompt) -> str:
    """The prompt with the largest weight (the first of equals): when it changes, a
    block-causal stream re-bootstraps its cache (lmdm-reference §4.4)."""
    return max(prompt, key=lambda item: item[1])[0]


class PromptTokenizer:
    """``tokenizer.json`` configured like the torch side's call: right padding to and right
    truncation at ``max_length``, the post-processor's special tokens kept."""

    def __init__(self, bundle: Bundle) -> None:
        text = bundle.manifest.text
        path = bundle.root / text.tokenizer
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exception subclasses
            raise BundleError(f"{path} is not a tokenizers-library tokenizer: {exc}") from exc
        self.max_length = text.max_length
        padding = self.tokenizer.padding
        if padding is not None:
            pad_id, pad_token = padding["pad_id"], padding["pad_token"]
        else:
            pad_token = next((t for t in _PAD_TOKENS if self.tokenizer.token_to_id(t) is not None),
                             None)
            if pad_token is None:
                raise BundleError(f"{path} names no padding token: re-export the bundle")
            pad_id = self.tokenizer.token_to_id(pad_token)
        self.tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token,
                                      length=self.max_length)
        self.tokenizer.enable_truncation(max_length=self.max_length, direction="right")

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids``, ``attention_mask``: int64 ``(B, max_length)`` each."""
        encodings = self.tokenizer.encode_batch(list(prompts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask


class PromptConditioner:
    """Turns prompts and blends into :class:`Conditioning` with the bundle's graphs.

    ``cache_size``: prompts whose encoder tokens are kept (least recently used evicted).
    ``numbers``: values for the number conditioners (e.g. ``{"seconds_total": 11.0}``); the
    manifest's defaults otherwise.
    """

    def __init__(self, bundle: Bundle, *, cache_size: int = 64,
                 numbers: Mapping[str, float] | None = None) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.bundle = bundle
        manifest = bundle.manifest
        self.tokenize = PromptTokenizer(bundle)
        self.text_id = manifest.text.conditioner_id
        unknown = set(numbers or {}) - set(manifest.numbers)
        if unknown:
            raise ValueError(f"the model has no number conditioner(s) {sorted(unknown)}; it has "
                             f"{sorted(manifest.numbers)}")
        self.numbers = {k: float(default) for k, (_, _, default) in manifest.numbers.items()}
        self.numbers.update({k: float(v) for k, v in (numbers or {}).items()})
        self.cache_size = cache_size
        self._tokens: OrderedDict[str, np.ndarray] = OrderedDict()

    def tokens(self, prompt: str) -> np.ndarray:
        """Encoder tokens of one prompt, ``(max_length, cond_dim)`` float32 (cached)."""
        if prompt in self._tokens:
            self._tokens.move_to_end(prompt)
            return self._tokens[prompt]
        ids, mask = self.tokenize([prompt])
        tokens = self.bundle.run("text_encoder", input_ids=ids, attention_mask=mask)["tokens"][0]
        self._tokens[prompt] = tokens
        if len(self._tokens) > self.cache_size:
            self._tokens.popitem(last=False)
        return tokens

    def blend(self, prompt: Prompt) -> np.ndarray:
        """``sum_i w_i tokens_i`` with normalised weights, ``(max_length, cond_dim)``."""
        weighted = normalize_prompt(prompt)
        if len(weighted) == 1:
            return self.tokens(weighted[0][0])
        out = np.zeros_like(self.tokens(weighted[0][0]))
        for text, weight in weighted:
            out += np.float32(weight) * self.tokens(text)
        return out

    def condition(self, prompt: Prompt, *, guidance: bool) -> Conditioning:
        """Run ``conditioning`` for a prompt or blend: batch ``[cond; uncond]`` with
        ``guidance``, else ``[cond]``."""
        tokens = self.blend(prompt)[None]
        batch = 2 if guidance else 1
        feeds = {self.text_id: np.repeat(tokens, batch, axis=0),
                 "cond_scale": np.array([1.0, 0.0][:batch], dtype=np.float32)}
        for name, value in self.numbers.items():
            feeds[name] = np.full(batch, value, dtype=np.float32)
        out = self.bundle.run("conditioning", **feeds)
        return Conditioning(out["cross_k"], out["cross_v"], out["global_embed"])
