"""The worker end to end on a real broker: ML-100K slice in, one valid list per user out, bad messages dead-lettered.

One worker subprocess consumes the first 3,000 ML-100K events interleaved with malformed messages; the tests
check the latest list of every user, the dead-letter topic and that the worker never restarted.
"""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
from worker_support import (event_bytes, input_positions, latest_lists, make_checkpoint, ml100k, produce,
                            read_topic, start_worker)

pytestmark = pytest.mark.broker

N_EVENTS = 3000
TOP_K = 10
BAD = [  # (value, expected reason)
    (b"not json at all", "invalid_json"),
    (b"", "empty_value"),
    (b'{"user_id": "u1"}', "missing_item_id"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'{"user_id": "u1", "item_id": "50", "rating": "five"}', "bad_rating_type"),
    (b"\xff\xfe\xfa", "invalid_utf8"),
    (b'{"user_id": "u1", "item_id": "50", "timestamp": 1e15}', "timestamp_out_of_range"),
]
COLD_USER, UNKNOWN_ITEM = "cold-user-1", "no-such-item-xyz"


@pytest.fixture(scope="module")
def run(broker, tmp_path_factory, runtime):
    work = tmp_path_factory.mktemp("worker")
    ds, events = ml100k(N_EVENTS)
    items = sorted({str(i) for i in ds.item_ids})
    version = make_checkpoint(work / "ck", items, seed=1)
    tag = uuid.uuid4().hex[:8]
    topics = {"input_topic": f"in-{tag}", "output_topic": f"out-{tag}"}
    worker = start_worker(broker, work / "ck", work, group=f"g-{tag}", runtime=runtime, **topics)
    try:
        worker.wait_ready()
        pid = worker.proc.pid
        messages: list[tuple[bytes | None, bytes | None]] = []
        step = N_EVENTS // len(BAD)
        bad_iter = iter(BAD)
        for n, (u, i, r, ts) in enumerate(events):
            messages.append((u.encode(), event_bytes(u, i, r, ts)))
            if n % step == step // 2:
                bad = next(bad_iter, None)
                if bad is not None:
                    messages.append((b"bad-key", bad[0]))
        messages.append((COLD_USER.encode(), event_bytes(COLD_USER, UNKNOWN_ITEM, 5.0)))  # no timestamp: Kafka's
        total = produce(broker, topics["input_topic"], messages, timestamp_ms=int(time.time() * 1000))
        worker.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= total, timeout=90,
                        what=f"{total} events consumed")
        settled = worker.value("metarec_recommendations_published_total")
        while True:  # the last batch's lists are counted after their delivery
            time.sleep(1.0)
            now = worker.value("metarec_recommendations_published_total")
            if now == settled:
                break
            settled = now
        out = read_topic(broker, topics["output_topic"], expect=int(settled), timeout=30)
        inputs = read_topic(broker, topics["input_topic"], expect=total, timeout=30)
        dlq = read_topic(broker, topics["input_topic"] + ".dlq", expect=len(BAD), timeout=20)
        yield {"worker": worker, "pid": pid, "version": version, "out": out, "inputs": inputs, "dlq": dlq,
               "total": total, "published": settled, "topics": topics, "metrics": worker.metrics()}
    finally:
        worker.kill()


def test_every_touched_user_gets_k_new_items_as_of_their_newest_event(run):
    latest = latest_lists(run["out"])
    positions = input_positions(run["inputs"])
    assert len(positions) > 30 and set(positions) == set(latest)
    for user, evs in positions.items():
        lst = latest[user]
        assert len(lst["items"]) == TOP_K and len(set(lst["items"])) == TOP_K, user
        assert len(lst["scores"]) == TOP_K and lst["scores"] == sorted(lst["scores"], reverse=True)
        seen = {item for _, _, item in evs}
        assert not seen & set(lst["items"]), f"{user} was recommended items they interacted with"
        partition, offset, _ = max(evs, key=lambda e: e[1])
        assert lst["as_of"] == {"topic": run["topics"]["input_topic"], "partition": partition, "offset": offset}
        assert lst["model_version"] == run["version"]
        assert lst["generated_at"] >= lst["event_timestamp"]


