"""Recovery after planted interest drift: how fast does each model follow a user who changes their mind?

Input: a :class:`~adapters.evaluation.prequential.PrequentialResult` on a stream with known ground truth (the sidecar
``FILE.drift.json`` written by ``metarec synth``: per user ``kind`` and, for drifting users, ``drift_index`` --
the 0-based index, in the user's own event sequence, where the new interests start).

Per drifting user and per model (ranking hits of the user's scored positive events, in order):

* *pre-drift level* ``L`` = hit rate over the user's last ``pre_window`` scored positives before the drift
  (the user is *measurable* when there are at least ``min_pre`` of them and ``L > 0``);
* *recovery* = number of the user's own events from the drift event to the first event of the first run of
  ``window`` consecutive post-drift scored positives whose hit rate is ≥ ``threshold`` · ``L``
  (0 = never fell below; a user without such a run before their stream ends is *not recovered*).

Aggregates per model: measurable users, share recovered, median and mean recovery over the recovered users, and
the per-user pre/post levels. Also an aligned curve: hit rate of every drifting user's positive events by
offset (own events) from the drift, for the plot, and the same recovery rule applied to that pooled curve
(``curve_recovery_events``, see :func:`curve_recovery`) -- per-user hit rates over a few events are very noisy. A non-personalized model (popularity) has about the same
level before and after a user's drift, so it "recovers" at once -- read its recovery together with its level.

Example
-------
>>> import numpy as np
>>> user_hits = {"u": (np.array([0, 1, 2, 3, 4, 5, 6]), np.array([1, 1, 0, 0, 1, 1, 1]))}
>>> user_recovery(*user_hits["u"], drift_index=2, window=2, pre_window=10, min_pre=2, threshold=0.9)
(1.0, 2)
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adapters.errors import MetarecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryConfig:
    window: int = 5  #: post-drift scored positives per run that must reach the threshold
    pre_window: int = 10  #: last scored positives before the drift that define the pre-drift level
    min_pre: int = 3  #: fewer pre-drift scored positives: user not measurable
    threshold: float = 0.9  #: share of the pre-drift level that counts as recovered
    curve_before: int = 20  #: own events before the drift shown in the aligned curve
    curve_after: int = 40  #: own events after the drift shown in the aligned curve


def sidecar_path(csv_path: str | Path) -> Path:
    """``stream.csv`` → ``stream.drift.json``."""
    p = Path(csv_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".drift.json")


#: sidecar kinds that carry no per-user drift (``metarec synth --item-churn``): no drift-recovery section
NO_DRIFT_KINDS = ("item_churn",)


def load_truth(path: str | Path) -> dict[str, Any] | None:
    """Read a ground-truth sidecar; one-line :class:`MetarecError` when unreadable or malformed.

    A sidecar of a kind in :data:`NO_DRIFT_KINDS` (e.g. ``"item_churn"``) plants no per-user drift: None
    (the evaluation then leaves the ``drift`` section out).
    """
    try:
        truth = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MetarecError(f"cannot read drift ground truth {path}: {exc}") from None
    if isinstance(truth, dict) and truth.get("kind") in NO_DRIFT_KINDS:
        log.info("%s: ground truth of kind %r has no per-user drift; no drift-recovery section", path, truth["kind"])
        return None
    if not isinstance(truth, dict) or not isinstance(truth.get("users"), dict):
        raise MetarecError(f"{path}: not a drift ground truth (no 'users' object)")
    return truth


def user_recovery(own_index: np.ndarray, hits: np.ndarray, drift_index: int, window: int, pre_window: int,
                  min_pre: int, threshold: float) -> tuple[float, int | None] | None:
    """One user's (pre-drift level, recovery in own events or None if not recovered); None if not measurable.

    ``own_index`` ``[P]``: index in the user's own sequence of each scored positive event (increasing);
    ``hits`` ``[P]``: 1 if the model had it in its top-10.
    """
    pre = hits[own_index < drift_index][-pre_window:]
    if len(pre) < min_pre or pre.mean() <= 0:
        return None
    level = float(pre.mean())
    post_idx, post = own_index[own_index >= drift_index], hits[own_index >= drift_index].astype(np.float64)
    if len(post) < window:
        return level, None
    runs = np.convolve(post, np.ones(window), mode="valid") / window  # run starting at each post event
    ok = np.flatnonzero(runs >= threshold * level - 1e-12)
    if not len(ok):
        return level, None
    return level, int(post_idx[ok[0]] - drift_index)


def own_indices(users: np.ndarray) -> np.ndarray:
    """Index of each event in its user's own sequence (stream order)."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    within = np.arange(len(users)) - np.repeat(starts, counts)
    out = np.empty(len(users), dtype=np.int64)
    out[order] = within
    return out


