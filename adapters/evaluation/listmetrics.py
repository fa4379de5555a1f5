"""Beyond-accuracy figures of the top-k lists a ranking model shows along the stream (``CONTRACT.md``, "JSON reports").

A *scored list* is a model's top ``k`` among the candidates of one scored positive event (the contract's candidate
set: items seen before the event minus the user's own earlier items), computed by :func:`top_k_lists` from the same
scores and candidate mask the ranks come from. Candidates scored ``-inf`` or NaN are never listed (a model that
masks an item does not show it), so a list may be shorter than ``k``; ties at the cut are broken by
``np.argpartition`` (deterministic, arbitrary). Over all scored lists of a model:

* ``new_item_hr@k`` -- :func:`new_item_hit_rate`: HR@k over the scored positives whose item first appeared after the
  history (``first_pos >= start``);
* ``coverage@k`` -- :func:`coverage`: share of the catalog (every item column of the stream) listed at least once;
* ``novelty@k`` -- :func:`novelty`: mean over every listed item of −log2(popularity share), the share being the
  item's count of events before the listing event divided by the number of events before it (exact per event);
* ``diversity@k`` -- :func:`diversity`: mean over lists of ≥ 2 items of the mean pairwise 1 − cosine of the items'
  multi-hot genre vectors (an item without genres has cosine 0 with every item); omitted without genres.

Example
-------
>>> import numpy as np
>>> scores = np.array([[3.0, 1.0, 2.0, 0.0]])
>>> cand = np.array([[True, True, False, True]])
>>> top_k_lists(scores, cand, k=2).tolist()          # col 2 is not a candidate
[[0, 1]]
>>> items = np.array([0, 1, 0, 3, 2])                 # the stream's item column per event
>>> figs = beyond_accuracy(np.array([[0, 1]]), np.array([4]), items, n_cols=4, genres=None, k=2)
>>> figs["coverage@2"], round(figs["novelty@2"], 4)   # 2 of 4 items; shares 2/4 and 1/4 before position 4
(0.5, 1.5)
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

_CHUNK = 16_384  #: lists per chunk in :func:`diversity` (bounds the [rows, k, genres] temporary)


def top_k_lists(scores: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` best candidates, best first: int32 ``[R, k]`` item columns, ``-1`` padding.

    Parameters
    ----------
    scores : np.ndarray
        ``[R, n_cols]`` model scores (any float dtype).
    cand : np.ndarray
        ``[R, n_cols]`` bool candidate mask of each row's event.
    k : int
        List length.

    Examples
    --------
    >>> top_k_lists(np.array([[0.5, -np.inf, 2.0]]), np.ones((1, 3), bool), k=3).tolist()
    [[2, 0, -1]]
    """
    rows, n_cols = scores.shape
    out = np.full((rows, k), -1, dtype=np.int32)
    kk = min(k, n_cols)
    if rows == 0 or kk == 0:
        return out
    neg = np.where(cand & (scores > -np.inf), -scores, np.inf)  # NaN > -inf is False: never listed
    part = np.argpartition(neg, kk - 1, axis=1)[:, :kk] if kk < n_cols else np.tile(np.arange(n_cols), (rows, 1))
    vals = np.take_along_axis(neg, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    part, vals = np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)
    out[:, :kk] = np.where(vals < np.inf, part, -1)
    return out


def new_item_hit_rate(ranks: np.ndarray, target_first_pos: np.ndarray, start: int, k: int) -> float | None:
    """HR@k over the positives whose target item first appeared at or after ``start``; None when there is none.

    >>> new_item_hit_rate(np.array([0.0, 3.0, np.inf]), np.array([1, 7, 9]), start=5, k=10)
    0.5
    """
    new = np.asarray(target_first_pos) >= start
    return float((np.asarray(ranks)[new] < k).mean()) if new.any() else None


def coverage(lists: np.ndarray, n_cols: int) -> float:
    """Share of the ``n_cols`` catalog items that appear in at least one list.

    >>> coverage(np.array([[0, 2], [2, -1]]), n_cols=4)
    0.5
    """
    listed = lists[lists >= 0]
    return float(np.unique(listed).size / n_cols) if n_cols else 0.0


