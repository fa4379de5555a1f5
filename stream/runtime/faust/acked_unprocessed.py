"""Repair of input events that faust acked - and so committed - without delivering them: the processed mark.

Defect (faust-streaming 0.15.3, measured here in kill -9 runs): faust commits the offsets it *acks*, and it acks
messages that a suspended stream skipped during a rebalance or recovery without delivering them (see
:mod:`stream.runtime.faust.skipped_ranges`). The committed offset alone therefore does not prove that an event was
processed.

The repair keeps the worker's own proof: after every micro-batch the runtime writes, for each input partition of
the batch, the next offset processed *contiguously* (every offset below it applied to the user records or sent to
the DLQ) into the state table under an internal key of that partition (:func:`stream.worker.state_layout.mark_key`,
:meth:`stream.runtime.faust.table.TableStore.write_marks`). The mark travels in the same changelog batch as the
records it covers, and the batch's changelog writes are delivered before its offsets are acked, so a mark never
claims more than the durable state holds.

At assignment a partition's contiguity check starts at the lower of the mark and the committed offset
(:func:`stream.runtime.faust.skipped_ranges.fill_gaps`): when faust committed past events it never delivered, the
first message after a restart reveals the range ``[mark, committed)``, which the worker fetches and processes. When
no message comes at all (everything was committed), :func:`recover_unprocessed` notices the same range from a
timer. Black-box proof: ``tests/reliability/test_processed_mark.py``; the faust attributes it reads are pinned by
``tests/stream/runtime/test_faust_pins.py``.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from stream.kafka.messages import RawMessage
from stream.kafka.ranges import fetch_range
from stream.runtime.faust.table import TableStore
from stream.worker.metrics import WorkerMetrics
from stream.worker.offsets import OffsetTracker

log = logging.getLogger(__name__)


async def recover_unprocessed(consumer: object, store: TableStore, offsets: OffsetTracker, lock: asyncio.Lock,
                              bootstrap: str, overrides: Mapping[str, str], metrics: WorkerMetrics,
                              stopping: Callable[[], bool],
                              process: Callable[[list[RawMessage]], Awaitable[None]]) -> int:
    """Process ``[mark, committed)`` of every newly assigned partition that faust committed past its mark.

    Called from a timer once the assignment's tables are restored. A partition is checked once per assignment
    (the contiguity tracker then knows it); one whose first message already reached the agent is left to
    :func:`~stream.runtime.faust.skipped_ranges.fill_gaps`. ``process`` runs a micro-batch (with ``lock`` held).
    Returns the number of events fetched.
    """
    from faust.types import TP

    topic = store.topic
    fetched_total = 0
    for tp in list(consumer.assignment()):  # type: ignore[attr-defined]
        if tp.topic != topic or offsets.known(tp.partition):
            continue
        async with lock:
            p = tp.partition
            if stopping() or offsets.known(p):
                continue
            committed = consumer._committed_offset.get(TP(topic, p))  # type: ignore[attr-defined]
            if committed is None:  # faust has not sought to the committed offsets yet (or nothing committed)
                continue
            mark = store.read_mark(p)
            if mark is None or mark >= committed:
                # nothing committed that was not processed: the contiguity check starts at the committed offset,
                # where faust delivers from (it must still learn that a range it skips there is done)
                offsets.expect(p, committed)
                continue
            msgs = await asyncio.get_running_loop().run_in_executor(None, lambda: fetch_range(
                bootstrap, topic, p, mark, committed, overrides=overrides))
            log.warning("partition %d: offsets %d..%d were committed but never processed (processed mark %d); "
                        "fetched %d of them directly, processing them now", p, mark, committed - 1, mark, len(msgs))
            metrics.gap_events.inc(len(msgs))
            fetched_total += len(msgs)
            offsets.expect(p, mark)
            for m in msgs:
                offsets.observe(p, m.offset)
            done = msgs[-1].offset + 1 if msgs else mark
            if done < committed:  # the rest could not be fetched: the mark must not pass it
                log.error("partition %d: could fetch only offsets %d..%d of %d..%d; the processed mark stays there",
                          p, mark, done - 1, mark, committed - 1)
                offsets.hole(p, done)
            offsets.expect(p, max(committed, offsets.next[p]))  # the agent's messages start at committed
            await process(msgs)
    return fetched_total
