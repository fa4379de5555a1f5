"""Unit tests (no broker) of the reliability pieces: TTL index, offset contiguity, readiness reasons."""
from __future__ import annotations

import numpy as np

from adapters.online.records import UserRecord
from adapters.online.records import record_position
from stream.worker.expiry import StateExpiry
from stream.worker.offsets import OffsetTracker
from stream.worker.http import WorkerHealth


def _record(partition: int, ts: float) -> bytes:
    r = UserRecord.empty(n_items=5, vocab=1)
    r.append(item=1, rating=4.0, timestamp=ts, partition=partition, offset=3)
    return r.to_bytes()


def test_record_position_reads_the_header_only():
    assert record_position(_record(2, 123.5)) == (2, 123.5)
    assert record_position(b"garbage") is None and record_position(b"") is None


def test_expiry_by_event_time_watermark():
    ex = StateExpiry(ttl_s=100.0)
    for i, ts in enumerate([1000.0, 1050.0, 1100.0, 1200.0]):
        ex.touch(0, f"u{i}", ts)
    ex.touch(1, "other-partition", 0.0)
    assert ex.advance(0, [1210.0, 1220.0, 1230.0], now=1e9) == 1220.0  # median, not max
    assert sorted(ex.due(0)) == ["u0", "u1", "u2"]  # newest event < 1220 - 100
    assert ex.due(0) == [] and ex.due(1) == []  # partition 1 has no watermark yet
    ex.touch(0, "u3", 1300.0)  # a newer event supersedes the heap entry (1200)
    ex.advance(0, [1215.0, 1216.0, 1500.0], now=1e9)  # the watermark never moves back
    assert ex.watermark(0) == 1220.0
    ex.advance(0, [5000.0], now=2000.0)  # never beyond the wall clock
    assert ex.watermark(0) == 2000.0
    assert ex.due(0) == ["u3"] and ex.size() == 1


def test_one_far_future_event_cannot_expire_a_replay():
    ex = StateExpiry(ttl_s=86_400.0)
    for i in range(100):
        ex.touch(0, f"u{i}", 1.0e9 + i)
    ex.advance(0, [1.0e9 + i for i in range(99)] + [2.0e9], now=2.0e9)
    assert ex.due(0) == []


def test_expiry_rebuild_and_bounded_sweep():
    ex = StateExpiry(ttl_s=10.0, max_per_batch=3)
    items = [(f"u{i}".encode(), _record(i % 2, float(i))) for i in range(10)] + [(b"x", b"corrupt")]
    assert ex.rebuild(items, [0]) == 5
    ex.advance(0, [100.0], now=1e9)
    assert len(ex.due(0)) == 3 and len(ex.due(0)) == 2 and ex.size() == 0
    assert StateExpiry(ttl_s=0).due(0) == [] and not StateExpiry(None).enabled


def test_offset_tracker_finds_gaps_and_tolerates_redelivery():
    t = OffsetTracker()
    assert t.observe(0, 5) is None  # unknown start: the first message defines it
    t.expect(1, 0)
    assert t.observe(1, 0) is None and t.observe(1, 3) == (1, 3)
    assert t.observe(1, 2) is None and t.next[1] == 4  # redelivery below the expected offset: no gap, no rewind
    t.drop({1})
    assert not t.known(0) and t.known(1)


def test_processed_offset_stops_at_an_unfetched_hole():
    t = OffsetTracker()
    t.expect(2, 10)
    assert t.observe(2, 20) == (10, 20)
    assert t.processed(2) == 21
    t.hole(2, 14)  # the gap fetch got 10..13 only
    assert t.processed(2) == 14 and t.processed(3) is None
    t.drop(set())
    assert t.processed(2) is None and not t.holes


def test_processed_marks_are_internal_keys_that_no_user_id_can_take():
    from stream.worker.state_layout import END_MARKER, decode_mark, encode_mark, is_internal_key, mark_key

    assert is_internal_key(mark_key(0)) and is_internal_key(END_MARKER)
    for user in ("u1", "\x00metarec-batch-end", "ÿmetarec/processed/0", "\uffff"):
        assert not is_internal_key(user.encode("utf-8"))
    assert decode_mark(encode_mark(123456789)) == 123456789
    assert decode_mark(None) is None and decode_mark(b"\xff\xfe") is None


def test_local_state_cache_is_kept_after_a_clean_stop_and_discarded_after_a_crash(tmp_path):
    from stream.worker.localstate import CLEAN_STOP, claim_local_state, release_local_state

    tables = tmp_path / "v1" / "tables" / "users-0.db"
    tables.mkdir(parents=True)
    (tables / "data").write_text("x")
    release_local_state(tmp_path)
    assert claim_local_state(tmp_path, "rocksdb") is False and tables.exists()
    assert not (tmp_path / CLEAN_STOP).exists()  # running: a crash from here on is detected
    assert claim_local_state(tmp_path, "rocksdb") is True and not tables.exists()
    assert claim_local_state(tmp_path, "rocksdb") is False  # nothing left to discard


def test_readiness_reasons_and_liveness_semantics():
    h = WorkerHealth(stall_after_s=5.0)
    assert h.ready()[1]["reason"] == "no model loaded"
    h.model_loaded = True
    assert "assignment" in h.ready()[1]["reason"]
    h.assigned = True
    assert h.ready() == (True, {"status": "ready", "model_loaded": True, "partitions_assigned": True,
                                "partitions": 0, "model_version": "", "items_restored": True})
    h.items_restored = False  # a shared item state not restored yet
    assert h.ready()[0] is False and h.ready()[1]["reason"] == "restoring the shared item state"
    h.items_restored = True
    h.broker_probe(False, "metadata request failed: timed out", now=1000.0)
    assert h.problem(now=1004.0) is None  # shorter than the threshold
    assert h.problem(now=1006.0).startswith("broker unreachable since 1970-01-01T00:16:40Z (6.0 s)")
    assert h.live()[0]  # liveness ignores the broker
    h.broker_probe(True, now=1007.0)
    assert h.problem(now=1008.0) is None
    h.stall("delivery of a micro-batch's output", now=2000.0)
    assert "stalled since" in h.problem(now=2006.0)
    h.broker_probe(False, "down", now=2005.0)  # a stall while the broker is known to be down names the broker
    assert h.problem(now=2006.0).startswith("broker unreachable since")
    h.stall(None)
    h.broker_probe(True)
    assert h.ready()[0]
    assert np.isfinite(h.heartbeat)
