"""Replay into a real (embedded) broker: datasets in order, keyed by user; topic ranges copied exactly."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from adapters.data.datasets import Dataset, load_dataset
from stream.kafka.client import consumer_config, ensure_topics, producer_config
from stream.kafka.replay import replay_dataset, replay_topic
from stream.kafka.schema import parse_event

REPO = Path(__file__).resolve().parents[3]
SUMMARY = re.compile(r"^sent (\d+) events in [0-9.]+ s \([0-9,]+ events/s\)( \(interrupted\))?$")


def consume_all(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 60.0) -> list:
    """Every message of ``topic`` (all partitions, read to end-of-partition), in per-partition order."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    parts = sorted(meta.topics[topic].partitions)
    c = Consumer(consumer_config(bootstrap, enable_partition_eof=True))
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out, eof = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in c.consume(10_000, timeout=0.5):
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
                continue
            eof.discard(m.partition())
            out.append(m)
        if len(eof) == len(parts) and (expected is None or len(out) >= expected):
            break
    c.close()
    return out


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def small_dataset(n: int = 50, implicit_every: int = 0, step: float = 1.0) -> Dataset:
    users = np.array([f"u{i % 7}" for i in range(n)], dtype=object)
    items = np.array([f"i{(i * 13) % 11}" for i in range(n)], dtype=object)
    ratings = np.array([(i % 5) + 1 for i in range(n)], dtype=np.float32)
    if implicit_every:
        ratings[::implicit_every] = np.nan
    ts = 1_000_000_000.0 + step * np.arange(n, dtype=np.float64)
    return Dataset("small", "x", users, items, ratings, ts)


def test_ml100k_replay_cli_sends_everything_in_user_order(broker, topic_name):
    ds = load_dataset("ml-100k")
    done = cli("replay", "--dataset", "ml-100k", "--bootstrap", broker, "--topic", topic_name, "--quiet",
               "--stamp", "event")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    m = SUMMARY.match(lines[-1])
    assert m and int(m.group(1)) == 100_000 and m.group(2) is None, lines
    msgs = consume_all(broker, topic_name, expected=100_000)
    assert len(msgs) == 100_000
    expected: dict[str, list] = defaultdict(list)
    for u, i, r, t in zip(ds.user_ids.tolist(), ds.item_ids.tolist(), ds.ratings.tolist(), ds.timestamps.tolist()):
        expected[u].append((i, r, t))
    got: dict[str, list] = defaultdict(list)
    partition_of: dict[str, set] = defaultdict(set)
    for msg in msgs:
        ev = parse_event(msg.value())
        assert msg.key().decode() == ev.user_id
        assert msg.timestamp()[1] == round(ev.timestamp * 1000)
        got[ev.user_id].append((ev.item_id, ev.rating, ev.timestamp))
        partition_of[ev.user_id].add(msg.partition())
    assert got == expected  # same events, and each user's events in the dataset's (time) order
    assert all(len(p) == 1 for p in partition_of.values())
    assert len({next(iter(p)) for p in partition_of.values()}) == 4  # default --partitions 4, all used


def test_replay_dataset_limit_implicit_and_timestamps(broker, topic_name):
    ds = small_dataset(40, implicit_every=4)
    stats = replay_dataset(ds, broker, topic_name, limit=30, partitions=2)
    assert stats.sent == 30 and not stats.interrupted
    msgs = consume_all(broker, topic_name, expected=30)
    assert len(msgs) == 30
    values = sorted((json.loads(m.value()) for m in msgs), key=lambda v: v["timestamp"])
    for k, v in enumerate(values):
        assert v["timestamp"] == 1_000_000_000 + k and isinstance(v["timestamp"], int)
        assert v["user_id"] == f"u{k % 7}" and v["item_id"] == f"i{(k * 13) % 11}"
        if k % 4 == 0:
            assert "rating" not in v
        else:
            assert v["rating"] == (k % 5) + 1
    assert {m.partition() for m in msgs} == {0, 1}


def test_default_stamp_is_the_time_of_sending(broker, topic_name):
    ds = small_dataset(10)
    before = time.time() * 1000
    replay_dataset(ds, broker, topic_name, partitions=1)
    after = time.time() * 1000
    msgs = consume_all(broker, topic_name, expected=10)
    assert len(msgs) == 10
    assert all(before - 1000 <= m.timestamp()[1] <= after + 1000 for m in msgs)
    assert sorted(json.loads(m.value())["timestamp"] for m in msgs) == [1_000_000_000 + k for k in range(10)]


def test_speed_paces_by_event_time(broker, topic_name):
    ds = small_dataset(21, step=0.1)  # 2 s of event time
    stats = replay_dataset(ds, broker, topic_name, speed=4.0, partitions=1)
    assert stats.sent == 21
    assert 0.45 <= stats.seconds < 2.0  # 2 s / 4 = 0.5 s
    ts = [m.timestamp()[1] for m in consume_all(broker, topic_name, expected=21)]
    assert ts == sorted(ts) and len(ts) == 21


def test_stop_event_interrupts_and_flushes(broker, topic_name):
    ds = small_dataset(100, step=1.0)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    stats = replay_dataset(ds, broker, topic_name, speed=20.0, partitions=1, stop=stop)
    assert stats.interrupted and 3 <= stats.sent < 100
    assert len(consume_all(broker, topic_name, expected=stats.sent)) == stats.sent


