"""Small, generic evaluation metrics (numpy in, float out).

Example
-------
>>> import numpy as np
>>> round(rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0])), 4), mae(np.array([1.0, 3.0]), np.array([2.0, 3.0]))
(0.7071, 0.5)
>>> ndcg_at_k(np.array([0.9, 0.1, 0.5]), np.array([5.0, 1.0, 3.0]), k=3)
1.0
"""
from __future__ import annotations

import numpy as np


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error over all entries (NaN if empty)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(np.sqrt(np.mean((pred - true) ** 2))) if pred.size else float("nan")


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error over all entries (NaN if empty)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(np.mean(np.abs(pred - true))) if pred.size else float("nan")


def ndcg_at_k(pred: np.ndarray, gains: np.ndarray, k: int) -> float:
    """nDCG@k of one list: items ranked by ``pred`` (descending, ties in given order), graded by ``gains``.

    DCG = Σ_{r<k} gain_r / log2(r + 2); normalized by the DCG of the ideal order. 0 when all gains are 0.
    """
    pred, gains = np.asarray(pred, dtype=np.float64), np.asarray(gains, dtype=np.float64)
    k = min(k, len(gains))
    if k == 0:
        return float("nan")
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    order = np.argsort(-pred, kind="stable")[:k]
    ideal = np.sort(gains)[::-1][:k]
    best = float((ideal * disc).sum())
    return float((gains[order] * disc).sum() / best) if best > 0 else 0.0


def mean_ndcg_at_k(pred: np.ndarray, gains: np.ndarray, k: int) -> float:
    """Mean of :func:`ndcg_at_k` over the rows of ``[U, C]`` arrays (one list per user)."""
    vals = [ndcg_at_k(p, g, k) for p, g in zip(np.asarray(pred), np.asarray(gains))]
    return float(np.mean(vals)) if vals else float("nan")


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (shorter at the start).

    >>> rolling_mean(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    if window < 1:
        raise ValueError("window must be ≥ 1")
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)
