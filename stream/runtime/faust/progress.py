"""The worker's own durable progress: a *processed* offset per input partition, stored with the state.

faust commits the offsets it *acks*, and faust-streaming 0.15.3 acks messages that a suspended stream skipped
during a rebalance or recovery without delivering them (see :mod:`stream.runtime.faust.gapfill`). The committed offset alone
therefore does not prove that an event was processed. The worker keeps its own proof: after every micro-batch it
writes, for each input partition of the batch, the next offset it has processed *contiguously* (every offset
below it applied to the user records or sent to the DLQ) into the state table, under an internal key of that
partition. The mark travels in the same changelog batch as the records it covers, and the batch's changelog
writes are delivered before its offsets are acked, so a mark never claims more than the durable state holds.

At assignment a partition's contiguity check starts at the lower of the mark and the committed offset
(:func:`stream.runtime.faust.gapfill.fill_gaps`): when faust committed past events it never delivered, the first message after a
restart reveals the range ``[mark, committed)``, which the worker fetches and processes. When no message comes at
all (everything was committed), :func:`recover_unprocessed` notices the same range from a timer.

The worker also *commits* from this progress (:func:`commit_processed`): faust commits only an unbroken run of
acked offsets from its committed offset on, and around a restart (its fetcher delivers a partition before
recovery seeks it to the committed offset, then again from there) it can lose the acks of some delivered
messages for good: its commits then stop while every later offset is processed. The worker's contiguity check
knows what was processed; committing that, once its state is durable, keeps the committed offset moving.

Internal keys start with the byte ``0xFF``, which never occurs in UTF-8, so they cannot collide with a user id
(table keys of users are ``user_id.encode("utf-8")``). Readers of the table or of its changelog skip them
(:func:`is_internal_key`).

Example
-------
>>> mark_key(3)
b'\\xffmetarec/processed/3'
>>> is_internal_key(mark_key(3)), is_internal_key(END_MARKER), is_internal_key("u1".encode())
(True, True, False)
>>> decode_mark(encode_mark(1234))
1234
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

INTERNAL = b"\xff"  #: first byte of every internal table/changelog key (never valid UTF-8)
#: changelog key closing each micro-batch's writes (a tombstone, see stream.runtime.faust.app._end_markers)
END_MARKER = INTERNAL + b"metarec/batch-end"
_MARK = INTERNAL + b"metarec/processed/"


def mark_key(partition: int) -> bytes:
    """Table key of input partition ``partition``'s processed mark."""
    return _MARK + str(int(partition)).encode()


def is_internal_key(key: bytes | None) -> bool:
    """True for the worker's own keys (marks, batch ends); False for a user's key."""
    return bool(key) and key[:1] == INTERNAL


def encode_mark(offset: int) -> bytes:
    return str(int(offset)).encode()


def decode_mark(raw: bytes | None) -> int | None:
    if not raw:
        return None
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        log.warning("unreadable processed mark %r; ignored", raw[:40])
        return None


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