def recovery_report(result: Any, truth: dict[str, Any], config: RecoveryConfig | None = None,
                    models: list[str] | None = None) -> dict[str, Any]:
    """The ``drift`` section of the evaluation JSON (see module docstring)."""
    cfg = config or RecoveryConfig()
    stream = result.stream
    pos = result.positive_positions
    own = own_indices(stream.users)
    user_of_pos = stream.users[pos]
    uid_of_code: dict[int, str] = {}
    for code, uid in zip(stream.users.tolist(), stream.user_ids.tolist()):
        uid_of_code.setdefault(code, str(uid))
    truth_users = truth["users"]
    drifting = {code: int(truth_users[uid]["drift_index"]) for code, uid in uid_of_code.items()
                if uid in truth_users and truth_users[uid].get("kind", "none") != "none"
                and "drift_index" in truth_users[uid]}
    if not drifting:
        raise MetarecError("the drift ground truth names no drifting user of this stream")
    order = np.argsort(user_of_pos, kind="stable")
    bounds = np.flatnonzero(np.r_[True, user_of_pos[order][1:] != user_of_pos[order][:-1], True])
    groups = {int(user_of_pos[order[a]]): order[a:b] for a, b in zip(bounds[:-1], bounds[1:])}
    names = models or list(result.traces)
    out_models: dict[str, Any] = {}
    offsets = np.arange(-cfg.curve_before, cfg.curve_after + 1)
    for name in names:
        hits_all = (result.traces[name].rank_array() < result.config.k).astype(np.float64)
        recov: list[int] = []
        levels: list[float] = []
        measured = 0
        curve_sum = np.zeros(len(offsets))
        curve_n = np.zeros(len(offsets))
        for code, di in drifting.items():
            idx = groups.get(code)
            if idx is None:
                continue
            oi, h = own[pos[idx]], hits_all[idx]
            rel = oi - di
            inside = (rel >= offsets[0]) & (rel <= offsets[-1])
            np.add.at(curve_sum, rel[inside] - offsets[0], h[inside])
            np.add.at(curve_n, rel[inside] - offsets[0], 1)
            r = user_recovery(oi, h, di, cfg.window, cfg.pre_window, cfg.min_pre, cfg.threshold)
            if r is None:
                continue
            measured += 1
            levels.append(r[0])
            if r[1] is not None:
                recov.append(r[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = np.where(curve_n > 0, curve_sum / np.maximum(curve_n, 1), np.nan)
        pre_mask, post_mask = offsets < 0, (offsets >= 0) & (offsets < 10)
        out_models[name] = {
            "measured_users": measured,
            "recovered_share": (len(recov) / measured) if measured else None,
            "median_events": float(np.median(recov)) if recov else None,
            "mean_events": float(np.mean(recov)) if recov else None,
            "pre_drift_hr@10": float(np.mean(levels)) if levels else None,
            "hr@10_before": _weighted(curve_sum[pre_mask], curve_n[pre_mask]),
            "hr@10_first10_after": _weighted(curve_sum[post_mask], curve_n[post_mask]),
            "curve_recovery_events": curve_recovery(offsets, curve_sum, curve_n, cfg),
            "curve": [None if np.isnan(c) else round(float(c), 5) for c in curve],
        }
    return {"drifting_users": len(drifting), "config": asdict(cfg), "curve_offsets": offsets.tolist(),
            "models": out_models}


def curve_recovery(offsets: np.ndarray, hits: np.ndarray, counts: np.ndarray, cfg: RecoveryConfig) -> int | None:
    """Recovery of the aligned curve (all drifting users pooled: far less noisy than one user).

    Pre-drift level = pooled hit rate over offsets ``[-pre_window, 0)``; recovery = first offset ``o ≥ 0`` whose
    pooled hit rate over ``[o, o + window)`` is ≥ ``threshold`` × that level (None: not within the curve).

    >>> off = np.arange(-2, 5)
    >>> curve_recovery(off, np.array([5, 5, 0, 1, 4, 5, 5.]), np.full(7, 10.), RecoveryConfig(window=2, pre_window=2))
    2
    """
    pre = (offsets < 0) & (offsets >= -cfg.pre_window)
    level = _weighted(hits[pre], counts[pre])
    if not level:
        return None
    for o in offsets[offsets >= 0]:
        run = (offsets >= o) & (offsets < o + cfg.window)
        if run.sum() < cfg.window:
            return None
        rate = _weighted(hits[run], counts[run])
        if rate is not None and rate >= cfg.threshold * level - 1e-12:
            return int(o)
    return None


def _weighted(s: np.ndarray, n: np.ndarray) -> float | None:
    total = float(n.sum())
    return float(s.sum() / total) if total else None
