"""The item agent on faust: feeds the :class:`~stream.worker.item_owner.ItemOwner` of this worker's item partitions.

The merge and bound rules are the owner's (:mod:`stream.worker.item_owner`, :mod:`adapters.online.items`); this module
only wires them to faust. faust assigns the partitions of ``<group>-item-updates`` (partitioned like the input) to
the workers. Before the agent merges the first contributions of a partition it was just given, it waits until the
worker has applied that partition's published rows (``<group>-items``) to their end: it starts from the rows the
previous owner published. Per batch of contributions, with the runner's lock held (no micro-batch runs meanwhile),
the owner merges them into the learner's item table; the changed rows are produced on ``<group>-items`` and
delivered, with an end marker per partition written (:mod:`stream.runtime.faust.changelog_barrier`: the embedded
broker's high watermark then stays exact), before faust acks the contributions.

Repair (the defects of :mod:`stream.runtime.faust.skipped_ranges` and :mod:`stream.runtime.faust.acked_unprocessed`,
seen here on ``<group>-item-updates`` around rebalances: faust can skip contributions, and commit them, so that no
owner ever merges them). The agent keeps, per owned partition, the offset after the newest contribution it merged
(for a partition it was just given: what the previous owner's rows prove merged,
:meth:`~stream.worker.item_owner.ItemOwner.merged_until`). A batch that starts beyond it, or a partition quiet for
``QUIET_S`` seconds whose committed offset or high watermark is beyond it, reveals a range nobody merged: the agent
fetches it directly and merges it first (merging is idempotent by offset).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from stream.kafka.messages import RawMessage
from stream.kafka.ranges import fetch_range
from stream.kafka.topic_feed import TopicFeed
from stream.runtime.faust.runner import FaustRunner
from stream.worker.item_owner import ItemBounds, ItemOwner
from stream.worker.state_layout import END_MARKER, item_updates_topic, items_topic

log = logging.getLogger(__name__)

QUIET_S = 5.0  #: seconds without a contribution of a partition before its end is checked for unmerged ones

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
        self._merged_to: dict[int, int] = {}  #: owned partition → the offset after the newest contribution merged
        self._heard: dict[int, float] = {}  #: owned partition → monotonic time of its last contribution delivered

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

        @app.timer(1.0)
        async def recover() -> None:
            try:
                await self.recover_quiet()
            except Exception:  # noqa: BLE001
                log.exception("item agent: recovery of unmerged contributions failed")

        @app.on_partitions_assigned.connect
        async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
            mine = {tp.partition for tp in assigned if tp.topic == self.topic.get_topic_name()}
            owner.revoked(owner.owned - mine)
            self._waiting |= mine - owner.owned
            for p in mine - owner.owned:  # given by another owner: start from what its rows prove merged
                self._merged_to.pop(p, None)
                self._heard[p] = time.monotonic()  # and give faust QUIET_S to start delivering it
            owner.assigned(mine)

    async def on_contributions(self, messages: list[Any]) -> None:
        msgs = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp) for m in messages]
        parts = {m.partition for m in msgs}
        await self._caught_up(parts)
        async with self.runner.lock:
            await self.runner.apply_items()
            for p in sorted(parts):  # a range nobody merged below the batch: merged first
                await self._merge_range(p, min(m.offset for m in msgs if m.partition == p))
            self._merge(msgs)
            await self.publish()

    async def recover_quiet(self) -> None:
        """A partition quiet for :data:`QUIET_S` whose committed offset or high watermark is beyond what was
        merged: the range in between, fetched and merged."""
        from faust.types import TP

        consumer, topic = self.app.consumer, self.topic.get_topic_name()
        now = time.monotonic()
        for tp in list(consumer.assignment()):
            p = tp.partition
            if tp.topic != topic or p not in self.owner.owned or now - self._heard.get(p, -math.inf) < QUIET_S:
                continue
            ends = [consumer._committed_offset.get(TP(topic, p))]  # pinned: tests/stream/runtime/test_faust_pins.py
            with contextlib.suppress(Exception):  # no fetch of the partition yet: no high watermark
                ends.append(consumer.highwater(tp))
            known = [e for e in ends if e is not None]
            if not known:
                continue
            await self._caught_up({p})
            async with self.runner.lock:
                await self.runner.apply_items()
                await self._merge_range(p, max(known))
                self._heard[p] = time.monotonic()

    async def _caught_up(self, partitions: set[int]) -> None:
        """Start from the rows the previous owner published: apply ``partitions``' published rows to their end."""
        new = sorted(partitions & self._waiting)
        if new:
            await asyncio.get_running_loop().run_in_executor(None, self.feed.caught_up, new)
            self._waiting -= set(new)

    async def _merge_range(self, p: int, end: int) -> None:
        """Fetch and merge the contributions of partition ``p`` from what was merged up to ``end`` (lock held)."""
        start = self._merged_to.get(p)
        if start is None:
            start = self._merged_to[p] = self.owner.merged_until(p)
        if start >= end:
            return
        cfg = self.runner.config
        msgs = await asyncio.get_running_loop().run_in_executor(None, lambda: fetch_range(
            cfg.bootstrap, self.topic.get_topic_name(), p, start, end, overrides=cfg.kafka_options))
        log.warning("item partition %d: contributions %d..%d were never merged (skipped or committed by faust); "
                    "fetched %d of them directly, merging them now", p, start, end - 1, len(msgs))
        self.runner.metrics.gap_events.inc(len(msgs))
        self._merge(msgs)
        self._merged_to[p] = max(self._merged_to[p], end)  # what could not be fetched is not asked for again

    def _merge(self, msgs: list[RawMessage]) -> None:
        self.owner.on_contributions(msgs)
        now = time.monotonic()
        for m in msgs:
            self._merged_to[m.partition] = max(self._merged_to.get(m.partition, 0), m.offset + 1)
            self._heard[m.partition] = now

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