def count_before(items: np.ndarray, n_cols: int, query_items: np.ndarray, query_pos: np.ndarray) -> np.ndarray:
    """Number of events of ``query_items[q]`` at positions ``< query_pos[q]`` in the stream ``items``.

    >>> count_before(np.array([0, 1, 0, 0]), 2, np.array([0, 0, 1]), np.array([0, 3, 4])).tolist()
    [0, 2, 1]
    """
    n = len(items)
    order = np.argsort(items, kind="stable")               # positions grouped by item, ascending inside
    keys = items[order].astype(np.int64) * n + order
    item_start = np.searchsorted(keys, np.arange(n_cols, dtype=np.int64) * n)
    q_items = np.asarray(query_items, dtype=np.int64)
    at = np.searchsorted(keys, q_items * n + np.asarray(query_pos, dtype=np.int64))
    return at - item_start[q_items]


def novelty(lists: np.ndarray, positions: np.ndarray, items: np.ndarray, n_cols: int) -> float | None:
    """Mean −log2(popularity share) of every listed item; share = its events before the list's event / events
    before it. None when nothing was listed.

    >>> round(novelty(np.array([[1, 0]]), np.array([4]), np.array([0, 0, 0, 1]), 2), 4)   # shares 1/4, 3/4
    1.2075
    """
    valid = lists >= 0
    if not valid.any():
        return None
    rows, slots = np.nonzero(valid)
    pos = np.asarray(positions, dtype=np.int64)[rows]
    counts = count_before(items, n_cols, lists[rows, slots], pos)
    if (counts <= 0).any():  # a listed item is a candidate: seen before its event
        raise ValueError("a listed item has no event before its list's event (not a candidate)")
    return float(np.mean(np.log2(pos) - np.log2(counts)))


def diversity(lists: np.ndarray, genres: np.ndarray) -> float | None:
    """Mean over lists of ≥ 2 items of the mean pairwise ``1 − cos`` of the items' genre vectors (None: no such list).

    Uses Σ_{a<b} u_a·u_b = (|Σ_a u_a|² − Σ_a |u_a|²) / 2 over the unit vectors ``u`` of a list.

    >>> g = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    >>> round(diversity(np.array([[0, 1, 2], [0, 1, -1]]), g), 4)   # (2/3 + 0) / 2
    0.3333
    """
    g = np.asarray(genres, dtype=np.float64)
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    unit = np.vstack([g / np.where(norm > 0, norm, 1.0), np.zeros((1, g.shape[1]))])  # row -1: padding
    total, n_lists = 0.0, 0
    for a in range(0, len(lists), _CHUNK):
        chunk = lists[a:a + _CHUNK]
        m = (chunk >= 0).sum(axis=1)
        vec = unit[chunk]                                       # -1 indexes the zero padding row
        summed = vec.sum(axis=1)
        sim = ((summed * summed).sum(axis=1) - (vec * vec).sum(axis=(1, 2))) / 2.0
        pairs = m * (m - 1) / 2.0
        ok = pairs > 0
        total += float(np.sum(1.0 - sim[ok] / pairs[ok]))
        n_lists += int(ok.sum())
    return total / n_lists if n_lists else None


def beyond_accuracy(lists: np.ndarray, positions: np.ndarray, items: np.ndarray, n_cols: int,
                    genres: np.ndarray | None, k: int) -> dict[str, float]:
    """``coverage@k``, ``novelty@k`` and (with genres) ``diversity@k`` of the lists shown at ``positions``.

    Parameters
    ----------
    lists : np.ndarray
        int ``[L, k]`` item columns (``-1`` padding), from :func:`top_k_lists`.
    positions : np.ndarray
        ``[L]`` stream position of each list's event.
    items : np.ndarray
        ``[E]`` the stream's item column per event.
    n_cols : int
        Catalog size (every item column of the stream).
    genres : np.ndarray or None
        ``[n_cols, G]`` multi-hot genres; None omits ``diversity@k``.
    k : int
        The lists' cut-off (names the keys).
    """
    out = {f"coverage@{k}": coverage(lists, n_cols)}
    nov = novelty(lists, positions, items, n_cols)
    if nov is not None:
        out[f"novelty@{k}"] = nov
    div = diversity(lists, genres) if genres is not None else None
    if div is not None:
        out[f"diversity@{k}"] = div
    return out
