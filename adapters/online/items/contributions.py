"""What a learner's micro-batches teach about items, as data: a :class:`Contributions` batch (one entry per item).

A learner turns each micro-batch into contributions (:func:`adapters.online.items.rule.contribute`); an owner merges
them into the items' rows (:meth:`adapters.online.items.table.ItemTable.merge`). Per item, a contribution carries

* ``t``: the newest event time of the item it reflects (``-inf`` for an item that only served as a negative of the
  ranking step: it did not occur, so its last-seen time and popularity are left alone);
* ``events``, ``rated``: its events and rated events; ``d_rating``: the step of its rating-bias correction;
* ``tables``: its table rows, flattened (every item table of the model), either a step to add (``kind`` DELTA) or
  the rows to set (``kind`` INIT: a young or newly seen item, or one whose model version changed);
* in-link increments: ``(entry, neighbour item, count)``: the events in which a user met the item with the
  neighbour among their last items (the co-occurrence statistic).

Contributions of several micro-batches add up (:meth:`Contributions.combine`): a worker sends them when it commits
its input offsets, not after every micro-batch. Nothing here knows Kafka: :meth:`Contributions.to_bytes` and
:meth:`Contributions.from_bytes` are the wire format, one value per partition of ``<group>-item-updates``.

Example
-------
>>> a = Contributions.of(["x", "y"], space="v1", t=[10.0, 11.0], events=[1, 2])
>>> b = Contributions.of(["y", "z"], space="v1", t=[12.0, 9.0], events=[1, 1], links=[(0, "x", 1.0)])
>>> c = a.combine(b)
>>> c.items, c.events.tolist(), c.t.tolist(), c.links()
(['x', 'y', 'z'], [1.0, 3.0, 1.0], [10.0, 12.0, 9.0], [('y', 'x', 1.0)])
>>> Contributions.from_bytes(c.to_bytes()) == c
True
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adapters.errors import MetarecError
from adapters.online.items.vocabulary import ItemVocabulary

NONE, DELTA, INIT = 0, 1, 2  #: what ``tables[k]`` is: nothing, a step to add, the rows to set
_HEAD = struct.Struct("<2sBIIII")  # magic, format, entries, table width, links, bytes of the names section
_FORMAT = 1


@dataclass(eq=False)
class Contributions:
    """One entry per item (see the module docstring); arrays are aligned with ``items``."""

    items: list[str]
    space: str  #: the model version whose item rows ``tables`` belong to
    t: np.ndarray  #: float64
    events: np.ndarray  #: float64
    rated: np.ndarray  #: float64
    d_rating: np.ndarray  #: float64
    kind: np.ndarray  #: uint8: NONE, DELTA or INIT
    tables: np.ndarray  #: float32 [len(items), width] (width 0: no tables)
    link_entry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  #: index into ``items``
    link_item: list[str] = field(default_factory=list)  #: the neighbour's item id
    link_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: where the contributions were computed, when in this process: the rows of ``items`` and ``link_item`` in that
    #: vocabulary, and the vocabulary with its count of freed rows then (not sent: an in-process owner merging
    #: into the same vocabulary, no row freed since, uses the rows instead of looking every id up)
    rows: np.ndarray | None = field(default=None, repr=False)
    link_rows: np.ndarray | None = field(default=None, repr=False)
    origin: tuple[ItemVocabulary, int] | None = field(default=None, repr=False)

    def placed_in(self, vocab: ItemVocabulary) -> bool:
        """Whether :attr:`rows` and :attr:`link_rows` are still the rows of the items in ``vocab``."""
        return self.origin is not None and self.origin[0] is vocab and self.origin[1] == vocab.evicted

    @classmethod
    def of(cls, items: Sequence[str], space: str = "", t: Sequence[float] | None = None,
           events: Sequence[float] | None = None, rated: Sequence[float] | None = None,
           d_rating: Sequence[float] | None = None, kind: Sequence[int] | None = None,
           tables: np.ndarray | None = None, links: Sequence[tuple[int, str, float]] = ()) -> Contributions:
        """Build from plain sequences (missing fields are zeros; ``links``: ``(entry, neighbour, count)``)."""
        n = len(items)

        def arr(x: Sequence[float] | None, fill: float = 0.0) -> np.ndarray:
            return np.full(n, fill) if x is None else np.asarray(x, np.float64)

        tab = np.zeros((n, 0), np.float32) if tables is None else np.asarray(tables, np.float32)
        kinds = np.full(n, NONE if tab.shape[1] == 0 else DELTA, np.uint8) if kind is None else np.asarray(kind, np.uint8)
        return cls(list(items), space, arr(t, -np.inf), arr(events), arr(rated), arr(d_rating), kinds, tab,
                   np.asarray([k for k, _, _ in links], np.int32), [j for _, j, _ in links],
                   np.asarray([c for _, _, c in links], np.float32))

    @classmethod
    def empty(cls, space: str = "", width: int = 0) -> Contributions:
        return cls.of([], space, tables=np.zeros((0, width), np.float32))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def width(self) -> int:
        return int(self.tables.shape[1])

    def links(self) -> list[tuple[str, str, float]]:
        """``(item, neighbour, count)`` of every in-link increment."""
        return [(self.items[k], j, float(c)) for k, j, c in zip(self.link_entry.tolist(), self.link_item,
                                                               self.link_count.tolist())]

    def select(self, entries: Sequence[int]) -> Contributions:
        """The contributions of ``entries`` only (in that order), with their in-links."""
        idx = np.asarray(entries, np.int64)
        where = {int(k): n for n, k in enumerate(idx.tolist())}
        keep = [n for n, k in enumerate(self.link_entry.tolist()) if k in where]
        return Contributions([self.items[k] for k in idx.tolist()], self.space, self.t[idx], self.events[idx],
                             self.rated[idx], self.d_rating[idx], self.kind[idx], self.tables[idx],
                             np.asarray([where[int(self.link_entry[n])] for n in keep], np.int32),
                             [self.link_item[n] for n in keep], self.link_count[keep])

    def combine(self, later: Contributions) -> Contributions:
        """Both batches as one, one entry per item: counts, rating steps, table steps and in-links add up, the
        newest time wins, rows set by ``later`` replace what came before (a step after a set is added to it)."""
        if not len(self):
            return later
        if not len(later):
            return self
        if later.space != self.space:  # a model switch in between: the earlier rows mean nothing any more
            return later
        index = {i: k for k, i in enumerate(self.items)}
        items = list(self.items) + [i for i in later.items if i not in index]
        index = {i: k for k, i in enumerate(items)}
        pos = np.asarray([index[i] for i in later.items], np.int64)
        n, width = len(items), max(self.width, later.width)

        def grow(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
            out = np.full((n, *a.shape[1:]), fill, a.dtype)
            out[:len(a)] = a
            return out

        t = grow(self.t, -np.inf)
        np.maximum.at(t, pos, later.t)
        events, rated, d_rating = grow(self.events), grow(self.rated), grow(self.d_rating)
        np.add.at(events, pos, later.events)
        np.add.at(rated, pos, later.rated)
        np.add.at(d_rating, pos, later.d_rating)
        kind = grow(self.kind).astype(np.uint8)
        tables = np.zeros((n, width), np.float32)
        tables[:len(self), :self.width] = self.tables
        lt = later.tables if later.width == width else np.zeros((len(later), width), np.float32)
        init = later.kind == INIT
        tables[pos[init]] = lt[init]
        kind[pos[init]] = INIT
        delta = later.kind == DELTA
        tables[pos[delta]] += lt[delta]
        kind[pos[delta]] = np.where(kind[pos[delta]] == INIT, INIT, DELTA)
        return Contributions(items, later.space, t, events, rated, d_rating, kind, tables,
                             np.concatenate([self.link_entry, pos[later.link_entry].astype(np.int32)]),
                             self.link_item + later.link_item,
                             np.concatenate([self.link_count, later.link_count]))

    # -- wire format -----------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        names = "\x1f".join([self.space, *self.items, *self.link_item]).encode("utf-8")
        n, width, m = len(self), self.width, len(self.link_item)
        return b"".join([
            _HEAD.pack(b"MC", _FORMAT, n, width, m, len(names)), names,
            np.stack([self.t, self.events, self.rated, self.d_rating]).astype("<f8").tobytes() if n else b"",
            self.kind.astype("u1").tobytes(), self.tables.astype("<f4").tobytes(),
            self.link_entry.astype("<i4").tobytes(), self.link_count.astype("<f4").tobytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> Contributions:
        try:
            magic, fmt, n, width, m, ln = _HEAD.unpack_from(data, 0)
            if magic != b"MC" or fmt != _FORMAT:
                raise MetarecError("corrupt item contributions: unknown format")
            pos = _HEAD.size
            names = bytes(data[pos:pos + ln]).decode("utf-8").split("\x1f")
            pos += ln
            if len(names) != 1 + n + m:
                raise MetarecError("corrupt item contributions: names")
            scalars = np.frombuffer(data, "<f8", 4 * n, pos).reshape(4, n).astype(np.float64) if n else np.zeros((4, 0))
            pos += 32 * n
            kind = np.frombuffer(data, "u1", n, pos).copy()
            pos += n
            tables = np.frombuffer(data, "<f4", n * width, pos).reshape(n, width).copy()
            pos += 4 * n * width
            entry = np.frombuffer(data, "<i4", m, pos).copy()
            count = np.frombuffer(data, "<f4", m, pos + 4 * m).copy()
            if pos + 8 * m != len(data) or (m and (entry.min() < 0 or entry.max() >= n)):
                raise MetarecError("corrupt item contributions: sizes")
        except (struct.error, ValueError, UnicodeDecodeError, TypeError) as exc:
            raise MetarecError(f"corrupt item contributions: {exc}") from None
        return cls(names[1:1 + n], names[0], scalars[0], scalars[1], scalars[2], scalars[3], kind, tables,
                   entry, names[1 + n:], count)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Contributions):
            return NotImplemented
        return (self.items == other.items and self.space == other.space and self.link_item == other.link_item
                and all(np.array_equal(getattr(self, f), getattr(other, f)) for f in (
                    "t", "events", "rated", "d_rating", "kind", "tables", "link_entry", "link_count")))
