"""The owner of the group's shared item rows: contributions in, row writes out. No Kafka.

Every worker sends, per micro-batch, one :class:`~adapters.online.itemshare.ItemContribution` per item to the
topic ``<group>-item-updates`` (:mod:`stream.worker.state_layout`), bundled per partition (one message per partition
and micro-batch, :func:`~adapters.online.itemshare.pack_bundle`), in the partition its item id hashes to (murmur2).
That topic is partitioned like the input, and the worker that owns input partition *p* owns item partition *p*: its
:class:`ItemOwner` folds each contribution into the item's :class:`~adapters.online.itemshare.ItemRow`
(:func:`~adapters.online.itemshare.merge`, the merge rule) and returns the rows to write to the compacted topic
``<group>-items``, which is both the owner's durable state and what every worker applies. A runtime keeps the rows
in a :class:`RowStore`, produces the writes, and commits the contributions once the writes are delivered. Each row
keeps the offset of the last bundle applied to it, so a redelivered contribution is skipped: an owner killed at any
point loses and doubles nothing.

Bounds (:meth:`ItemOwner.sweep`, every ``sweep_s`` seconds over the rows owned): an item whose newest event is more
than ``ttl_s`` of event time older than the group's event time (the newest event any worker has applied, as of the
previous sweep: a partition without new items still moves on, and a contribution in flight is merged before its
item can be judged idle) is deleted (a tombstone on ``<group>-items``: it leaves every worker's table); beyond
``max_items / partitions`` rows in a partition, the least popular are deleted too.

Example
-------
>>> from adapters.online.itemshare import ItemContribution, ShareConfig, pack_bundle
>>> from stream.kafka.messages import RawMessage
>>> from stream.worker.metrics import WorkerMetrics
>>> rows = DictRowStore()
>>> owner = ItemOwner(rows, ShareConfig(half_life_s=60.0), ItemBounds(), partitions=1, metrics=WorkerMetrics())
>>> c = ItemContribution(space="", t=100.0, events=2.0, rated=0.0, d_rating=0.0)
>>> writes = owner.on_contributions([RawMessage("g-item-updates", 0, 5, None, pack_bundle([(b"m1", c.to_bytes())]), 0.0)])
>>> [(w.partition, w.key, ItemRow.from_bytes(w.value).total) for w in writes]
[(0, b'm1', 2.0)]
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from adapters.errors import MetarecError
from adapters.online.itemshare import ItemContribution, ItemRow, ShareConfig, merge, row_header, unpack_bundle
from stream.kafka.messages import RawMessage
from stream.kafka.partitioner import partition_for
from stream.worker.core import StateWrite
from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import is_internal_key

log = logging.getLogger(__name__)

__all__ = ["DictRowStore", "ItemBounds", "ItemOwner", "ItemRow", "RowStore"]


@dataclass(frozen=True)
class ItemBounds:
    """How large the group's item table may grow."""

    max_items: int = 100_000  #: rows at most over the whole group (each partition holds its share)
    ttl_s: float = 0.0  #: delete items idle this long in event time (0: never)
    sweep_s: float = 2.0  #: how often the bounds are enforced


class RowStore(Protocol):
    """Where the owner's rows live (a runtime's table of the partitions it owns)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def set(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Store (None: delete) ``key`` in ``partition``."""
        ...

    def rows(self) -> Iterable[tuple[bytes, bytes | None]]:
        """Every stored ``(key, row bytes)`` of the owned partitions."""
        ...


