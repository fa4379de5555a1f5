"""A model switch of the online learner: the new version's item side, and what carries over into it.

At :meth:`OnlineLearner.switch <adapters.online.learner.OnlineLearner.switch>` the learner takes a private copy of
the new checkpoint's model and builds a new :class:`~adapters.online.itemside.ItemSide` over its vocabulary
(:func:`new_item_side`). What the stream taught the previous item side then carries over by item id
(:func:`carry_over`):

* an item the new checkpoint knows uses the new checkpoint's rows (its trained embeddings and biases);
* an item it does not know (one first seen online, or one the new version's training data no longer holds) keeps a
  row: the learned rows of every item table are copied when the new version descends from the one being served
  (a warm start, :func:`adapters.meta.warmstart.descends_from`: the new embedding space continues the old one);
  otherwise the old rows mean nothing in the new space and the row is rebuilt there from the items it co-occurred
  with (:meth:`ItemSide.init_new_rows`), or from its features, or the unknown row;
* co-occurrence counts, online event counts and eviction heat of every item both sides hold follow their items;
  the learner's :class:`~adapters.online.freshness.ItemFreshness` counts and rating corrections too
  (:func:`new_freshness`).

When the new vocabulary is the previous one (same item ids in the same rows, e.g. a retrained version over the
same catalog) an item keeps its very row, so that stored user records, which name rows of that vocabulary, stay
valid; otherwise records are remapped by id at their user's next event (the learner's vocabulary mechanism). At
most ``max_items`` rows: beyond it the coldest items are not carried. melu's item tables cannot grow: it carries
the statistics of the items both sides know only.

Example
-------
>>> import numpy as np
>>> from adapters.online.itemside import ItemSide, ItemSideConfig
>>> old = ItemSide(["<unk>", "a", "b"], ItemSideConfig(max_items=8))
>>> old.add("fresh")
3
>>> old.observe([[1]], np.array([3]))
>>> new = ItemSide(["<unk>", "b", "a", "c"], ItemSideConfig(max_items=8))
>>> carry_over(old, new, copy_rows=True).items
1
>>> new.row("fresh"), float(new.cooc[new.row("a"), new.row("fresh")])
(4, 1.0)
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from adapters.online.config import OnlineConfig
from adapters.online.freshness import FreshnessConfig, ItemFreshness
from adapters.online.itemside import ItemSide, ItemSideConfig, can_grow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Carried:
    """What :func:`carry_over` kept."""

    items: int  #: items the new checkpoint does not know that kept a row
    copied: bool  #: their learned rows were copied (else rebuilt in the new space)
    left_out: int  #: such items left out for lack of room (``max_items``)


def new_item_side(checkpoint: Any, config: OnlineConfig) -> tuple[Any, ItemSide]:
    """``(model, item side)`` of a learner serving ``checkpoint``: a private copy of its model when item rows learn
    or grow online (the checkpoint itself never changes), and a fresh item side over its vocabulary."""
    stored = ItemSideConfig.from_dict(checkpoint.config.get("itemside"))
    over = config
    cfg = replace(stored, **{k: v for k, v in (("max_items", over.max_items), ("cooc_weight", over.item_prior),
                                               ("embed_lr", over.item_lr), ("rating_lr", over.item_factor_lr))
                             if v is not None})
    learns = can_grow(checkpoint.adapter) and (cfg.embed_lr > 0 or cfg.rating_lr > 0
                                                or cfg.max_items > checkpoint.adapter.n_items)
    adapter = copy.deepcopy(checkpoint.adapter) if learns else checkpoint.adapter
    # melu's item tables cannot grow: its item side keeps counts and co-occurrences only
    side = ItemSide(list(checkpoint.item_ids), cfg, adapter if learns else None, growable=learns,
                    features=getattr(checkpoint, "item_features", None))
    return adapter, side


def new_freshness(checkpoint: Any, config: OnlineConfig, live: ItemFreshness | None, old_ids: list[str] | None,
                  side: ItemSide) -> ItemFreshness:
    """The item counts of ``checkpoint`` (its settings, the config's overrides); the live counts and corrections of
    the previous version instead when there is one, by item id from its item table ``old_ids``."""
    stored = dict(checkpoint.config.get("freshness") or {})
    cfg = FreshnessConfig.from_dict(stored)
    over = config
    cfg = FreshnessConfig(weight=cfg.weight if over.freshness is None else over.freshness,
                          half_life=cfg.half_life if over.freshness_half_life is None else over.freshness_half_life,
                          rating_lr=cfg.rating_lr if over.item_rating_lr is None else over.item_rating_lr,
                          rating_reg=cfg.rating_reg, rating_prior=cfg.rating_prior)
    if live is not None and old_ids is not None:
        fresh = live.remapped(old_ids, side.index, side.capacity)
        fresh.config = cfg
        fresh._bonus = None
    else:
        counts = stored.get("counts")
        if counts is not None and len(counts) != side.capacity:
            log.warning("checkpoint freshness counts do not match its vocabulary: starting from zero")
            counts = None
        fresh = ItemFreshness(side.capacity, **cfg.to_dict(), counts=None if counts is None else np.asarray(counts))
    fresh.resize(side.capacity)
    return fresh


def _to_carry(old: ItemSide, new: ItemSide) -> tuple[list[int], int]:
    """Rows of ``old`` whose items ``new`` does not know and that fit in it (the hottest first when they do not
    all fit), in row order; and how many were left out."""
    rows = [r for r in np.flatnonzero(old.active()).tolist() if old.ids[r] not in new.index]
    if not new.growable:
        return [], len(rows)
    room = max(0, new.config.max_items - new.capacity)
    if len(rows) <= room:
        return rows, 0
    keep = np.asarray(rows)[np.argsort(-old.heat[rows], kind="stable")[:room]]
    return sorted(keep.tolist()), len(rows) - room


def carry_over(old: ItemSide, new: ItemSide, copy_rows: bool, keep_rows: bool = False) -> Carried:
    """Carry what ``old`` learned online into ``new`` (the module docstring), in place.

    Parameters
    ----------
    old, new : ItemSide
        The item side of the version served so far and the one of the new version (freshly built).
    copy_rows : bool
        Copy the learned item-table rows of the items ``new`` does not know (the new version descends from the
        old one); else rebuild them in the new model from their co-occurring items.
    keep_rows : bool
        Place those items at their old rows (the two vocabularies are the same, so user records stay valid).
    """
    rows, left_out = _to_carry(old, new)
    fixed = [r for r in rows if keep_rows and new.n_base <= r < new.config.max_items]
    placed = {r: new.add(old.ids[r], r) for r in fixed}  # the rows kept first: the others take the free rows left
    placed.update({r: new.add(old.ids[r]) for r in rows if r not in placed})
    targets = [placed[r] for r in rows]
    pairs = [(r, new.index[old.ids[r]]) for r in np.flatnonzero(old.active()).tolist() if old.ids[r] in new.index]
    if pairs:
        o, n = (np.asarray(x, np.int64) for x in zip(*pairs))
        new.cooc[np.ix_(n, n)] = old.cooc[np.ix_(o, o)]
        new.total[n] = old.total[o]
        new.heat[n] = old.heat[o]
    new._pending = []  # carried rows are no batch's new rows: they may be evicted like any other
    copied = bool(copy_rows and rows and _same_tables(old.adapter, new.adapter))
    if copied:
        src, dst = torch.as_tensor(rows), torch.as_tensor(targets)
        with torch.no_grad():
            for t_new, t_old in zip(new.adapter.item_tables(), old.adapter.item_tables()):
                t_new[dst] = t_old[src]
    elif rows:
        new.init_new_rows(np.asarray(targets, np.int64), young_only=False)
    if rows or left_out:
        log.info("model switch: %d items unknown to the new version kept their rows (%s), %d left out", len(rows),
                 "learned rows copied" if copied else "rows rebuilt from co-occurrences", left_out)
    return Carried(items=len(rows), copied=copied, left_out=left_out)


def _same_tables(a: Any, b: Any) -> bool:
    """Both adapters have item tables of the same names and row shapes."""
    if a is None or b is None or getattr(a, "ITEM_TABLES", None) != getattr(b, "ITEM_TABLES", None):
        return False
    return all(x.shape[1:] == y.shape[1:] for x, y in zip(a.item_tables(), b.item_tables()))
