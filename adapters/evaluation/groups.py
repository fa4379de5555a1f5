"""Per-group ranking figures of a prequential run: the contract's optional ``"groups"`` section.

``groups`` has the shape of the contract (``CONTRACT.md``, "JSON reports"): ``{GROUP: {NAME: {METRIC: number}}}``
where NAME is a model name, exactly as in ``models``, and GROUP is one group of scored positive events, named
``"<dimension>:<label>"``:

* ``activity:cold``, ``activity:q1`` … ``activity:q4`` -- the event's *prior activity* = the number of events of its
  user before it in the stream (history included): what any model could have learned about the user when the event
  was scored. ``cold`` = no earlier event (the user's first event); the quartiles split the other scored positive
  events at the edges ``e1 ≤ e2 ≤ e3`` = ``np.quantile(activity, [.25, .5, .75], method="lower")`` of their prior
  activity: ``q1`` = 1..e1, ``q2`` = e1+1..e2, ``q3`` = e2+1..e3, ``q4`` > e3 (ties stay together, so quartiles may
  be unequal; an empty one is left out). :func:`activity_bounds` gives each group's range;
* ``gender:F``, ``gender:M`` (``gender:unknown`` for users without one) and ``age:<range>`` with ML-1M's age buckets
  (``under 18``, ``18-24``, ``25-34``, ``35-44``, ``45-49``, ``50-55``, ``56+``; ML-100K's exact ages fall into the
  same buckets) -- only when the dataset has user demographics (ML-100K, ML-1M; not a CSV file).

METRIC: ``hr@10`` and ``ndcg@10`` over the group's scored positive events (the contract's definitions restricted to
the group) and ``positive_events``, the group's number of scored positive events (the same for every model). Only
ranking models (those whose top-k lists were recorded) are listed.

Example
-------
>>> import numpy as np
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
>>> from adapters.evaluation.baselines import Popularity
>>> s = EventStream.from_arrays(users=list("abcdadae"), items=list("xxyxyzxy"), ratings=[5] * 8, history=0.5)
>>> res = run_protocol(s, [Popularity(s)], PrequentialConfig(history=0.5), progress=False)
>>> groups = group_breakdown(res)
>>> sorted(groups)
['activity:cold', 'activity:q1', 'activity:q4']
>>> groups["activity:cold"]["popularity"]          # e's first event: y ranked 1, behind the more popular x
{'hr@10': 1.0, 'ndcg@10': 0.6309297535714575, 'positive_events': 1}
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from adapters.data.datasets import AGE_BUCKETS, GENDERS

log = logging.getLogger(__name__)

GROUPS_NOTE = ("groups: GROUP = '<dimension>:<label>', NAME = model (as in models), METRIC = hr@10, ndcg@10 and "
                 "positive_events over the group's scored positive events. activity = the user's number of events "
                 "before the scored event (history included); activity:cold = none (the user's first event); q1-q4 "
                 "split the other scored positives at np.quantile(activity, [.25, .5, .75], method='lower'), ranges "
                 "in group_bounds (prior events, inclusive). gender/age: the dataset's user demographics (ML "
                 "datasets only), age in ML-1M's buckets.")


def age_label(code: int) -> str:
    """Label of an age code of :class:`~adapters.data.datasets.UserFeatures` (1.. = ``AGE_BUCKETS`` index + 1).

    >>> [age_label(c) for c in range(8)]
    ['unknown', 'under 18', '18-24', '25-34', '35-44', '45-49', '50-55', '56+']
    """
    if not 1 <= code <= len(AGE_BUCKETS):
        return "unknown"
    if code == 1:
        return f"under {AGE_BUCKETS[1]}"
    if code == len(AGE_BUCKETS):
        return f"{AGE_BUCKETS[-1]}+"
    return f"{AGE_BUCKETS[code - 1]}-{AGE_BUCKETS[code] - 1}"


def prior_activity(users: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Number of events of ``users[p]`` at positions before ``p``, for each ``p`` in ``positions``.

    >>> prior_activity(np.array([0, 1, 0, 0, 1]), np.array([0, 3, 4])).tolist()
    [0, 2, 1]
    """
    users = np.asarray(users)
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    group_start = np.searchsorted(sorted_users, sorted_users, side="left")
    nth = np.empty(len(users), dtype=np.int64)
    nth[order] = np.arange(len(users)) - group_start
    return nth[np.asarray(positions, dtype=np.int64)]


def activity_edges(activity: np.ndarray) -> tuple[int, int, int] | None:
    """Quartile edges ``(e1, e2, e3)`` of the non-cold (≥ 1) prior activities; None when there is none.

    >>> activity_edges(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8]))
    (2, 4, 6)
    """
    warm = np.asarray(activity)[np.asarray(activity) > 0]
    if not len(warm):
        return None
    e = np.quantile(warm, [0.25, 0.5, 0.75], method="lower")
    return int(e[0]), int(e[1]), int(e[2])


def activity_labels(activity: np.ndarray) -> np.ndarray:
    """``cold`` for 0, else ``q1``..``q4`` by :func:`activity_edges` (object array, one label per event).

    >>> activity_labels(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8])).tolist()
    ['cold', 'q1', 'q1', 'q2', 'q2', 'q3', 'q3', 'q4', 'q4']
    """
    activity = np.asarray(activity)
    out = np.full(len(activity), "cold", dtype=object)
    edges = activity_edges(activity)
    if edges is not None:
        warm = activity > 0
        quart = np.searchsorted(np.asarray(edges), activity[warm], side="left")  # a ≤ e1 → 0, … , a > e3 → 3
        out[warm] = np.array(["q1", "q2", "q3", "q4"], dtype=object)[quart]
    return out


