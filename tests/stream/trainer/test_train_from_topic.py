"""``metarec train --from-topic``: a time range of a topic as training data, read without a consumer group."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from worker_support import event_bytes, produce

from adapters.meta.checkpoint import Checkpoint
from stream.kafka.client import ensure_topics
from stream.trainer.events import events_dataset

pytestmark = pytest.mark.broker
T0_MS = 1_700_000_000_000  # record times of the three produced ranges: T0, T0 + 1 h, T0 + 2 h


def _metarec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], capture_output=True, text=True, timeout=300)


def _events(n: int, offset: int) -> list[tuple[bytes, bytes]]:
    return [(f"u{(i + offset) % 23}".encode(), event_bytes(f"u{(i + offset) % 23}", str((i * 7 + offset) % 41), 4.0,
                                                          1.6e9 + i + offset)) for i in range(n)]


def test_train_reads_only_the_time_range_and_leaves_out_invalid_messages(broker, topic_name, tmp_path):
    ensure_topics(broker, {topic_name: (2, None)})
    produce(broker, topic_name, _events(300, 0), timestamp_ms=T0_MS)  # before the range
    produce(broker, topic_name, _events(500, 1000) + [(b"k", b"not json")], timestamp_ms=T0_MS + 3_600_000)
    produce(broker, topic_name, _events(200, 2000), timestamp_ms=T0_MS + 7_200_000)  # at --until: excluded
    out = tmp_path / "ck"
    r = _metarec("train", "--from-topic", topic_name, "--bootstrap", broker, "--since", "2023-11-14T23:00:00Z",
                 "--until", "2023-11-15T00:13:20Z", "--epochs", "1", "--pretrain-epochs", "0", "--model", "mf",
                 "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "500 events, 1 invalid" in " ".join(r.stderr.split())  # (rich wraps lines)
    ck = Checkpoint.load(out)
    assert ck.metrics["train_events"] == 500
    assert ck.config["dataset"] == f"topic:{topic_name}"
    assert json.loads(r.stdout.strip().splitlines()[-1])["version"] == ck.version


def test_train_from_topic_errors_are_one_line(broker, topic_name, tmp_path):
    r = _metarec("train", "--from-topic", "no-such-topic-x", "--bootstrap", broker, "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    r = _metarec("train", "--from-topic", topic_name, "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "--bootstrap" in r.stderr
    r = _metarec("train", "--dataset", "ml-100k", "--from-topic", topic_name, "--bootstrap", broker,
                 "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "either --dataset or --from-topic" in r.stderr


def test_events_dataset_orders_by_event_time_and_falls_back_on_the_record_time():
    ds, invalid = events_dataset([(event_bytes("a", "1", 5.0, 30.0), 1.0), (event_bytes("b", "2"), 20.0),
                                  (b"{}", 0.0), (None, 0.0)], "x")
    assert invalid == 2
    assert ds.user_ids.tolist() == ["b", "a"] and ds.timestamps.tolist() == [20.0, 30.0]
    assert ds.ratings[1] == 5.0 and ds.ratings[0] != ds.ratings[0]  # implicit event: NaN rating
    same, _ = events_dataset([(event_bytes("a", "1", 5.0, 30.0), 1.0), (event_bytes("b", "2"), 20.0)], "x")
    assert same.fingerprint == ds.fingerprint
