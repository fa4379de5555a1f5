"""The item state: one object that holds everything about items, with one writer per field.

An :class:`ItemTable` holds, per row of its :class:`~adapters.online.items.vocabulary.ItemVocabulary`:

* the item's table rows (through a :class:`~adapters.online.items.tablerows.TableRows`: the model's own item tables
  in a learner, an array in an owner);
* its statistics: newest event time, events and rated events learned online, the correction of its rating bias,
  its popularity (events decayed in event time with ``half_life_s``, as of ``count_t``), the model version its rows
  belong to (``space``) and the offset of the last contribution merged;
* its directed in-links ``links[i, j]``: the events in which a user met ``i`` with ``j`` among their last items; a
  learner ranks with the symmetric count ``links[i, j] + links[j, i]``.

Two methods write them, and nothing else does: :meth:`ItemTable.merge` folds a batch of
:class:`~adapters.online.items.contributions.Contributions` in (the owner's rule: what a contribution adds and what
it sets), :meth:`ItemTable.apply` sets rows an owner published (a worker of a group). :meth:`ItemTable.publish` is
the owner's side of the latter. In a single process the learner's own table is the owner: it merges its
contributions itself (:class:`~adapters.online.items.owner.InProcessOwner`), so a process, a group of workers and
the evaluation run the same rule.

Example
-------
>>> from adapters.online.items.config import ItemConfig
>>> from adapters.online.items.contributions import Contributions
>>> t = ItemTable(["<unk>", "a", "b"], ItemConfig(half_life_s=10.0))
>>> _ = t.merge(Contributions.of(["a"], t=[100.0], events=[2], links=[(0, "b", 1.0)]), offset=0)
>>> _ = t.merge(Contributions.of(["a"], t=[110.0], events=[1]), offset=1)
>>> float(t.popularity(110.0)[1]), float(t.total[1]), float(t.links[1, 2])
(2.0, 3.0, 1.0)
>>> row = dict(t.publish(np.array([1])))["a"]; row.count, row.neighbours, row.offset
(2.0, {'b': 1.0}, 1)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adapters.errors import MetarecError
from adapters.online.items.config import ItemConfig
from adapters.online.items.contributions import DELTA, INIT, Contributions
from adapters.online.items.rows import ItemRow
from adapters.online.items.tablerows import TableRows
from adapters.online.items.vocabulary import ItemVocabulary


class ItemTable:
    """Vocabulary, statistics, table rows and in-links of the items (see the module docstring)."""

    def __init__(self, item_ids: Sequence[str], config: ItemConfig, rows: TableRows | None = None,
                 features: dict[str, list[int]] | None = None, growable: bool | None = None) -> None:
        self.config = config
        self.rows = rows  #: None: a model whose item tables cannot grow (melu): statistics only
        self.vocab = ItemVocabulary(item_ids, config.max_items, rows is not None if growable is None else growable,
                                    heat=lambda: self.popularity(self.stream_time))
        self.vocab.on_grow.append(self._grow)
        self.vocab.on_free.append(self._clear)
        self.vocab.on_new.append(self._new_row)
        self.features = features or {}
        self._base_features: torch.Tensor | None = None
        cap = self.vocab.capacity
        self.t_last = np.full(cap, -np.inf)
        self.count = np.zeros(cap)  #: popularity as of ``count_t``
        self.count_t = np.full(cap, -np.inf)
        self.total = np.zeros(cap)  #: events learned online
        self.rated = np.zeros(cap)
        self.rating_delta = np.zeros(cap, np.float32)
        self.offset = np.full(cap, -1, np.int64)  #: the last contribution merged (the owner's input offset)
        #: model version of the row's published tables ("": none yet), an object array (vectorised comparisons)
        self.space = np.full(cap, "", dtype=object)
        self.links = np.zeros((cap, cap), np.float32)
        self.stream_time = -math.inf  #: newest event time learned or applied
        self.newest_update = math.nan  #: record time of the newest published row applied
        self._bonus: tuple[float, int, torch.Tensor] | None = None

    # -- vocabulary passthrough -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return self.vocab.ids

    @property
    def index(self) -> dict[str, int]:
        return self.vocab.index

    @property
    def capacity(self) -> int:
        return self.vocab.capacity

    @property
    def n_base(self) -> int:
        return self.vocab.n_base

    @property
    def n_active(self) -> int:
        return self.vocab.n_active

    @property
    def online(self) -> np.ndarray:
        return self.vocab.online

    def active(self) -> np.ndarray:
        return self.vocab.active()

    def row(self, item_id: str) -> int:
        return self.vocab.row(item_id)

    def add(self, item_id: str, row: int | None = None) -> int:
        return self.vocab.add(item_id, row)

    def _grow(self, cap: int) -> None:
        extra = cap - len(self.total)
        self.t_last = np.concatenate([self.t_last, np.full(extra, -np.inf)])
        self.count = np.concatenate([self.count, np.zeros(extra)])
        self.count_t = np.concatenate([self.count_t, np.full(extra, -np.inf)])
        self.total = np.concatenate([self.total, np.zeros(extra)])
        self.rated = np.concatenate([self.rated, np.zeros(extra)])
        self.rating_delta = np.concatenate([self.rating_delta, np.zeros(extra, np.float32)])
        self.offset = np.concatenate([self.offset, np.full(extra, -1, np.int64)])
        self.space = np.concatenate([self.space, np.full(extra, "", dtype=object)])
        links = np.zeros((cap, cap), np.float32)
        links[:len(self.links), :len(self.links)] = self.links
        self.links = links
        if self.rows is not None:
            self.rows.grow(cap)

    def _clear(self, rows: np.ndarray) -> None:
        """Rows freed (evicted or dropped): their statistics, in-links and table rows are cleared."""
        self.t_last[rows], self.count[rows], self.count_t[rows] = -np.inf, 0.0, -np.inf
        self.total[rows] = self.rated[rows] = 0.0
        self.rating_delta[rows] = 0.0
        self.offset[rows] = -1
        self.space[rows] = ""
        self.links[rows, :] = 0.0
        self.links[:, rows] = 0.0
        if self.rows is not None:
            self.rows.reset(rows)
        self._bonus = None

    def _new_row(self, row: int, item_id: str) -> None:
        """A row given to a new item starts from the checkpoint's items that share its features (genres, decade),
        where the dataset describes it (else the unknown row)."""
        codes = self.features.get(item_id)
        if self.rows is None or not codes:
            return
        if self._base_features is None:
            width = 1 + max((c for cs in self.features.values() for c in cs), default=0)
            base = torch.zeros(self.vocab.n_base, width)
            for r, i in enumerate(self.ids[:self.vocab.n_base]):
                for c in self.features.get(i, []) if r > 0 else []:
                    base[r, c] = 1.0
            self._base_features = base / base.norm(dim=1, keepdim=True).clamp(min=1e-12)
        base = self._base_features
        f = torch.zeros(base.shape[1])
        f[[c for c in codes if c < base.shape[1]]] = 1.0
        sim = base @ (f / f.norm().clamp(min=1e-12))
        top = torch.topk(sim, min(20, len(sim)))
        keep = top.values > 0
        if keep.any():
            w = (top.values[keep] / top.values[keep].sum()).numpy()
            src = top.indices[keep].numpy()
            self.rows.set(np.array([row]), (w[:, None] * self.rows.get(src)).sum(0, keepdims=True))

    def _place(self, items: Sequence[str]) -> np.ndarray:
        """The rows of ``items``, new ones added; none of them evicted to make room for another of them."""
        pending = list(self.vocab.pending)
        self.vocab.pending += [r for r in (self.vocab.row(i) for i in items) if r > 0]
        try:
            return np.fromiter((self.vocab.add(i) for i in items), np.int64, len(items))
        finally:
            self.vocab.pending = pending  # rows added here are no batch's new rows: evictable afterwards

    # -- the owner's rule ---------------------------------------------------------------------------------------
    def merge(self, c: Contributions, offset: int = -1) -> np.ndarray:
        """Fold the contributions ``c`` (one entry per item) into their rows; the rows changed.

        Counts, rated counts, rating-bias steps, table steps and in-links add up; popularity decays in event time
        to the newer of the two times; the table rows are set (kind INIT) while the row has none in ``c.space``
        (never published, or published in another model version) or its item is a young one created online (fewer
        than ``young_events`` events), and stepped (kind DELTA) otherwise: a step computed in another model version
        is ignored. An entry at or below the row's last merged ``offset`` was merged already and is skipped
        (``offset`` -1: always merged).
        """
        if not len(c):
            return np.zeros(0, np.int64)
        if len(set(c.items)) != len(c):
            raise MetarecError("item contributions must hold one entry per item (combine them first)")
        rows = c.rows if c.rows is not None and c.placed_in(self.vocab) else self._place(c.items)
        ok = rows > 0
        if offset >= 0:
            ok &= self.offset[rows] < offset
        k = np.flatnonzero(ok)
        r = rows[k]
        if not len(r):
            return r
        cfg = self.config
        old_total = self.total[r].copy()
        t = c.t[k]
        self.t_last[r] = np.maximum(self.t_last[r], t)
        self.stream_time = max(self.stream_time, float(t.max()))
        self.total[r] += c.events[k]
        self.rated[r] += c.rated[k]
        self.rating_delta[r] += c.d_rating[k].astype(np.float32)
        ct, fin = self.count_t[r], np.isfinite(self.count_t[r])
        newer = ~fin | (t >= ct)
        with np.errstate(invalid="ignore", over="ignore"):
            grown = np.where(fin, self.count[r] * np.exp2(-(t - ct) / cfg.half_life_s), 0.0) + c.events[k]
            aged = self.count[r] + c.events[k] * np.exp2(-(ct - t) / cfg.half_life_s)
        self.count[r] = np.where(newer, grown, np.where(np.isfinite(aged), aged, self.count[r]))
        self.count_t[r] = np.where(newer, t, ct)
        if self.rows is not None and c.width:
            space = self.space[r]
            published = (space == c.space) & (space != "")
            kind = c.kind[k]
            young = (old_total < cfg.young_events) & self.vocab.online[r]
            sets = (kind == INIT) & (~published | young)
            steps = (kind == DELTA) & published
            if sets.any():
                self.rows.set(r[sets], c.tables[k[sets]])
            if steps.any():
                self.rows.add(r[steps], c.tables[k[steps]])
            self.space[r[sets]] = c.space
        if len(c.link_item):
            pos = np.full(len(c), -1, np.int64)
            pos[k] = r
            i = pos[c.link_entry]
            j = (c.link_rows if c.link_rows is not None and c.placed_in(self.vocab) else
                 np.fromiter((self.vocab.ref(n) for n in c.link_item), np.int64, len(c.link_item)))
            keep = (i > 0) & (j > 0) & (i != j)
            np.add.at(self.links, (i[keep], j[keep]), c.link_count[keep])
        self.offset[r] = offset
        self._bonus = None
        return r

    def publish(self, rows: np.ndarray) -> list[tuple[str, ItemRow]]:
        """The published rows of ``rows``: statistics, table rows, the ``max_neighbours`` largest in-links."""
        if not len(rows):
            return []
        cap = self.config.max_neighbours
        tables = self.rows.get(rows) if self.rows is not None and self.rows.width else None
        out = []
        for n, r in enumerate(np.asarray(rows, np.int64).tolist()):
            line = self.links[r]
            nz = np.flatnonzero(line)
            if len(nz) > cap:
                nz = nz[np.argpartition(line[nz], len(nz) - cap)[len(nz) - cap:]]
            space = self.space[r]
            out.append((self.ids[r], ItemRow(
                space=space, offset=int(self.offset[r]), t_last=float(self.t_last[r]), count=float(self.count[r]),
                count_t=float(self.count_t[r]), total=float(self.total[r]), rated=float(self.rated[r]),
                rating_delta=float(self.rating_delta[r]),
                tables=tables[n].copy() if tables is not None and space else None,
                neighbours={self.ids[j]: float(line[j]) for j in nz.tolist()})))
        return out

    # -- a worker's side: published rows in --------------------------------------------------------------------
    def apply(self, updates: Sequence[tuple[str, ItemRow | None, float]], space: str) -> int:
        """Set the published rows ``(item id, row or None: the item is gone, record time)``, in order; the rows
        of model version ``space`` set this table's rows. A row this table already holds as merged up to the same
        or a later contribution (its ``offset``) is skipped: an owner's own table is ahead of its publications.
        Returns how many updates were applied."""
        latest: dict[str, ItemRow | None] = {}
        for item, row, ts in updates:
            if not math.isnan(ts) and not ts <= self.newest_update:
                self.newest_update = ts
            latest.pop(item, None)
            latest[item] = row
        self.vocab.drop([i for i, row in latest.items() if row is None])
        kept = [i for i, row in latest.items() if row is not None
                and not 0 <= latest[i].offset <= self.offset[self.vocab.row(i)]]  # type: ignore[union-attr]
        placed = [(r, latest[i]) for r, i in zip(self._place(kept).tolist(), kept) if r > 0]
        if placed:
            self._set_rows(placed, space)
        self._bonus = None
        return len(updates)

    def _set_rows(self, placed: list[tuple[int, ItemRow]], space: str) -> None:
        r = np.array([p[0] for p in placed], np.int64)
        rows = [p[1] for p in placed]
        self.t_last[r] = [x.t_last for x in rows]
        self.count[r] = [x.count for x in rows]
        self.count_t[r] = [x.count_t for x in rows]
        self.total[r] = [x.total for x in rows]
        self.rated[r] = [x.rated for x in rows]
        self.rating_delta[r] = [x.rating_delta for x in rows]
        self.offset[r] = [x.offset for x in rows]
        self.stream_time = max(self.stream_time, max(x.t_last for x in rows))
        mine = [(ri, x) for ri, x in zip(r.tolist(), rows) if x.space == space and x.tables is not None
                and self.rows is not None and len(x.tables) == self.rows.width]
        for ri, x in zip(r.tolist(), rows):
            self.space[ri] = x.space if x.space == space else ""
        if mine:
            self.rows.set(np.array([m[0] for m in mine]), np.stack([m[1].tables for m in mine]))
        for ri, x in zip(r.tolist(), rows):
            self.links[ri] = 0.0
            if x.neighbours:
                js = np.fromiter((self.vocab.ref(j) for j in x.neighbours), np.int64, len(x.neighbours))
                counts = np.fromiter(x.neighbours.values(), np.float32, len(x.neighbours))
                ok = (js > 0) & (js != ri)
                self.links[ri, js[ok]] = counts[ok]

    # -- what ranking reads ----------------------------------------------------------------------------------
    def popularity(self, t: float) -> np.ndarray:
        """``[capacity]`` each item's events decayed to event time ``t``."""
        with np.errstate(invalid="ignore", over="ignore"):
            age = np.maximum(0.0, t - self.count_t)
            out = np.where(np.isfinite(self.count_t), self.count * np.exp2(-age / self.config.half_life_s), 0.0)
        return np.where(np.isfinite(out), out, 0.0)

    def anchor(self, t: float) -> None:
        """Counts without a time (a checkpoint's, written without one) are taken as of event time ``t``."""
        loose = ~np.isfinite(self.count_t) & (self.count > 0)
        self.count_t[loose] = t
        self.stream_time = max(self.stream_time, t)

    def bonus(self, t: float) -> torch.Tensor | None:
        """``[capacity]`` float32 ranking bonus β·log(1 + popularity as of ``t``); None when β is 0."""
        w = self.config.popularity_weight
        if w <= 0:
            return None
        if self._bonus is None or self._bonus[0] != t or self._bonus[1] != self.vocab.version:
            values = torch.from_numpy((w * np.log1p(self.popularity(t))).astype(np.float32))
            self._bonus = (t, self.vocab.version, values)
        return self._bonus[2]

    def cooc(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), capacity]`` symmetric co-occurrence counts of ``rows``: ``links[i, j] + links[j, i]``."""
        rows = np.asarray(rows, np.int64)
        return self.links[rows] + self.links[:, rows].T

    def prior(self, windows: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(windows), capacity]`` co-occurrence scores ``w·log(1 + Σ_l decay^age_l·C[j_l, i] / (n_i+1)^α)``
        of each window (its last ``cooc_window`` items; zeros when the weight is 0)."""
        cfg = self.config
        out = np.zeros((len(windows), self.capacity), np.float32)
        if cfg.prior_weight <= 0:
            return out
        w = cfg.cooc_window
        decay = (cfg.cooc_decay ** np.arange(w - 1, -1, -1)).astype(np.float32)
        damp = np.power(self.total + 1.0, cfg.cooc_alpha).astype(np.float32)
        for n, win in enumerate(windows):
            js = np.asarray(list(win)[-w:], np.int64)
            ok = js > 0
            if ok.any():
                out[n] = decay[-len(js):][ok] @ self.cooc(js[ok])
        np.divide(out, damp, out=out)
        np.log1p(out, out=out)
        out *= cfg.prior_weight
        return out

    def prior_terms(self, window: Sequence[int], cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`prior` sums for items ``cols``: the terms of the window's last ``cooc_window`` positions
        ``[positions, len(cols)]`` and the prior of those items ``[len(cols)]``."""
        cfg = self.config
        js = np.asarray(list(window)[-cfg.cooc_window:], np.int64)
        decay = (cfg.cooc_decay ** np.arange(len(js) - 1, -1, -1)).astype(np.float32)
        terms = decay[:, None] * self.cooc(js)[:, cols] * (js > 0)[:, None]
        damp = np.power(self.total[cols] + 1.0, cfg.cooc_alpha).astype(np.float32)
        return terms, cfg.prior_weight * np.log1p(terms.sum(0) / damp)

    def describe(self, item_id: str) -> dict[str, Any] | None:
        """What the table holds about ``item_id`` (None: no row), JSON-ready (``GET /items``)."""
        r = self.row(item_id)
        if r == 0:
            return None
        nz = np.flatnonzero(self.links[r])
        out: dict[str, Any] = {
            "item_id": item_id, "row": r, "online": bool(self.vocab.online[r]), "events": float(self.total[r]),
            "rated": float(self.rated[r]), "rating_delta": float(self.rating_delta[r]),
            "popularity": float(self.popularity(self.stream_time)[r]), "last_event": float(self.t_last[r]),
            "model_version": self.space[r] or None, "offset": int(self.offset[r]),
            "neighbours": {self.ids[j]: float(self.links[r, j]) for j in nz.tolist()}}
        if self.rows is not None and self.rows.width:
            out["tables"] = [float(x) for x in self.rows.get(np.array([r]))[0]]
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