def test_every_published_list_is_well_formed(run):
    assert len(run["out"]) == run["published"] > 0
    for m in run["out"]:
        v = json.loads(m.value())
        assert set(v) == {"user_id", "items", "scores", "model_version", "as_of", "event_timestamp", "generated_at",
                          "because"}  # the contract's optional "because": the worker always sends it
        assert len(v["because"]) == len(v["items"]) and all(b is None or isinstance(b, str) for b in v["because"])
        assert m.key().decode() == v["user_id"]


def test_cold_user_with_unknown_item_gets_a_list_and_is_counted(run):
    lst = latest_lists(run["out"])[COLD_USER]
    assert len(lst["items"]) == TOP_K and UNKNOWN_ITEM not in lst["items"]
    # no timestamp in the event: the Kafka record timestamp (set by the test producer to "now") is used
    assert abs(lst["event_timestamp"] - time.time()) < 600
    assert run["metrics"]["metarec_unknown_items_total"] >= 1


def test_malformed_messages_land_in_the_dlq_with_reason_and_source(run):
    dlq = run["dlq"]
    assert len(dlq) == len(BAD)
    by_pos = {(m.partition(), m.offset()): m for m in run["inputs"]}
    got = []
    for m in dlq:
        headers = dict(m.headers() or [])
        topic, partition, offset = headers["source"].decode().rsplit("/", 2)
        assert topic == run["topics"]["input_topic"]
        original = by_pos[(int(partition), int(offset))]
        assert (m.value() or b"") == (original.value() or b"") and m.key() == original.key() == b"bad-key"
        got.append(((m.value() or b""), headers["error"].decode()))
    assert sorted(got) == sorted(BAD)


def test_counters_match_what_was_sent_and_the_worker_never_restarted(run):
    m, worker = run["metrics"], run["worker"]
    assert m["metarec_events_consumed_total"] == run["total"]
    for value, reason in BAD:
        assert m[f'metarec_events_invalid_total{{reason="{reason}"}}'] == 1.0, reason
    invalid = sum(v for k, v in m.items() if k.startswith("metarec_events_invalid_total"))
    assert invalid == len(BAD)
    assert m["metarec_recommendations_published_total"] == len(run["out"])
    assert worker.proc.poll() is None and worker.proc.pid == run["pid"]
    assert worker.get("/healthz")[0] == 200
    assert worker.get("/readyz")[0] == 200


def test_a_user_whose_state_breaks_the_learner_is_dead_lettered_alone(tmp_path):
    """Batch isolation without Kafka: one corrupt stored record fails the batched call; the batch is retried user
    by user, that user's events go to the DLQ with reason processing_error, everyone else gets a list."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import OnlineConfig, OnlineLearner
    from adapters.online.records import UserRecord
    from stream.worker.core import RawMessage, WorkerCore
    from stream.worker.metrics import WorkerMetrics

    items = [str(i) for i in range(1, 50)]
    make_checkpoint(tmp_path / "ck", items, seed=5)
    learner = OnlineLearner(Checkpoint.load(tmp_path / "ck"), OnlineConfig(top_k=5))
    metrics = WorkerMetrics()
    core = WorkerCore(learner, metrics, "in", "out")
    raw = [RawMessage("in", 0, n, u.encode(), event_bytes(u, i, 4.0, 1e9 + n), 1e9)
           for n, (u, i) in enumerate([("good", "1"), ("bad", "2"), ("good", "3"), ("other", "4")])]
    good, dead = core.parse(raw)
    assert not dead and len(good) == 4
    # a corrupt record: its seen-items bitmap does not match its item-table size (a record from a smaller item
    # table is not corrupt: tables grow online and such records are resized)
    broken = UserRecord.empty(n_items=learner.n_items, vocab=learner.vocab)
    broken.seen = np.zeros(7, dtype=bool)
    out = core.run(good, {"good": None, "bad": broken, "other": None})
    assert {r.user_id for r in out.result.recommendations} == {"good", "other"}
    assert set(out.records) == {"good", "other"}
    assert [(d.topic, dict(d.headers)["source"]) for d in out.dead] == [("in.dlq", b"in/0/1")]
    assert dict(out.dead[0].headers)["error"].startswith(b"processing_error")
    assert metrics.registry.get_sample_value("metarec_events_invalid_total", {"reason": "processing_error"}) == 1
