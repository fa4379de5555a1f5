"""200,000 distinct users through one worker: bounded memory, and inactive users' state expires by event time.

One event per user, event times 10 s apart (≈ 23 days of stream time), ``--state-ttl 604800`` (7 days). At the
end the worker's peak RSS (VmHWM) is below :data:`RSS_BOUND`, and the changelog topic holds a tombstone (value
None) for every user whose newest event is more than the TTL older than the stream's end (and for no user inside
the TTL), so a restore or a new owner never loads them again.
"""
from __future__ import annotations

import time
import uuid

import pytest
from worker_support import event_bytes, make_checkpoint, produce, read_to_end, start_worker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N_USERS = 200_000
STEP_S = 10.0
T0 = 1.0e9
TTL_S = 7 * 86_400.0
GIB = 1024 ** 3
RSS_BOUND = 1.0 * GIB  #: measured peak (VmHWM) 0.52–0.58 GiB on this machine (docs/RELIABILITY.md)


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_200k_users_bounded_rss_and_ttl_tombstones(broker, tmp_path, figures, runtime):
    items = [f"m{n}" for n in range(1_000)]
    make_checkpoint(tmp_path / "ck", items, seed=9)
    tag = uuid.uuid4().hex[:8]
    group, topic = f"mem-{tag}", f"min-{tag}"
    w = start_worker(broker, tmp_path / "ck", tmp_path, group=group, input_topic=topic,
                     output_topic=f"mout-{tag}", runtime=runtime, extra=["--state-ttl", str(int(TTL_S)), "--batch-size", "2000"])
    try:
        w.wait_ready(timeout=60)
        idle_kib = vm_kib(w.proc.pid, "VmRSS")
        t0 = time.monotonic()
        produce(broker, topic, ((f"u{i}".encode(), event_bytes(f"u{i}", items[(i * 7919) % len(items)], 4.0,
                                                               T0 + i * STEP_S)) for i in range(N_USERS)),
                timestamp_ms=int(time.time() * 1000))
        m = w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= N_USERS, timeout=240,
                       what=f"{N_USERS} events consumed")
        time.sleep(2.0)  # the last batch's tombstones and lists
        seconds = time.monotonic() - t0
        m = w.metrics()
        hwm_kib = vm_kib(w.proc.pid, "VmHWM")
        rss_kib = vm_kib(w.proc.pid, "VmRSS")
        code, _ = w.terminate(timeout=20)
        assert code == 0, w.tail()
    finally:
        w.kill()

    assert hwm_kib * 1024 < RSS_BOUND, f"peak RSS {hwm_kib / 1024 ** 2:.2f} GiB"
    from stream.worker.state_layout import is_internal_key

    end = T0 + (N_USERS - 1) * STEP_S
    messages = read_to_end(broker, f"{group}-users-changelog", timeout=120)
    written: dict[str, int] = {}  # user → changelog partition
    tombstoned: dict[str, int] = {}
    for msg in sorted(messages, key=lambda x: (x.partition(), x.offset())):
        if is_internal_key(msg.key()):
            continue
        user = msg.key().decode()
        if msg.value() is None:
            assert user in written, f"tombstone for {user} before its record"
            tombstoned[user] = tombstoned.get(user, 0) + 1
        else:
            written[user] = msg.partition()
            tombstoned.pop(user, None)  # a newer record revives the key
    assert len(written) == N_USERS
    # the watermark of a partition (median event time of its last micro-batch) trails the stream's end a little
    marks = {int(k.split('"')[1]): v for k, v in m.items() if k.startswith("metarec_state_watermark_seconds{")}
    assert len(marks) == 4 and all(end - 86_400 < w <= end for w in marks.values()), marks
    ts = {f"u{i}": T0 + i * STEP_S for i in range(N_USERS)}
    must = {u for u, t in ts.items() if t < marks[written[u]] - TTL_S}
    never = {u for u, t in ts.items() if t >= end - TTL_S}
    assert must == set(tombstoned), (f"{len(must - set(tombstoned))} expired users without a tombstone, "
                                     f"{len(set(tombstoned) - must)} users deleted inside the TTL")
    assert not never & set(tombstoned)
    assert all(n == 1 for n in tombstoned.values())
    assert m["metarec_state_expired_total"] == len(tombstoned)
    assert m["metarec_state_users"] == N_USERS - len(tombstoned)
    figures(users=N_USERS, seconds=round(seconds, 1), events_per_s=round(N_USERS / seconds),
            rss_idle_mib=round(idle_kib / 1024), rss_end_mib=round(rss_kib / 1024),
            peak_rss_vmhwm_mib=round(hwm_kib / 1024), rss_bound_gib=RSS_BOUND / GIB,
            ttl_days=TTL_S / 86_400, expired_with_tombstone=len(tombstoned),
            watermark_lag_h=round(max(end - w for w in marks.values()) / 3600, 1),
            kept=N_USERS - len(tombstoned), changelog_messages=len(messages))
