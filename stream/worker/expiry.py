"""Expiry of inactive users' state by **event time**: the per-partition index behind ``--state-ttl``.

A user whose newest event is more than ``ttl_s`` seconds (event time) older than the *watermark* of their input
partition is forgotten: the worker core (:mod:`stream.worker.core`) returns a deletion of the key in the record's own partition, which
the runtime writes as a tombstone (value None) to that changelog partition, so the tombstone lands where the record
was, and log compaction removes the user for good.

Watermark of a partition = the largest *median* event time of that partition's events in one micro-batch, never
beyond the wall clock. The median makes one stray far-future timestamp (the schema admits up to now + 1 day) unable
to expire a whole replay of old history; the wall-clock cap bounds it in a live stream. Event time (not wall time)
makes a replay of history behave like the live stream it recorded: users expire after ``ttl_s`` of *their*
stream's time, however fast it is replayed.

The sweep is incremental and cheap: a heap of ``(newest event time, user)`` per partition with lazy deletion;
each micro-batch pops at most ``max_per_batch`` expired users per partition it touches. After a rebalance the
index is rebuilt once from the table (header-only decoding of each record,
:func:`adapters.online.records.record_position`).

Example
-------
>>> ex = StateExpiry(ttl_s=100.0)
>>> ex.touch(0, "old", 1_000.0); ex.touch(0, "new", 1_180.0)
>>> ex.advance(0, [1_150.0, 1_200.0, 1_250.0])  # watermark := median 1200 (capped by the wall clock)
1200.0
>>> ex.due(0)
['old']
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.online.records import record_position
from stream.worker.state_layout import is_internal_key


@dataclass
class StateExpiry:
    """The expiry index of one worker (``ttl_s`` None or ≤ 0: nothing ever expires)."""

    ttl_s: float | None
    max_per_batch: int = 5_000
    _heaps: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    _newest: dict[int, dict[str, float]] = field(default_factory=dict)
    _watermark: dict[int, float] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.ttl_s is not None and self.ttl_s > 0

    def touch(self, partition: int, user: str, event_time: float) -> None:
        """Remember ``user``'s newest event time (its record lives on changelog ``partition``)."""
        if not self.enabled or event_time != event_time:  # NaN: unknown
            return
        newest = self._newest.setdefault(partition, {})
        if newest.get(user) == event_time:
            return
        newest[user] = event_time
        heapq.heappush(self._heaps.setdefault(partition, []), (event_time, user))

    def forget(self, partition: int, user: str) -> None:
        """Stop tracking ``user`` of ``partition`` (its record was deleted; its stale heap entry is skipped)."""
        self._newest.get(partition, {}).pop(user, None)

    def advance(self, partition: int, event_times: Iterable[float], now: float | None = None) -> float:
        """Move the partition's watermark to the median of ``event_times`` (never back, never past ``now``)."""
        times = sorted(t for t in event_times if t == t)
        current = self._watermark.get(partition, float("-inf"))
        if times:
            cap = time.time() if now is None else now
            current = max(current, min(times[len(times) // 2], cap))
            self._watermark[partition] = current
        return current

    def watermark(self, partition: int) -> float | None:
        return self._watermark.get(partition)

    def due(self, partition: int) -> list[str]:
        """Pop (at most ``max_per_batch``) users of ``partition`` whose newest event is older than watermark − TTL.

        The caller deletes them from the table (with an event of ``partition`` current).
        """
        if not self.enabled or partition not in self._watermark:
            return []
        limit = self._watermark[partition] - float(self.ttl_s)  # type: ignore[arg-type]
        heap, newest = self._heaps.get(partition, []), self._newest.get(partition, {})
        out: list[str] = []
        while heap and heap[0][0] < limit and len(out) < self.max_per_batch:
            ts, user = heapq.heappop(heap)
            if newest.get(user) == ts:  # not superseded by a newer event
                del newest[user]
                out.append(user)
        return out

    def rebuild(self, items: Iterable[tuple[bytes, bytes]], partitions: Iterable[int]) -> int:
        """Index the stored records of ``partitions`` (after a rebalance); returns how many were indexed."""
        keep = set(partitions)
        self._heaps = {p: [] for p in keep}
        self._newest = {p: {} for p in keep}
        self._watermark = {p: w for p, w in self._watermark.items() if p in keep}
        n = 0
        for key, raw in items:
            if is_internal_key(key):  # the worker's processed marks (stream.runtime.faust.acked_unprocessed)
                continue
            pos = record_position(raw) if raw else None
            if pos is None or pos[0] not in keep:
                continue
            try:
                user = key.decode("utf-8") if isinstance(key, (bytes, bytearray)) else str(key)
            except UnicodeDecodeError:
                continue
            self._newest[pos[0]][user] = pos[1]
            n += 1
        for p in keep:
            self._heaps[p] = [(ts, u) for u, ts in self._newest[p].items()]
            heapq.heapify(self._heaps[p])
        return n

    def size(self) -> int:
        return sum(len(v) for v in self._newest.values())
