"""The group's shared item state on the stream side: contributions out, the owner's merge, rows in. No Kafka.

Every worker's learner turns its micro-batches into item contributions (:mod:`adapters.online.items.rule`). A
worker adds them up in a :class:`ContributionBuffer` and sends them when it commits its input offsets (not after
every micro-batch): one value per partition of ``<group>-item-updates``, each item in the partition its id hashes to
(murmur2, as a keyed record would be). That topic is partitioned like the input, and the worker that owns input
partition *p* owns item partition *p*: its :class:`ItemOwner` merges the contributions of its items into its own
learner's item table (:meth:`adapters.online.items.table.ItemTable.merge`, the one rule) and publishes their rows on
the compacted topic ``<group>-items``, at most once per commit, which every worker applies (a worker's table skips a
published row it holds as merged up to the same or a later contribution: an owner's own table is ahead of its
publications). Each row keeps the offset of the last contribution merged into it, so a redelivered contribution is
skipped: an owner killed at any point loses and doubles nothing. A worker that takes an item partition over starts
from that partition's rows as published (the runtime waits until it has applied ``<group>-items`` to its end).

Bounds (:meth:`ItemOwner.sweep`, every ``sweep_s`` seconds over the items owned that the stream has met: an item only
trained on, or only drawn as a negative of the ranking step, is not the stream's to delete): an item whose newest
event is more than ``ttl_s`` of event time older than the group's event time (the newest event this worker has
learned or applied, as of the previous sweep: a contribution in flight is merged before its item can be judged
idle) is deleted (a tombstone on ``<group>-items``: it leaves every worker's table); beyond ``max_items /
partitions`` items in a partition, the least popular are deleted too.

Example
-------
>>> from adapters.online.items.config import ItemConfig
>>> from adapters.online.items.table import ItemTable
>>> from stream.worker.metrics import WorkerMetrics
>>> table = ItemTable(["<unk>", "m1"], ItemConfig())
>>> owner = ItemOwner(table, partitions=1, bounds=ItemBounds(), metrics=WorkerMetrics()); owner.assigned([0])
>>> buf = ContributionBuffer("g-item-updates", partitions=1)
>>> buf.add(Contributions.of(["m1"], t=[100.0], events=[2]))
>>> [m] = buf.drain()
>>> owner.on_contributions([RawMessage(m.topic, 0, 5, None, m.value, 0.0)])
>>> [(key, ItemRow.from_bytes(value).total) for key, value in owner.publish()]
[(b'm1', 2.0)]
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from adapters.errors import MetarecError
from adapters.online.items.contributions import Contributions
from adapters.online.items.rows import ItemRow
from adapters.online.items.table import ItemTable
from stream.kafka.messages import Outgoing, RawMessage
from stream.kafka.partitioner import partition_for
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

__all__ = ["ContributionBuffer", "ItemBounds", "ItemOwner", "ItemRow"]


@dataclass(frozen=True)
class ItemBounds:
    """How large the group's item table may grow."""

    max_items: int = 100_000  #: items at most over the whole group (each partition holds its share)
    ttl_s: float = 0.0  #: delete items idle this long in event time (0: never)
    sweep_s: float = 2.0  #: how often the bounds are enforced