class DictRowStore:
    """A :class:`RowStore` in memory, one dict per owned partition (restored from ``<group>-items``)."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[bytes, bytes]] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def set(self, partition: int, key: bytes, value: bytes | None) -> None:
        rows = self.partitions.setdefault(partition, {})
        if value is None:
            rows.pop(key, None)
        else:
            rows[key] = value

    def rows(self) -> Iterator[tuple[bytes, bytes | None]]:
        for rows in list(self.partitions.values()):
            yield from list(rows.items())

    def drop(self, partition: int) -> None:
        self.partitions.pop(partition, None)


class ItemOwner:
    """Merges contributions into the owned item rows and enforces the bounds; returns the writes to publish."""

    def __init__(self, store: RowStore, share: ShareConfig, bounds: ItemBounds, partitions: int,
                 metrics: WorkerMetrics, stream_time: Callable[[], float] = lambda: -math.inf) -> None:
        self.store, self.share, self.bounds = store, share, bounds
        self.partitions, self.metrics = int(partitions), metrics
        self.stream_time = stream_time  #: the group's event time as this worker knows it (every item's row)
        self._clock = -math.inf

    def on_contributions(self, messages: Iterable[RawMessage]) -> list[StateWrite]:
        """Merge bundles of contributions into their rows; one write per changed row (in the bundle's partition)."""
        rows: dict[bytes, tuple[int, ItemRow | None]] = {}
        for m in messages:
            p = m.partition
            try:
                bundle = unpack_bundle(m.value or b"")
            except MetarecError as exc:
                log.warning("item owner: unreadable bundle at %s/%d/%d: %s", m.topic, p, m.offset, exc)
                self.metrics.item_contributions_invalid.inc()
                continue
            for key, value in bundle:
                if key not in rows:
                    rows[key] = (p, _decode(key, self.store.get(p, key)))
                try:
                    c = ItemContribution.from_bytes(value)
                except MetarecError as exc:
                    log.warning("item owner: unreadable contribution of %r at %s/%d/%d: %s", key[:60], m.topic, p,
                                m.offset, exc)
                    self.metrics.item_contributions_invalid.inc()
                    continue
                rows[key] = (p, merge(rows[key][1], c, m.offset, self.share))
        writes = [StateWrite(p, key, row.to_bytes()) for key, (p, row) in rows.items() if row is not None]
        for w in writes:
            self.store.set(w.partition, w.key, w.value)
        self.metrics.item_contributions.inc(len(rows))
        return writes

    def sweep(self) -> list[StateWrite]:
        """Delete the rows past the TTL or beyond the size bound: their tombstones."""
        b = self.bounds
        # the group's event time as of the previous sweep: contributions sent before it have been merged since
        clock, self._clock = self._clock, self.stream_time()
        by_partition: dict[int, list[tuple[bytes, float, float, float]]] = {}
        for key, raw in self.store.rows():
            if is_internal_key(key) or raw is None:
                continue
            try:
                t_last, count, count_t = row_header(raw)
            except MetarecError:
                continue
            by_partition.setdefault(self.partition_of(key), []).append((key, t_last, count, count_t))
        cap = max(1, math.ceil(b.max_items / self.partitions))
        gone: list[StateWrite] = []
        for p, rows in by_partition.items():
            newest = max(clock, max(r[1] for r in rows))
            keep = rows
            if b.ttl_s > 0:
                keep = [r for r in rows if r[1] >= newest - b.ttl_s]
                gone += [StateWrite(p, r[0], None) for r in rows if r[1] < newest - b.ttl_s]
            if len(keep) > cap:
                h = self.share.half_life_s
                keep.sort(key=lambda r: r[2] * math.exp2(-max(0.0, newest - r[3]) / h) if math.isfinite(r[3]) else 0.0)
                gone += [StateWrite(p, r[0], None) for r in keep[:len(keep) - cap]]
        for w in gone:
            self.store.set(w.partition, w.key, None)
        if gone:
            self.metrics.items_expired.inc(len(gone))
            log.info("item owner: %d item rows deleted (TTL %g s, at most %d per partition)", len(gone), b.ttl_s, cap)
        return gone

    def partition_of(self, key: bytes) -> int:
        """The partition of ``<group>-item-updates`` (and of ``<group>-items``) that holds ``key``: murmur2, as the
        workers' bundles were partitioned."""
        return partition_for(key, self.partitions)


def _decode(key: bytes, raw: bytes | None) -> ItemRow | None:
    if raw is None:
        return None
    try:
        return ItemRow.from_bytes(raw)
    except MetarecError as exc:
        log.warning("item owner: unreadable row of %r (%s); starting it afresh", key[:60], exc)
        return None
