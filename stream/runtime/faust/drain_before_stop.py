"""Repair of faust's graceful stop: drain what was fetched, commit, and only then let faust shut down.

Defect (faust-streaming 0.15.3, measured here): faust's own shutdown suspends its flow control first, and a stream
*skips and acks* the messages it reads while suspended: their offsets would be committed without being processed
(lost). :func:`drain` stops the fetch loop (``Consumer.stop_flow``), waits until the agent has processed everything
already fetched (no new event counted for a quiet period and ``Consumer._unacked_messages`` empty), commits, and
returns; the caller then triggers faust's own shutdown (``Worker._on_sigterm``). The faust attributes are pinned by
``tests/stream/runtime/test_faust_pins.py``; black-box proof in ``tests/stream/worker/test_worker_shutdown.py``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from stream.runtime.faust.lost_acks import ProcessedCommits
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


async def drain(consumer: Any, metrics: WorkerMetrics, commits: ProcessedCommits, quiet_s: float,
                limit_s: float = 5.0) -> None:
    """No new fetches; wait until everything fetched is processed (at most ``limit_s``); commit."""
    loop = asyncio.get_running_loop()
    try:
        consumer.stop_flow()  # the fetch loop delivers nothing more (pausing every partition would not do)
        deadline = loop.time() + limit_s
        last, since = -1.0, loop.time()
        while loop.time() < deadline:
            seen = metrics.registry.get_sample_value("metarec_events_consumed_total") or 0.0
            now = loop.time()
            if seen != last:
                last, since = seen, now
            elif not consumer._unacked_messages and now - since >= quiet_s:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("drain: still busy after %.0f s; stopping anyway (the rest is consumed again later)", limit_s)
        await consumer.commit()
        await commits.commit(consumer, force=True)
    except Exception:  # noqa: BLE001 - never block the shutdown
        log.exception("drain failed; stopping anyway")
