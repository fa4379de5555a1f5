"""``metarec forget`` against a real worker: the acknowledgement tombstone on the output topic, the changelog
tombstone, idempotence, and the user still gone after the worker was killed (SIGKILL) and restarted.

The worker runs with a 10-minute commit interval: after its first commit, the only input commits before the kill
are the ones the forget itself makes. Without them, the forgotten user's events would be delivered again after the restart and rebuild
the record. The catalog has 12 items and lists have 10: the forgotten user's items 0-3 can only appear in a list of
a *fresh* user (a restored record excludes them, leaving 7 candidates), while the other user, restored from the
changelog, keeps excluding the items they saw.
"""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from worker_support import REPO, committed_offsets, event_bytes, latest_lists, make_checkpoint, produce, read_to_end, start_worker
from worker_support import wait_until as _wait

pytestmark = pytest.mark.broker

ITEMS = [f"i{n}" for n in range(12)]
GONE, KEPT = "forget-me", "keep-me"
GONE_ITEMS, KEPT_ITEMS = ITEMS[:4], ITEMS[:3]
T0 = 1.7e9


def _forget(broker: str, user: str, topics: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", "forget", "--bootstrap", broker, "--user", user,
                           "--group", topics["group"], "--input", topics["input_topic"],
                           "--output", topics["output_topic"], "--wait", "60"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def _lists_and_acks(broker: str, topic: str) -> tuple[dict[str, dict], list[tuple[str, bytes]]]:
    msgs = read_to_end(broker, topic)
    acks = [(m.key().decode(), dict(m.headers() or []).get("forget-request", b"")) for m in msgs
            if m.value() is None]
    return latest_lists([m for m in msgs if m.value() is not None]), acks


def _last_values(broker: str, changelog: str) -> dict[str, bytes | None]:
    from stream.worker.state_layout import is_internal_key

    out: dict[str, bytes | None] = {}
    for m in read_to_end(broker, changelog):
        if not is_internal_key(m.key()):
            out[m.key().decode()] = m.value()
    return out


def test_forget_acks_tombstones_is_idempotent_and_survives_a_restart(broker, tmp_path, runtime):
    from adapters.online.records import UserRecord
    from stream.worker.state_layout import changelog_topic

    make_checkpoint(tmp_path / "ck", ITEMS, seed=7)
    tag = uuid.uuid4().hex[:8]
    topics = {"group": f"g-{tag}", "input_topic": f"in-{tag}", "output_topic": f"out-{tag}"}
    common = dict(extra=["--commit-interval", "600"], state="w", runtime=runtime, **topics)
    w = start_worker(broker, tmp_path / "ck", tmp_path, name="w1", **common)
    w2 = None
    try:
        w.wait_ready()
        # the worker's first commit comes with its first batch; then none for 10 minutes
        produce(broker, topics["input_topic"], [(b"warm-up", event_bytes("warm-up", ITEMS[5], 5.0, T0))])
        _wait(lambda: sum(committed_offsets(broker, topics["group"], topics["input_topic"]).values()) == 1, 60,
              "the first commit", alive=[w])
        events = [(GONE, item, T0 + n) for n, item in enumerate(GONE_ITEMS)]
        events += [(KEPT, item, T0 + n) for n, item in enumerate(KEPT_ITEMS)]
        produce(broker, topics["input_topic"], [(u.encode(), event_bytes(u, i, 5.0, ts)) for u, i, ts in events])
        _wait(lambda: {GONE, KEPT} <= set(_lists_and_acks(broker, topics["output_topic"])[0]), 60,
              "both users' lists", alive=[w])

        # the premise: nothing of the input is committed yet (else a restart would not deliver the events again)
        assert sum(committed_offsets(broker, topics["group"], topics["input_topic"]).values()) == 1
        r = _forget(broker, GONE, topics)
        assert r.returncode == 0 and "forgotten" in r.stdout, (r.stdout, r.stderr, w.tail())
        lists, acks = _lists_and_acks(broker, topics["output_topic"])
        assert [u for u, _ in acks] == [GONE] and acks[0][1], "one acknowledgement tombstone, with the request id"
        records = _last_values(broker, changelog_topic(topics["group"]))
        assert records[GONE] is None and records[KEPT] is not None  # the changelog's last word on the user
        assert w.value("metarec_users_forgotten_total") == 1

        # idempotent: the same user again, and a user the worker never saw, are both acknowledged
        for user in (GONE, "never-seen"):
            r = _forget(broker, user, topics)
            assert r.returncode == 0 and "forgotten" in r.stdout, (r.stdout, r.stderr)
        assert w.value("metarec_users_forgotten_total") == 3
        assert [u for u, _ in _lists_and_acks(broker, topics["output_topic"])[1]] == [GONE, GONE, "never-seen"]

        w.kill()  # SIGKILL: the local store is discarded, the state restored from the changelog
        w2 = start_worker(broker, tmp_path / "ck", tmp_path, name="w2", **common)
        w2.wait_ready(90)
        after = [(GONE, ITEMS[-1], T0 + 100), (KEPT, ITEMS[-1], T0 + 100)]
        produce(broker, topics["input_topic"], [(u.encode(), event_bytes(u, i, 5.0, ts)) for u, i, ts in after])

        def newest_lists() -> dict[str, dict] | None:
            latest = _lists_and_acks(broker, topics["output_topic"])[0]
            fresh = {u: v for u, v in latest.items() if v["event_timestamp"] == T0 + 100}
            return fresh if set(fresh) == {GONE, KEPT} else None

        latest = _wait(newest_lists, 90, "both users' lists after the restart", alive=[w2])
        # the forgotten user starts afresh: the items of the forgotten events are recommendable again
        assert set(GONE_ITEMS) & set(latest[GONE]["items"]), latest[GONE]
        # the other user's record came back from the changelog: what they saw is still excluded
        assert not set(KEPT_ITEMS + [ITEMS[-1]]) & set(latest[KEPT]["items"]), latest[KEPT]
        time.sleep(0.5)
        rec = UserRecord.from_bytes(_last_values(broker, changelog_topic(topics["group"]))[GONE])
        assert len(rec.offsets) == 1, "the new record holds only the event after the forget"
    finally:
        w.kill()
        if w2 is not None:
            w2.kill()


def test_forget_without_topics_is_an_error_and_without_a_worker_times_out(broker):
    from confluent_kafka.admin import AdminClient

    from stream.kafka.client import client_config, ensure_topics

    tag = uuid.uuid4().hex[:8]
    topics = {"group": f"g-{tag}", "input_topic": f"in-{tag}", "output_topic": f"out-{tag}"}
    r = _forget(broker, "u1", topics)  # no worker ever ran: neither the control nor the input topic exists
    assert r.returncode == 2 and "start a worker of the group first" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    ensure_topics(broker, {topics["input_topic"]: (3, None), topics["output_topic"]: (3, None)})
    r = subprocess.run([sys.executable, "-m", "stream", "forget", "--bootstrap", broker, "--user", "u1",
                        "--group", topics["group"], "--input", topics["input_topic"],
                        "--output", topics["output_topic"], "--wait", "1"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no acknowledgement" in r.stderr, (r.stdout, r.stderr)
    meta = AdminClient(client_config(broker)).list_topics(timeout=10).topics
    assert len(meta[f"g-{tag}-control"].partitions) == 3  # created like the input: co-partitioned
    ensure_topics(broker, {f"g2-{tag}-control": (2, None)})
    r = _forget(broker, "u1", dict(topics, group=f"g2-{tag}"))
    assert r.returncode == 2 and "partitions" in r.stderr, r.stderr


def test_with_two_workers_each_request_reaches_the_worker_that_owns_the_user(broker, tmp_path, runtime):
    from stream.kafka.partitioner import partition_for

    make_checkpoint(tmp_path / "ck", ITEMS, seed=8)
    tag = uuid.uuid4().hex[:8]
    topics = {"group": f"g-{tag}", "input_topic": f"in-{tag}", "output_topic": f"out-{tag}"}
    users: dict[int, str] = {}  # one user in each of the 4 partitions
    for n in range(100):
        users.setdefault(partition_for(f"user-{n}".encode(), 4), f"user-{n}")
    assert len(users) == 4
    a = start_worker(broker, tmp_path / "ck", tmp_path, name="a", runtime=runtime, **topics)
    b = None
    try:
        a.wait_ready()
        b = start_worker(broker, tmp_path / "ck", tmp_path, name="b", runtime=runtime, **topics)
        b.wait_ready()
        _wait(lambda: a.get("/readyz")[0] == b.get("/readyz")[0] == 200
              and a.value("metarec_assigned_partitions") == b.value("metarec_assigned_partitions") == 2,
              90, "the two workers to split the 4 partitions", alive=[a, b])
        produce(broker, topics["input_topic"], [(u.encode(), event_bytes(u, item, 5.0, T0 + n))
                                                for u in users.values() for n, item in enumerate(GONE_ITEMS)])
        _wait(lambda: set(users.values()) <= set(_lists_and_acks(broker, topics["output_topic"])[0]), 60,
              "every user's list", alive=[a, b])
        for user in users.values():
            r = _forget(broker, user, topics)
            assert r.returncode == 0 and "forgotten" in r.stdout, (r.stdout, r.stderr)
        # each worker carried out the requests of its own two partitions
        assert a.value("metarec_users_forgotten_total") == b.value("metarec_users_forgotten_total") == 2
        produce(broker, topics["input_topic"], [(u.encode(), event_bytes(u, ITEMS[-1], 5.0, T0 + 100))
                                                for u in users.values()])

        def newest_lists() -> dict[str, dict] | None:
            latest = _lists_and_acks(broker, topics["output_topic"])[0]
            fresh = {u: v for u, v in latest.items() if v["event_timestamp"] == T0 + 100}
            return fresh if set(fresh) == set(users.values()) else None

        latest = _wait(newest_lists, 60, "every user's list after the forget", alive=[a, b])
        for user, lst in latest.items():  # the owner dropped the record: the old items are recommendable again
            assert set(GONE_ITEMS) & set(lst["items"]), (user, lst)
    finally:
        a.kill()
        if b is not None:
            b.kill()
