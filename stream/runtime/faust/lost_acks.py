"""Repair of commits that stop after faust lost acks: the worker commits what it processed itself.

Defect (faust-streaming 0.15.3, measured here around restarts): faust commits only an unbroken run of acked offsets
from its committed offset on, and around a restart (its fetcher delivers a partition before recovery seeks it to
the committed offset, then again from there) it can lose the acks of some delivered messages for good: its commits
then stop while every later offset is processed. The worker's contiguity check
(:class:`stream.worker.offsets.OffsetTracker`) knows what was processed; :meth:`ProcessedCommits.commit` commits
that, once its state is durable, through faust's own commit path (producer flush, assigned partitions only, its
committed-offset bookkeeping), so faust does not start a commit below it afterwards. :meth:`ProcessedCommits.watch`
warns (once per stall, ``metarec_commit_stalls_total``) when even that fails.

It relies on faust's ``Consumer._committed_offset`` and ``Consumer._commit_offsets(offsets)``, pinned by
``tests/stream/runtime/test_faust_pins.py``; black-box proof in ``tests/reliability/test_crash.py``.
"""
from __future__ import annotations

import asyncio
import logging
import time

from stream.worker.metrics import WorkerMetrics
from stream.worker.offsets import OffsetTracker

log = logging.getLogger(__name__)


class ProcessedCommits:
    """Commits of the processed offsets of input ``topic`` (at most once per ``interval`` seconds)."""

    def __init__(self, topic: str, offsets: OffsetTracker, lock: asyncio.Lock, interval: float,
                 metrics: WorkerMetrics, stall_s: float = 10.0) -> None:
        self.topic, self.offsets, self.lock = topic, offsets, lock
        self.interval, self.metrics, self.stall_s = float(interval), metrics, float(stall_s)
        self._last = 0.0
        self._watch: dict[int, tuple[int | None, float, bool]] = {}  # partition → (committed, since, warned)

    async def commit(self, consumer: object, force: bool = False) -> dict[int, int]:
        """Commit, for every assigned input partition, the offset processed contiguously where faust's lags it.

        Read under the lock: between micro-batches, so every offset below the frontier has been applied and its
        changelog writes delivered. One of faust's own commits already under way can still land after it; the next
        call then commits the frontier again. Returns ``{partition: committed offset}`` of the commits made.
        """
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return {}
        self._last = now
        async with self.lock:
            frontier = self._frontier(consumer)
        return await self._commit(consumer, frontier)

    async def commit_held(self, consumer: object) -> dict[int, int]:
        """:meth:`commit` now, by a caller that already holds the lock (e.g. before deleting a user's record, so
        that the events applied to it are not delivered again after a crash)."""
        return await self._commit(consumer, self._frontier(consumer))

    def _frontier(self, consumer: object) -> dict[object, int]:
        return {tp: n for tp in consumer.assignment() if tp.topic == self.topic  # type: ignore[attr-defined]
                and (n := self.offsets.processed(tp.partition)) is not None}

    async def _commit(self, consumer: object, frontier: dict[object, int]) -> dict[int, int]:
        committed = consumer._committed_offset  # type: ignore[attr-defined]
        behind = {tp: n for tp, n in frontier.items() if (c := committed.get(tp)) is None or n > c}
        if not behind:
            return {}
        try:
            done = await consumer._commit_offsets(behind)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the next tick tries again; faust's own commits continue meanwhile
            log.exception("commit of the processed offsets %s failed", {tp.partition: n for tp, n in behind.items()})
            return {}
        if not done:
            return {}
        log.debug("committed processed offsets %s", {tp.partition: n for tp, n in behind.items()})
        return {tp.partition: n for tp, n in behind.items()}

    def watch(self, consumer: object) -> None:
        """Warn (once per stall) when a partition's committed offset is stuck behind what was processed."""
        now = time.monotonic()
        committed_map = consumer._committed_offset  # type: ignore[attr-defined]
        for tp in consumer.assignment():  # type: ignore[attr-defined]
            if tp.topic != self.topic:
                continue
            committed = committed_map.get(tp)
            processed = self.offsets.position(tp.partition)
            prev = self._watch.get(tp.partition)
            if committed is None or processed is None or processed <= committed:
                self._watch[tp.partition] = (committed, now, False)
            elif prev is None or prev[0] != committed:
                self._watch[tp.partition] = (committed, now, False)
            elif now - prev[1] >= self.stall_s and not prev[2]:
                log.warning("partition %d: committed offset stuck at %d while offsets up to %d were processed "
                            "(commits failing?); a restart resumes from %d",
                            tp.partition, committed, processed - 1, committed)
                self.metrics.commit_stalls.inc()
                self._watch[tp.partition] = (committed, prev[1], True)
