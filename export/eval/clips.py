"""3-second clips: real ones from the corpus, generated ones cut from a bundle's output.

Real reference sets are drawn per label from the validation split (held-out pieces), or from the
train split for labels that have no validation pieces (the report names those labels). Two
disjoint sets are drawn, A and B, from different pieces where the label has more than one, so
"real vs real" measures the spread between pieces that a generator is also compared against.

Generated audio arrives at the bundle's rate and channel count; :func:`to_mono_rate` downmixes it
and resamples it with the runtime's windowed-sinc resampler to the classifier's rate.
:func:`through_codec` passes real clips through an autoencoder at its own rate and back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from lmdm_bridge.audio.resample import StreamResampler
from lmdm_export.train.corpus import Item, read_crop


def to_mono_rate(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """``audio (channels, samples)`` at ``rate`` -> mono (samples',) float32 at ``target_rate``."""
    mono = np.asarray(audio, dtype=np.float32).mean(axis=0, keepdims=True)
    if rate == target_rate:
        return mono[0]
    resampler = StreamResampler(rate, target_rate, channels=1)
    out = np.concatenate([resampler.process(mono), resampler.flush()], axis=1)[0]
    length = round(mono.shape[1] * target_rate / rate)  # the flush may fall a sample short
    return np.pad(out[:length], (0, max(0, length - len(out))))


def through_codec(clips: np.ndarray, rate: int, codec_rate: int, channels: int, ratio: int,
                  codec: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Mono ``clips (n, samples)`` at ``rate`` -> the same clips through ``codec``, same shape.

    Each clip is resampled to ``codec_rate``, copied to ``channels`` and zero-padded to whole
    latent frames of ``ratio`` samples; ``codec`` maps that ``(1, channels, N)`` float32 array
    to audio ``(channels, N)``, which is cut back, downmixed and resampled to ``rate``."""
    out = np.empty_like(clips, dtype=np.float32)
    for i, clip in enumerate(clips):
        audio = to_mono_rate(clip[None], rate, codec_rate)
        frames = -(-len(audio) // ratio)
        padded = np.zeros((1, channels, frames * ratio), np.float32)
        padded[0, :, :len(audio)] = audio
        decoded = codec(padded)[:, :len(audio)]
        out[i] = to_mono_rate(decoded, codec_rate, rate)[:clips.shape[1]]
    return out


def cut_clips(audio: np.ndarray, clip_samples: int) -> np.ndarray:
    """Mono ``audio (samples,)`` -> consecutive whole clips (n, clip_samples); a tail is dropped."""
    n = len(audio) // clip_samples
    return np.ascontiguousarray(audio[:n * clip_samples].reshape(n, clip_samples))


def _windows(item: Item, clip_samples: int, rng: np.random.Generator) -> list[int]:
    """Start samples of the non-overlapping clips of ``item``, in a seeded random order."""
    n = max(1, item.frames // clip_samples)
    return [int(k) * clip_samples for k in rng.permutation(n)]


def _round_robin(items: list[Item], clip_samples: int, n: int,
                 rng: np.random.Generator) -> list[tuple[Item, int]]:
    """Up to ``n`` (item, start) picks: the first window of every item, then the second..."""
    queues = [[(it, s) for s in _windows(it, clip_samples, rng)] for it in items]
    picks: list[tuple[Item, int]] = []
    depth = 0
    while len(picks) < n and any(len(q) > depth for q in queues):
        picks += [q[depth] for q in queues if len(q) > depth][:n - len(picks)]
        depth += 1
    return picks


def reference_sets(items: list[Item], clip_samples: int, n: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of ``n`` real clips each (n, clip_samples) from one label's ``items``.

    Pieces are dealt alternately to A and B (in a seeded order), so the sets share no piece;
    a label with a single piece splits that piece's windows instead. Fewer than ``n`` clips come
    back only when the items are too short to give 2n windows.
    """
    rng = np.random.default_rng(seed)
    pieces = defaultdict(list)
    for it in items:
        pieces[it.piece_id].append(it)
    order = [pieces[p] for p in rng.permutation(sorted(pieces))]
    if len(order) > 1:
        group_a = [it for group in order[0::2] for it in group]
        group_b = [it for group in order[1::2] for it in group]
        picks_a = _round_robin(group_a, clip_samples, n, rng)
        picks_b = _round_robin(group_b, clip_samples, n, rng)
    else:
        picks = _round_robin(order[0], clip_samples, 2 * n, rng)
        picks_a, picks_b = picks[0::2], picks[1::2]
    size = min(len(picks_a), len(picks_b))

    def read(picks: list[tuple[Item, int]]) -> np.ndarray:
        return np.stack([read_crop(it.path, s, clip_samples) for it, s in picks[:size]])

    return read(picks_a), read(picks_b)
