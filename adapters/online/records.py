"""The durable per-user record: what the worker's changelog-backed table stores for each user.

A record holds the user's adapted state (or nothing yet: θ0), the window of their latest events (the support set
of the next adaptation), the set of items they ever interacted with (never recommended again), and the position
of the newest input event applied (so that a redelivered offset never enters the window twice).

Item rows are those of one item vocabulary; ``vocab`` (a 64-bit hash of it) says which, so that a record written
under one checkpoint can be remapped to another one's rows. The checkpoint's rows are the same in every process,
but a row given online to a new item (or reused after an eviction) is not: each process assigns those in its own
arrival order. ``names`` therefore holds the item id of every such row the record references, as of when it was
written (:meth:`UserRecord.name_online_rows`), and a reader re-expresses the record in its own item table by those
names (:meth:`UserRecord.in_table`).

Example
-------
>>> import numpy as np
>>> r = UserRecord.empty(n_items=10, vocab=7)
>>> r.append(item=3, rating=4.0, timestamp=100.0, partition=0, offset=41)
>>> r.append(item=5, rating=float("nan"), timestamp=101.0, partition=0, offset=42)
>>> r.seen_rows().tolist(), r.last_offset
([3, 5], 42)
>>> UserRecord.from_bytes(r.to_bytes()) == r
True

Row 5 held the online item ``"x"`` in the writer's table; in the reader's, ``"x"`` is at row 6:

>>> r.name_online_rows(n_base=4, item_ids=["", "a", "b", "c", "y", "x"]).names
{5: 'x'}
>>> mine = r.in_table(item_ids=["", "a", "b", "c", "y", "", "x"], index={"a": 1, "b": 2, "c": 3, "y": 4, "x": 6})
>>> mine.items.tolist(), mine.seen_rows().tolist(), mine.names
([3, 6], [3, 6], {6: 'x'})

Byte layout (little-endian): the header (``_HEADER``), the model version (UTF-8), the state (f4 × state_len),
the window (i4 items, f4 ratings, f8 timestamps, i8 offsets, × n_window each), then, in format 2 when the flag
``_FLAG_NAMES`` is set, the names (u4 count, i4 rows × count, u4 UTF-8 byte lengths × count, the ids' UTF-8 bytes
concatenated), and last the packed seen bits (zlib-compressed when ``_FLAG_SEEN_ZLIB``) up to the end. Format 1
is the same without the names section (still read: its names are empty).
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from adapters.errors import MetarecError

_MAGIC = b"MR"
_FORMAT = 2  #: written; format 1 (no names section) is still read
_FORMATS = (1, 2)
# magic, format, flags, n_window, state_len, n_items, partition, last_offset, last_timestamp, vocab, version_len
_HEADER = struct.Struct("<2sBBHIIiqdQH")
_FLAG_STATE = 1
_FLAG_SEEN_ZLIB = 2
_FLAG_NAMES = 4  #: format 2: a names section precedes the seen bits


def record_position(raw: bytes | None) -> tuple[int, float] | None:
    """``(partition, newest event time)`` of a stored record, read from its header only (None: not a record).

    >>> r = UserRecord.empty(n_items=5, vocab=1)
    >>> r.append(item=1, rating=4.0, timestamp=123.5, partition=2, offset=3)
    >>> record_position(r.to_bytes()), record_position(b"garbage")
    ((2, 123.5), None)
    """
    try:
        magic, fmt, _flags, _n, _s, _i, partition, _off, last_ts, _v, _vl = _HEADER.unpack_from(raw, 0)
    except (struct.error, TypeError):
        return None
    if magic != _MAGIC or fmt not in _FORMATS:
        return None
    return int(partition), float(last_ts)


def vocab_hash(item_ids: Sequence[str]) -> int:
    """A stable 64-bit fingerprint of an item vocabulary (row order matters)."""
    h = hashlib.blake2b("\x1f".join(item_ids).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


@dataclass(eq=False)
class UserRecord:
    """Durable state of one user (see the module docstring)."""

    n_items: int
    vocab: int
    state: np.ndarray | None = None  #: float32 [state_dim]; None = not adapted yet (θ0)
    model_version: str = ""  #: version of the model that produced ``state``
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  #: window item rows
    ratings: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  #: NaN = implicit
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seen: np.ndarray | None = None  #: bool [n_items]: items ever interacted with
    partition: int = -1  #: input partition of ``last_offset``
    last_offset: int = -1  #: newest input offset applied (-1: none)
    last_timestamp: float = float("nan")  #: event time of the newest event applied
    #: row → item id it held when the record was written, for every referenced row not stable across processes
    names: dict[int, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, n_items: int, vocab: int) -> UserRecord:
        return cls(n_items=n_items, vocab=vocab, seen=np.zeros(n_items, dtype=bool))

    def __post_init__(self) -> None:
        if self.seen is None:
            self.seen = np.zeros(self.n_items, dtype=bool)

    # -- updates ---------------------------------------------------------------------------------------
    def is_duplicate(self, partition: int, offset: int) -> bool:
        """True when the input event at (partition, offset) was already applied."""
        return offset >= 0 and partition == self.partition and offset <= self.last_offset

    def append(self, item: int, rating: float, timestamp: float, partition: int, offset: int) -> None:
        """Add one event to the window (unbounded until :meth:`trim`) and to the seen set."""
        self.mark_applied(item, timestamp, partition, offset)
        self.extend_window([item], [rating], [timestamp], [offset])

    def mark_applied(self, item: int, timestamp: float, partition: int, offset: int) -> None:
        """The scalar half of :meth:`append`: seen set, newest applied offset and event time (the window is left
        to :meth:`extend_window`, so that a micro-batch grows each window once instead of once per event)."""
        if 0 < item < self.n_items:
            self.seen[item] = True
        if offset >= 0:
            self.partition, self.last_offset = partition, max(offset, self.last_offset if partition == self.partition else -1)
        if not timestamp <= self.last_timestamp:  # also true when last_timestamp is NaN
            self.last_timestamp = float(timestamp)

    def extend_window(self, items: Sequence[int], ratings: Sequence[float], timestamps: Sequence[float],
                      offsets: Sequence[int]) -> None:
        """Append events to the window, in order (the window half of :meth:`append`)."""
        if not len(items):
            return
        self.items = np.concatenate([self.items, np.asarray(items, dtype=np.int32)])
        self.ratings = np.concatenate([self.ratings, np.asarray(ratings, dtype=np.float32)])
        self.timestamps = np.concatenate([self.timestamps, np.asarray(timestamps, dtype=np.float64)])
        self.offsets = np.concatenate([self.offsets, np.asarray(offsets, dtype=np.int64)])

    def trim(self, window: int, max_age_s: float | None = None) -> None:
        """Keep the last ``window`` events, none older than ``max_age_s`` before the newest one."""
        keep = np.ones(len(self.items), dtype=bool)
        if len(keep) > window:
            keep[: len(keep) - window] = False
        if max_age_s is not None and len(keep):
            keep &= self.timestamps >= self.timestamps.max() - max_age_s
        if not keep.all():
            self.items, self.ratings = self.items[keep], self.ratings[keep]
            self.timestamps, self.offsets = self.timestamps[keep], self.offsets[keep]

    def seen_rows(self) -> np.ndarray:
        return np.flatnonzero(self.seen)

    def name_online_rows(self, n_base: int, item_ids: Sequence[str], online: np.ndarray | None = None
                         ) -> UserRecord:
        """Name the rows that another process may hold other items in, from the writer's item table (in place).

        Parameters
        ----------
        n_base : int
            Rows of the checkpoint's vocabulary (``len(checkpoint.item_ids)``): the rows below it are stable.
        item_ids : sequence of str
            The writer's item table: row → item id ('' for a free row).
        online : bool array, optional
            Rows created or reused online (``ItemSide.online``): a row below ``n_base`` set there (a checkpoint
            item's row evicted, maybe reused) is named too.

        Returns
        -------
        UserRecord
            ``self``, whose ``names`` now hold ``item_ids[row]`` for every row ≥ ``n_base`` (and every ``online``
            row) in the window or the seen set; row 0 and rows beyond ``item_ids`` are left out.
        """
        n = len(item_ids)
        items = self.items
        rows = set(items[(items >= n_base) & (items < n)].tolist())
        rows.update((np.flatnonzero(self.seen[n_base:n]) + n_base).tolist())
        if online is not None:
            lim = min(n_base, n, len(online))
            base = items[(items > 0) & (items < lim)]
            rows.update(base[online[base]].tolist())
            rows.update((np.flatnonzero(self.seen[1:lim] & online[1:lim]) + 1).tolist())
        rows.discard(0)
        self.names = {r: item_ids[r] for r in sorted(rows)}
        return self

    def in_table(self, item_ids: Sequence[str], index: Mapping[str, int]) -> UserRecord:
        """The record re-expressed in the reader's item table: each named row that no longer holds its item moves
        to that item's row there (row 0 when the reader does not know it: the window entry becomes the unknown
        row and the seen bit is dropped).

        Parameters
        ----------
        item_ids : sequence of str
            The reader's item table: row → item id ('' for a free row).
        index : mapping of str to int
            The reader's item id → row, for the items it holds.

        Returns
        -------
        UserRecord
            ``self`` when every named row still holds its item (or nothing is named); else a new record (arrays
            copied, ``n_items`` grown when an item's row lies beyond it) whose ``names`` follow the moves.
        """
        if not self.names:
            return self
        n = len(item_ids)
        stale = [(r, i) for r, i in self.names.items() if r > 0 and (r >= n or item_ids[r] != i)]
        if not stale:
            return self
        old = np.fromiter((r for r, _ in stale), np.int64, len(stale))
        new = np.fromiter((index.get(i, 0) for _, i in stale), np.int64, len(stale))
        order = np.argsort(old)
        old_s, new_s = old[order], new[order]
        pos = np.minimum(np.searchsorted(old_s, self.items), len(old_s) - 1)
        items = np.where(old_s[pos] == self.items, new_s[pos], self.items).astype(np.int32)
        size = max(self.n_items, len(self.seen), int(new.max()) + 1)
        seen = np.zeros(size, dtype=bool)
        seen[:len(self.seen)] = self.seen
        inside = old < len(self.seen)
        moved = new[inside][self.seen[old[inside]]]
        seen[old[inside]] = False  # every stale row cleared before any is set: rows may swap
        seen[moved[moved > 0]] = True
        moved_from = {r for r, _ in stale}
        names = {r: i for r, i in self.names.items() if r not in moved_from}
        names.update({int(t): i for t, (_, i) in zip(new.tolist(), stale) if t > 0})
        return replace(self, n_items=size, items=items, seen=seen, names=dict(sorted(names.items())),
                       ratings=self.ratings.copy(), timestamps=self.timestamps.copy(), offsets=self.offsets.copy())

    def remap(self, old_ids: Sequence[str], new_index: dict[str, int], n_items: int, vocab: int) -> UserRecord:
        """The same record expressed in another vocabulary's rows (unknown items become row 0).

        A named row is mapped by its name, any other by ``old_ids`` (the item table of the record's vocabulary);
        rows beyond both are unknown. The result has no names (its rows are this table's; the learner names them
        when it outputs the record).
        """
        size = max(len(old_ids), len(self.seen), 1 + max(self.names, default=0),
                   1 + int(self.items.max(initial=0)))
        table = np.zeros(size, dtype=np.int32)
        table[:len(old_ids)] = [new_index.get(i, 0) for i in old_ids]
        for r, i in self.names.items():
            if r >= 0:
                table[r] = new_index.get(i, 0)
        seen = np.zeros(n_items, dtype=bool)
        rows = table[self.seen_rows()]
        seen[rows[rows > 0]] = True
        return UserRecord(n_items=n_items, vocab=vocab, state=None, model_version="",
                          items=table[np.clip(self.items, 0, size - 1)], ratings=self.ratings.copy(),
                          timestamps=self.timestamps.copy(), offsets=self.offsets.copy(), seen=seen,
                          partition=self.partition, last_offset=self.last_offset, last_timestamp=self.last_timestamp)

    def resized(self, n_items: int) -> UserRecord:
        """The same record for an item table of ``n_items`` rows (grown online, or smaller after a restart: rows
        beyond it become the unknown row 0, and lose their names)."""
        seen = np.zeros(n_items, dtype=bool)
        keep = min(n_items, self.n_items)
        seen[:keep] = self.seen[:keep]
        items = np.where(self.items < n_items, self.items, 0).astype(np.int32)
        names = {r: i for r, i in self.names.items() if r < n_items}
        return replace(self, n_items=n_items, items=items, seen=seen, ratings=self.ratings.copy(),
                       timestamps=self.timestamps.copy(), offsets=self.offsets.copy(), names=names)

    # -- bytes -----------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        version = self.model_version.encode("utf-8")
        packed = np.packbits(self.seen).tobytes()
        squeezed = zlib.compress(packed, 1)
        flags = (_FLAG_STATE if self.state is not None else 0)
        if len(squeezed) < len(packed):
            flags |= _FLAG_SEEN_ZLIB
            packed = squeezed
        state = b"" if self.state is None else np.ascontiguousarray(self.state, dtype="<f4").tobytes()
        names = b""
        if self.names:
            flags |= _FLAG_NAMES
            encoded = [i.encode("utf-8") for i in self.names.values()]
            names = b"".join([struct.pack("<I", len(encoded)),
                              np.fromiter(self.names, np.int64, len(encoded)).astype("<i4").tobytes(),
                              np.array([len(e) for e in encoded], dtype="<u4").tobytes(), *encoded])
        n = len(self.items)
        header = _HEADER.pack(_MAGIC, _FORMAT, flags, n, len(state) // 4, self.n_items, self.partition,
                              self.last_offset, self.last_timestamp, self.vocab, len(version))
        return b"".join([
            header, version, state,
            self.items.astype("<i4").tobytes(), self.ratings.astype("<f4").tobytes(),
            self.timestamps.astype("<f8").tobytes(), self.offsets.astype("<i8").tobytes(),
            names, packed,
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> UserRecord:
        try:
            (magic, fmt, flags, n, state_len, n_items, partition, last_offset, last_ts, vocab,
             version_len) = _HEADER.unpack_from(data, 0)
        except struct.error as exc:
            raise MetarecError(f"corrupt user record: {exc}") from None
        if magic != _MAGIC or fmt not in _FORMATS:
            raise MetarecError("corrupt user record: unknown format")
        pos = _HEADER.size
        version = bytes(data[pos:pos + version_len]).decode("utf-8")
        pos += version_len

        def take(dtype: str, count: int) -> np.ndarray:
            nonlocal pos
            size = np.dtype(dtype).itemsize * count
            if pos + size > len(data):
                raise MetarecError("corrupt user record: truncated")
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos).copy()
            pos += size
            return arr

        state = take("<f4", state_len).astype(np.float32) if flags & _FLAG_STATE else None
        items = take("<i4", n).astype(np.int32)
        ratings = take("<f4", n).astype(np.float32)
        timestamps = take("<f8", n).astype(np.float64)
        offsets = take("<i8", n).astype(np.int64)
        names: dict[int, str] = {}
        if fmt >= 2 and flags & _FLAG_NAMES:
            count = int(take("<u4", 1)[0])
            rows = take("<i4", count).tolist()
            ends = np.cumsum(take("<u4", count).astype(np.int64)).tolist()
            blob = bytes(take("u1", ends[-1] if ends else 0))
            try:
                names = {r: blob[a:b].decode("utf-8") for r, a, b in zip(rows, [0] + ends[:-1], ends)}
            except UnicodeDecodeError as exc:
                raise MetarecError(f"corrupt user record: {exc}") from None
        packed = bytes(data[pos:])
        if flags & _FLAG_SEEN_ZLIB:
            packed = zlib.decompress(packed)
        seen = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n_items).astype(bool)
        return cls(n_items=n_items, vocab=vocab, state=state, model_version=version, items=items, ratings=ratings,
                   timestamps=timestamps, offsets=offsets, seen=seen, partition=partition,
                   last_offset=last_offset, last_timestamp=last_ts, names=names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserRecord):
            return NotImplemented
        same_state = (self.state is None and other.state is None) or (
            self.state is not None and other.state is not None and np.array_equal(self.state, other.state))
        return (same_state and self.n_items == other.n_items and self.vocab == other.vocab
                and self.model_version == other.model_version and np.array_equal(self.items, other.items)
                and np.array_equal(self.ratings, other.ratings, equal_nan=True)
                and np.array_equal(self.timestamps, other.timestamps) and np.array_equal(self.offsets, other.offsets)
                and np.array_equal(self.seen, other.seen) and self.partition == other.partition
                and self.last_offset == other.last_offset and self.names == other.names
                and (self.last_timestamp == other.last_timestamp
                     or (np.isnan(self.last_timestamp) and np.isnan(other.last_timestamp))))
