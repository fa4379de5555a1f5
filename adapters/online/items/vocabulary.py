"""Which item holds which row: a vocabulary that grows online, bounded by ``max_items``.

The checkpoint's items keep their rows; an item first seen online (or first published by the group's owner) gets its
own row at once, up to ``max_items`` rows. When the table is full the least popular rows are evicted and reused, so
memory stays bounded. Row 0 is the unknown item. The vocabulary only assigns rows: what a row holds (statistics,
table rows) belongs to the :class:`~adapters.online.items.table.ItemTable`, which it tells when rows are added, grow
or are freed (``on_grow``, ``on_new``, ``on_free``).

Example
-------
>>> v = ItemVocabulary(["<unk>", "a", "b"], max_items=8)
>>> v.add("c"), v.row("c"), v.row("nope"), v.n_active
(3, 3, 0, 3)
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from adapters.errors import MetarecError

log = logging.getLogger(__name__)


class ItemVocabulary:
    """Item ids ↔ rows (see the module docstring)."""

    def __init__(self, item_ids: Sequence[str], max_items: int, growable: bool = True,
                 heat: Callable[[], np.ndarray] | None = None) -> None:
        self.ids: list[str] = list(item_ids)
        self.index: dict[str, int] = {i: r for r, i in enumerate(self.ids) if r > 0}
        self.n_base = len(self.ids)
        self.max_items = int(max_items)
        self.growable = growable  #: new items get rows (False: a model whose item tables cannot grow)
        self.heat = heat or (lambda: np.zeros(self.capacity))  #: eviction order: the coldest rows go first
        self.online = np.zeros(self.capacity, bool)  #: rows created online
        self._active = np.array([bool(i) for i in self.ids])
        self._active[0] = False
        self.version = 0  #: bumped at every change of the rows in use
        self.evicted = 0
        self._free: list[int] = []
        self.pending: list[int] = []  #: rows added since the last batch was learned: never evicted before it is
        self.on_grow: list[Callable[[int], None]] = []  #: called with the new capacity
        self.on_new: list[Callable[[int, str], None]] = []  #: called with a row just given to an item
        self.on_free: list[Callable[[np.ndarray], None]] = []  #: called with rows just freed
        #: items dropped (deleted by the group) and not met since, oldest first: a mere reference does not bring
        #: them back (:meth:`ref`); bounded, the oldest forgotten first
        self.dropped: OrderedDict[str, None] = OrderedDict()

    @property
    def capacity(self) -> int:
        return len(self.ids)

    @property
    def n_active(self) -> int:
        """Rows holding an item: what can be recommended."""
        return int(self._active.sum())

    def active(self) -> np.ndarray:
        """``[capacity]`` bool: rows that hold an item (row 0 and free rows are False)."""
        return self._active

    def row(self, item_id: str) -> int:
        """The item's row, 0 when it has none."""
        return self.index.get(item_id, 0)

    def add(self, item_id: str, row: int | None = None) -> int:
        """The item's row, created if needed (0 when rows cannot be added); a new item takes the free ``row``
        when one is given (the table grows to hold it). An item :meth:`drop` deleted is met again: it is back."""
        r = self.index.get(item_id)
        if r is not None:
            return r
        if not self.growable:
            return 0
        self.dropped.pop(item_id, None)
        free = self._free_row() if row is None else self._claim(row)
        self.ids[free] = item_id
        self.index[item_id] = free
        self.online[free] = True
        self._active[free] = True
        self.pending.append(free)
        self.version += 1
        for f in self.on_new:
            f(free, item_id)
        return free

    def ref(self, item_id: str) -> int:
        """The row of an item another item refers to (an in-link's neighbour), created if needed like :meth:`add`,
        except for an item :meth:`drop` deleted: a reference computed before the deletion, arriving after it, must
        not bring the item back (0)."""
        r = self.index.get(item_id)
        if r is not None:
            return r
        return 0 if item_id in self.dropped else self.add(item_id)

    def drop(self, item_ids: Sequence[str]) -> None:
        """Forget these items (those it holds, and those it may hear of later: see :meth:`ref`): their rows are
        freed for other items."""
        for i in item_ids:
            self.dropped[i] = None
            self.dropped.move_to_end(i)
        while len(self.dropped) > max(1024, self.max_items):
            self.dropped.popitem(last=False)
        rows = [self.index[i] for i in item_ids if i in self.index]
        if rows:
            self._free_rows(np.asarray(rows, np.int64))

    def _free_row(self) -> int:
        if not self._free:
            if self.capacity < self.max_items:
                self._grow(min(self.max_items, max(self.capacity + 64, int(self.capacity * 1.25))))
            else:
                self._evict(max(1, self.capacity // 32))
        return self._free.pop(0)

    def _claim(self, row: int) -> int:
        if row >= self.capacity:
            self._grow(min(self.max_items, max(row + 1, self.capacity + 64, int(self.capacity * 1.25))))
        self._free.remove(row)
        return row

    def _grow(self, cap: int) -> None:
        old = self.capacity
        extra = cap - old
        self.ids.extend([""] * extra)
        self.online = np.concatenate([self.online, np.zeros(extra, bool)])
        self._active = np.concatenate([self._active, np.zeros(extra, bool)])
        for f in self.on_grow:
            f(cap)
        self._free.extend(range(old, cap))
        log.debug("item table grown to %d rows", cap)

    def _evict(self, k: int) -> None:
        heat = np.asarray(self.heat(), np.float64)[:self.capacity].copy()
        heat[0] = np.inf
        heat[self.pending] = np.inf
        heat[~self._active] = np.inf
        k = min(k, int(np.isfinite(heat).sum()))
        if k <= 0:
            raise MetarecError(f"more new items in one micro-batch than max-items ({self.max_items}) can hold")
        self._free_rows(np.argpartition(heat, k - 1)[:k])

    def _free_rows(self, rows: np.ndarray) -> None:
        for r in rows.tolist():
            self.index.pop(self.ids[r], None)
            self.ids[r] = ""
        self.online[rows] = True
        self._active[rows] = False
        for f in self.on_free:
            f(rows)
        self._free.extend(sorted(rows.tolist()))
        self.evicted += len(rows)
        self.version += 1
