"""Producing a micro-batch's output and waiting until the broker has all of it, before its offsets are committed.

One idempotent producer per worker (:func:`stream.kafka.client.producer_config`). :meth:`Delivery.send` queues
messages; :meth:`Delivery.wait` flushes and returns once every queued message is acknowledged. A message whose
delivery failed with a retriable error (a broker outage longer than librdkafka's own retries) is produced again;
one that can never be delivered (too large, not authorised) is logged and counted in
``metarec_publish_errors_total`` and dropped, so that one bad output cannot stall the stream. While the wait lasts
longer than ``--stall-after``, ``/readyz`` says so (:meth:`stream.worker.http.WorkerHealth.stall`).

The delivery reports of the changelog records also tell each changelog partition's next offset, which the local
stores remember (:mod:`stream.runtime.kafka.changelog`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from stream.kafka.messages import Outgoing
from stream.worker.http import WorkerHealth
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class DeliveryAbandoned(Exception):
    """The worker is stopping and its last output could not be delivered in time: its offsets stay uncommitted."""


class Delivery:
    """The worker's producer, with the wait for a micro-batch's acknowledgements."""

    def __init__(self, producer: Any, metrics: WorkerMetrics, health: WorkerHealth) -> None:
        self.producer, self.metrics, self.health = producer, metrics, health
        self.changelog_next: dict[tuple[str, int], int] = {}  #: (topic, partition) → next offset after our writes
        self._retry: list[Outgoing] = []
        self._tracked: set[str] = set()  #: topics whose delivered offsets are remembered

    def track(self, topic: str) -> None:
        """Remember the next offset of every partition of ``topic`` written (the changelog topics)."""
        self._tracked.add(topic)

    def send(self, messages: Sequence[Outgoing]) -> None:
        produce = self.producer.produce
        for o in messages:
            while True:
                try:
                    produce(o.topic, o.value, o.key,
                            **({"partition": o.partition} if o.partition is not None else {}),
                            headers=o.headers or None, on_delivery=self._report(o))
                    break
                except BufferError:  # the local queue is full: let librdkafka send
                    self.producer.poll(0.05)
                except Exception as exc:  # noqa: BLE001 - e.g. a message larger than the producer accepts
                    self.metrics.publish_errors.inc()
                    log.error("cannot produce to %s: %s", o.topic, exc)
                    break

    def _report(self, o: Outgoing) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                if o.topic in self._tracked:
                    tp = (o.topic, msg.partition())
                    self.changelog_next[tp] = max(self.changelog_next.get(tp, 0), msg.offset() + 1)
                return
            if err.retriable() or err.code() in _RETRY_CODES:
                self._retry.append(o)
                return
            self.metrics.publish_errors.inc()
            log.error("delivery to %s failed for good, message dropped: %s", o.topic, err.str())
        return on_delivery

    def wait(self, stopping: Callable[[], bool] = lambda: False, grace_s: float = 5.0) -> None:
        """Block until everything sent is acknowledged (failed messages are sent again); :class:`DeliveryAbandoned`
        if ``stopping()`` has been true for ``grace_s`` seconds meanwhile."""
        producer = self.producer
        stop_since: float | None = None
        if len(producer) == 0 and not self._retry:
            producer.poll(0)
            return
        self.health.stall("delivery of a micro-batch's output")
        try:
            while True:
                left = producer.flush(0.2)
                self.health.beat()  # waiting for the broker is the processing loop alive, not stuck
                if self._retry:
                    retry, self._retry = self._retry, []
                    log.warning("re-sending %d messages whose delivery failed", len(retry))
                    self.send(retry)
                    continue
                if left == 0:
                    return
                if stopping():
                    stop_since = stop_since or time.monotonic()
                    if time.monotonic() - stop_since > grace_s:
                        raise DeliveryAbandoned(f"{left} messages not delivered {grace_s:g} s after the stop")
        finally:
            self.health.stall(None)


def _retry_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError
    return frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                      KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS})


_RETRY_CODES = _retry_codes()
