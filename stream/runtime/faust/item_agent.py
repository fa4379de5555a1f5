"""The item agent on faust: the :class:`~stream.worker.item_owner.ItemOwner` of the item partitions this worker owns.

The merge and bound rules are the owner's (:mod:`stream.worker.item_owner`); this module only wires them to faust.
The owner's rows live in a changelog-backed faust table whose changelog *is* the compacted topic ``<group>-items``:
the agent's durable state and what every worker reads as a global table (:class:`~stream.kafka.topic_feed.TopicFeed`)
are one topic. faust assigns the partitions of ``<group>-item-updates`` (partitioned like the input) to the workers
and restores the table's partitions from ``<group>-items``. The agent writes its rows into the table's store and
produces their changelog records itself, in bulk (faust's own table writes go through its producer buffer one
message at a time, which held a batch of a few hundred rows for tens of milliseconds: the worker fell behind at
1,500 events/s). Each batch ends with an end marker per partition written, as the user table's
(:mod:`stream.runtime.faust.changelog_barrier`: the embedded broker's high watermark then stays exact), and its row
writes are delivered before faust acks the contributions.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from adapters.online.itemshare import ShareConfig
from stream.kafka.messages import RawMessage
from stream.runtime.faust.table import PartitionEvent, current_event
from stream.worker.core import StateWrite
from stream.worker.item_owner import ItemBounds, ItemOwner
from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import END_MARKER, ITEMS_TABLE, item_updates_topic, items_topic

log = logging.getLogger(__name__)

__all__ = ["ItemAgent", "ItemBounds"]


class _TableRows:
    """The owner's :class:`~stream.worker.item_owner.RowStore` over the faust table (routed by partition)."""

    def __init__(self, table: Any, topic: Any) -> None:
        self.table, self.topic = table, topic
        self._events: dict[int, PartitionEvent] = {}

    def _at(self, partition: int) -> Any:
        ev = self._events.get(partition)
        if ev is None:
            ev = self._events[partition] = PartitionEvent(self.topic.get_topic_name(), partition)
        return current_event(ev)

    def get(self, partition: int, key: bytes) -> bytes | None:
        with self._at(partition):
            return self.table.get(key)

    def set(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write the table's store only: the changelog records are produced in bulk by :meth:`ItemAgent.publish`."""
        with self._at(partition):
            if value is None:
                self.table.data.pop(key, None)
            else:
                self.table.data[key] = value

    def rows(self) -> Iterable[tuple[bytes, bytes | None]]:
        return list(self.table.data.items())


class ItemAgent:
    """The item agent of one worker process (register it on the app with :meth:`register`)."""

    def __init__(self, app: Any, group: str, partitions: int, metrics: WorkerMetrics, share: ShareConfig,
                 bounds: ItemBounds, stream_time: Callable[[], float] = lambda: -math.inf) -> None:
        self.app, self.metrics, self.bounds = app, metrics, bounds
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.topic = app.topic(item_updates_topic(group), partitions=int(partitions), **raw)
        changelog = app.topic(items_topic(group), partitions=int(partitions), compacting=True, deleting=False,
                              **raw)
        self.table = app.Table(ITEMS_TABLE, partitions=int(partitions), key_type=bytes, value_type=bytes,
                               changelog_topic=changelog, help="metarec shared item rows")
        self.table.key_serializer = self.table.value_serializer = "raw"
        self.owner = ItemOwner(_TableRows(self.table, self.topic), share, bounds, int(partitions), metrics,
                               stream_time)
        self._out: list[StateWrite] = []  #: row writes whose changelog records are not produced yet
        self.lock = asyncio.Lock()  #: between a batch of contributions and a sweep

    def register(self) -> None:
        app = self.app

        @app.agent(self.topic, name="metarec-items")
        async def items(stream: Any) -> None:
            async for events in stream.take_events(2_000, 0.05):
                try:
                    async with self.lock:
                        self._out += self.owner.on_contributions(
                            RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                            for m in (e.message for e in events))
                        await self.publish()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - agents die silently in faust: never let one escape
                    log.exception("item agent: batch of %d contributions failed", len(events))

        @app.timer(self.bounds.sweep_s)
        async def sweep() -> None:
            try:
                async with self.lock:
                    self._out += self.owner.sweep()
                    await self.publish()
            except Exception:  # noqa: BLE001
                log.exception("item agent: sweep failed")

    async def publish(self) -> None:
        """Produce the changelog records of the writes since the last call, with an end marker per partition
        written, and wait for their delivery (before faust acks the contributions)."""
        out, self._out = self._out, []
        if not out:
            return
        producer = self.app.producer
        topic = self.table.changelog_topic.get_topic_name()
        await self._settle([await producer.send(topic, w.key, w.value, w.partition, None, None) for w in out])
        # only once the rows are delivered: the marker must be alone in the last record batch of its partition
        await self._settle([await producer.send(topic, END_MARKER, None, p, None, None)
                            for p in sorted({w.partition for w in out})])

    async def _settle(self, futures: list[Any]) -> None:
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                self.metrics.publish_errors.inc()
                log.error("item agent: changelog write failed: %s", result)
