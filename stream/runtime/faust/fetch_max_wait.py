"""Repair of faust's fixed consumer long-poll wait: the worker consumer waits at most ``--fetch-max-wait-ms``.

Defect (faust-streaming 0.15.3): ``AIOKafkaConsumerThread._create_worker_consumer`` passes a fixed
``fetch_max_wait_ms=1500`` to aiokafka. Tansu answers a waiting fetch only when the wait expires (FIELD-NOTES), so
the wait is a latency floor there; on Apache Kafka a fetch returns as soon as data arrives and the setting only
bounds idle polling. :func:`set_fetch_max_wait` wraps that factory and sets aiokafka's ``_fetch_max_wait_ms`` on
the consumer it creates (read when the consumer starts its fetcher). Pinned by
``tests/stream/runtime/test_faust_pins.py``.
"""
from __future__ import annotations

from typing import Any


def set_fetch_max_wait(ms: int) -> None:
    """Make faust's worker consumer long-poll at most ``ms`` (idempotent: re-wraps faust's original factory)."""
    from faust.transport.drivers import aiokafka as driver

    create = getattr(driver.AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                     driver.AIOKafkaConsumerThread._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by aiokafka when the consumer starts its fetcher
        return consumer

    create_worker_consumer.__wrapped__ = create  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
