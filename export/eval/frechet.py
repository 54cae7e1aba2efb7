"""Fréchet distance between two sets of embeddings (the FID/FAD formula).

``FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)``. The matrix square
root goes through symmetric eigendecompositions (``S_a^1/2 S_b S_a^1/2`` is symmetric positive
semi-definite, and its square root's trace is the sum of the roots of its eigenvalues), so no
scipy and no complex round-off.

FD is biased upwards for small sets, strongly so when the count is near the dimension (64): the
feasibility study measured 0.91 for 431 real-val clips against 5.79 for 96 of them. Only compare
figures computed on equal clip counts; the evaluation always puts real-vs-real on the same count
beside a generated-vs-real figure.
"""

from __future__ import annotations

import numpy as np


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to ``a (N, D)`` and ``b (M, D)``, N, M >= 2."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Fréchet distance needs at least 2 embeddings per set, got "
                         f"{len(a)} and {len(b)}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(s_a)
    middle = root_a @ s_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)
    return max(fd, 0.0)
