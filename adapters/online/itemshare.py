"""The group's item state as data: what a worker contributes about an item, the item's shared row, the merge rule.

With several workers, the item side (:mod:`adapters.online.itemside`, :mod:`adapters.online.freshness`) is one
state for the whole group. Each micro-batch, a worker turns what its events teach about items into one
:class:`ItemContribution` per item; the contributions are re-keyed by item id, so that every item has a single
owner (the item agent of the stream side), which folds them into the item's :class:`ItemRow` with :func:`merge` and
publishes the row. Every worker applies the published rows (:mod:`adapters.online.sharedside`). Nothing here knows
Kafka: both types serialize to bytes and back.

**The merge rule** (what happens when two workers update the same item in the same second): the owner applies
their contributions one after the other, in the order of its input, and

* sums what adds: event counts, rated counts, rating-bias corrections, co-occurrence counts, and the SGD steps of
  the item's table rows (each computed by its worker against the row it had applied: asynchronous SGD, as in
  Hogwild);
* lets the last writer win for what is set: the table rows of a young item (it follows the items it co-occurs
  with until it has ``young_events`` events), and the rows of an item whose model version changed (a rollout);
* decays the popularity count in event time (half-life ``half_life_s``) to the newer of the two times;
* ignores a contribution it has already applied (the row keeps the offset of the last one): the owner's redelivered
  input is idempotent. A worker that crashes before its batch is durable re-learns the batch and contributes it
  again: item statistics are at-least-once.

Co-occurrences are stored as in-links: item ``i``'s row counts, for each item ``j``, the events in which a user met
``i`` with ``j`` among their last items; the symmetric count a worker ranks with is ``in_i[j] + in_j[i]``. A row
keeps its ``max_neighbours`` largest in-links (Space-Saving: a new neighbour replaces the smallest and inherits its
count, so a kept count never underestimates).

Example
-------
>>> import numpy as np
>>> cfg = ShareConfig(half_life_s=10.0)
>>> a = ItemContribution("v1", t=100.0, events=2, init=np.ones(3, np.float32), neighbours={"x": 2.0})
>>> b = ItemContribution("v1", t=110.0, events=1, d_tables=np.full(3, 0.5, np.float32), neighbours={"x": 1.0})
>>> row = merge(merge(None, a, 0, cfg), b, 1, cfg)
>>> row.tables.tolist(), row.total, round(row.count, 3), row.neighbours
([1.5, 1.5, 1.5], 3.0, 2.0, {'x': 3.0})
>>> merge(row, b, 1, cfg) is row   # offset 1 was applied already
True
>>> ItemRow.from_bytes(row.to_bytes()) == row
True
"""
from __future__ import annotations

import heapq
import math
import struct
from dataclasses import dataclass, field, replace

import numpy as np

from adapters.errors import MetarecError

_ROW = struct.Struct("<2sBBqddddddHII")  # magic, format, flags, offset, t_last, count, count_t, total, rated, delta,
#                                         space length, table length, neighbours length (bytes)
_CONTRIB = struct.Struct("<2sBBddddHII")  # magic, format, flags, t, events, rated, d_rating, space length,
#                                          table length (floats), neighbours length (bytes)
_FORMAT = 1
_SET = 1  # contribution: tables are an init (set), else a delta (add)


@dataclass(frozen=True)
class ShareConfig:
    """How the group's item rows are merged and bounded."""

    #: half-life of the popularity count, seconds of event time (the local item side's 5,000 events are ~11 days of
    #: ML-100K; one day cost HR@10 0.012 there, see the README)
    half_life_s: float = 7 * 86_400.0
    #: in-links kept per item (the largest); 64 cost ML-100K HR@10 0.036 against untruncated (README)
    max_neighbours: int = 512
    young_events: int = 20  #: until this many events, an item's table rows follow its co-occurring items (set)

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise MetarecError(f"item half-life must be > 0 seconds, got {self.half_life_s}")
        if self.max_neighbours < 1:
            raise MetarecError(f"max neighbours must be ≥ 1, got {self.max_neighbours}")


def _pack_neighbours(neighbours: dict[str, float]) -> bytes:
    if not neighbours:
        return b""
    names = "\x1f".join(neighbours).encode("utf-8")
    counts = np.fromiter(neighbours.values(), np.float32, len(neighbours)).astype("<f4").tobytes()
    return struct.pack("<I", len(neighbours)) + counts + names


def _unpack_neighbours(data: bytes) -> dict[str, float]:
    if not data:
        return {}
    (n,) = struct.unpack_from("<I", data, 0)
    counts = np.frombuffer(data, "<f4", n, 4).tolist()
    names = bytes(data[4 + 4 * n:]).decode("utf-8").split("\x1f")
    if len(names) != n:
        raise MetarecError("corrupt item neighbours")
    return dict(zip(names, counts))


