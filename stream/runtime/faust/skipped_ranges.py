"""Repair of input ranges that faust skipped: fetch them with a side consumer so that they are processed.

Defect (faust-streaming 0.15.3, measured here in kill -9 and rebalance runs): faust marks a fetched message as
*read* even when its delivery to the stream was interrupted by a flow stop (rebalance, recovery after a restart).
The message never reaches the stream, and because faust drops every later redelivery of an offset below its read
offset, seeking back does not bring it back. Left alone, such an event is never processed and the committed offset
stalls in front of it.

The repair: each input partition's offsets must arrive contiguously from the committed offset on
(:class:`stream.worker.offsets.OffsetTracker`). A message beyond the next expected offset reveals a gap
``[expected, offset)``; :func:`fill_gaps` fetches that range with a plain (group-less, never committing) consumer
(:func:`stream.kafka.ranges.fetch_range`), hands it to the same micro-batch before the rest, and registers the
range with faust's ack bookkeeping (``Consumer._add_gap``) as done, so commits move on. A redelivered offset (below
the expected one) is harmless: the user records skip it.

It relies on faust's ``Consumer._committed_offset`` (a dict ``TP → offset``) and the coroutine
``Consumer._add_gap(tp, offset_from, offset_to)``: ``tests/stream/runtime/test_faust_pins.py`` pins both. Input
offsets are contiguous on Tansu and on Apache Kafka topics without transactional producers; with transaction
markers a "gap" fetch simply returns no record for the marker offsets.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from stream.kafka.messages import RawMessage
from stream.kafka.ranges import fetch_range
from stream.worker.metrics import WorkerMetrics
from stream.worker.offsets import OffsetTracker

log = logging.getLogger(__name__)


async def fill_gaps(consumer: object, tracker: OffsetTracker, msgs: list[RawMessage], bootstrap: str,
                    overrides: Mapping[str, str], metrics: WorkerMetrics,
                    processed_mark: Callable[[int], int | None]) -> list[RawMessage]:
    """``msgs`` plus the input ranges faust skipped before them, in (partition, offset) order.

    ``consumer`` is faust's consumer: its gap bookkeeping learns that the fetched ranges are done (so its commits
    move past them). A newly assigned partition's check starts at the lower of its durable processed mark
    (``processed_mark(partition)``, see :mod:`stream.runtime.faust.acked_unprocessed`) and its committed offset: a
    range that faust committed without delivering it before a crash is then fetched too, and a range between the
    committed offset and the mark that faust skips is still registered as done.
    """
    from faust.types import TP

    gaps: list[tuple[str, int, int, int]] = []
    for m in msgs:
        if not tracker.known(m.partition):  # first message since assignment: the committed offset comes next
            mark = processed_mark(m.partition)
            committed = consumer._committed_offset.get(TP(m.topic, m.partition))  # type: ignore[attr-defined]
            # the lower of the two: below the mark, faust may still skip what it must be told is done (else its
            # commits stall there); below the committed offset, what it committed without delivering it
            known = [o for o in (mark, committed) if o is not None]
            if known:  # (neither: a new group; the first message sets it)
                tracker.expect(m.partition, min(known))
        gap = tracker.observe(m.partition, m.offset)
        if gap is not None:
            gaps.append((m.topic, m.partition, *gap))
    if not gaps:
        return msgs
    loop = asyncio.get_running_loop()
    extra: list[RawMessage] = []
    for topic, partition, start, end in gaps:
        fetched = await loop.run_in_executor(None, lambda t=topic, p=partition, a=start, b=end: fetch_range(
            bootstrap, t, p, a, b, overrides=overrides))
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
            await consumer._add_gap(TP(topic, partition), start, done)  # type: ignore[attr-defined]
    return sorted(extra + msgs, key=lambda m: (m.partition, m.offset))
