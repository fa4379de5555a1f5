"""A model switch of the online learner: the new version's item table, and what carries over into it.

At :meth:`OnlineLearner.switch <adapters.online.learner.OnlineLearner.switch>` the learner takes a private copy of
the new checkpoint's model and builds a new :class:`~adapters.online.items.table.ItemTable` over its vocabulary
(:func:`new_item_table`). What the stream taught the previous table then carries over by item id
(:func:`carry_over`):

* an item the new checkpoint knows uses the new checkpoint's rows (its trained embeddings and biases);
* an item it does not know (one first seen online, or one the new version's training data no longer holds) keeps a
  row: the learned rows of every item table are copied when the new version descends from the one being served
  (a warm start, :func:`adapters.meta.warmstart.descends_from`: the new embedding space continues the old one);
  otherwise the old rows mean nothing in the new space and the row is rebuilt there from the items it co-occurred
  with, or from its features, or the unknown row;
* the statistics of every item both tables hold follow their items: popularity, events, rated events, rating-bias
  corrections, in-links.

When the new vocabulary is the previous one (same item ids in the same rows, e.g. a retrained version over the
same catalog) an item keeps its very row, so that stored user records, which name rows of that vocabulary, stay
valid; otherwise records are remapped by id at their user's next event (the learner's vocabulary mechanism). At
most ``max_items`` rows: beyond it the least popular items are not carried. melu's item tables cannot grow: it
carries the statistics of the items both sides know only.

Example
-------
>>> from adapters.online.items.config import ItemConfig
>>> from adapters.online.items.contributions import Contributions
>>> old = ItemTable(["<unk>", "a", "b"], ItemConfig(max_items=8), growable=True)
>>> old.add("fresh")
3
>>> _ = old.merge(Contributions.of(["fresh"], t=[1.0], events=[1], links=[(0, "a", 1.0)]))
>>> new = ItemTable(["<unk>", "b", "a", "c"], ItemConfig(max_items=8), growable=True)
>>> carry_over(old, new, copy_rows=True).items
1
>>> new.row("fresh"), float(new.cooc(np.array([new.row("a")]))[0, new.row("fresh")])
(4, 1.0)
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adapters.base import Adapter
from adapters.online.config import OnlineConfig
from adapters.online.items.config import ItemConfig
from adapters.online.items.rule import layout_of
from adapters.online.items.table import ItemTable
from adapters.online.items.tablerows import ModelRows

if TYPE_CHECKING:
    from adapters.meta.checkpoint import Checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Carried:
    """What :func:`carry_over` kept."""

    items: int  #: items the new checkpoint does not know that kept a row
    copied: bool  #: their learned rows were copied (else rebuilt in the new space)
    left_out: int  #: such items left out for lack of room (``max_items``)


def item_config(checkpoint: Checkpoint, config: OnlineConfig) -> ItemConfig:
    """The item settings ``checkpoint`` was trained with, the online config's overrides applied."""
    c = config
    return ItemConfig.from_checkpoint(checkpoint.config).overridden(
        max_items=c.max_items, prior_weight=c.prior_weight, popularity_weight=c.popularity_weight,
        half_life_s=c.item_half_life, embed_lr=c.embed_lr, factor_lr=c.factor_lr, bias_lr=c.bias_lr,
        negatives=c.negatives)


