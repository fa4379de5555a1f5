"""A global table's input: every record of a (compacted) topic, all partitions, from the beginning, then live.

:class:`TopicFeed` runs a plain assigned consumer (no group, no commits) in a background thread and queues what it
reads; its owner takes the queued records with :meth:`TopicFeed.take` whenever it likes (the worker: between two
micro-batches). :attr:`TopicFeed.restored` is set once every partition has been read to the end it had when the
feed started (end-of-partition events, which stay exact on brokers whose high watermark undercounts), so that its
owner can report ready only after the restore. The worker reads ``<group>-items`` this way
(:mod:`stream.worker.item_owner`).

Example
-------
>>> feed = TopicFeed("127.0.0.1:9092", "metarec-items")      # doctest: +SKIP
>>> feed.start().restored.wait(30)                           # doctest: +SKIP
True
>>> [(key, len(value or b"")) for key, value, ts in feed.take()][:1]   # doctest: +SKIP
[(b'item-42', 352)]
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from stream.kafka.client import consumer_config

log = logging.getLogger(__name__)


class TopicFeed:
    """Read ``topic`` from its beginning in a thread; queue ``(key, value or None, record time in s)``."""

    def __init__(self, bootstrap: str, topic: str, overrides: Mapping[str, Any] | None = None,
                 skip: Callable[[bytes | None], bool] | None = None, poll_s: float = 0.1) -> None:
        self.bootstrap, self.topic, self.overrides = bootstrap, topic, dict(overrides or {})
        self.skip = skip or (lambda key: False)
        self.poll_s = float(poll_s)
        self.restored = threading.Event()  #: set once every partition was read to its end at start
        self.positions: dict[int, int] = {}  #: partition → next offset the feed will read (queued up to there)
        self.records_read = 0
        self.error = ""  #: the last consumer error ("" while none)
        self._queue: deque[tuple[bytes, bytes | None, float]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metarec-feed-{topic}", daemon=True)

    def start(self) -> TopicFeed:
        self._thread.start()
        return self

    def take(self, limit: int | None = None) -> list[tuple[bytes, bytes | None, float]]:
        """The queued records, oldest first (at most ``limit``)."""
        out = []
        q = self._queue
        while q and (limit is None or len(out) < limit):
            out.append(q.popleft())
        return out

    def pending(self) -> int:
        return len(self._queue)

    def caught_up(self, partitions: list[int], cancel: threading.Event | None = None, poll_s: float = 0.1) -> bool:
        """Wait until the feed has queued every record of ``partitions`` that exists now (a probe reads on from the
        feed's position and finds the partition's end there); False if ``cancel`` is set first."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        todo = set(partitions)
        probe = Consumer(consumer_config(self.bootstrap, overrides=self.overrides, enable_partition_eof=True))
        try:
            while todo:
                if (cancel is not None and cancel.is_set()) or self._stop.is_set():
                    return False
                for p in sorted(todo):
                    pos = self.positions.get(p)
                    if pos is None:
                        continue
                    probe.assign([TopicPartition(self.topic, p, pos)])
                    deadline = time.monotonic() + 10.0
                    while time.monotonic() < deadline:
                        m = probe.poll(0.2)
                        if m is None:
                            continue
                        if m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF:
                            if m.offset() <= self.positions.get(p, -1):
                                todo.discard(p)
                            break
                        if m.error() is None:  # a record the feed has not read yet: wait for it
                            break
                    probe.unassign()
                if todo:
                    time.sleep(poll_s)
            return True
        finally:
            probe.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        # prefetch bounded (librdkafka's default queues up to 64 MiB): the owner takes records between batches
        consumer = Consumer(consumer_config(self.bootstrap, overrides=self.overrides, enable_partition_eof=True,
                                            fetch_wait_max_ms=int(self.poll_s * 1000),
                                            queued_max_messages_kbytes=8192))
        try:
            partitions = self._partitions(consumer)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            todo = set(partitions)
            if not todo:
                self.restored.set()
            t0 = time.monotonic()
            while not self._stop.is_set():
                for m in consumer.consume(5_000, timeout=self.poll_s):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self.positions[m.partition()] = m.offset()
                            todo.discard(m.partition())
                            if not todo and not self.restored.is_set():
                                log.info("%s restored: %d records in %.2f s", self.topic, self.records_read,
                                         time.monotonic() - t0)
                                self.restored.set()
                        else:
                            self.error = err.str()
                            log.warning("reading %s: %s", self.topic, self.error)
                        continue
                    key = m.key()
                    self.positions[m.partition()] = m.offset() + 1
                    if self.skip(key):
                        continue
                    self.records_read += 1
                    self._queue.append((key, m.value(), m.timestamp()[1] / 1000.0))
        except Exception:  # noqa: BLE001 - a feed that dies must be visible: readiness never comes
            log.exception("feed of %s stopped", self.topic)
        finally:
            consumer.close()

    def _partitions(self, consumer: Any) -> list[int]:
        """The topic's partitions (waits for the topic to exist)."""
        while not self._stop.is_set():
            meta = consumer.list_topics(self.topic, timeout=5.0)
            t = meta.topics.get(self.topic)
            if t is not None and t.error is None and t.partitions:
                return sorted(t.partitions)
            time.sleep(0.5)
        return []