def activity_bounds(activity: np.ndarray) -> dict[str, list[int]]:
    """Inclusive prior-activity range ``[lo, hi]`` of each non-empty activity group (hi of q4 = the largest seen).

    >>> activity_bounds(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8]))
    {'activity:cold': [0, 0], 'activity:q1': [1, 2], 'activity:q2': [3, 4], 'activity:q3': [5, 6], 'activity:q4': [7, 8]}
    """
    activity = np.asarray(activity)
    labels = activity_labels(activity)
    edges = activity_edges(activity)
    out: dict[str, list[int]] = {}
    if (labels == "cold").any():
        out["activity:cold"] = [0, 0]
    if edges is not None:
        lows = [1, edges[0] + 1, edges[1] + 1, edges[2] + 1]
        highs = [edges[0], edges[1], edges[2], int(activity.max())]
        for q, lo, hi in zip(("q1", "q2", "q3", "q4"), lows, highs):
            if (labels == q).any():
                out[f"activity:{q}"] = [lo, hi]
    return out


def demographic_labels(user_ids: np.ndarray, user_features: Any) -> dict[str, np.ndarray]:
    """``{"gender": labels, "age": labels}`` of the events whose users are ``user_ids``; ``{}`` without features
    (or when no user of the dataset has a known gender and age)."""
    if user_features is None or not len(user_features):
        return {}
    at = {uid: r for r, uid in enumerate(user_features.user_ids)}
    rows = np.array([at.get(str(u), -1) for u in user_ids], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    gender_names = np.array(["unknown", *GENDERS], dtype=object)
    for dim, codes, name_of in (("gender", user_features.gender, lambda c: gender_names[c]),
                                ("age", user_features.age, np.vectorize(age_label, otypes=[object]))):
        codes = np.asarray(codes, dtype=np.int64)
        if not (codes > 0).any():
            continue
        ev = np.where(rows >= 0, codes[np.maximum(rows, 0)], 0)
        out[dim] = name_of(ev) if len(ev) else np.zeros(0, dtype=object)
    return out


def figures_by_label(ranks: np.ndarray, labels: np.ndarray, k: int) -> dict[str, dict[str, float]]:
    """``{label: {"hr@k", "ndcg@k", "positive_events"}}`` over the events carrying each label (in order of first
    appearance).

    >>> figs = figures_by_label(np.array([0.0, 12.0, 1.0, np.inf]), np.array(list("aabb"), dtype=object), 10)
    >>> figs["a"]                                     # rank 0: 1/log2(2) = 1, over 2 events
    {'hr@10': 0.5, 'ndcg@10': 0.5, 'positive_events': 2}
    >>> round(figs["b"]["ndcg@10"], 4)                # rank 1: 1/log2(3), over 2 events
    0.3155
    """
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(labels.tolist()):
        r = ranks[labels == label]
        hits = r < k
        out[str(label)] = {f"hr@{k}": float(hits.mean()),
                           f"ndcg@{k}": float(np.sum(1.0 / np.log2(r[hits] + 2.0)) / len(r)),
                           "positive_events": int(len(r))}
    return out


def _order(dim: str, labels: list[str]) -> list[str]:
    if dim == "activity":
        return [q for q in ("cold", "q1", "q2", "q3", "q4") if q in labels]
    if dim == "age":
        return [age_label(c) for c in range(1, len(AGE_BUCKETS) + 1) if age_label(c) in labels] + (
            ["unknown"] if "unknown" in labels else [])
    return sorted(labels, key=lambda g: (g == "unknown", g))


def group_labels(result: Any, user_features: Any = None) -> dict[str, np.ndarray]:
    """``{dimension: labels}`` of the scored positive events of ``result`` (a ``PrequentialResult``)."""
    s = result.stream
    pos = result.positive_positions
    dims = {"activity": activity_labels(prior_activity(s.users, pos))}
    dims.update(demographic_labels(s.user_ids[pos], user_features))
    return dims


def group_breakdown(result: Any, user_features: Any = None) -> dict[str, dict[str, dict[str, float]]]:
    """The contract's ``groups``: ``{"<dimension>:<label>": {model: {"hr@k", "ndcg@k", "positive_events"}}}``.

    Parameters
    ----------
    result : PrequentialResult
        A finished run; only its ranking models (recorded top-k lists, one rank per scored positive) are listed.
    user_features : UserFeatures or None
        The dataset's user demographics; None = activity groups only.
    """
    k = result.config.k
    n_pos = len(result.positive_positions)
    ranking = {name: tr.rank_array() for name, tr in result.traces.items()
               if tr.lists and len(tr.rank_array()) == n_pos}
    out: dict[str, dict[str, dict[str, float]]] = {}
    if not n_pos or not ranking:
        return out
    for dim, labels in group_labels(result, user_features).items():
        per_model = {name: figures_by_label(ranks, labels, k) for name, ranks in ranking.items()}
        for label in _order(dim, list(dict.fromkeys(labels.tolist()))):
            out[f"{dim}:{label}"] = {name: figs[label] for name, figs in per_model.items()}
    return out


def group_bounds(result: Any) -> dict[str, list[int]]:
    """Prior-activity range of each activity group of ``result`` (see :func:`activity_bounds`)."""
    return activity_bounds(prior_activity(result.stream.users, result.positive_positions))
