"""Contract ranks: where a target falls among its event's candidates (``CONTRACT.md``, "Prequential protocol").

The candidates of an event at position ``p`` are the item columns first seen before ``p`` minus the items its user
interacted with before; rank = (#candidates scored strictly higher) + (#other candidates with an equal score) / 2,
``inf`` for a miss by definition (target never seen, a repeat, or a NaN score). Pure numpy, vectorized over rows.

Example
-------
>>> import numpy as np
>>> cand = candidate_mask(np.array([3]), np.array([0, 1, 2, 5]), np.array([0]), np.array([1]))
>>> cand.tolist()   # col 3 first seen at 5 (not yet), col 1 excluded for this user
[[True, False, True, False]]
>>> float(ranks_from_mask(np.array([[1.0, 9.0, 1.0, 9.0]]), np.array([0]), cand, np.array([False]))[0])
0.5
"""
from __future__ import annotations

import numpy as np


def candidate_mask(positions: np.ndarray, first_pos: np.ndarray, excl_rows: np.ndarray,
                   excl_cols: np.ndarray) -> np.ndarray:
    """``[B, n_cols]`` bool: column c is a candidate of row b when first seen before ``positions[b]`` and not
    among the row's excluded columns (``excl_cols`` where ``excl_rows == b``)."""
    cand = first_pos[None, :] < positions[:, None]
    if len(excl_rows):
        cand[excl_rows, excl_cols] = False
    return cand


def ranks_from_mask(scores: np.ndarray, targets: np.ndarray, cand: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """Contract rank of each row's target among the candidates ``cand``; ``inf`` for a miss by definition
    (target not a candidate, a repeat, or a NaN score). NaN scores of other candidates count as higher."""
    arange = np.arange(scores.shape[0])
    valid = cand[arange, targets] & ~repeat
    t = scores[arange, targets][:, None]
    higher = (cand & ~(scores <= t)).sum(axis=1)
    equal = (cand & (scores == t)).sum(axis=1) - 1
    rank = higher + equal / 2.0
    return np.where(valid & ~np.isnan(t[:, 0]), rank, np.inf)


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray, positions: np.ndarray, first_pos: np.ndarray,
                     excl_rows: np.ndarray, excl_cols: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """Contract rank of each row's target among its candidates; ``inf`` for a miss by definition.

    ``scores`` ``[B, n_cols]``; ``targets`` ``[B]`` target columns; ``positions`` ``[B]`` stream positions;
    candidates of row b = columns with ``first_pos < positions[b]`` minus ``excl_cols`` where
    ``excl_rows == b``; ``repeat`` ``[B]`` marks targets the user interacted with before.

    >>> s = np.array([[3.0, 1.0, 1.0, 1.0, 0.0]])
    >>> r = ranks_of_targets(s, np.array([1]), np.array([9]), np.arange(5), np.zeros(0, int), np.zeros(0, int),
    ...                      np.array([False]))
    >>> float(r[0])   # one higher (col 0), two other ties (cols 2, 3) count half each
    2.0
    """
    return ranks_from_mask(scores, targets, candidate_mask(positions, first_pos, excl_rows, excl_cols), repeat)
