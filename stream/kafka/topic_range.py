"""Reading a time range of a topic: ``offsets_for_times``, a plain assigned consumer, no group, no commit.

Used by ``metarec replay --from-topic`` (:func:`stream.kafka.replay.replay_topic`) and
``metarec train --from-topic``. The range is the messages whose record timestamp is in ``[start_ms, until_ms)``,
read from each partition's first offset at or after ``start_ms`` up to its end *when the read started* (messages
produced later are not waited for).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from adapters.errors import MetarecError
from stream.kafka.client import check_reachable, consumer_config


def topic_partitions(bootstrap: str, topic: str, overrides: Mapping[str, Any] | None = None) -> list[int]:
    """The partitions of an existing ``topic`` (a clear error when it does not exist)."""
    meta = check_reachable(bootstrap, overrides=overrides)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        raise MetarecError(f"topic {topic!r} does not exist at {bootstrap}")
    return sorted(meta.topics[topic].partitions)


def end_offsets(bootstrap: str, topic: str, partitions: list[int], overrides: Mapping[str, Any] | None,
                timeout: float = 10.0) -> dict[int, int]:
    """True end offset of each partition now: the listed high watermark, then read to end-of-partition.

    Reading the tail matters on brokers whose ListOffsets undercounts (Tansu reports the base offset of the
    last batch + 1); on Apache Kafka the end-of-partition event comes straight away.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(consumer_config(bootstrap, overrides=overrides, enable_partition_eof=True,
                                 fetch_wait_max_ms=50))
    try:
        ends: dict[int, int] = {}
        starts: list[Any] = []
        for p in partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high <= low:
                ends[p] = high
            starts.append(TopicPartition(topic, p, max(high - 1, low)))
        todo = {tp.partition: tp for tp in starts if tp.partition not in ends}
        if todo:
            c.assign(list(todo.values()))
            deadline = time.monotonic() + timeout
            while todo and time.monotonic() < deadline:
                for m in c.consume(10_000, timeout=0.2):
                    err = m.error()
                    if err is not None and err.code() == KafkaError._PARTITION_EOF and m.partition() in todo:
                        ends[m.partition()] = m.offset()
                        del todo[m.partition()]
                    elif err is not None and err.code() != KafkaError._PARTITION_EOF:
                        raise MetarecError(f"cannot read topic {topic!r}: {err.str()}")
            if todo:
                raise MetarecError(f"could not find the end of topic {topic!r} within {timeout:g} s")
        return ends
    finally:
        c.close()


def read_range(bootstrap: str, topic: str, start_ms: int, *, overrides: Mapping[str, Any] | None = None,
               stop: threading.Event | None = None, partitions: list[int] | None = None) -> Iterator[Any]:
    """The messages (confluent ``Message``) of ``topic`` from the first offset at or after ``start_ms`` of each
    partition up to its current end, partition by partition in offset order (interleaved across partitions).

    The caller filters by timestamp for the end of its range (a partition's messages are in offset order, not
    necessarily in timestamp order). Stops early when ``stop`` is set.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    partitions = partitions if partitions is not None else topic_partitions(bootstrap, topic, overrides)
    ends = end_offsets(bootstrap, topic, partitions, overrides)
    consumer = Consumer(consumer_config(bootstrap, overrides=overrides, enable_partition_eof=True))
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, start_ms) for p in partitions], timeout=10)
        assignment = []
        for tp in found:
            first = tp.offset if tp.offset >= 0 else ends[tp.partition]  # -1: nothing at or after start
            if first < ends[tp.partition]:
                assignment.append(TopicPartition(topic, tp.partition, first))
        pending = {tp.partition for tp in assignment}
        if assignment:
            consumer.assign(assignment)
        while pending and not (stop is not None and stop.is_set()):
            for m in consumer.consume(10_000, timeout=0.5):
                p = m.partition()
                if p not in pending:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= ends[p]:
                            pending.discard(p)
                        continue
                    raise MetarecError(f"cannot read topic {topic!r}: {err.str()}")
                if m.offset() >= ends[p]:
                    pending.discard(p)
                    continue
                yield m
                if m.offset() >= ends[p] - 1:
                    pending.discard(p)
    finally:
        consumer.close()
