"""The item side of the online path: a vocabulary that grows online, item-item statistics, item rows that learn.

θ0 is trained on history; a live catalog keeps growing and its items keep moving. :class:`ItemSide` is the one
small interface through which the learner reads and updates everything about items, so that it can later be
backed by a topic instead of process memory:

* **vocabulary** (:meth:`ItemSide.row`, :meth:`ItemSide.add`): the checkpoint's items keep their rows; an item
  first seen online gets its own row the moment it first appears, up to ``max_items`` rows. When the table is full
  the coldest rows (lowest decayed count) are evicted and reused, so memory stays bounded;
* **co-occurrence** (:meth:`ItemSide.observe`): ``C[j, i]`` and ``C[i, j]`` grow by 1 for every item ``j`` among
  a user's last ``cooc_window`` items when the user meets ``i`` (the reference co-occurrence model's statistic);
  :meth:`ItemSide.prior` turns a user's window into ranking scores
  ``weight · log(1 + Σ_l decay^age_l · C[j_l, i] / (n_i + 1)^alpha)``;
* **item rows that learn** (:meth:`ItemSide.learn_rows`): each micro-batch, in one batched call, the ranking
  embeddings and biases take one SGD step of the batch's next-item softmax loss at the users' pre-update vectors,
  and the rating factors one SGD step of the squared rating error (as River's BiasedMF does); a row created online
  starts from the embeddings of the items it co-occurred with (:meth:`ItemSide.init_new_rows`) instead of the shared
  unknown row.

The adapter's item tables (``mf``/``seq``) are grown in place (``capacity`` rows, of which ``n_active`` are in use);
the learner owns a private copy of the adapter, so the checkpoint itself never changes.

Example
-------
>>> import numpy as np
>>> side = ItemSide(["<unk>", "a", "b"], ItemSideConfig(max_items=8, cooc_weight=1.0))
>>> side.add("c")   # a new item gets the next free row
3
>>> side.observe([[1, 2], [1]], np.array([3, 3]))   # two users met c after a,b and after a
>>> float(side.cooc[1, 3]), float(side.cooc[3, 2])
(2.0, 1.0)
>>> s = side.prior([[1]])   # a user whose window holds a: c scores above b
>>> bool(s[0, 3] > s[0, 2])
True
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from adapters.errors import MetarecError

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ItemSideConfig:
    """How the item side learns online (stored in checkpoints under ``"itemside"``)."""

    #: rows of the item table at most (row 0 included); the coldest are evicted beyond it. The co-occurrence counts
    #: are a dense float32 matrix: 4·max_items² bytes at most (256 MiB at the default)
    max_items: int = 8_192
    cooc_window: int = 10  #: a user's last items that an event co-occurs with
    cooc_decay: float = 0.8  #: weight of a window item per step of age in :meth:`ItemSide.prior`
    cooc_alpha: float = 0.5  #: popularity damping of the prior, ``(n_i + 1)^alpha``
    cooc_weight: float = 0.0  #: weight of the co-occurrence prior in the ranking scores; 0 = off
    embed_lr: float = 0.0  #: online SGD rate of the ranking embeddings and biases; 0 = frozen
    rating_lr: float = 0.0  #: online SGD rate of the item rating factors; 0 = frozen
    new_row_events: int = 20  #: a row created online follows its co-occurring items until it has this many events

    def __post_init__(self) -> None:
        if self.max_items < 2:
            raise MetarecError(f"max-items must be ≥ 2, got {self.max_items}")
        if self.cooc_window < 1:
            raise MetarecError(f"co-occurrence window must be ≥ 1, got {self.cooc_window}")
        for name in ("cooc_decay", "cooc_alpha", "cooc_weight", "embed_lr", "rating_lr"):
            if not getattr(self, name) >= 0:
                raise MetarecError(f"{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ItemSideConfig:
        d = dict(d or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("max_items", "cooc_window", "new_row_events"):
            if k in known:
                known[k] = int(known[k])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ItemSide:
    """Vocabulary, co-occurrence statistics and online item rows of one learner (see the module docstring)."""

    def __init__(self, item_ids: Sequence[str], config: ItemSideConfig | None = None, adapter: Any = None,
                 growable: bool | None = None, features: dict[str, list[int]] | None = None) -> None:
        self.config = config or ItemSideConfig()
        self.ids: list[str] = list(item_ids)
        self.index: dict[str, int] = {i: r for r, i in enumerate(self.ids) if r > 0}
        self.n_base = len(self.ids)
        self.adapter = adapter
        #: new items get rows (None: when there is no adapter, or one whose item tables can grow: mf, seq)
        self.growable = can_grow(adapter) if growable is None else growable
        cap = len(self.ids)
        self.cooc = np.zeros((cap, cap), np.float32)
        self.total = np.zeros(cap, np.float32)  #: events per row learned online (the prior's damping counts)
        self.heat = np.zeros(cap, np.float64)  #: decayed events per row (eviction order; see :meth:`warm`)
        self.online = np.zeros(cap, bool)  #: rows created online
        self.version = 0  #: bumped at every vocabulary change
        self.features = features or {}  #: item id → feature codes (genres, decade), where the dataset has them
        self._base_features: torch.Tensor | None = None
        self.evicted = 0  #: rows evicted so far
        self._free: list[int] = []
        self._cleared: list[int] = []
        self._pending: list[int] = []  # rows added since the last observe: never evicted before their batch is learned
        self._active = np.array([bool(i) for i in self.ids])  # rows holding an item (kept by add, grow, evict)
        self._active[0] = False

    def warm(self, counts: np.ndarray) -> None:
        """Start the eviction order from decayed counts of the training data (the checkpoint's freshness counts),
        so that the trained items the stream still meets are not the first evicted."""
        counts = np.asarray(counts, np.float64)[:self.capacity]
        self.heat[:len(counts)] = np.maximum(self.heat[:len(counts)], counts)

    # ---- vocabulary -----------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return len(self.ids)

    @property
    def n_active(self) -> int:
        """Rows holding an item: what can be recommended (the checkpoint's items and those added online)."""
        return int(self._active.sum())

    def row(self, item_id: str) -> int:
        """The item's row, 0 when it has none."""
        return self.index.get(item_id, 0)

    def add(self, item_id: str, row: int | None = None) -> int:
        """The item's row, created if needed (0 when the model cannot grow: melu); a new item takes the free ``row``
        when one is given (the table grows to hold it; a model switch keeps an item at its row this way)."""
        r = self.index.get(item_id)
        if r is not None:
            return r
        if not self.growable:
            return 0
        free = self._free_row() if row is None else self._claim(row)
        self.ids[free] = item_id
        self.index[item_id] = free
        self.online[free] = True
        self._active[free] = True
        self.heat[free] = 1.0
        self._pending.append(free)
        reset_rows(self.adapter, torch.tensor([free]))
        self._init_from_features(free, item_id)
        self.version += 1
        return free

    def _init_from_features(self, row: int, item_id: str) -> None:
        """A new row starts as the similarity-weighted mean of the rows of the checkpoint's items that share the
        most features (genres, decade) with it, where the dataset describes the item."""
        codes = self.features.get(item_id)
        if self.adapter is None or not codes:
            return
        if self._base_features is None:
            width = 1 + max((c for cs in self.features.values() for c in cs), default=0)
            base = torch.zeros(self.n_base, width)
            for r, i in enumerate(self.ids[:self.n_base]):
                for c in self.features.get(i, []) if r > 0 else []:
                    base[r, c] = 1.0
            self._base_features = base / base.norm(dim=1, keepdim=True).clamp(min=1e-12)
        base = self._base_features
        f = torch.zeros(base.shape[1])
        f[[c for c in codes if c < base.shape[1]]] = 1.0
        sim = base @ (f / f.norm().clamp(min=1e-12))
        top = torch.topk(sim, min(20, len(sim)))
        keep = top.values > 0
        if not keep.any():
            return
        w = top.values[keep] / top.values[keep].sum()
        idx = top.indices[keep]
        with torch.no_grad():
            for t in self.adapter.item_tables():
                t[row] = (w.to(t.dtype)[:, None] * t[idx].reshape(len(idx), -1)).sum(0).reshape(t.shape[1:])

    def _free_row(self) -> int:
        if not self._free:
            if self.capacity < self.config.max_items:
                self._grow(min(self.config.max_items, max(self.capacity + 64, int(self.capacity * 1.25))))
            else:
                self._evict(max(1, self.capacity // 32))
        return self._free.pop(0)

    def _claim(self, row: int) -> int:
        """Take the free ``row`` (below ``max_items``), growing the table to hold it."""
        if row >= self.capacity:
            self._grow(min(self.config.max_items, max(row + 1, self.capacity + 64, int(self.capacity * 1.25))))
        self._free.remove(row)
        return row

    def _grow(self, cap: int) -> None:
        old = self.capacity
        extra = cap - old
        self.ids.extend([""] * extra)
        cooc = np.zeros((cap, cap), np.float32)
        cooc[:old, :old] = self.cooc
        self.cooc = cooc
        self.total = np.concatenate([self.total, np.zeros(extra, np.float32)])
        self.heat = np.concatenate([self.heat, np.zeros(extra)])
        self.online = np.concatenate([self.online, np.zeros(extra, bool)])
        self._active = np.concatenate([self._active, np.zeros(extra, bool)])
        if self.adapter is not None:
            grow_tables(self.adapter, cap)
        self._free.extend(range(old, cap))
        log.debug("item table grown to %d rows", cap)

    def _evict(self, k: int) -> None:
        """Free the ``k`` coldest rows (row 0 never)."""
        heat = self.heat.copy()
        heat[0] = np.inf
        heat[self._pending] = np.inf
        k = min(k, int(np.isfinite(heat).sum()))
        if k <= 0:
            raise MetarecError(f"more new items in one micro-batch than max-items ({self.config.max_items}) can hold")
        self._free_rows(np.argpartition(heat, k)[:k])

    def drop(self, item_ids: Sequence[str]) -> None:
        """Forget these items (those it holds): their rows are freed for other items."""
        rows = [self.index[i] for i in item_ids if i in self.index]
        if rows:
            self._free_rows(np.asarray(rows, np.int64))

    def _free_rows(self, rows: np.ndarray) -> None:
        """Free ``rows``: statistics cleared, tables reset to the unknown row."""
        k = len(rows)
        for r in rows.tolist():
            self.index.pop(self.ids[r], None)
            self.ids[r] = ""
        self.cooc[rows, :] = 0.0
        self.cooc[:, rows] = 0.0
        self.total[rows] = 0.0
        self.heat[rows] = 0.0
        self.online[rows] = True
        self._active[rows] = False
        reset_rows(self.adapter, torch.from_numpy(rows.astype(np.int64)))
        self._free.extend(sorted(rows.tolist()))
        self._cleared.extend(rows.tolist())
        self.evicted += k
        self.version += 1

    def active(self) -> np.ndarray:
        """``[capacity]`` bool: rows that hold an item (row 0 and free rows are False)."""
        return self._active

    def _inactive_bias(self) -> torch.Tensor:
        """``[capacity]`` float32: 0 on active rows, -inf on row 0 and free rows (cached per vocabulary version)."""
        cached = getattr(self, "_bias_cache", None)
        if cached is None or cached[0] != self.version:
            bias = torch.zeros(self.capacity)
            bias[torch.from_numpy(~self.active())] = -torch.inf
            self._bias_cache = cached = (self.version, bias)
        return cached[1]

    def take_cleared(self) -> list[int]:
        """Rows evicted since the last call (the learner clears its own per-row arrays there)."""
        out, self._cleared = self._cleared, []
        return out

    # ---- co-occurrence ----------------------------------------------------------------------------------
    def observe(self, windows: Sequence[Sequence[int]], rows: np.ndarray, half_life: float = 5_000.0) -> None:
        """Learn a micro-batch: event ``n`` met item ``rows[n]`` right after the items ``windows[n]`` (oldest first;
        only the last ``cooc_window`` count). Row 0 (unknown) is ignored."""
        rows = np.asarray(rows, np.int64)
        self._pending = []
        if not len(rows):
            return
        w = self.config.cooc_window
        js = [np.asarray(list(win)[-w:], np.int64) for win in windows]
        lens = np.array([len(j) for j in js])
        if lens.sum():
            jj = np.concatenate(js)
            ii = np.repeat(rows, lens)
            ok = (jj > 0) & (ii > 0)
            np.add.at(self.cooc, (jj[ok], ii[ok]), 1.0)
            np.add.at(self.cooc, (ii[ok], jj[ok]), 1.0)
        known = rows[rows > 0]
        np.add.at(self.total, known, 1.0)
        self.heat *= np.exp2(-len(rows) / half_life)
        np.add.at(self.heat, known, 1.0)

    def prior(self, windows: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(windows), capacity]`` co-occurrence ranking scores of each window (zeros when the weight is 0)."""
        cfg = self.config
        out = np.zeros((len(windows), self.capacity), np.float32)
        if cfg.cooc_weight <= 0:
            return out
        w = cfg.cooc_window
        decay = (cfg.cooc_decay ** np.arange(w - 1, -1, -1)).astype(np.float32)
        damp = np.power(self.total + 1.0, cfg.cooc_alpha, dtype=np.float32)
        for n, win in enumerate(windows):
            js = np.asarray(list(win)[-w:], np.int64)
            js_ok = js > 0
            if js_ok.any():
                out[n] = decay[-len(js):][js_ok] @ self.cooc[js[js_ok]]
        np.divide(out, damp, out=out)
        np.log1p(out, out=out)
        out *= cfg.cooc_weight
        return out

    def prior_terms(self, window: Sequence[int], cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`prior` sums for items ``cols``: the terms of ``window``'s last ``cooc_window`` positions
        ``[positions, len(cols)]`` and the prior of those items ``[len(cols)]`` (for adapters.online.explain)."""
        cfg = self.config
        js = np.asarray(list(window)[-cfg.cooc_window:], np.int64)
        decay = (cfg.cooc_decay ** np.arange(len(js) - 1, -1, -1)).astype(np.float32)
        terms = decay[:, None] * self.cooc[js][:, cols] * (js > 0)[:, None]
        damp = np.power(self.total[cols] + 1.0, cfg.cooc_alpha, dtype=np.float32)
        return terms, cfg.cooc_weight * np.log1p(terms.sum(0) / damp)

    # ---- item rows that learn --------------------------------------------------------------------------
    def init_new_rows(self, rows: np.ndarray, young_only: bool = True) -> None:
        """Rows created online that are still young (any age: ``young_only=False``) take the co-occurrence-weighted
        mean of their neighbours' rows (every growable table), so that they rank near the items they were met with."""
        if self.adapter is None or not len(rows):
            return
        rows = np.unique(np.asarray(rows, np.int64))
        young = self.total[rows] <= self.config.new_row_events if young_only else True
        rows = rows[(rows > 0) & self.online[rows] & young]
        if not len(rows):
            return
        weights = self.cooc[rows].copy()
        weights[:, 0] = 0.0
        weights[:, rows] = 0.0
        norm = weights.sum(1, keepdims=True)
        has = norm[:, 0] > 0
        if not has.any():
            return
        wt = torch.from_numpy(weights[has] / norm[has])
        idx = torch.from_numpy(rows[has])
        with torch.no_grad():
            for t in self.adapter.item_tables():
                t[idx] = (wt @ t.reshape(t.shape[0], -1)).reshape(len(idx), *t.shape[1:]).to(t.dtype)

    def learn_rows(self, vectors: torch.Tensor, rows: np.ndarray, rating_vectors: torch.Tensor | None = None,
                   rating_errors: np.ndarray | None = None) -> None:
        """One batched SGD step of the item rows on a micro-batch.

        ``vectors`` ``[n, dim]``: each event's user ranking vector before the batch; ``rows`` ``[n]`` its item row.
        Ranking: the softmax next-item loss over the active rows (``embed_lr``). Rating: ``rating_vectors``
        ``[n, r]`` and the pre-update errors ``prediction − rating`` (NaN = not rated) (``rating_lr``).
        """
        ad, cfg = self.adapter, self.config
        rows = np.asarray(rows, np.int64)
        ok = rows > 0
        if ad is None or not ok.any():
            return
        with torch.no_grad():
            if cfg.embed_lr > 0:
                u = vectors[torch.from_numpy(ok)]
                r = torch.from_numpy(rows[ok])
                q, c = ad.item_emb, ad.item_bias
                logits = torch.addmm(c + self._inactive_bias(), u, q.t())  # free rows and row 0: -inf
                p = torch.softmax(logits, dim=1, out=logits)
                p[torch.arange(len(r)), r] -= 1.0  # ∂CE/∂logits
                scale = cfg.embed_lr / len(r)
                q.sub_(p.t() @ u, alpha=scale)
                c.sub_(p.sum(0), alpha=scale)
            if cfg.rating_lr > 0 and rating_vectors is not None and rating_errors is not None:
                err = np.asarray(rating_errors, np.float64)
                good = ok & np.isfinite(err)
                if good.any():
                    e = torch.from_numpy(err[good]).to(ad.item_rate.dtype)
                    v = rating_vectors[torch.from_numpy(good)]
                    ad.item_rate.index_add_(0, torch.from_numpy(rows[good]), -cfg.rating_lr * e[:, None] * v)


def can_grow(adapter: Any) -> bool:
    """True when there is no adapter or its item tables can grow (those with ``item_tables``: mf, seq; not melu)."""
    return adapter is None or hasattr(adapter, "item_tables")


def grow_tables(adapter: Any, cap: int) -> None:
    """Grow the adapter's item tables to ``cap`` rows; new rows start as row 0 (the generic unknown item)."""
    old = adapter.n_items
    if cap <= old:
        return
    for name, t in zip(adapter.ITEM_TABLES, adapter.item_tables()):
        fill = t.detach()[:1].expand(cap - old, *t.shape[1:])
        new = torch.cat([t.detach(), fill.clone()], dim=0)
        setattr(adapter, name, torch.nn.Parameter(new, requires_grad=False))
    adapter.n_items = cap
    if hasattr(adapter, "_catalog_cache"):
        adapter._catalog_cache = None


def reset_rows(adapter: Any, rows: torch.Tensor) -> None:
    """Reset item ``rows`` of every growable table to row 0 (the generic unknown item)."""
    if adapter is None or not len(rows):
        return
    with torch.no_grad():
        for t in adapter.item_tables():
            t[rows] = t[0].clone()