class ContributionBuffer:
    """A worker's item contributions since its last commit, added up per item; drained into one message per
    partition of ``<group>-item-updates``."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, int(partitions)
        self.pending = Contributions.empty()
        self.batches = 0

    def add(self, contributions: Contributions) -> None:
        if len(contributions):
            self.pending = self.pending.combine(contributions)
            self.batches += 1

    def __len__(self) -> int:
        return len(self.pending)

    def drain(self) -> list[Outgoing]:
        """The messages to send (nothing when nothing is pending); the buffer is empty afterwards."""
        c, self.pending, self.batches = self.pending, Contributions.empty(), 0
        if not len(c):
            return []
        parts: dict[int, list[int]] = {}
        for k, item in enumerate(c.items):
            parts.setdefault(partition_for(item.encode("utf-8"), self.partitions), []).append(k)
        return [Outgoing(self.topic, None, c.select(entries).to_bytes(), partition=p)
                for p, entries in sorted(parts.items())]


class ItemOwner:
    """The owner of the items of the item partitions this worker owns (see the module docstring)."""

    def __init__(self, table: ItemTable, partitions: int, bounds: ItemBounds, metrics: WorkerMetrics) -> None:
        self.table, self.partitions, self.bounds, self.metrics = table, int(partitions), bounds, metrics
        self.owned: set[int] = set()
        self._changed: set[int] = set()  #: rows merged since the last publication
        self._gone: list[str] = []  #: items deleted since the last publication
        self._clock = -math.inf

    def assigned(self, partitions: Iterable[int]) -> None:
        self.owned |= set(partitions)

    def revoked(self, partitions: Iterable[int]) -> None:
        self.owned -= set(partitions)

    def switch(self, table: ItemTable) -> None:
        """The learner switched model versions: its new table (rows merged since the last publication are
        published from it, by item)."""
        changed = [self.table.ids[r] for r in self._changed]
        self.table = table
        self._changed = {r for r in (table.row(i) for i in changed) if r > 0}

    def partition_of(self, item: str) -> int:
        return partition_for(item.encode("utf-8"), self.partitions)

    def owns(self, item: str) -> bool:
        return self.partition_of(item) in self.owned

    def merged_until(self, partition: int) -> int:
        """The offset after the newest contribution of item ``partition`` merged into a row this table holds (0:
        none): what the rows prove was merged."""
        t = self.table
        rows = np.flatnonzero(t.active() & (t.offset >= 0))
        mine = [int(t.offset[r]) for r in rows.tolist() if self.partition_of(t.ids[r]) == partition]
        return max(mine) + 1 if mine else 0

    def on_contributions(self, messages: Iterable[RawMessage]) -> None:
        """Merge the contributions of ``messages`` (values of ``<group>-item-updates``) into the owned rows."""
        for m in messages:
            try:
                c = Contributions.from_bytes(m.value or b"")
            except MetarecError as exc:
                log.warning("item owner: unreadable contributions at %s/%d/%d: %s", m.topic, m.partition, m.offset,
                            exc)
                self.metrics.item_contributions_invalid.inc()
                continue
            rows = self.table.merge(c, offset=m.offset)
            self._changed.update(rows.tolist())
            self.metrics.item_contributions.inc(len(rows))

    def sweep(self) -> None:
        """Delete the owned items past the TTL or beyond the size bound (published with the next rows)."""
        t, b = self.table, self.bounds
        clock, self._clock = self._clock, t.stream_time  # the group's event time as of the previous sweep
        rows = np.flatnonzero(t.active() & (t.offset >= 0) & np.isfinite(t.t_last))  # items the stream has met
        rows = np.array([r for r in rows.tolist() if self.owns(t.ids[r])], np.int64)
        if not len(rows):
            return
        parts = np.array([self.partition_of(t.ids[r]) for r in rows.tolist()])
        cap = max(1, math.ceil(b.max_items / self.partitions))
        gone: list[int] = []
        for p in np.unique(parts).tolist():
            mine = rows[parts == p]
            newest = max(clock, float(t.t_last[mine].max()))
            keep = mine
            if b.ttl_s > 0:
                idle = t.t_last[mine] < newest - b.ttl_s
                gone += mine[idle].tolist()
                keep = mine[~idle]
            if len(keep) > cap:
                pop = t.popularity(newest)[keep]
                gone += keep[np.argsort(pop, kind="stable")[:len(keep) - cap]].tolist()
        if gone:
            items = [t.ids[r] for r in gone]
            t.vocab.drop(items)
            self._changed -= set(gone)
            self._gone += items
            self.metrics.items_expired.inc(len(items))
            log.info("item owner: %d item rows deleted (TTL %g s, at most %d per partition)", len(items), b.ttl_s, cap)

    def pending(self) -> bool:
        """Rows merged or deleted since the last :meth:`publish`."""
        return bool(self._changed or self._gone)

    def publish(self) -> list[tuple[bytes, bytes | None]]:
        """``(item key, row bytes or None: deleted)`` of every row changed since the last call."""
        rows = np.array(sorted(r for r in self._changed if self.table.active()[r]), np.int64)
        out = [(item.encode("utf-8"), row.to_bytes()) for item, row in self.table.publish(rows)]
        out += [(item.encode("utf-8"), None) for item in self._gone]
        self._changed, self._gone = set(), []
        return out
