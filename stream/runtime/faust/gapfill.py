"""Repair of input ranges that faust skipped: fetch them with a side consumer so that they are processed.

faust-streaming 0.15.3 marks a fetched message as *read* even when its delivery to the stream was interrupted by
a flow stop (rebalance, recovery after a restart): the message is never delivered, and because faust drops every
later redelivery of an offset below its read offset, seeking back does not bring it back. Left alone, such an
event is never processed and the committed offset stalls in front of it.

The worker therefore checks that each input partition's offsets arrive contiguously from the committed offset on
(:class:`OffsetTracker`). A message beyond the next expected offset reveals a gap ``[expected, offset)``; the
agent fetches that range with a plain (group-less, never committing) confluent consumer (:func:`fetch_range`),
processes it in the same micro-batch before the rest, and registers the range with faust's ack bookkeeping as
done, so commits move on. A redelivered offset (below the expected one) is harmless: the user records skip it.

Input offsets are contiguous on Tansu and on Apache Kafka topics without transactional producers; with
transaction markers a "gap" fetch simply returns no record for the marker offsets.

Example
-------
>>> t = OffsetTracker()
>>> t.expect(0, 10)
>>> t.observe(0, 10), t.observe(0, 11), t.observe(0, 14)
(None, None, (12, 14))
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.worker.core import RawMessage

log = logging.getLogger(__name__)


@dataclass
class OffsetTracker:
    """Next expected offset per input partition (unknown until :meth:`expect` or a first message)."""

    next: dict[int, int] = field(default_factory=dict)
    #: partition → first offset of a skipped range that could not be fetched (processing is contiguous below it)
    holes: dict[int, int] = field(default_factory=dict)

    def expect(self, partition: int, offset: int) -> None:
        self.next[partition] = int(offset)

    def known(self, partition: int) -> bool:
        return partition in self.next

    def observe(self, partition: int, offset: int) -> tuple[int, int] | None:
        """Record a delivered offset; the missing range ``[start, end)`` before it, if any."""
        expected = self.next.get(partition)
        gap = (expected, offset) if expected is not None and offset > expected else None
        if expected is None or offset + 1 > expected:
            self.next[partition] = offset + 1
        return gap

    def hole(self, partition: int, offset: int) -> None:
        """Offset ``offset`` of ``partition`` could not be processed (everything below it was)."""
        self.holes[partition] = min(int(offset), self.holes.get(partition, int(offset)))

    def processed(self, partition: int) -> int | None:
        """Every offset below this one was processed contiguously (None: partition unknown)."""
        n = self.next.get(partition)
        return None if n is None else min(n, self.holes.get(partition, n))

    def drop(self, keep: set[int]) -> None:
        for p in list(self.next):
            if p not in keep:
                del self.next[p]
        for p in list(self.holes):
            if p not in keep:
                del self.holes[p]


def fetch_range(bootstrap: str, topic: str, partition: int, start: int, end: int, *,
                overrides: Mapping[str, Any] | None = None, timeout: float = 15.0) -> list[RawMessage]:
    """Messages of ``topic``/``partition`` with ``start ≤ offset < end`` (blocking; no group, no commit)."""
    from confluent_kafka import Consumer, TopicPartition

    from stream.kafka.client import consumer_config

    c = Consumer(consumer_config(bootstrap, overrides=overrides))
    out: list[RawMessage] = []
    received = time.time()
    deadline = time.monotonic() + timeout
    try:
        c.assign([TopicPartition(topic, partition, start)])
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():  # (no end-of-partition events: Tansu reports the end short of the last batch)
                log.warning("gap fetch %s/%d: %s", topic, partition, msg.error())
                continue
            if msg.offset() >= end:
                break
            if msg.offset() >= start:
                kind, ts = msg.timestamp()
                out.append(RawMessage(topic, partition, msg.offset(), msg.key(), msg.value(),
                                      ts / 1000.0 if ts > 0 else received, received))
            if msg.offset() + 1 >= end:
                break
        else:
            log.error("gap fetch %s/%d [%d, %d): timed out after %.0f s with %d records",
                      topic, partition, start, end, timeout, len(out))
    finally:
        c.close()
    return out


async def fill_gaps(consumer: Any, tracker: OffsetTracker, msgs: list[RawMessage], cfg: Any,
                    metrics: Any, processed_mark: Callable[[int], int | None] | None = None) -> list[RawMessage]:
    """``msgs`` plus the input ranges faust skipped before them, in (partition, offset) order.

    ``consumer`` is faust's consumer: its gap bookkeeping learns that the fetched ranges are done (so its commits
    move past them). A newly assigned partition's check starts at the lower of its durable processed mark
    (``processed_mark(partition)``, see :mod:`stream.runtime.faust.progress`) and its committed offset: a range that faust
    committed without delivering it before a crash is then fetched too, and a range between the committed
    offset and the mark that faust skips is still registered as done.
    """
    import asyncio

    from faust.types import TP

    gaps: list[tuple[int, int, int]] = []
    for m in msgs:
        if not tracker.known(m.partition):  # first message since assignment: the committed offset comes next
            mark = processed_mark(m.partition) if processed_mark is not None else None
            committed = consumer._committed_offset.get(TP(m.topic, m.partition))
            # the lower of the two: below the mark, faust may still skip what it must be told is done (else its
            # commits stall there); below the committed offset, what it committed without delivering it
            known = [o for o in (mark, committed) if o is not None]
            if known:  # (neither: a new group; the first message sets it)
                tracker.expect(m.partition, min(known))
        gap = tracker.observe(m.partition, m.offset)
        if gap is not None:
            gaps.append((m.partition, *gap))
    if not gaps:
        return msgs
    loop = asyncio.get_running_loop()
    extra: list[RawMessage] = []
    for partition, start, end in gaps:
        fetched = await loop.run_in_executor(None, lambda p=partition, a=start, b=end: fetch_range(
            cfg.bootstrap, cfg.input, p, a, b, overrides=cfg.kafka_options))
        log.warning("partition %d: offsets %d..%d were never delivered by faust; fetched %d of them directly, "
                    "processing them now", partition, start, end - 1, len(fetched))
        metrics.gap_events.inc(len(fetched))
        extra.extend(fetched)
        done = fetched[-1].offset if fetched else start - 1
        if done < end - 1:  # not all fetched: leave the rest uncommitted (the commit stalls; a restart re-reads)
            log.error("partition %d: could fetch only up to offset %d of the skipped range %d..%d; the committed "
                      "offset will stop there", partition, done, start, end - 1)
            tracker.hole(partition, done + 1)
        if done >= start:
            await consumer._add_gap(TP(cfg.input, partition), start, done)  # commits may move past them
    return sorted(extra + msgs, key=lambda m: (m.partition, m.offset))
