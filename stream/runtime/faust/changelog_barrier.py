"""Repair: a micro-batch's changelog writes are delivered before its offsets are acked, and end in a one-record batch.

Two defects meet here.

* faust-streaming 0.15.3 (measured here): ``producer.flush()`` is not a delivery barrier. Its buffer flush gives up
  after 100 ms without progress, and the record its background sender holds is in neither the buffer nor aiokafka's
  accumulator. Offsets must not be committed before the state they produced is durable (a kill -9 would leave the
  user's record stale for good), so :class:`ChangelogBarrier` collects the future of every changelog record the
  table sends (faust's ``Table._send_changelog`` calls ``self.send_changelog``, pinned by
  ``tests/stream/runtime/test_faust_pins.py``) and :meth:`ChangelogBarrier.seal` waits for all of them.
* Tansu (FIELD-NOTES): the high watermark is reported as the base offset of the last record batch + 1, which would
  make a restore stop short of the last batch and make faust refuse a local store that is "ahead" of the changelog
  (ConsistencyError). After :data:`~stream.worker.state_layout.END_MARKER` (a tombstone) the last batch of each
  written partition holds one record, so the watermark is exact. On Apache Kafka it is a harmless tombstone
  (compacted away).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import END_MARKER

log = logging.getLogger(__name__)


class ChangelogBarrier:
    """Tracks the changelog sends of faust ``table`` (install once, before the table is used)."""

    def __init__(self, table: Any, metrics: WorkerMetrics) -> None:
        self.table, self.metrics = table, metrics
        self._sent: list[Any] = []
        send = table.send_changelog

        def send_changelog(*args: Any, **kwargs: Any) -> Any:
            fut = send(*args, **kwargs)
            self._sent.append(fut)
            return fut

        table.send_changelog = send_changelog  # faust's _send_changelog calls self.send_changelog

    async def seal(self, producer: Any, partitions: Iterable[int]) -> None:
        """Wait for the delivery of every changelog record sent since the last seal; then an end marker per
        written partition."""
        await producer.flush()
        sent, self._sent = self._sent, []
        await self._settle(sent, "changelog write failed")
        parts = sorted(set(partitions))
        if not parts:
            return
        topic = self.table.changelog_topic.get_topic_name()
        futures = [await producer.send(topic, END_MARKER, None, p, None, None) for p in parts]
        await self._settle(futures, "changelog end marker failed")

    async def _settle(self, futures: list[Any], what: str) -> None:
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                self.metrics.publish_errors.inc()
                log.error("%s: %s", what, result)
