"""Events that were committed but never processed are processed at the next start (stream.runtime.faust.acked_unprocessed).

The failure this guards against: faust 0.15.3 can ack - and so commit - input messages that a suspended stream
skipped during a rebalance, and a kill -9 before the worker notices loses them for good. The test builds that
state deterministically: a worker processes the first part of a replay and stops; the rest is produced, and the
group's offsets are then committed at the end of every partition *without processing anything* (what faust's
skip-and-ack does). A restarted worker receives no message at all; it must find ``[processed mark, committed)``
of each partition by itself, process it, and leave every user's record and list as of their newest event.
"""
from __future__ import annotations

import time
import uuid

import pytest
from worker_support import (committed_offsets, event_bytes, input_positions, latest_lists, make_checkpoint, ml100k,
                            produce, read_to_end, read_topic, start_worker)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.faust]  # a repair of the faust runtime

FIRST, N = 1_500, 4_000
EXTRA = 200  #: events produced after the recovery


def commit_at(bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float = 60.0) -> float:
    """Join ``group``, commit ``ends`` without processing anything (as a skip-and-ack would), leave; seconds taken.

    The broker takes commits from members only, and keeps the group's partition-assignment protocol (faust's,
    named "faust") even when the group is empty: the committer joins with an assignor of that name.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    class FaustNamed(RoundRobinPartitionAssignor):
        name = "faust"

    async def run() -> float:
        t0 = time.monotonic()
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             session_timeout_ms=2000, heartbeat_interval_ms=500,
                             partition_assignment_strategy=(FaustNamed,))
        await c.start()
        try:
            while len(c.assignment()) < len(ends):
                assert time.monotonic() - t0 < timeout, f"not assigned {topic} within {timeout} s"
                await c.getmany(timeout_ms=200)
            await c.commit({TopicPartition(topic, p): o for p, o in ends.items()})
        finally:
            await c.stop()
        return time.monotonic() - t0

    return asyncio.run(run())


def test_offsets_committed_past_the_processed_mark_are_processed_at_restart(broker, tmp_path, figures):
    from adapters.online.records import UserRecord
    from stream.worker.state_layout import changelog_topic
    from stream.worker.state_layout import is_internal_key

    ds, events = ml100k(N)
    make_checkpoint(tmp_path / "ck", sorted({str(i) for i in ds.item_ids}), seed=3)
    tag = uuid.uuid4().hex[:8]
    # faust only: the kafka runtime commits nothing it has not processed and delivered (stream.runtime.kafka.runner)
    common = dict(group=f"mark-{tag}", input_topic=f"min-{tag}", output_topic=f"mout-{tag}", state="w", runtime="faust",
                  extra=["--batch-size", "200", "--state-ttl", "0"])
    group, topic = common["group"], common["input_topic"]
    msgs = [(u.encode(), event_bytes(u, i, r, ts)) for u, i, r, ts in events]
    produce(broker, topic, msgs[:FIRST], timestamp_ms=int(time.time() * 1000))

    w = start_worker(broker, tmp_path / "ck", tmp_path, name="first", **common)
    try:
        w.wait_ready(timeout=90)
        deadline = time.monotonic() + 90
        while sum(committed_offsets(broker, group, topic).values()) < FIRST:
            assert time.monotonic() < deadline and w.proc.poll() is None, w.tail()
            time.sleep(0.5)
        code, _ = w.terminate(timeout=20)
        assert code == 0, w.tail()
    finally:
        w.kill()

    produce(broker, topic, msgs[FIRST:], timestamp_ms=int(time.time() * 1000))
    positions = input_positions(read_topic(broker, topic, expect=N, timeout=60))
    ends: dict[int, int] = {}
    for evs in positions.values():
        for p, o, _ in evs:
            ends[p] = max(ends.get(p, 0), o + 1)
    before = committed_offsets(broker, group, topic)
    commit_at(broker, group, topic, ends)
    assert committed_offsets(broker, group, topic) == ends
    skipped = sum(ends.values()) - sum(before.values())
    assert skipped == N - FIRST

    w = start_worker(broker, tmp_path / "ck", tmp_path, name="second", **common)
    try:
        t0 = time.monotonic()
        w.wait_ready(timeout=90)
        w.wait_for(lambda m: m.get("metarec_gap_events_total", 0) >= skipped, timeout=90,
                   what=f"{skipped} committed-but-unprocessed events fetched")
        w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= skipped, timeout=60,
                   what=f"{skipped} processed")
        recovered_s = time.monotonic() - t0
        # later events continue from the committed offsets: nothing is fetched twice, no gap is seen
        extra = [(u.encode(), event_bytes(u, i, r, ts + 1)) for u, i, r, ts in events[-EXTRA:]]
        produce(broker, topic, extra, timestamp_ms=int(time.time() * 1000))
        w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= skipped + EXTRA, timeout=60,
                   what=f"{EXTRA} later events processed")
        m = w.metrics()
        assert m["metarec_gap_events_total"] == skipped, m
        code, _ = w.terminate(timeout=20)
        assert code == 0, w.tail()
        log = w.log.read_text(errors="replace")
    finally:
        w.kill()
    assert "committed but never processed" in log
    assert "were never delivered by faust" not in log

    positions = input_positions(read_topic(broker, topic, expect=N + EXTRA, timeout=60))
    records: dict[str, UserRecord] = {}
    for msg in sorted(read_to_end(broker, changelog_topic(group)), key=lambda x: (x.partition(), x.offset())):
        if not is_internal_key(msg.key()) and msg.value() is not None:
            records[msg.key().decode()] = UserRecord.from_bytes(msg.value())
    latest = latest_lists(read_topic(broker, common["output_topic"], idle=2.0, timeout=90))
    for user, evs in positions.items():
        offsets = [o for _, o, _ in evs]
        assert records[user].last_offset == offsets[-1], user
        assert records[user].offsets.tolist() == offsets[-32:], user
        assert latest[user]["as_of"]["offset"] == offsets[-1], user
    figures(events=N + EXTRA, committed_unprocessed=skipped, fetched=int(m["metarec_gap_events_total"]),
            users_checked=len(positions), recovered_after_start_s=round(recovered_s, 1))
