"""Two workers in one group split the partitions; one is killed mid-stream and the survivor takes over its users
with their state (windows) restored from the changelog."""
from __future__ import annotations

import uuid

import pytest
from worker_support import (event_bytes, input_positions, latest_lists, make_checkpoint, ml100k, produce,
                            read_topic, start_worker)
from worker_support import wait_until as _wait

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PHASE = 2000
WINDOW = 8


def test_survivor_takes_over_users_with_windows_intact(broker, tmp_path, runtime):
    from adapters.online.records import UserRecord
    from stream.worker.state_layout import changelog_topic
    from stream.worker.state_layout import is_internal_key

    ds, events = ml100k(2 * PHASE)
    items = sorted({str(i) for i in ds.item_ids})
    make_checkpoint(tmp_path / "ck", items, seed=2)
    tag = uuid.uuid4().hex[:8]
    group, src, dst = f"g-{tag}", f"in-{tag}", f"out-{tag}"
    common = dict(group=group, input_topic=src, output_topic=dst, extra=["--window", str(WINDOW)], runtime=runtime)
    a = start_worker(broker, tmp_path / "ck", tmp_path, name="a", **common)
    b = None
    try:
        a.wait_ready()
        b = start_worker(broker, tmp_path / "ck", tmp_path, name="b", **common)
        b.wait_ready()
        _wait(lambda: a.get("/readyz")[0] == b.get("/readyz")[0] == 200
              and a.value("metarec_assigned_partitions") + b.value("metarec_assigned_partitions") == 4
              and a.value("metarec_assigned_partitions") > 0 and b.value("metarec_assigned_partitions") > 0,
              60, "the two workers to split the 4 partitions")

        def consumed(w) -> float:
            return w.value("metarec_events_consumed_total")

        msgs = [(u.encode(), event_bytes(u, i, r, ts)) for u, i, r, ts in events]
        produce(broker, src, msgs[:PHASE])
        _wait(lambda: consumed(a) + consumed(b) >= PHASE, 60, "phase 1 consumed by both workers")
        assert consumed(a) > 0 and consumed(b) > 0
        before = consumed(a)
        produce(broker, src, msgs[PHASE:])
        _wait(lambda: consumed(a) > before or consumed(a) + consumed(b) >= 2 * PHASE, 30, "worker a in phase 2")
        a.kill()  # SIGKILL mid-stream: no commit, no goodbye; b must restore a's users from the changelog

        _wait(lambda: b.value("metarec_assigned_partitions") == 4, 60, "b to own every partition", alive=[b])
        positions = input_positions(read_topic(broker, src, expect=2 * PHASE))

        def all_served():
            latest = latest_lists(read_topic(broker, dst, idle=1.0))
            return latest if all(u in latest and latest[u]["as_of"]["offset"] == max(o for _, o, _ in evs)
                                 for u, evs in positions.items()) else None

        latest = _wait(all_served, 90, "every user's list as of their newest event", step=2.0, alive=[b])
        assert b.proc.poll() is None
        for user, evs in positions.items():
            seen = {item for _, _, item in evs}
            assert not seen & set(latest[user]["items"]), user

        # The state of every user, as the changelog holds it now: the window = their last WINDOW input events,
        # each exactly once, although b consumed again what a had processed but not committed.
        changelog = read_topic(broker, changelog_topic(group), idle=1.5)
        records: dict[str, tuple[int, UserRecord]] = {}
        for m in changelog:  # per key, the last value (partitions are read in order)
            if not is_internal_key(m.key()):
                records[m.key().decode()] = (m.partition(), UserRecord.from_bytes(m.value()))
        assert set(records) == set(positions)
        for user, evs in positions.items():
            partition, rec = records[user]
            assert {p for p, _, _ in evs} == {partition}, "state must live in the user's input partition"
            expected = [o for _, o, _ in evs][-WINDOW:]
            assert rec.offsets.tolist() == expected, user
            assert rec.last_offset == expected[-1]
    finally:
        a.kill()
        if b is not None:
            b.kill()
