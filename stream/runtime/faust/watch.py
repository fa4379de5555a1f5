"""The worker's periodic checks of its input partitions: consumer lag, and committed offsets that stall.

Both run from the app's one-second timer (:func:`stream.runtime.faust.app.build_app`); ``rt`` is the
:class:`stream.runtime.faust.app.WorkerRuntime` shared with the agent.
"""
from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)


async def watch_commits(app: Any, rt: Any, stall_s: float = 10.0) -> None:
    """Warn (once per stall) when a partition's committed offset is stuck behind what was processed.

    faust 0.15.3 can lose acks around a rebalance or restart, and its own commits then stop; the worker's own
    commits (:func:`stream.runtime.faust.progress.commit_processed`) move past that. A stall reported here means those failed
    too (log + ``metarec_commit_stalls_total``); a restart of the worker resumes from the committed offset and the
    user records skip what they already applied.
    """
    if rt.draining or not rt.health.assigned:
        return
    consumer = app.consumer
    now = time.monotonic()
    for tp in consumer.assignment():
        if tp.topic != rt.config.input:
            continue
        committed = consumer._committed_offset.get(tp)
        processed = rt.next_offset.get(tp.partition)
        prev = rt.commit_watch.get(tp.partition)
        if committed is None or processed is None or processed <= committed:
            rt.commit_watch[tp.partition] = (committed, now, False)
        elif prev is None or prev[0] != committed:
            rt.commit_watch[tp.partition] = (committed, now, False)
        elif now - prev[1] >= stall_s and not prev[2]:
            log.warning("partition %d: committed offset stuck at %d while offsets up to %d were processed "
                        "(commits failing?); a restart resumes from %d",
                        tp.partition, committed, processed - 1, committed)
            rt.metrics.commit_stalls.inc()
            rt.commit_watch[tp.partition] = (committed, prev[1], True)


async def update_lag(app: Any, rt: Any) -> None:
    consumer = app.consumer
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        if tp.topic != rt.config.input:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch yet for this partition
            continue
        if high is None:
            continue
        pos = rt.next_offset.get(tp.partition)
        if pos is None:
            pos = await consumer.position(tp)
        if pos is None:
            continue
        lags[(tp.topic, tp.partition)] = max(0, int(high) - int(pos))
    rt.metrics.set_lag(lags)
