"""An item's row as its owner publishes it on ``<group>-items``: what every worker applies, and what a restore reads.

The owner (:meth:`adapters.online.items.table.ItemTable.merge`) keeps each item's full state; a published
:class:`ItemRow` carries its statistics, its table rows and its ``max_neighbours`` largest in-links (the
co-occurrence counts a worker ranks with: ``in_i[j] + in_j[i]``). Nothing here knows Kafka.

Example
-------
>>> import numpy as np
>>> row = ItemRow("v1", offset=3, t_last=10.0, count=2.0, count_t=10.0, total=2.0, tables=np.ones(3, np.float32),
...               neighbours={"x": 2.0})
>>> ItemRow.from_bytes(row.to_bytes()) == row
True
>>> row_header(row.to_bytes())
(10.0, 2.0, 10.0)
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from adapters.errors import MetarecError

_ROW = struct.Struct("<2sBBqddddddHII")  # magic, format, flags, offset, t_last, count, count_t, total, rated, delta,
#                                         space length, table length, neighbours length (bytes)
_FORMAT = 1


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
        try:
            space, tables, neigh = _unpack_body(data, _ROW.size, ls, lt)
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise MetarecError(f"corrupt item row: {exc}") from None
        return cls(space, offset, t_last, count, count_t, total, rated, delta, tables, neigh)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemRow):
            return NotImplemented
        same_tables = (self.tables is None) == (other.tables is None) and (
            self.tables is None or np.array_equal(self.tables, other.tables))
        return same_tables and all(getattr(self, f) == getattr(other, f) for f in (
            "space", "offset", "t_last", "count", "count_t", "total", "rated", "rating_delta", "neighbours"))


def row_header(data: bytes) -> tuple[float, float, float]:
    """``(t_last, count, count_t)`` of an :class:`ItemRow`'s bytes, read from its header only."""
    try:
        magic, fmt, _f, _o, t_last, count, count_t, *_ = _ROW.unpack_from(data, 0)
    except (struct.error, TypeError) as exc:
        raise MetarecError(f"corrupt item row: {exc}") from None
    if magic != b"MI" or fmt != _FORMAT:
        raise MetarecError("corrupt item row")
    return t_last, count, count_t
