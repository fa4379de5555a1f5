"""Reading a range of offsets of one partition with a plain consumer: no group, no commit.

The faust runtime uses it to fetch input ranges that faust skipped or committed without delivering them
(:mod:`stream.runtime.faust.skipped_ranges`, :mod:`stream.runtime.faust.acked_unprocessed`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from stream.kafka.messages import RawMessage

log = logging.getLogger(__name__)


def fetch_range(bootstrap: str, topic: str, partition: int, start: int, end: int, *,
                overrides: Mapping[str, Any] | None = None, timeout: float = 15.0) -> list[RawMessage]:
    """Messages of ``topic``/``partition`` with ``start ≤ offset < end`` (blocking; no group, no commit)."""
    from confluent_kafka import Consumer, TopicPartition

    from stream.kafka.client import consumer_config

    c = Consumer(consumer_config(bootstrap, overrides=overrides))
    out: list[RawMessage] = []
    received = time.time()
    deadline = time.monotonic() + timeout
    try:
        c.assign([TopicPartition(topic, partition, start)])
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():  # (no end-of-partition events: Tansu reports the end short of the last batch)
                log.warning("gap fetch %s/%d: %s", topic, partition, msg.error())
                continue
            if msg.offset() >= end:
                break
            if msg.offset() >= start:
                kind, ts = msg.timestamp()
                out.append(RawMessage(topic, partition, msg.offset(), msg.key(), msg.value(),
                                      ts / 1000.0 if ts > 0 else received, received))
            if msg.offset() + 1 >= end:
                break
        else:
            log.error("gap fetch %s/%d [%d, %d): timed out after %.0f s with %d records",
                      topic, partition, start, end, timeout, len(out))
    finally:
        c.close()
    return out
