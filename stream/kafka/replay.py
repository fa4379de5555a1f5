"""Replay into a Kafka topic: a dataset (in timestamp order) or a time range of another topic.

* :func:`replay_dataset` — every event of a :class:`adapters.data.datasets.Dataset` becomes one message, keyed by
  ``user_id``, value per the contract (``rating`` omitted for implicit events, ``timestamp`` = the event time),
  message timestamp = the time of sending (``stamp="now"``) or the event time (``stamp="event"``). Idempotent producer, large batches, ``murmur2_random`` partitioner (same partition as faust for a
  key). ``speed=0`` sends as fast as possible; ``speed=X`` paces sends at X× the event-time clock.
* :func:`replay_topic` — copies the messages of ``source`` whose timestamp is in ``[start, until)`` to
  ``destination``, with key, value, headers and timestamp unchanged, to the same partition number when both
  topics have the same partition count (by key otherwise). It assigns partitions itself and commits nothing:
  no consumer group sees it. It stops at the end of each partition as it was when the replay started.

Both stop early and cleanly when ``stop`` (a :class:`threading.Event`) is set, after flushing what was sent.

Example
-------
>>> from adapters.data.datasets import load_dataset                                 # doctest: +SKIP
>>> stats = replay_dataset(load_dataset("ml-100k"), "127.0.0.1:9092", "interactions")  # doctest: +SKIP
>>> stats.sent                                                                 # doctest: +SKIP
100000
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.errors import MetarecError
from stream.kafka.client import check_reachable, ensure_topics, produce, producer_config
from stream.kafka.topic_range import read_range, topic_partitions

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class ReplayStats:
    """What a replay did: messages delivered, wall time, whether it was stopped early."""

    sent: int
    seconds: float
    interrupted: bool = False
    skipped: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        tail = " (interrupted)" if self.interrupted else ""
        return f"sent {self.sent} events in {self.seconds:.2f} s ({self.rate:,.0f} events/s){tail}"


class _Delivery:
    """Counts delivery failures (the producer reports only errors)."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err.str()


def _producer(bootstrap: str, overrides: Mapping[str, Any] | None, delivery: _Delivery) -> Any:
    from confluent_kafka import Producer

    cfg = producer_config(bootstrap, {"linger.ms": 10, "batch.size": 1_000_000, "batch.num.messages": 10_000,
                                      "queue.buffering.max.messages": 500_000, "delivery.report.only.error": True,
                                      "on_delivery": delivery, **dict(overrides or {})})
    return Producer(cfg)


def _finish(producer: Any, delivery: _Delivery, produced: int) -> int:
    remaining = producer.flush(60.0)
    if remaining:
        raise MetarecError(f"{remaining} messages were still undelivered after 60 s (is the broker still up?)")
    if delivery.failed:
        raise MetarecError(f"{delivery.failed} of {produced} messages failed: {delivery.first_error}")
    return produced


def _number_text(values: np.ndarray) -> dict[float, str]:
    out: dict[float, str] = {}
    for v in np.unique(values[~np.isnan(values)]) if values.size else []:
        out[float(v)] = np.format_float_positional(v, unique=True, trim="-")
    return out


class _EventEncoder:
    """Keys and contract JSON values of dataset events; the repeated ids are encoded once."""

    def __init__(self, ratings: np.ndarray) -> None:
        self.rating_text = _number_text(ratings)  #: rating → its shortest decimal text
        self._json: dict[str, str] = {}
        self._keys: dict[str, bytes] = {}

    def _js(self, s: str) -> str:
        out = self._json.get(s)
        if out is None:
            out = self._json[s] = json.dumps(s, ensure_ascii=False)
        return out

    def key(self, user: str) -> bytes:
        key = self._keys.get(user)
        if key is None:
            key = self._keys[user] = user.encode("utf-8")
        return key

    def value(self, user: str, item: str, rating: float, t: float) -> bytes:
        """``{"user_id", "item_id", "rating"?, "timestamp"}`` (no ``rating`` for an implicit, NaN, rating)."""
        t_text = str(int(t)) if t.is_integer() else repr(t)
        if rating != rating:  # NaN: implicit
            value = f'{{"user_id":{self._js(user)},"item_id":{self._js(item)},"timestamp":{t_text}}}'
        else:
            value = (f'{{"user_id":{self._js(user)},"item_id":{self._js(item)},"rating":{self.rating_text[rating]},'
                     f'"timestamp":{t_text}}}')
        return value.encode("utf-8")


def _check_replay_args(stamp: str, speed: float, limit: int | None, partitions: int) -> None:
    if stamp not in ("now", "event"):
        raise MetarecError(f"--stamp must be 'now' or 'event', got {stamp!r}")
    if speed < 0:
        raise MetarecError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
    if limit is not None and limit < 0:
        raise MetarecError(f"--limit must be >= 0, got {limit}")
    if partitions < 1:
        raise MetarecError(f"--partitions must be >= 1, got {partitions}")