def new_item_table(checkpoint: Checkpoint, config: OnlineConfig) -> tuple[Adapter, ItemTable]:
    """``(model, item table)`` of a learner serving ``checkpoint``: a private copy of its model when item rows learn
    or grow online (the checkpoint itself never changes), and a fresh item table over its vocabulary, its
    popularity as the checkpoint's training data left it."""
    cfg = item_config(checkpoint, config)
    learns = layout_of(checkpoint.adapter) is not None and (
        cfg.embed_lr > 0 or cfg.factor_lr > 0 or cfg.max_items > checkpoint.adapter.n_items)
    adapter = copy.deepcopy(checkpoint.adapter) if learns else checkpoint.adapter
    # melu's item tables cannot grow: its item table keeps statistics only
    table = ItemTable(list(checkpoint.item_ids), cfg, ModelRows(adapter) if learns else None,
                      features=checkpoint.item_features, growable=learns)
    pop = dict(checkpoint.config.get("popularity") or {})
    counts = pop.get("counts", (checkpoint.config.get("freshness") or {}).get("counts"))
    if counts is not None and len(counts) == table.capacity:
        table.count[:] = np.asarray(counts, np.float64)
        if pop.get("t") is not None:  # else anchored at the first micro-batch's time
            table.count_t[:] = float(pop["t"])
    elif counts is not None:
        log.warning("checkpoint popularity counts do not match its vocabulary: starting from zero")
    return adapter, table


def _to_carry(old: ItemTable, new: ItemTable) -> tuple[list[int], int]:
    """Rows of ``old`` whose items ``new`` does not know and that fit in it (the most popular first when they do
    not all fit), in row order; and how many were left out."""
    rows = [r for r in np.flatnonzero(old.active()).tolist() if old.ids[r] not in new.index]
    if not new.vocab.growable:
        return [], len(rows)
    room = max(0, new.config.max_items - new.capacity)
    if len(rows) <= room:
        return rows, 0
    heat = old.popularity(old.stream_time)
    keep = np.asarray(rows)[np.argsort(-heat[rows], kind="stable")[:room]]
    return sorted(keep.tolist()), len(rows) - room


def carry_over(old: ItemTable, new: ItemTable, copy_rows: bool, keep_rows: bool = False) -> Carried:
    """Carry what ``old`` learned online into ``new`` (the module docstring), in place.

    Parameters
    ----------
    old, new : ItemTable
        The item table of the version served so far and the one of the new version (freshly built).
    copy_rows : bool
        Copy the learned table rows of the items ``new`` does not know (the new version descends from the old
        one); else rebuild them in the new model from their co-occurring items.
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
        new.links[np.ix_(n, n)] = old.links[np.ix_(o, o)]
        for name in ("t_last", "count", "count_t", "total", "rated", "rating_delta"):
            getattr(new, name)[n] = getattr(old, name)[o]
    new.stream_time, new.newest_update = old.stream_time, old.newest_update
    new.vocab.pending = []  # carried rows are no batch's new rows: they may be evicted like any other
    copied = bool(copy_rows and rows and _same_tables(old, new))
    if copied:
        new.rows.set(np.asarray(targets, np.int64), old.rows.get(np.asarray(rows, np.int64)))
    elif rows and new.rows is not None:
        _rebuild(new, np.asarray(targets, np.int64))
    if rows or left_out:
        log.info("model switch: %d items unknown to the new version kept their rows (%s), %d left out", len(rows),
                 "learned rows copied" if copied else "rows rebuilt from co-occurrences", left_out)
    return Carried(items=len(rows), copied=copied, left_out=left_out)


def _rebuild(table: ItemTable, rows: np.ndarray) -> None:
    """Rows of items the new model does not know, rebuilt as the co-occurrence-weighted mean of their neighbours'."""
    weights = table.cooc(rows).astype(np.float64)
    weights[:, 0] = 0.0
    weights[:, rows] = 0.0
    total = weights.sum(1)
    has = total > 0
    if has.any():
        cols = np.flatnonzero(weights[has].sum(0))
        mean = (weights[has][:, cols] / total[has, None]) @ table.rows.get(cols)
        table.rows.set(rows[has], mean.astype(np.float32))


def _same_tables(a: ItemTable, b: ItemTable) -> bool:
    """Both tables hold model rows of the same layout."""
    return (a.rows is not None and b.rows is not None and a.rows.width == b.rows.width
            and isinstance(a.rows, ModelRows) and isinstance(b.rows, ModelRows)
            and a.rows.adapter.ITEM_TABLES == b.rows.adapter.ITEM_TABLES)
