"""The item agent on faust: feeds the :class:`~stream.worker.item_owner.ItemOwner` of this worker's item partitions.

The merge and bound rules are the owner's (:mod:`stream.worker.item_owner`, :mod:`adapters.online.items`); this module
only wires them to faust. faust assigns the partitions of ``<group>-item-updates`` (partitioned like the input) to
the workers. Before the agent merges the first contributions of a partition it was just given, it waits until the
worker has applied that partition's published rows (``<group>-items``) to their end: it starts from the rows the
previous owner published. Per batch of contributions, with the runner's lock held (no micro-batch runs meanwhile),
the owner merges them into the learner's item table; the changed rows are produced on ``<group>-items`` and
delivered, with an end marker per partition written (:mod:`stream.runtime.faust.changelog_barrier`: the embedded
broker's high watermark then stays exact), before faust acks the contributions.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from stream.kafka.messages import RawMessage
from stream.kafka.topic_feed import TopicFeed
from stream.runtime.faust.runner import FaustRunner
from stream.worker.item_owner import ItemBounds, ItemOwner
from stream.worker.state_layout import END_MARKER, item_updates_topic, items_topic

log = logging.getLogger(__name__)

__all__ = ["ItemAgent", "ItemBounds"]


class ItemAgent:
    """The item agent of one worker process (register it on the app with :meth:`register`)."""

    def __init__(self, app: Any, runner: FaustRunner, owner: ItemOwner, feed: TopicFeed) -> None:
        self.app, self.runner, self.owner, self.feed = app, runner, owner, feed
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        group = runner.config.group
        self.topic = app.topic(item_updates_topic(group), partitions=runner.partitions, **raw)
        self.items = items_topic(group)
        self._waiting: set[int] = set()  #: partitions given to this worker whose published rows are not applied yet

    def register(self) -> None:
        app, owner = self.app, self.owner

        @app.agent(self.topic, name="metarec-items")
        async def items(stream: Any) -> None:
            async for events in stream.take_events(2_000, 0.05):
                try:
                    await self.on_contributions([e.message for e in events])
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - agents die silently in faust: never let one escape
                    log.exception("item agent: batch of %d contributions failed", len(events))

        @app.timer(owner.bounds.sweep_s)
        async def sweep() -> None:
            try:
                async with self.runner.lock:
                    owner.sweep()
                    await self.publish()
            except Exception:  # noqa: BLE001
                log.exception("item agent: sweep failed")

        @app.on_partitions_assigned.connect
        async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
            mine = {tp.partition for tp in assigned if tp.topic == self.topic.get_topic_name()}
            owner.revoked(owner.owned - mine)
            self._waiting |= mine - owner.owned
            owner.assigned(mine)

    async def on_contributions(self, messages: list[Any]) -> None:
        msgs = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp) for m in messages]
        new = sorted({m.partition for m in msgs} & self._waiting)
        if new:  # start from the rows the previous owner published
            await asyncio.get_running_loop().run_in_executor(None, self.feed.caught_up, new)
            self._waiting -= set(new)
        async with self.runner.lock:
            await self.runner.apply_items()
            self.owner.on_contributions(msgs)
            await self.publish()

    async def publish(self) -> None:
        """Produce the owner's changed rows and wait for their delivery (before faust acks the contributions)."""
        rows = self.owner.publish()
        if not rows:
            return
        producer = self.app.producer
        parts = [self.owner.partition_of(key.decode("utf-8")) for key, _ in rows]
        await self._settle([await producer.send(self.items, key, value, p, None, None)
                            for (key, value), p in zip(rows, parts)])
        # only once the rows are delivered: the marker must be alone in the last record batch of its partition
        await self._settle([await producer.send(self.items, END_MARKER, None, p, None, None) for p in sorted(set(parts))])

    async def _settle(self, futures: list[Any]) -> None:
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                self.runner.metrics.publish_errors.inc()
                log.error("item agent: row publication failed: %s", result)
