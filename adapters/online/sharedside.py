"""A learner's item side as one worker's view of the group's item state (:mod:`adapters.online.itemshare`).

In shared mode the learner does not learn its item side from its own events. After each micro-batch,
:meth:`SharedItems.contribute` turns what the batch teaches about each item into an
:class:`~adapters.online.itemshare.ItemContribution`; the item's owner merges it; :meth:`SharedItems.apply` sets
the published :class:`~adapters.online.itemshare.ItemRow` into the learner's :class:`~adapters.online.itemside.ItemSide`
and :class:`~adapters.online.freshness.ItemFreshness`. Every worker of the group applies the same rows, so every
worker ends with the same item state; a worker's own events reach its item side after one round trip through the
owner (the prequential evaluation, one process, learns them at once instead).

What is shared, per item: its rows of every item table (ranking embedding and bias, rating factors, context
embedding), its event and rated counts, its popularity (decayed in event time, ``half_life_s``), its rating-bias
correction and its co-occurrence in-links. The ranking rows learn by a softmax step over the batch's items (in-batch
negatives: a step that touches only the batch's items, so that it can be sent item by item), where the local item
side takes a step over the whole catalog.

Rows are placed by item id: an item a worker has not met yet gets a row when its published row arrives, so a
new item met on one partition can be recommended to the users of every partition.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from adapters.online.freshness import ItemFreshness
from adapters.online.itemshare import ItemContribution, ItemRow, ShareConfig, merge
from adapters.online.itemside import ItemSide


def flat_rows(adapter: Any, rows: torch.Tensor) -> np.ndarray:
    """``[len(rows), D]`` float32: the rows of every item table of ``adapter``, flattened and concatenated."""
    parts = [t.detach()[rows].reshape(len(rows), -1) for t in adapter.item_tables()]
    return torch.cat(parts, dim=1).to(torch.float32).numpy()


def table_widths(adapter: Any) -> list[int]:
    """Floats per item of each item table of ``adapter``, in :func:`flat_rows` order."""
    return [int(np.prod(t.shape[1:], dtype=np.int64)) for t in adapter.item_tables()]


def set_flat_rows(adapter: Any, rows: torch.Tensor, flat: np.ndarray) -> None:
    """Set the rows ``rows`` of every item table from their :func:`flat_rows` layout."""
    src = torch.from_numpy(np.asarray(flat, np.float32))
    pos = 0
    with torch.no_grad():
        for t, width in zip(adapter.item_tables(), table_widths(adapter)):
            t[rows] = src[:, pos:pos + width].reshape(len(rows), *t.shape[1:]).to(t.dtype)
            pos += width


class SharedItems:
    """One worker's side of the group's item state (see the module docstring)."""

    def __init__(self, config: ShareConfig | None = None) -> None:
        self.config = config or ShareConfig()
        self.inlinks: dict[str, dict[str, float]] = {}  #: item → its published in-links
        self.applied: dict[str, tuple[str, float]] = {}  #: item → (model version, events) of its applied row
        self.base = np.zeros(0)  #: per row: published popularity as of ``base_t``
        self.base_t = np.zeros(0)
        self.newest_update = math.nan  #: wall time of the newest applied update (its record's timestamp)
        self.stream_time = -math.inf  #: the group's event time: the newest event of an applied row or of a batch
        self.updates_applied = 0

    # -- rows in ------------------------------------------------------------------------------------------
    def _fit(self, side: ItemSide, freshness: ItemFreshness | None) -> None:
        n = side.capacity
        if len(self.base) < n:
            extra = n - len(self.base)
            self.base = np.concatenate([self.base, np.zeros(extra)])
            self.base_t = np.concatenate([self.base_t, np.full(extra, -np.inf)])
        if freshness is not None:
            freshness.resize(n)

    def apply(self, side: ItemSide, freshness: ItemFreshness | None, space: str,
              updates: Iterable[tuple[str, bytes | None, float]]) -> int:
        """Apply published updates ``(item id, row bytes or None: the item is gone, record time)``, in order.
        Returns how many were applied."""
        n = 0
        latest: dict[str, ItemRow | None] = {}  # an item updated twice in one call: its last row only
        for item, value, ts in updates:
            n += 1
            if not math.isnan(ts) and not ts <= self.newest_update:
                self.newest_update = ts
            latest.pop(item, None)
            latest[item] = None if value is None else ItemRow.from_bytes(value)
        dropped = [item for item, row in latest.items() if row is None]
        for item in dropped:
            self.inlinks.pop(item, None)
            self.applied.pop(item, None)
        if dropped:
            side.drop(dropped)
        placed = [(side.add(item), item, row) for item, row in latest.items() if row is not None]
        placed = [(r, item, row) for r, item, row in placed if r > 0]
        self._fit(side, freshness)
        if placed:
            self._set_rows(side, freshness, space, placed)
        side.observe([], np.zeros(0, np.int64))  # rows added here are no batch's new rows: evictable
        self.updates_applied += n
        if len(self.inlinks) > 2 * side.capacity:  # items evicted here (--max-items): their published rows too
            self.inlinks = {i: v for i, v in self.inlinks.items() if i in side.index}
            self.applied = {i: v for i, v in self.applied.items() if i in side.index}
        return n

    def _set_rows(self, side: ItemSide, freshness: ItemFreshness | None, space: str,
                  placed: list[tuple[int, str, ItemRow]]) -> None:
        """Set the published ``rows`` at their rows ``r`` (the item side holds them already), vectorised."""
        r = np.array([p[0] for p in placed], np.int64)
        self.stream_time = max(self.stream_time, max(p[2].t_last for p in placed))
        side.total[r] = [p[2].total for p in placed]
        side.heat[r] = self.base[r] = [p[2].count for p in placed]
        self.base_t[r] = [p[2].count_t for p in placed]
        if freshness is not None:
            freshness.rated_seen[r] = [p[2].rated for p in placed]
            freshness.rating_delta[r] = [p[2].rating_delta for p in placed]
        if side.adapter is not None:
            width = sum(table_widths(side.adapter))
            mine = [(k, p[2].tables) for k, p in enumerate(placed) if p[2].space == space
                    and p[2].tables is not None and len(p[2].tables) == width]
            if mine:
                set_flat_rows(side.adapter, torch.from_numpy(r[[k for k, _ in mine]]), np.stack([t for _, t in mine]))
        cells_i: list[int] = []
        cells_j: list[int] = []
        values: list[float] = []
        for ri, item, row in placed:  # co-occurrence cells whose in-link changed: in_i[j] + in_j[i], both ways
            old, new = self.inlinks.get(item, {}), row.neighbours
            self.inlinks[item] = new
            self.applied[item] = (row.space, row.total)
            for j in [j for j, _ in new.items() - old.items()] + [j for j in old.keys() - new.keys()]:
                rj = side.row(j) or side.add(j)
                if rj == 0 or rj == ri:
                    continue
                cells_i.append(ri)
                cells_j.append(rj)
                values.append(new.get(j, 0.0) + self.inlinks.get(j, {}).get(item, 0.0))
        if cells_i:
            self._fit(side, freshness)
            ii, jj = np.asarray(cells_i), np.asarray(cells_j)
            side.cooc[ii, jj] = values
            side.cooc[jj, ii] = values

    def switched(self, old: ItemSide, new: ItemSide) -> None:
        """The learner switched model versions: the per-row popularity follows its items into ``new``'s rows."""
        base, base_t = np.zeros(new.capacity), np.full(new.capacity, -np.inf)
        rows = [(r, new.index[old.ids[r]]) for r in np.flatnonzero(old.active()).tolist()
                if r < len(self.base) and old.ids[r] in new.index]
        if rows and len(self.base):
            o, n = (np.asarray(x, np.int64) for x in zip(*rows))
            base[n], base_t[n] = self.base[o], self.base_t[o]
        self.base, self.base_t = (base, base_t) if len(self.base) else (np.zeros(0), np.zeros(0))

    def refresh(self, side: ItemSide, freshness: ItemFreshness | None, t: float) -> None:
        """Popularity counts as of event time ``t`` (before a batch is scored). The checkpoint's counts stand for
        the items no published row has reached yet, as of the first batch."""
        self.stream_time = max(self.stream_time, t)
        if freshness is None:
            return
        fresh = len(self.base) == 0
        self._fit(side, freshness)
        if fresh:
            self.base[:] = freshness.counts[:len(self.base)]
            self.base_t[:] = t
        self.base[~side.active()] = 0.0
        age = np.maximum(0.0, t - self.base_t)
        with np.errstate(invalid="ignore", over="ignore"):
            counts = np.where(np.isfinite(self.base_t), self.base * np.exp2(-age / self.config.half_life_s), 0.0)
        freshness.counts = counts
        freshness._bonus = None

    # -- contributions out ----------------------------------------------------------------------------------
    def contribute(self, side: ItemSide, freshness: ItemFreshness | None, space: str, rows: np.ndarray,
                   windows: Sequence[Sequence[int]], times: Sequence[float], vectors: torch.Tensor,
                   rating_vectors: torch.Tensor | None, errors: np.ndarray | None) -> list[tuple[str, ItemContribution]]:
        """One contribution per item of a micro-batch's new events: ``rows`` their item rows, ``windows`` each
        event's user's previous item rows, ``times`` their event times, ``vectors`` the users' pre-update ranking
        vectors, ``rating_vectors`` and ``errors`` (``prediction − rating``, NaN = not rated) their rating side."""
        rows = np.asarray(rows, np.int64)
        ok = rows > 0
        if not ok.any():
            side.observe([], np.zeros(0, np.int64))
            return []
        items, inverse = np.unique(rows[ok], return_inverse=True)
        events = np.bincount(inverse, minlength=len(items)).astype(np.float64)
        t = np.full(len(items), -np.inf)
        np.maximum.at(t, inverse, np.asarray(times, np.float64)[ok])
        err = np.full(len(rows), np.nan) if errors is None else np.asarray(errors, np.float64)
        rated = np.bincount(inverse, weights=np.isfinite(err[ok]), minlength=len(items))
        d_rating = self._rating_steps(freshness, items, inverse, err[ok], rated)
        neighbours = self._neighbours(side, rows, windows, len(items), np.flatnonzero(ok), inverse)
        steps = self._table_steps(side, items, inverse, vectors[torch.from_numpy(ok)],
                                  None if rating_vectors is None else rating_vectors[torch.from_numpy(ok)], err[ok])
        out = []
        sets: list[tuple[int, bool]] = []  # (k, young) of the items whose rows are set, not stepped
        for k, r in enumerate(items.tolist()):
            item = side.ids[r]
            c = ItemContribution(space, float(t[k]), float(events[k]), float(rated[k]), float(d_rating[k]),
                                 neighbours=neighbours[k])
            applied = self.applied.get(item)
            if steps is not None:
                young = applied is None or applied[0] == space and applied[1] < self.config.young_events
                if applied is None or applied[0] != space or young:
                    sets.append((k, young and bool(side.online[r])))
                else:
                    c.d_tables = steps[k]
            out.append((item, c))
        if sets and steps is not None:
            rows_set = self._set_values(side, items, neighbours, steps, sets)
            for (k, _), value in zip(sets, rows_set):
                out[k][1].init = value
        side.observe([], np.zeros(0, np.int64))
        return out

    @staticmethod
    def _rating_steps(freshness: ItemFreshness | None, items: np.ndarray, inverse: np.ndarray, err: np.ndarray,
                      rated: np.ndarray) -> np.ndarray:
        """The rating-bias correction step of each item, as :meth:`ItemFreshness.observe` takes it."""
        if freshness is None or freshness.config.rating_lr <= 0:
            return np.zeros(len(items))
        cfg = freshness.config
        good = np.isfinite(err)
        step = np.bincount(inverse[good], weights=-err[good], minlength=len(items))
        step -= cfg.rating_reg * rated * freshness.rating_delta[items]
        lr = np.full(len(items), cfg.rating_lr)
        if cfg.rating_prior > 0:
            lr = np.maximum(cfg.rating_lr, 1.0 / (freshness.rated_seen[items] + rated + cfg.rating_prior))
        return np.where(rated > 0, lr * step, 0.0)

    @staticmethod
    def _neighbours(side: ItemSide, rows: np.ndarray, windows: Sequence[Sequence[int]], n_items: int,
                    events: np.ndarray, inverse: np.ndarray) -> list[dict[str, float]]:
        """Each item's in-link increments: the items of the windows its events followed."""
        out: list[dict[str, float]] = [{} for _ in range(n_items)]
        w = side.config.cooc_window
        for k, n in zip(inverse.tolist(), events.tolist()):
            links = out[k]
            for j in list(windows[n])[-w:]:
                if j > 0 and j != rows[n]:
                    name = side.ids[j]
                    links[name] = links.get(name, 0.0) + 1.0
        return out

    @staticmethod
    def _table_steps(side: ItemSide, items: np.ndarray, inverse: np.ndarray, u: torch.Tensor,
                     v: torch.Tensor | None, err: np.ndarray) -> np.ndarray | None:
        """``[len(items), D]`` SGD step of each item's table rows (:func:`flat_rows` layout): the softmax
        next-item loss over the batch's items (ranking) and the squared rating error (rating factors)."""
        ad, cfg = side.adapter, side.config
        if ad is None:
            return None
        idx = torch.from_numpy(items)
        widths = table_widths(ad)
        steps = np.zeros((len(items), sum(widths)), np.float32)
        start = dict(zip(ad.ITEM_TABLES, np.cumsum([0] + widths[:-1]).tolist()))
        with torch.no_grad():
            if cfg.embed_lr > 0:
                q, c = ad.item_emb[idx], ad.item_bias[idx]
                p = torch.softmax(torch.addmm(c, u.to(q.dtype), q.t()), dim=1)
                p[torch.arange(len(inverse)), torch.from_numpy(inverse)] -= 1.0
                scale = cfg.embed_lr / len(inverse)
                s = start["item_emb"]
                steps[:, s:s + q.shape[1]] = (-scale * (p.t() @ u.to(q.dtype))).numpy()
                steps[:, start["item_bias"]] = (-scale * p.sum(0)).numpy()
            good = np.isfinite(err)
            if cfg.rating_lr > 0 and v is not None and good.any():
                e = torch.from_numpy(err[good]).to(v.dtype)
                g = torch.zeros(len(items), v.shape[1], dtype=v.dtype)
                g.index_add_(0, torch.from_numpy(inverse[good]), -cfg.rating_lr * e[:, None] * v[torch.from_numpy(good)])
                s = start["item_rate"]
                steps[:, s:s + v.shape[1]] = g.numpy()
        return steps

    @staticmethod
    def _set_values(side: ItemSide, items: np.ndarray, neighbours: list[dict[str, float]], steps: np.ndarray,
                    sets: list[tuple[int, bool]]) -> np.ndarray:
        """The rows a worker sets for items ``sets`` (index into ``items``, young?), in one batched product: a young
        online item's rows follow the items it co-occurred with (its local co-occurrences and this batch's), like
        :meth:`ItemSide.init_new_rows`; any other item's are its local rows plus this batch's step."""
        ks = np.array([k for k, _ in sets], np.int64)
        table = flat_rows(side.adapter, torch.arange(side.capacity))  # [capacity, D], one copy per batch
        out = table[items[ks]] + steps[ks]
        young = [n for n, (_, y) in enumerate(sets) if y]
        if young:
            rows = items[ks[young]]
            weights = side.cooc[rows].astype(np.float64)
            for n, k in enumerate(ks[young].tolist()):
                for j, inc in neighbours[k].items():
                    weights[n, side.row(j)] += inc
            weights[:, 0] = 0.0
            weights[np.arange(len(rows)), rows] = 0.0
            total = weights.sum(1)
            has = total > 0
            mean = (weights[has] / total[has, None]) @ table
            here = table[rows]
            here[has] = mean
            out[young] = here
        return out.astype(np.float32)


class InProcessOwner:
    """The owner of every item, in the learner's own process: each batch's contributions are merged and applied at
    once (no round trip). What the prequential evaluation uses to measure the shared item state's learning."""

    def __init__(self, config: ShareConfig) -> None:
        self.config = config
        self.rows: dict[str, ItemRow] = {}
        self.offset = 0

    def settle(self, learner: Any, contributions: Sequence[tuple[str, ItemContribution]]) -> None:
        updates: list[tuple[str, bytes | None, float]] = []
        for item, c in contributions:
            self.offset += 1
            row = self.rows[item] = merge(self.rows.get(item), c, self.offset, self.config)
            updates.append((item, row.to_bytes(), math.nan))
        learner.apply_items(updates)