class PartitionEvent:
    """A stand-in for a faust event of input ``partition``: made current, it routes table reads and writes to that
    partition (faust's table and stores only look at ``event.message.topic`` / ``.partition``)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, int(partition))


def read_mark(table: Any, topic: str, partition: int, current_event: Callable[[Any], Any]) -> int | None:
    """The processed mark of ``partition`` in the (restored) ``table``, or None if it never got one."""
    with current_event(PartitionEvent(topic, partition)):
        return decode_mark(table.get(mark_key(partition)))


def write_marks(table: Any, topic: str, marks: dict[int, int], current_event: Callable[[Any], Any]) -> None:
    """Store ``{partition: next processed offset}`` (each in its own changelog partition)."""
    for partition, offset in marks.items():
        with current_event(PartitionEvent(topic, partition)):
            table[mark_key(partition)] = encode_mark(offset)


async def commit_processed(rt: Any, consumer: Any, force: bool = False) -> dict[int, int]:
    """Commit, for every assigned input partition, the offset processed contiguously where faust's commit lags it.

    At most once per ``--commit-interval`` (``rt.config.commit_interval``) unless ``force`` (a graceful stop).

    Read under ``rt.lock``: between micro-batches, so every offset below the frontier has been applied and its
    changelog writes delivered (:func:`stream.runtime.faust.app.build_app`'s ``run_batch``). Uses faust's own commit path
    (producer flush, commit for assigned partitions only, then its committed-offset bookkeeping), so faust does
    not start a commit below it afterwards (one of faust's own commits already under way can still land after
    it; the next call then commits the frontier again). Returns ``{partition: committed offset}`` of the commits
    made.
    """
    cfg = rt.config
    now = time.monotonic()
    if not force and now - rt.processed_commit_at < cfg.commit_interval:
        return {}
    rt.processed_commit_at = now
    async with rt.lock:
        frontier = {tp: n for tp in consumer.assignment() if tp.topic == cfg.input
                    and (n := rt.offsets.processed(tp.partition)) is not None}
    behind = {tp: n for tp, n in frontier.items()
              if (c := consumer._committed_offset.get(tp)) is None or n > c}
    if not behind:
        return {}
    try:
        done = await consumer._commit_offsets(behind)
    except Exception:  # noqa: BLE001 - the next tick tries again; faust's own commits continue meanwhile
        log.exception("commit of the processed offsets %s failed", {tp.partition: n for tp, n in behind.items()})
        return {}
    if not done:
        return {}
    log.debug("committed processed offsets %s", {tp.partition: n for tp, n in behind.items()})
    return {tp.partition: n for tp, n in behind.items()}


async def recover_unprocessed(rt: Any, consumer: Any, table: Any, current_event: Callable[[Any], Any],
                              process: Callable[[list[Any], dict[int, Any]], Awaitable[None]]) -> int:
    """Process ``[mark, committed)`` of every newly assigned partition that faust committed past its mark.

    Called from a timer once the assignment's tables are restored. A partition is checked once per assignment
    (the contiguity tracker then knows it); one whose first message already reached the agent is left to
    :func:`stream.runtime.faust.gapfill.fill_gaps`. Returns the number of events fetched.
    """
    from faust.types import TP

    from stream.runtime.faust.gapfill import fetch_range

    cfg = rt.config
    fetched_total = 0
    for tp in list(consumer.assignment()):
        if tp.topic != cfg.input or rt.offsets.known(tp.partition):
            continue
        async with rt.lock:
            p = tp.partition
            if rt.draining or rt.offsets.known(p):
                continue
            committed = consumer._committed_offset.get(TP(tp.topic, p))
            if committed is None:  # faust has not sought to the committed offsets yet (or nothing committed)
                continue
            mark = read_mark(table, cfg.input, p, current_event)
            if mark is None or mark >= committed:
                # nothing committed that was not processed: the contiguity check starts at the committed offset,
                # where faust delivers from (it must still learn that a range it skips there is done)
                rt.offsets.expect(p, committed)
                continue
            msgs = await asyncio.get_running_loop().run_in_executor(None, lambda: fetch_range(
                cfg.bootstrap, cfg.input, p, mark, committed, overrides=cfg.kafka_options))
            log.warning("partition %d: offsets %d..%d were committed but never processed (processed mark %d); "
                        "fetched %d of them directly, processing them now", p, mark, committed - 1, mark, len(msgs))
            rt.metrics.gap_events.inc(len(msgs))
            fetched_total += len(msgs)
            rt.offsets.expect(p, mark)
            for m in msgs:
                rt.offsets.observe(p, m.offset)
            done = msgs[-1].offset + 1 if msgs else mark
            if done < committed:  # the rest could not be fetched: the mark must not pass it
                log.error("partition %d: could fetch only offsets %d..%d of %d..%d; the processed mark stays there",
                          p, mark, done - 1, mark, committed - 1)
                rt.offsets.hole(p, done)
            rt.offsets.expect(p, max(committed, rt.offsets.next[p]))  # the agent's messages start at committed
            await process(msgs, {p: PartitionEvent(cfg.input, p)})
    return fetched_total