def test_sigint_stops_cli_cleanly_with_summary(broker, topic_name, tmp_path):
    csv = tmp_path / "events.csv"
    small_dataset(200, step=1.0).to_csv(csv)
    proc = subprocess.Popen([sys.executable, "-m", "stream", "replay", "--dataset", str(csv), "--bootstrap", broker,
                             "--topic", topic_name, "--speed", "20"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    probe = Consumer(consumer_config(broker))
    probe.assign([TopicPartition(topic_name, p, 0) for p in range(4)])  # created by the replay, 4 partitions
    while time.monotonic() < deadline and proc.poll() is None:  # interrupt once sending has started
        if any(m.error() is None for m in probe.consume(10, timeout=0.2)):
            break
    probe.close()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    m = SUMMARY.match(out.splitlines()[-1])
    assert m and m.group(2) == " (interrupted)", out
    sent = int(m.group(1))
    assert 0 < sent < 200
    assert len(consume_all(broker, topic_name, expected=sent)) == sent


def _source_topic(broker: str, topic: str, base_ms: int) -> list[tuple]:
    """300 messages on 3 partitions, timestamps base+i s; one in-range timestamp written out of order."""
    ensure_topics(broker, {topic: (3, None)})
    p = Producer(producer_config(broker))
    rows = []
    for i in range(300):
        ts = base_ms + i * 1000
        if i == 250:
            ts = base_ms + 150_500  # late arrival: inside [100 s, 200 s) but written after 250 s
        key = f"user-{i % 17}".encode()
        headers = [("trace", f"t{i}".encode())] if i % 3 == 0 else None
        p.produce(topic, key=key, value=f'{{"n": {i}}}'.encode(), timestamp=ts, headers=headers)
        rows.append((key, ts, i))
    assert p.flush(10) == 0
    return rows


def _view(msgs: list) -> list[tuple]:
    return sorted((m.partition(), m.offset() * 0, m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1])
                  for m in msgs)


def test_topic_range_replay_copies_exactly_the_range(broker, topic_name):
    src, dst = topic_name + "-src", topic_name + "-dst"
    base = 1_700_000_000_000
    _source_topic(broker, src, base)
    source = consume_all(broker, src, expected=300)
    assert len(source) == 300
    stats = replay_topic(broker, src, dst, base + 100_000, base + 200_000)
    inside = [m for m in source if base + 100_000 <= m.timestamp()[1] < base + 200_000]
    assert len(inside) == 101 and stats.sent == 101  # i = 100..199 plus the late arrival
    copied = consume_all(broker, dst, expected=101)
    assert _view(copied) == _view(inside)
    # per-partition order preserved
    for p in range(3):
        assert [m.value() for m in copied if m.partition() == p] == [m.value() for m in inside if m.partition() == p]
    # it joined and committed to no consumer group
    groups = AdminClient({"bootstrap.servers": broker}).list_consumer_groups(request_timeout=10).result()
    assert not [g.group_id for g in groups.valid if g.group_id.startswith("metarec-nocommit-")]


def test_topic_range_cli_with_iso_times_and_open_end(broker, topic_name):
    src, dst = topic_name + "-src", topic_name + "-dst"
    base = 1_700_000_000_000
    _source_topic(broker, src, base)
    start = datetime.fromtimestamp((base + 280_000) / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # naive=UTC
    done = cli("replay", "--from-topic", src, "--from-time", start, "--bootstrap", broker, "--topic", dst)
    assert done.returncode == 0, done.stderr
    m = SUMMARY.match(done.stdout.splitlines()[-1])
    assert m and int(m.group(1)) == 20  # i = 280..299
    copied = consume_all(broker, dst, expected=20)
    assert sorted(json.loads(c.value())["n"] for c in copied) == list(range(280, 300))
    later = datetime.fromtimestamp((base + 400_000) / 1000, tz=timezone.utc).isoformat()
    done = cli("replay", "--from-topic", src, "--from-time", later, "--bootstrap", broker, "--topic", dst + "2")
    assert done.returncode == 0 and SUMMARY.match(done.stdout.splitlines()[-1]).group(1) == "0"


def test_topic_range_stops_at_the_end_seen_at_start(broker, topic_name):
    """Messages appended to the source while the copy runs are not copied (it terminates on a live topic)."""
    src, dst = topic_name + "-src", topic_name + "-dst"
    base = 1_700_000_000_000
    _source_topic(broker, src, base)
    late = Producer(producer_config(broker))
    appended = []

    def append_more(_n: int) -> None:
        if not appended:
            for i in range(50):
                late.produce(src, key=f"user-{i % 17}".encode(), value=b'{"late": true}', timestamp=base + 150_000)
            assert late.flush(10) == 0
            appended.append(50)

    stats = replay_topic(broker, src, dst, base + 100_000, base + 200_000, progress=append_more)
    assert appended == [50]
    assert stats.sent == 101
    copied = consume_all(broker, dst, expected=101)
    assert len(copied) == 101 and all(b"late" not in m.value() for m in copied)
    assert len(consume_all(broker, src, expected=350)) == 350


def test_topic_range_into_differently_partitioned_topic_places_by_key(broker, topic_name):
    src, dst = topic_name + "-src", topic_name + "-dst"
    base = 1_700_000_000_000
    _source_topic(broker, src, base)
    ensure_topics(broker, {dst: (2, None)})
    stats = replay_topic(broker, src, dst, base, None)
    assert stats.sent == 300
    copied = consume_all(broker, dst, expected=300)
    assert len(copied) == 300
    from aiokafka.partitioner import DefaultPartitioner

    for m in copied:
        assert m.partition() == DefaultPartitioner()(m.key(), [0, 1], [0, 1])
    for key in {m.key() for m in copied}:  # each key's messages keep their source order
        ns = [json.loads(m.value())["n"] for m in copied if m.key() == key]
        assert ns == sorted(ns)