def _wait_until_due(producer: Any, due: float, stop: threading.Event | None) -> bool:
    """Serve delivery callbacks, then wait ``due`` seconds (> 0); False when ``stop`` was set meanwhile."""
    producer.poll(0)
    if stop is not None:
        return not stop.wait(due)
    time.sleep(due)
    return True


def replay_dataset(dataset: Any, bootstrap: str, topic: str, *, speed: float = 0.0, limit: int | None = None,
                   partitions: int = 4, progress: Progress | None = None, stop: threading.Event | None = None,
                   overrides: Mapping[str, Any] | None = None, stamp: str = "now") -> ReplayStats:
    """Send ``dataset`` to ``topic`` in timestamp order (creating the topic with ``partitions`` if missing).

    ``stamp`` chooses the Kafka message timestamp: ``"now"`` (default) the time of sending, as a live producer
    would — time-based retention keeps the messages and event→publish latency is measured from the send;
    ``"event"`` the event's own time (a backfill that a later ``--from-topic --from-time`` can select by event
    time; on a broker with time-based retention, old event times are deleted at once). The value's
    ``timestamp`` field always carries the event time.
    """
    _check_replay_args(stamp, speed, limit, partitions)
    check_reachable(bootstrap, overrides=overrides)
    ensure_topics(bootstrap, {topic: (partitions, None)}, overrides=overrides)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    ts = np.asarray(dataset.timestamps[:n], dtype=np.float64)
    order = np.arange(n) if n < 2 or bool(np.all(np.diff(ts) >= 0)) else np.argsort(ts, kind="stable")
    users, items = dataset.user_ids, dataset.item_ids
    ratings = np.asarray(dataset.ratings, dtype=np.float32)
    encoder = _EventEncoder(ratings[:n])
    delivery = _Delivery()
    producer = _producer(bootstrap, overrides, delivery)
    producer.list_topics(topic, timeout=10)  # partitions known before the first send (no wait at flush)
    start = time.monotonic()
    t0 = float(ts[order[0]]) if n else 0.0
    sent = 0
    interrupted = False
    for i in order.tolist():
        if stop is not None and stop.is_set():
            interrupted = True
            break
        t = float(ts[i])
        if speed > 0:
            due = (t - t0) / speed - (time.monotonic() - start)
            if due > 0 and not _wait_until_due(producer, due, stop):
                interrupted = True
                break
        user = str(users[i])
        produce(producer, topic, key=encoder.key(user), value=encoder.value(user, str(items[i]), float(ratings[i]), t),
                timestamp=int(round(t * 1000)) if stamp == "event" else 0)
        sent += 1
        if sent % 5000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(5000)
    loop_s = time.monotonic() - start
    _finish(producer, delivery, sent)
    log.info("replay: produce loop %.3f s, flush %.3f s", loop_s, time.monotonic() - start - loop_s)
    if progress is not None and sent % 5000:
        progress(sent % 5000)
    return ReplayStats(sent=sent, seconds=time.monotonic() - start, interrupted=interrupted)


def replay_topic(bootstrap: str, source: str, destination: str, start_ms: int, until_ms: int | None = None, *,
                 progress: Progress | None = None, stop: threading.Event | None = None,
                 overrides: Mapping[str, Any] | None = None) -> ReplayStats:
    """Copy ``source`` messages with ``start_ms <= timestamp < until_ms`` to ``destination``; commits nothing."""
    if until_ms is not None and until_ms <= start_ms:
        raise MetarecError("--until must be later than --from-time")
    if source == destination:
        raise MetarecError("--from-topic and --topic must differ")
    partitions = topic_partitions(bootstrap, source, overrides)
    dest_parts = ensure_topics(bootstrap, {destination: (len(partitions), None)}, overrides=overrides)[destination]
    same_layout = dest_parts == len(partitions)
    if not same_layout:
        log.warning("%s has %d partitions, %s has %d: placing copies by key", destination, dest_parts, source,
                    len(partitions))
    delivery = _Delivery()
    producer = _producer(bootstrap, overrides, delivery)
    producer.list_topics(destination, timeout=10)
    start = time.monotonic()
    sent = skipped = 0
    for n, m in enumerate(read_range(bootstrap, source, start_ms, overrides=overrides, stop=stop,
                                     partitions=partitions)):
        _, ts = m.timestamp()
        if ts >= start_ms and (until_ms is None or ts < until_ms):
            kwargs: dict[str, Any] = {"key": m.key(), "value": m.value(), "timestamp": ts}
            if m.headers():
                kwargs["headers"] = m.headers()
            if same_layout:
                kwargs["partition"] = m.partition()
            produce(producer, destination, **kwargs)
            sent += 1
            if progress is not None:
                progress(1)
        else:
            skipped += 1
        if n % 10_000 == 0:
            producer.poll(0)
    interrupted = stop is not None and stop.is_set()
    _finish(producer, delivery, sent)
    return ReplayStats(sent=sent, seconds=time.monotonic() - start, interrupted=interrupted, skipped=skipped)
