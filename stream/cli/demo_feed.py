"""The demo's Kafka side: the paced live producer and the reader of the worker's lists.

* :func:`feed_live` sends the live events at a steady rate (every ``tick`` seconds at least, the events due by
  then: about two per tick at 400 events/s), with the usual key, value and partitioner (:mod:`stream.kafka.replay`) and the send time as the message
  timestamp; each delivered message fills in its event's partition and offset, and each tick's events go to the
  :class:`~stream.cli.demo_score.Scoreboard` as one micro-batch.
* :class:`ListReader` reads ``recommendations`` from the beginning in a thread (partitions assigned: no group
  joined, nothing committed) into a :class:`~stream.cli.demo_score.WorkerLists`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np

from adapters.errors import MetarecError
from stream.cli.demo_score import LiveEvent, Scoreboard, WorkerLists

log = logging.getLogger(__name__)


def live_events(ds: Any, lo: int, hi: int) -> list[LiveEvent]:
    """Events ``[lo, hi)`` of ``ds`` (already in time order) as :class:`LiveEvent` values."""
    ratings = np.asarray(ds.ratings[lo:hi], dtype=np.float64)
    return [LiveEvent(str(u), str(i), float(r), float(t), seq) for seq, (u, i, r, t) in
            enumerate(zip(ds.user_ids[lo:hi], ds.item_ids[lo:hi], ratings, ds.timestamps[lo:hi]))]


def feed_live(events: list[LiveEvent], board: Scoreboard, bootstrap: str, topic: str, rate: float,
              stop: threading.Event, sent: list[int], tick: float = 0.005) -> float:
    """Send ``events`` at ``rate`` events/s; ``sent[0]`` counts them as they go. Returns the seconds it took."""
    from confluent_kafka import Producer

    from stream.kafka.client import produce, producer_config
    from stream.kafka.replay import _EventEncoder

    encoder = _EventEncoder(np.array([ev.rating for ev in events], dtype=np.float32))
    failed: list[str] = []

    def delivered(ev: LiveEvent) -> Any:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(err.str())
            else:
                ev.partition, ev.offset = msg.partition(), msg.offset()
        return callback

    producer = Producer(producer_config(bootstrap, {"linger.ms": 5}))
    producer.list_topics(topic, timeout=10)
    start = time.monotonic()
    n = 0
    while n < len(events) and not stop.is_set():
        due = min(len(events), int((time.monotonic() - start) * rate) + 1)
        batch = events[n:due]
        for ev in batch:
            produce(producer, topic, key=encoder.key(ev.user), on_delivery=delivered(ev),
                    value=encoder.value(ev.user, ev.item, float(np.float32(ev.rating)), ev.timestamp))
        n = due
        sent[0] = n
        producer.poll(0)
        board.score_and_learn(batch)
        stop.wait(max(tick, start + n / rate - time.monotonic()))  # a tick's events at least: θ0's batches
        producer.poll(0)
    if producer.flush(30.0):
        raise MetarecError("live events still undelivered after 30 s (is the broker still up?)")
    if failed:
        raise MetarecError(f"{len(failed)} live events failed: {failed[0]}")
    return time.monotonic() - start


class ListReader:
    """Reads every list of ``topic`` into :attr:`lists` until :meth:`close`."""

    def __init__(self, bootstrap: str, topic: str = "recommendations") -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.lists = WorkerLists()
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="list-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from stream.kafka.client import consumer_config

        consumer = Consumer(consumer_config(self.bootstrap))
        try:
            parts: dict = {}
            while not parts and not self._stop.is_set():  # the worker creates the topic
                meta = consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
                parts = meta.partitions if meta is not None and meta.error is None else {}
                if not parts:
                    self._stop.wait(0.2)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            while not self._stop.is_set():
                for msg in consumer.consume(5000, timeout=0.2):
                    if msg.error() is None:
                        self.lists.add(json.loads(msg.value()))
        except Exception as exc:  # noqa: BLE001 - reported by the demo's main thread
            self.error = exc
        finally:
            consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
