"""Where the items' table rows live: the model's own item tables (a learner) or a plain array (an owner).

Every item table of a model (``mf``/``seq``: ranking embedding, ranking bias, rating factors, ...) is one row per
item; flattened and concatenated, an item's rows are ``width`` floats (:func:`table_widths`). The item table
(:class:`~adapters.online.items.table.ItemTable`) reads and writes them only through a :class:`TableRows`:
:class:`ModelRows` over the learner's private copy of the model (what it scores with), :class:`ArrayRows` for an
owner that merges and publishes rows without ranking. Models whose item tables cannot grow (``melu``) have none.

Example
-------
>>> rows = ArrayRows(capacity=3)
>>> rows.set(np.array([1]), np.ones((1, 2), np.float32))
>>> rows.add(np.array([1]), np.ones((1, 2), np.float32)); rows.get(np.array([1])).tolist()
[[2.0, 2.0]]
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from adapters.base import Adapter


def table_widths(adapter: Adapter) -> list[int]:
    """Floats per item of each item table of ``adapter``."""
    return [int(np.prod(t.shape[1:], dtype=np.int64)) for t in adapter.item_tables()]


class TableRows(Protocol):
    """The flattened table rows of every item (row 0: the unknown item)."""

    width: int

    def get(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), width]`` float32 copy."""
        ...

    def set(self, rows: np.ndarray, values: np.ndarray) -> None: ...

    def add(self, rows: np.ndarray, steps: np.ndarray) -> None:
        """Add ``steps`` (rows may repeat: their steps add up)."""
        ...

    def grow(self, capacity: int) -> None:
        """Hold ``capacity`` rows; new rows start as the unknown row."""
        ...

    def reset(self, rows: np.ndarray) -> None:
        """Set ``rows`` back to the unknown row (row 0)."""
        ...


class ModelRows:
    """The item tables of a model (its ``item_tables()``), grown in place: the learner scores with them."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.widths = table_widths(adapter)
        self.width = sum(self.widths)

    def _parts(self):  # noqa: ANN202
        pos = 0
        for t, w in zip(self.adapter.item_tables(), self.widths):
            yield t, pos, w
            pos += w

    def get(self, rows: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(np.asarray(rows, np.int64))
        parts = [torch.index_select(t.detach(), 0, idx).reshape(len(idx), w)
                 for t, w in zip(self.adapter.item_tables(), self.widths)]
        return torch.cat(parts, dim=1).to(torch.float32).numpy() if parts else np.zeros((len(idx), 0), np.float32)

    def set(self, rows: np.ndarray, values: np.ndarray) -> None:
        idx = torch.from_numpy(np.asarray(rows, np.int64))
        src = torch.from_numpy(np.ascontiguousarray(values, np.float32))
        with torch.no_grad():
            for t, pos, w in self._parts():
                t[idx] = src[:, pos:pos + w].reshape(len(idx), *t.shape[1:]).to(t.dtype)

    def add(self, rows: np.ndarray, steps: np.ndarray) -> None:
        idx = torch.from_numpy(np.asarray(rows, np.int64))
        src = torch.from_numpy(np.ascontiguousarray(steps, np.float32))
        with torch.no_grad():
            for t, pos, w in self._parts():  # a contiguous source: index_add_ from a column slice is twice as slow
                t.index_add_(0, idx, src[:, pos:pos + w].to(t.dtype).contiguous().view(len(idx), *t.shape[1:]))

    def grow(self, capacity: int) -> None:
        ad = self.adapter
        old = ad.n_items
        if capacity <= old:
            return
        for name, t in zip(ad.ITEM_TABLES, ad.item_tables()):
            fill = t.detach()[:1].expand(capacity - old, *t.shape[1:])
            setattr(ad, name, torch.nn.Parameter(torch.cat([t.detach(), fill.clone()], dim=0), requires_grad=False))
        ad.n_items = capacity

    def reset(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        idx = torch.from_numpy(np.asarray(rows, np.int64))
        with torch.no_grad():
            for t in self.adapter.item_tables():
                t[idx] = t[0].clone()


class ArrayRows:
    """Table rows in a numpy array (an owner's): the width is taken from the first rows set or added."""

    def __init__(self, capacity: int = 1, width: int = 0) -> None:
        self.width = int(width)
        self.data = np.zeros((int(capacity), self.width), np.float32)

    def _fit(self, width: int) -> None:
        if width != self.width and self.width == 0:
            self.width = int(width)
            self.data = np.zeros((len(self.data), self.width), np.float32)

    def get(self, rows: np.ndarray) -> np.ndarray:
        return self.data[np.asarray(rows, np.int64)].copy()

    def set(self, rows: np.ndarray, values: np.ndarray) -> None:
        self._fit(values.shape[1])
        self.data[np.asarray(rows, np.int64)] = values

    def add(self, rows: np.ndarray, steps: np.ndarray) -> None:
        self._fit(steps.shape[1])
        np.add.at(self.data, np.asarray(rows, np.int64), steps)

    def grow(self, capacity: int) -> None:
        extra = int(capacity) - len(self.data)
        if extra > 0:
            self.data = np.concatenate([self.data, np.repeat(self.data[:1], extra, axis=0)])

    def reset(self, rows: np.ndarray) -> None:
        self.data[np.asarray(rows, np.int64)] = self.data[0]
