"""Producing the worker's output through faust's producer and waiting until the broker has it."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from stream.kafka.messages import Outgoing
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


async def publish(producer: Any, messages: Sequence[Outgoing], metrics: WorkerMetrics) -> None:
    """Produce ``messages`` in bulk and wait for their delivery (before the batch is acked)."""
    futures = []
    for o in messages:
        try:
            futures.append(await producer.send(o.topic, o.key, o.value, o.partition, None, o.headers or None))
        except Exception as exc:  # noqa: BLE001
            metrics.publish_errors.inc()
            log.error("cannot produce to %s: %s", o.topic, exc)
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(result, BaseException):
            metrics.publish_errors.inc()
            log.error("delivery failed: %s", result)
