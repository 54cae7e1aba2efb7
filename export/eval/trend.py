"""The least-squares trend of a metric over a stream's segments, with its standard error.

Drift is judged from the first and the last minute of one stream, but FD on one segment's few
clips is noisy (session 24's streams: 64-99 per segment around no visible trend), so a growth of
a few units between two minutes says little alone. The slope over all segments, with the usual
OLS standard error ``sqrt(sum(residual^2) / (n - 2) / sum((x - mean x)^2))``, puts a scale beside
it: two bundles' drifts differ when their slopes differ by more than a couple of standard errors.
Adjacent segments of one stream are not independent, so the error is a lower bound.
"""

from __future__ import annotations

import numpy as np


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
