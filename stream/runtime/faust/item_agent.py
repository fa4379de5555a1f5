"""The item agent: the single owner of each item's row in the group's shared item state.

Every worker sends, per micro-batch, one :class:`~adapters.online.itemshare.ItemContribution` per item to the
repartition topic ``<group>-item-updates`` (:mod:`stream.worker.state_layout`), in the partition its item id hashes
to (murmur2, as a keyed record), bundled: one message per partition and micro-batch, not one per item (faust's cost
is per message). The topic is partitioned like the input, so the group's consumer protocol gives each of its
partitions, hence each item, to exactly one worker: that worker's item agent folds the contributions into the item's
:class:`~adapters.online.itemshare.ItemRow` (:func:`~adapters.online.itemshare.merge`, the merge rule) in a
changelog-backed faust table whose changelog *is* the compacted topic ``<group>-items``: the agent's durable state
and what every worker reads as a global table (:class:`~stream.kafka.topic_feed.TopicFeed`) are one topic. The
agent writes its rows into the table's store and produces their changelog records itself, in bulk (faust's own
table writes go through its producer buffer one message at a time, which held a batch of a few hundred rows for
tens of milliseconds: the worker fell behind at 1,500 events/s); faust still restores the table from the changelog
when a partition is assigned. Each batch ends with an end marker per partition written, as the user table's
(:mod:`stream.runtime.faust.changelog_barrier`: the embedded broker's high watermark then stays exact).

Each batch's row writes are delivered before faust acks the contributions, and each row keeps the offset
of the last bundle applied to it, so a redelivered contribution is skipped: an agent killed at any point loses and
doubles nothing.

Bounds, every ``sweep_s`` seconds over the rows this worker owns: an item whose newest event is more than ``ttl_s``
of event time older than the group's event time (the newest event of any item row this worker has applied, or of
its own batches, as of the previous sweep: a partition without new items still moves on, and a contribution in
flight is merged before its item can be judged idle) is deleted (a tombstone on ``<group>-items``: it leaves
every worker's table); beyond ``max_items / partitions`` rows in a partition, the least popular are deleted too.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from adapters.errors import MetarecError
from adapters.online.itemshare import ItemContribution, ItemRow, ShareConfig, merge, row_header, unpack_bundle
from stream.kafka.partitioner import partition_for
from stream.runtime.faust.table import PartitionEvent, current_event
from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import END_MARKER, ITEMS_TABLE, is_internal_key, item_updates_topic, items_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemBounds:
    """How large the group's item table may grow."""

    max_items: int = 100_000  #: rows at most over the whole group (each partition holds its share)
    ttl_s: float = 0.0  #: delete items idle this long in event time (0: never)
    sweep_s: float = 2.0  #: how often the bounds are enforced


