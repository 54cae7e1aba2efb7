"""The least-squares trend of a metric over a stream's segments, with its standard errors.

Drift is judged from the first and the last minute of one stream, but FD on one segment's few
clips is noisy (session 24's streams: 64-99 per segment around no visible trend), so a growth of
a few units between two minutes says little alone. The slope over all segments, with the usual
OLS standard error ``sqrt(sum(residual^2) / (n - 2) / sum((x - mean x)^2))``, puts a scale beside
it. That error treats the segments as independent draws around a line, but a segment's FD pools
the same few streams as its neighbours', so a stream that happens to wander moves every segment
after it, and the error leaves that out (session 26: three evaluation seeds' paired trends
differed by several of their OLS errors). :func:`stream_bootstrap_error` measures it: the spread
of the slope when each label's streams are drawn again, with replacement, from the ones rendered
(a bootstrap over streams; the segments of one stream stay together).
"""

from __future__ import annotations

import numpy as np

from lmdm_export.eval.frechet import frechet_distance


def linear_trend(x: list[float], y: list[float]) -> tuple[float, float | None]:
    """``(slope, standard error)`` of ``y`` against ``x`` (``n`` >= 2 points with distinct
    ``x``); the error is ``None`` for two points, which fit exactly."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or len(xs) < 2:
        raise ValueError(f"a trend needs at least 2 points of x and y, got {len(xs)} and "
                         f"{len(ys)}")
    dx = xs - xs.mean()
    sxx = float((dx ** 2).sum())
    if sxx == 0.0:
        raise ValueError("a trend needs at least two distinct x values")
    slope = float((dx * (ys - ys.mean())).sum() / sxx)
    if len(xs) == 2:
        return slope, None
    residual = ys - ys.mean() - slope * dx
    return slope, float(np.sqrt((residual ** 2).sum() / (len(xs) - 2) / sxx))


def segment_trend(segments: list[dict], minus: list[dict] | None = None) -> dict | None:
    """FD's trend per minute over a drift stream's ``segments`` (each with ``start``, ``end``
    in seconds and ``fd``), or of their FD minus ``minus``'s segment by segment (another
    bundle's stream of the same seed); segments without an FD are left out. ``None`` with
    fewer than two."""
    pairs = []
    for seg, ref in zip(segments, minus or [None] * len(segments), strict=False):
        if seg["fd"] is None or (ref is not None and (ref["fd"] is None
                                                      or ref["start"] != seg["start"])):
            continue
        pairs.append((0.5 * (seg["start"] + seg["end"]) / 60.0,
                      seg["fd"] - (0.0 if ref is None else ref["fd"])))
    if len(pairs) < 2:
        return None
    slope, error = linear_trend([x for x, _ in pairs], [y for _, y in pairs])
    return {"slope_per_minute": slope, "standard_error": error, "segments": len(pairs)}


def stream_bootstrap_error(streams: dict[str, list[np.ndarray]], real: dict[str, np.ndarray],
                           per_segment: int, clip_seconds: float,
                           minus: dict[str, list[np.ndarray]] | None = None, reps: int = 200,
                           seed: int = 0) -> float | None:
    """The standard error of FD's trend per minute over redrawn streams.

    ``streams[label]``: one ``(clips, D)`` embedding array per stream of that label, clip ``c``
    covering ``[c, c + 1) * clip_seconds``; segment ``j`` is clips ``[j, j + 1) * per_segment`` of
    every stream, pooled over all labels' streams and scored against ``real`` (``label -> (n,
    D)``, the first ``per_segment * len(streams[label])`` rows taken), as the evaluation's
    segments are. Each of ``reps`` replicates draws every label's streams again with replacement
    and fits the trend of the segments' FD (minus ``minus``'s, another bundle's streams of the
    same seeds, drawn with the same indices, for a paired trend); the result is the replicates'
    standard deviation. ``None`` when a label has fewer than two streams (nothing to redraw) or
    the streams fewer than two segments."""
    counts = {lab: len(runs) for lab, runs in streams.items()}
    if not counts or min(counts.values()) < 2:
        return None
    clips = min(len(e) for runs in streams.values() for e in runs)
    if minus is not None:
        clips = min([clips, *(len(e) for runs in minus.values() for e in runs)])
    segments = clips // per_segment
    if segments < 2:
        return None
    x = [(j + 0.5) * per_segment * clip_seconds / 60.0 for j in range(segments)]
    ref = np.concatenate([real[lab][:per_segment * n] for lab, n in counts.items()])

    def segment_fds(runs: dict[str, list[np.ndarray]], draw: dict[str, np.ndarray]) -> list[float]:
        return [frechet_distance(np.concatenate([runs[lab][i][j * per_segment:(j + 1) * per_segment]
                                                 for lab in counts for i in draw[lab]]), ref)
                for j in range(segments)]

    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(reps):
        draw = {lab: rng.integers(0, n, n) for lab, n in counts.items()}
        y = np.asarray(segment_fds(streams, draw))
        if minus is not None:
            y = y - np.asarray(segment_fds(minus, draw))
        slopes.append(linear_trend(x, list(y))[0])
    return float(np.std(slopes, ddof=1))
