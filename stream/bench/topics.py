"""Kafka helpers of the benchmark: read a whole topic (or its tail) in bulk, delete topics when done.

Reads assign the partitions directly (no consumer group, nothing committed) and stop at end-of-partition, which
is found by reading (Tansu's high watermark undercounts, FIELD-NOTES).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from adapters.errors import MetarecError
from stream.kafka.client import client_config, consumer_config
from stream.worker.state_layout import is_internal_key

log = logging.getLogger(__name__)


def scan_topic(bootstrap: str, topic: str, on_batch: Callable[[list[Any]], None], *, tail: int | None = None,
               timeout: float = 120.0) -> int:
    """Call ``on_batch(messages)`` for every message of ``topic`` (or the last ~``tail`` of each partition).

    Returns the number of messages read. Stops once every partition reported its end.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(consumer_config(bootstrap, enable_partition_eof=True, fetch_wait_max_ms=20))
    try:
        meta = c.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise MetarecError(f"topic {topic!r} does not exist")
        parts = sorted(meta.topics[topic].partitions)
        assignment = []
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            start = low if tail is None else max(low, high - tail)
            assignment.append(TopicPartition(topic, p, start))
        c.assign(assignment)
        pending, n = set(parts), 0
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise MetarecError(f"reading topic {topic!r} did not finish within {timeout:g} s")
            msgs = c.consume(20_000, timeout=0.5)
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                else:
                    raise MetarecError(f"cannot read topic {topic!r}: {err.str()}")
            if good:
                n += len(good)
                on_batch(good)
        return n
    finally:
        c.close()


@dataclass
class ListStats:
    """What the benchmark needs from the lists on an output topic."""

    lists: int
    last_generated_at: float


def list_stats(bootstrap: str, topic: str, tail: int | None = None) -> ListStats:
    """Count the lists on ``topic`` (or on its tail) and find the last ``generated_at``."""
    state = {"n": 0, "last": float("-inf")}

    def on_batch(msgs: list[Any]) -> None:
        for m in msgs:
            state["last"] = max(state["last"], float(json.loads(m.value())["generated_at"]))
        state["n"] += len(msgs)

    scan_topic(bootstrap, topic, on_batch, tail=tail)
    return ListStats(int(state["n"]), float(state["last"]))


def latest_value_sizes(bootstrap: str, topic: str) -> dict[bytes, int]:
    """``{key: size in bytes of its latest non-null value}`` over a (changelog) topic."""
    sizes: dict[bytes, int] = {}

    def on_batch(msgs: list[Any]) -> None:
        for m in msgs:
            if is_internal_key(m.key()):  # processed marks and batch ends, not user state
                continue
            v = m.value()
            if v is None:
                sizes.pop(m.key(), None)
            else:
                sizes[m.key()] = len(v)

    scan_topic(bootstrap, topic, on_batch, timeout=600.0)
    return sizes


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Delete ``topics`` (best effort: the embedded broker keeps everything in memory)."""
    from confluent_kafka.admin import AdminClient

    names = [t for t in topics if t]
    if not names:
        return
    admin = AdminClient(client_config(bootstrap))
    try:
        for name, fut in admin.delete_topics(names, operation_timeout=10, request_timeout=10).items():
            try:
                fut.result(timeout=15)
            except Exception as exc:  # noqa: BLE001 - cleanup only
                log.debug("could not delete topic %s: %s", name, exc)
    except Exception as exc:  # noqa: BLE001
        log.debug("could not delete topics %s: %s", names, exc)