def _unpack_body(data: bytes, pos: int, space_len: int, floats: int) -> tuple[str, np.ndarray | None, dict[str, float]]:
    """``(model version, item-table floats or None, neighbours)``: what follows the header of both formats."""
    space = bytes(data[pos:pos + space_len]).decode("utf-8")
    pos += space_len
    tables = np.frombuffer(data, "<f4", floats, pos).astype(np.float32) if floats else None
    return space, tables, _unpack_neighbours(data[pos + 4 * floats:])


@dataclass(eq=False)
class ItemContribution:
    """What one worker's micro-batch teaches about one item (the key, the item id, travels beside it)."""

    space: str  #: model version whose item rows ``init``/``d_tables`` belong to
    t: float  #: newest event time of the item in the batch
    events: float = 0.0  #: the item's events in the batch
    rated: float = 0.0  #: those with a rating
    d_rating: float = 0.0  #: step of the item's rating-bias correction
    d_tables: np.ndarray | None = None  #: float32, SGD step of the item's table rows (flattened, every item table)
    init: np.ndarray | None = None  #: float32, the item's rows as this worker has them, to set (young or new)
    neighbours: dict[str, float] = field(default_factory=dict)  #: in-link increments: item met with ``j``

    def to_bytes(self) -> bytes:
        tables = self.init if self.init is not None else self.d_tables
        flat = b"" if tables is None else np.ascontiguousarray(tables, "<f4").tobytes()
        if self.init is not None and self.d_tables is not None:
            raise MetarecError("a contribution sets or adds the item rows, not both")
        space, neigh = self.space.encode("utf-8"), _pack_neighbours(self.neighbours)
        flags = _SET if self.init is not None else 0
        head = _CONTRIB.pack(b"MC", _FORMAT, flags, self.t, self.events, self.rated, self.d_rating, len(space),
                             len(flat) // 4, len(neigh))
        return b"".join([head, space, flat, neigh])

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemContribution:
        try:
            magic, fmt, flags, t, events, rated, d_rating, ls, lt, ln = _CONTRIB.unpack_from(data, 0)
        except struct.error as exc:
            raise MetarecError(f"corrupt item contribution: {exc}") from None
        if magic != b"MC" or fmt != _FORMAT or len(data) != _CONTRIB.size + ls + 4 * lt + ln:
            raise MetarecError("corrupt item contribution")
        space, tables, neigh = _unpack_body(data, _CONTRIB.size, ls, lt)
        return cls(space, t, events, rated, d_rating, None if flags & _SET else tables,
                   tables if flags & _SET else None, neigh)


@dataclass(eq=False)
class ItemRow:
    """The group's current state of one item, as its owner publishes it."""

    space: str = ""  #: model version whose item rows ``tables`` belong to ("" and no tables: not set yet)
    offset: int = -1  #: the owner's input offset of the last contribution applied
    t_last: float = -math.inf  #: newest event time of the item
    count: float = 0.0  #: popularity: events decayed in event time, as of ``count_t``
    count_t: float = -math.inf
    total: float = 0.0  #: events ever
    rated: float = 0.0  #: rated events ever
    rating_delta: float = 0.0  #: online correction of the item's rating bias
    tables: np.ndarray | None = None  #: float32, the item's rows of every item table (flattened)
    neighbours: dict[str, float] = field(default_factory=dict)  #: in-links: item → co-occurrence count

    def decayed_count(self, t: float, half_life_s: float) -> float:
        """The popularity count as of event time ``t``."""
        if not math.isfinite(self.count_t):
            return 0.0
        return self.count * math.exp2(-max(0.0, t - self.count_t) / half_life_s)

    def to_bytes(self) -> bytes:
        flat = b"" if self.tables is None else np.ascontiguousarray(self.tables, "<f4").tobytes()
        space, neigh = self.space.encode("utf-8"), _pack_neighbours(self.neighbours)
        head = _ROW.pack(b"MI", _FORMAT, 0, self.offset, self.t_last, self.count, self.count_t, self.total,
                         self.rated, self.rating_delta, len(space), len(flat) // 4, len(neigh))
        return b"".join([head, space, flat, neigh])

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemRow:
        try:
            (magic, fmt, _flags, offset, t_last, count, count_t, total, rated, delta, ls, lt,
             ln) = _ROW.unpack_from(data, 0)
        except struct.error as exc:
            raise MetarecError(f"corrupt item row: {exc}") from None
        if magic != b"MI" or fmt != _FORMAT or len(data) != _ROW.size + ls + 4 * lt + ln:
            raise MetarecError("corrupt item row")
        space, tables, neigh = _unpack_body(data, _ROW.size, ls, lt)
        return cls(space, offset, t_last, count, count_t, total, rated, delta, tables, neigh)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemRow):
            return NotImplemented
        same_tables = (self.tables is None) == (other.tables is None) and (
            self.tables is None or np.array_equal(self.tables, other.tables))
        return same_tables and all(getattr(self, f) == getattr(other, f) for f in (
            "space", "offset", "t_last", "count", "count_t", "total", "rated", "rating_delta", "neighbours"))


def pack_bundle(contributions: list[tuple[bytes, bytes]]) -> bytes:
    """Many ``(item key, contribution bytes)`` in one value: one message per owner and micro-batch.

    >>> unpack_bundle(pack_bundle([(b"a", b"xy"), (b"b", b"")]))
    [(b'a', b'xy'), (b'b', b'')]
    """
    parts = [struct.pack("<2sI", b"MB", len(contributions))]
    for key, value in contributions:
        parts += [struct.pack("<HI", len(key), len(value)), key, value]
    return b"".join(parts)


def unpack_bundle(data: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(item key, contribution bytes)`` of a :func:`pack_bundle` value."""
    try:
        magic, n = struct.unpack_from("<2sI", data, 0)
        if magic != b"MB":
            raise MetarecError("corrupt item bundle")
        pos, out = 6, []
        for _ in range(n):
            lk, lv = struct.unpack_from("<HI", data, pos)
            pos += 6
            out.append((bytes(data[pos:pos + lk]), bytes(data[pos + lk:pos + lk + lv])))
            pos += lk + lv
    except (struct.error, TypeError) as exc:
        raise MetarecError(f"corrupt item bundle: {exc}") from None
    if pos != len(data):
        raise MetarecError("corrupt item bundle: trailing bytes")
    return out


def row_header(data: bytes) -> tuple[float, float, float]:
    """``(t_last, count, count_t)`` of an :class:`ItemRow`'s bytes, read from its header only."""
    try:
        magic, fmt, _f, _o, t_last, count, count_t, *_ = _ROW.unpack_from(data, 0)
    except (struct.error, TypeError) as exc:
        raise MetarecError(f"corrupt item row: {exc}") from None
    if magic != b"MI" or fmt != _FORMAT:
        raise MetarecError("corrupt item row")
    return t_last, count, count_t


def _add_neighbours(kept: dict[str, float], increments: dict[str, float], cap: int) -> None:
    """Space-Saving: add ``increments`` to ``kept`` (at most ``cap`` entries), in place. The newcomers that do not
    fit replace the smallest entries, each inheriting the count it replaces (one sort per call, not per newcomer).

    >>> kept = {"a": 5.0, "b": 1.0}
    >>> _add_neighbours(kept, {"a": 1.0, "c": 2.0}, cap=2); kept
    {'a': 6.0, 'c': 3.0}
    """
    new: list[str] = []
    for j, inc in increments.items():
        if j in kept:
            kept[j] += inc
        else:
            new.append(j)
    room = cap - len(kept)
    for j in new[:max(0, room)]:
        kept[j] = increments[j]
    rest = new[max(0, room):]
    if rest:
        smallest = heapq.nsmallest(min(len(rest), len(kept)), kept.items(), key=lambda kv: kv[1])
        for (old, count), j in zip(smallest, rest):
            del kept[old]
            kept[j] = count + increments[j]


def merge(row: ItemRow | None, c: ItemContribution, offset: int, config: ShareConfig) -> ItemRow:
    """``row`` with the contribution ``c`` (the owner's input offset ``offset``) folded in: the merge rule of the
    module docstring. ``row`` is not modified; a contribution at or below ``row.offset`` returns ``row`` itself."""
    if row is not None and 0 <= offset <= row.offset:
        return row
    old = row or ItemRow()
    out = replace(old, neighbours=dict(old.neighbours), offset=int(offset), t_last=max(old.t_last, c.t),
                  total=old.total + c.events, rated=old.rated + c.rated, rating_delta=old.rating_delta + c.d_rating)
    h = config.half_life_s
    if not math.isfinite(old.count_t) or c.t >= old.count_t:
        out.count, out.count_t = old.decayed_count(c.t, h) + c.events, c.t
    else:
        out.count = old.count + c.events * math.exp2(-(old.count_t - c.t) / h)
    tables = old.tables
    if c.space != old.space:  # a rollout: the old rows mean nothing in the new version's space
        out.space, tables = c.space, None
    if c.init is not None and (tables is None or old.total < config.young_events):
        tables = c.init.astype(np.float32, copy=True)
    elif c.d_tables is not None and tables is not None and len(c.d_tables) == len(tables):
        tables = tables + c.d_tables
    out.tables = tables
    _add_neighbours(out.neighbours, c.neighbours, config.max_neighbours)
    return out
