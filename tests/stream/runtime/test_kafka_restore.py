"""Restoring the kafka runtime's state from its changelog, on the embedded broker.

A changelog record carries the newest input offset it reflects (header ``metarec-processed``); a restore applies
the records below the group's committed offset and skips those at or past it (their micro-batch was never
committed: the new owner processes it again), applies records without the header (forget tombstones), and ignores
internal keys. A local store resumes from the changelog offset it recorded, and rebuilds from the start when that
offset is not in the changelog any more.
"""
from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer

from stream.kafka.client import consumer_config, ensure_topics, producer_config
from stream.runtime.kafka.changelog import RestoreCancelled, processed_header, restore
from stream.runtime.kafka.store import PartitionStore, UserState
from stream.worker.state_layout import END_MARKER

pytestmark = pytest.mark.broker


def write(broker: str, topic: str, records: list[tuple[int, bytes, bytes | None, int | None]]) -> None:
    """``(partition, key, value, processed offset or None)`` in order, batched by the producer."""
    p = Producer(producer_config(broker, linger_ms=20))
    for partition, key, value, done in records:
        p.produce(topic, value, key, partition=partition, headers=processed_header(done) if done is not None else None)
    assert p.flush(10) == 0


def test_restore_applies_what_was_committed_and_skips_the_rest(broker, topic_name):
    ensure_topics(broker, {topic_name: (2, {"cleanup.policy": "compact"})})
    records = []
    for batch in range(10):  # batch k reflects input offsets up to 100 k + 99 of partition k % 2
        for user in range(5):
            p = user % 2
            records.append((p, f"u{user}".encode(), f"u{user}@{batch}".encode(), 100 * batch + 99))
    records.append((0, b"u0", None, None))  # a forget tombstone: no header, always applied
    records.append((1, END_MARKER, None, 999))  # an internal key: never a user
    write(broker, topic_name, records)
    stores = {0: PartitionStore(None), 1: PartitionStore(None)}
    committed = {0: 500, 1: 800}  # partition 0: batches 0-4 committed; partition 1: batches 0-7
    got = {r.partition: r for r in restore(consumer_config(broker), topic_name, stores, committed)}
    assert stores[0].get(b"u0") is None  # forgotten after its last committed version
    assert stores[0].get(b"u2") == b"u2@4" and stores[0].get(b"u4") == b"u4@4"
    assert stores[1].get(b"u1") == b"u1@7" and stores[1].get(b"u3") == b"u3@7"
    assert stores[1].get(END_MARKER) is None
    assert got[0].skipped == 3 * 5 and got[1].skipped == 2 * 2
    assert got[0].records == 31 and got[1].records == 21
    assert stores[0].changelog_offset == 31 and stores[1].changelog_offset == 21


def test_restore_resumes_from_the_recorded_changelog_offset(broker, topic_name, tmp_path):
    ensure_topics(broker, {topic_name: (1, {"cleanup.policy": "compact"})})
    write(broker, topic_name, [(0, f"u{i}".encode(), b"v1", i) for i in range(50)])
    state = UserState(tmp_path / "state")
    first = restore(consumer_config(broker), topic_name, {0: state.open(0)}, {0: 1_000})[0]
    assert first.records == 50 and first.start == 0
    state.close(0)  # a clean stop: the RocksDB store stays on disk with its offset
    write(broker, topic_name, [(0, b"u1", b"v2", 60), (0, b"u99", b"new", 61)])
    again = restore(consumer_config(broker), topic_name, {0: state.open(0)}, {0: 1_000})[0]
    assert (again.start, again.records, again.end) == (50, 2, 52) and not again.from_scratch
    store = state.stores[0]
    assert store.get(b"u1") == b"v2" and store.get(b"u99") == b"new" and store.get(b"u2") == b"v1"
    assert sorted(k for k, _ in store.items() if not k.startswith(b"\xff")) == sorted(
        [f"u{i}".encode() for i in range(50)] + [b"u99"])


def test_a_recorded_offset_beyond_the_changelog_rebuilds_the_store(broker, topic_name):
    ensure_topics(broker, {topic_name: (1, {"cleanup.policy": "compact"})})
    write(broker, topic_name, [(0, b"u1", b"fresh", 0)])
    store = PartitionStore(None)
    store.put(b"stale", b"from another changelog")
    store.changelog_offset = 500  # e.g. the topic was deleted and created again
    r = restore(consumer_config(broker), topic_name, {0: store}, {0: 10}, probe_s=2.0)[0]
    assert r.from_scratch and r.records == 1
    assert store.get(b"stale") is None and store.get(b"u1") == b"fresh"


def test_a_cancelled_restore_stops(broker, topic_name):
    ensure_topics(broker, {topic_name: (1, None)})
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RestoreCancelled):
        restore(consumer_config(broker), topic_name, {0: PartitionStore(None)}, {0: 0}, cancel)
