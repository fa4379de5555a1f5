"""The item side's step of a micro-batch: learned at once in this process, or contributed to the group's state.

:func:`learn_items` takes a micro-batch's new events and the users' pre-update states, and either

* learns the learner's own item side from them at once (local mode, one process: the prequential evaluation, a
  worker run with ``--item-state local``): counts and rating-bias corrections
  (:class:`~adapters.online.freshness.ItemFreshness`), co-occurrences and item rows
  (:class:`~adapters.online.itemside.ItemSide`), one batched call each; or
* returns one :class:`~adapters.online.itemshare.ItemContribution` per item, for the group's item state to merge
  (shared mode, :mod:`adapters.online.sharedside`); the learner's item side then changes only when the merged rows
  come back (:func:`apply_items`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adapters.online.config import AppliedBatch
from adapters.online.itemshare import ItemContribution
from adapters.online.sharedside import flat_rows


def learn_items(learner: Any, user_ids: list[str], states: torch.Tensor, users: torch.Tensor,
                batch: AppliedBatch) -> list[tuple[str, ItemContribution]]:
    """The item side's step of ``batch`` (module docstring); the contributions in shared mode, else []."""
    if not batch.new_rows:
        return []
    rows = np.asarray(batch.new_rows, dtype=np.int64)
    errors = None
    ratings = np.asarray(batch.new_ratings, dtype=np.float64)
    pos = {u: n for n, u in enumerate(user_ids)}
    idx = torch.tensor([pos[u] for u in batch.new_users], dtype=torch.long)
    if np.isfinite(ratings).any():
        pred = learner._predict(states[idx], users[idx], torch.from_numpy(rows)).numpy().astype(np.float64)
        errors = pred - ratings
    f, side, ad = learner.freshness, learner.items, learner.adapter
    mine = states[idx]
    if learner.shared is not None:
        return learner.shared.contribute(side, f, learner.model_version, rows, batch.new_windows, batch.new_times,
                                         ad.effective(mine), ad._split(mine)[1] if side.adapter is not None else None,
                                         errors)
    if f is not None:
        f.observe(rows, errors if f.config.rating_lr > 0 else None)
    side.observe(batch.new_windows, rows, half_life=f.config.half_life if f is not None else 5_000.0)
    if side.adapter is not None:
        side.learn_rows(ad.effective(mine), rows, ad._split(mine)[1], errors)
        side.init_new_rows(rows)
    return []


def apply_items(learner: Any, updates: Sequence[tuple[str, bytes | None, float]]) -> int:
    """Apply published rows of the group's item state to ``learner`` (shared mode; a no-op otherwise)."""
    if learner.shared is None or not updates:
        return 0
    n = learner.shared.apply(learner.items, learner.freshness, learner.model_version, updates)
    learner._sync_item_tables()
    return n


def item_state(learner: Any, item_id: str) -> dict[str, Any] | None:
    """What ``learner`` holds about ``item_id`` (None: no row), JSON-ready: its rows of every item table and
    statistics, and in shared mode the published row's version and in-links."""
    side = learner.items
    r = side.row(item_id)
    if r == 0:
        return None
    f = learner.freshness
    out: dict[str, Any] = {"item_id": item_id, "row": r, "online": bool(side.online[r]),
                           "events": float(side.total[r]), "model_version": learner.model_version}
    if side.adapter is not None:
        out["tables"] = [float(x) for x in flat_rows(side.adapter, torch.tensor([r]))[0]]
    if f is not None:
        out.update(popularity=float(f.counts[r]), rating_delta=float(f.rating_delta[r]),
                   rated=float(f.rated_seen[r]))
    if learner.shared is not None:
        applied = learner.shared.applied.get(item_id)
        out["shared"] = None if applied is None else {
            "model_version": applied[0], "events": applied[1],
            "neighbours": dict(learner.shared.inlinks.get(item_id, {}))}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