class ItemAgent:
    """The item agent of one worker process (register it on the app with :meth:`register`)."""

    def __init__(self, app: Any, group: str, partitions: int, metrics: WorkerMetrics, share: ShareConfig,
                 bounds: ItemBounds, stream_time: Callable[[], float] = lambda: -math.inf) -> None:
        self.app, self.partitions, self.metrics = app, int(partitions), metrics
        self.stream_time = stream_time  #: the group's event time as this worker knows it (every item's row)
        self._clock = -math.inf
        self.share, self.bounds = share, bounds
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.topic = app.topic(item_updates_topic(group), partitions=self.partitions, **raw)
        changelog = app.topic(items_topic(group), partitions=self.partitions, compacting=True, deleting=False,
                              **raw)
        self.table = app.Table(ITEMS_TABLE, partitions=self.partitions, key_type=bytes, value_type=bytes,
                               changelog_topic=changelog, help="metarec shared item rows")
        self.table.key_serializer = self.table.value_serializer = "raw"
        self._out: list[tuple[bytes, bytes | None, int]] = []  #: changelog records of writes not yet produced
        self._events: dict[int, PartitionEvent] = {}
        self.lock = asyncio.Lock()  #: between a batch of contributions and a sweep

    def _at(self, partition: int) -> Any:
        ev = self._events.get(partition)
        if ev is None:
            ev = self._events[partition] = PartitionEvent(self.topic.get_topic_name(), partition)
        return current_event(ev)

    def register(self) -> None:
        app = self.app

        @app.agent(self.topic, name="metarec-items")
        async def items(stream: Any) -> None:
            async for events in stream.take_events(2_000, 0.05):
                try:
                    async with self.lock:
                        self.on_contributions([e.message for e in events])
                        await self.publish()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - agents die silently in faust: never let one escape
                    log.exception("item agent: batch of %d contributions failed", len(events))

        @app.timer(self.bounds.sweep_s)
        async def sweep() -> None:
            try:
                async with self.lock:
                    self.sweep()
                    await self.publish()
            except Exception:  # noqa: BLE001
                log.exception("item agent: sweep failed")

    # -- contributions -------------------------------------------------------------------------------------
    def on_contributions(self, messages: Iterable[Any]) -> set[int]:
        """Merge a batch of bundles of contributions (faust messages, :func:`~adapters.online.itemshare.pack_bundle`)
        into their rows; write each changed row once. Returns the partitions written."""
        rows: dict[bytes, tuple[int, ItemRow | None]] = {}
        for m in messages:
            p = m.partition
            try:
                bundle = unpack_bundle(m.value)
            except MetarecError as exc:
                log.warning("item agent: unreadable bundle at %s/%d/%d: %s", m.topic, p, m.offset, exc)
                self.metrics.item_contributions_invalid.inc()
                continue
            for key, value in bundle:
                if key not in rows:
                    with self._at(p):
                        raw = self.table.get(key)
                    rows[key] = (p, _decode(key, raw))
                try:
                    c = ItemContribution.from_bytes(value)
                except MetarecError as exc:
                    log.warning("item agent: unreadable contribution of %r at %s/%d/%d: %s", key[:60], m.topic, p,
                                m.offset, exc)
                    self.metrics.item_contributions_invalid.inc()
                    continue
                rows[key] = (p, merge(rows[key][1], c, m.offset, self.share))
        for key, (p, row) in rows.items():
            if row is not None:
                self._write(p, key, row.to_bytes())
        self.metrics.item_contributions.inc(sum(1 for _ in rows))
        return {p for p, _ in rows.values()}

    def _write(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Set (None: delete) ``key`` in the table's store of ``partition``; its changelog record goes out with
        :meth:`publish`."""
        with self._at(partition):
            if value is None:
                try:
                    del self.table.data[key]
                except KeyError:
                    pass
            else:
                self.table.data[key] = value
        self._out.append((key, value, partition))

    async def publish(self) -> None:
        """Produce the changelog records of the writes since the last call, with an end marker per partition
        written, and wait for their delivery (before faust acks the contributions)."""
        out, self._out = self._out, []
        if not out:
            return
        producer = self.app.producer
        topic = self.table.changelog_topic.get_topic_name()
        await self._settle([await producer.send(topic, key, value, p, None, None) for key, value, p in out])
        # only once the rows are delivered: the marker must be alone in the last record batch of its partition
        await self._settle([await producer.send(topic, END_MARKER, None, p, None, None)
                            for p in sorted({o[2] for o in out})])

    async def _settle(self, futures: list[Any]) -> None:
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                self.metrics.publish_errors.inc()
                log.error("item agent: changelog write failed: %s", result)

    # -- bounds ----------------------------------------------------------------------------------------------
    def sweep(self) -> set[int]:
        """Delete the rows past the TTL or beyond the size bound (the partitions written)."""
        b = self.bounds
        # the group's event time as of the previous sweep: contributions sent before it have been merged since
        clock, self._clock = self._clock, self.stream_time()
        by_partition: dict[int, list[tuple[bytes, float, float, float]]] = {}
        for key, raw in list(self.table.data.items()):
            if is_internal_key(key) or raw is None:
                continue
            try:
                t_last, count, count_t = row_header(raw)
            except MetarecError:
                continue
            by_partition.setdefault(self.partition_of(key), []).append((key, t_last, count, count_t))
        cap = max(1, math.ceil(b.max_items / self.partitions))
        gone: dict[int, list[bytes]] = {}
        for p, rows in by_partition.items():
            newest = max(clock, max(r[1] for r in rows))
            keep = rows
            if b.ttl_s > 0:
                keep = [r for r in rows if r[1] >= newest - b.ttl_s]
                gone[p] = [r[0] for r in rows if r[1] < newest - b.ttl_s]
            if len(keep) > cap:
                h = self.share.half_life_s
                keep.sort(key=lambda r: r[2] * math.exp2(-max(0.0, newest - r[3]) / h) if math.isfinite(r[3]) else 0.0)
                gone.setdefault(p, []).extend(r[0] for r in keep[:len(keep) - cap])
        for p, keys in gone.items():
            for key in keys:
                self._write(p, key, None)
        n = sum(len(k) for k in gone.values())
        if n:
            self.metrics.items_expired.inc(n)
            log.info("item agent: %d item rows deleted (TTL %g s, at most %d per partition)", n, b.ttl_s, cap)
        return {p for p, keys in gone.items() if keys}

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
        log.warning("item agent: unreadable row of %r (%s); starting it afresh", key[:60], exc)
        return None
