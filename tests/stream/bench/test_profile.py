"""``stream.bench.profile``: py-spy frames are put in the right category, whatever the worker's files are called."""
from __future__ import annotations

import pytest

from stream.bench.profile import categorize, summarize

LOOP = "run_forever (asyncio/base_events.py:608);_run_once (asyncio/base_events.py:1922)"


@pytest.mark.parametrize("leaf, category", [
    # the project's faust runtime is the worker's own code, although "faust/" is a substring of its path
    ("run_batch (stream/runtime/faust/app.py:160)", "worker"),
    ("deliver (stream/runtime/faust/fetchloop.py:40)", "worker"),
    ("process (/work/main/stream/runtime/faust/app.py:201)", "worker"),
    # its output: wherever the publishing code lives in the runtime, and the changelog delivery
    ("_publish (stream/runtime/faust/app.py:294)", "produce"),
    ("publish (stream/runtime/faust/delivery.py:15)", "produce"),
    ("ChangelogBarrier.seal (stream/runtime/faust/changelog_barrier.py:45)", "produce"),
    ("send_changelog (stream/runtime/faust/app.py:358)", "produce"),
    ("_end_markers (stream/runtime/faust/app.py:366)", "produce"),
    ("AIOKafkaProducer.send (aiokafka/producer/producer.py:400)", "produce"),
    # its table code
    ("TableStore.apply (stream/runtime/faust/table.py:94)", "table"),
    ("TableStore.write_marks (stream/runtime/faust/table.py:110)", "table"),
    ("Table.__getitem__ (faust/tables/table.py:80)", "table"),
    # the libraries themselves
    ("Consumer._drain_messages (faust/transport/consumer.py:1220)", "faust"),
    ("Service.wait_first (mode/services.py:700)", "faust"),
    ("Consumer.poll (confluent_kafka/cimpl.py:1)", "faust"),
    # the project's Kafka package is the worker's code (it was flat in stream/ before), its schema is json
    ("produce (stream/kafka/client.py:120)", "worker"),
    ("parse_event (stream/kafka/schema.py:80)", "json"),
    ("OnlineLearner.process (adapters/online/learner.py:300)", "learner"),
    ("inc (prometheus_client/metrics.py:300)", "metrics"),
])
def test_innermost_frame_decides(leaf: str, category: str) -> None:
    assert categorize(f"{LOOP};{leaf}") == category


def test_innermost_known_frame_wins_over_outer_ones() -> None:
    # the worker's batch code calls json: json; the publish code calls aiokafka's producer: produce
    assert categorize("handle (stream/runtime/faust/app.py:140);loads (json/__init__.py:346)") == "json"
    assert categorize("_publish (stream/runtime/faust/app.py:300);send (faust/transport/producer.py:60)") == "produce"
    # an unknown innermost frame defers to the next known one outwards
    assert categorize("run_batch (stream/runtime/faust/app.py:160);helper (x.py:1)") == "worker"
    assert categorize("<module> (somewhere.py:1);helper (x.py:1)") == "other"


def test_summarize_shares_per_thread_and_category() -> None:
    raw = ("thread (1): MainThread;_publish (stream/runtime/faust/app.py:294) 3\n"
           "thread (2): metarec-adapt;process (adapters/online/learner.py:1) 1\n"
           "not a sample line\n")
    s = summarize(raw)
    assert s["samples"] == 4
    assert s["categories"] == {"produce": 0.75, "learner": 0.25}
    assert s["threads"] == {"MainThread": 0.75, "metarec-adapt": 0.25}
