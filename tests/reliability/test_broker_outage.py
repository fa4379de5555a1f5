"""Broker outage: the embedded broker is frozen (SIGSTOP) for 15 s mid-stream, then resumed (SIGCONT).

The worker rides it out without restart and without loss; while the broker is gone ``/healthz`` stays 200 (the
processing loop is alive: restarting would not help), ``/readyz`` answers 503 with the reason
"broker unreachable since <time> (<seconds>): ..." once the outage lasts longer than ``--stall-after``, and the log
says when it started and ended. Uses its own broker (the session broker is shared by other tests).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import pytest
from worker_support import (committed_offsets, event_bytes, input_positions, latest_lists, make_checkpoint, ml100k,
                            produce, read_topic, start_worker)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N_BEFORE, N_DURING, N_AFTER = 3_000, 2_000, 1_000
OUTAGE_S = 15.0
STALL_AFTER_S = 3.0


def test_worker_rides_out_a_15s_broker_freeze(tmp_path, figures, runtime):
    from stream.kafka.broker import EmbeddedBroker


    n = N_BEFORE + N_DURING + N_AFTER
    ds, events = ml100k(n)
    make_checkpoint(tmp_path / "ck", sorted({str(i) for i in ds.item_ids}), seed=8)
    msgs = [(u.encode(), event_bytes(u, i, r, ts)) for u, i, r, ts in events]
    tag = uuid.uuid4().hex[:8]
    topics = {"input_topic": f"oin-{tag}", "output_topic": f"oout-{tag}"}
    group = f"outage-{tag}"
    with EmbeddedBroker() as embedded:
        bootstrap, pid = embedded.bootstrap, embedded.pid
        assert pid is not None
        w = start_worker(bootstrap, tmp_path / "ck", tmp_path, group=group, **topics, runtime=runtime,
                         extra=["--batch-size", "200", "--stall-after", str(STALL_AFTER_S), "--probe-interval", "1"])
        frozen = False
        try:
            w.wait_ready(timeout=60)
            worker_pid = w.proc.pid
            produce(bootstrap, topics["input_topic"], msgs[:N_BEFORE], timestamp_ms=int(time.time() * 1000))
            w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= N_BEFORE // 2, 60, "half consumed")

            os.kill(pid, signal.SIGSTOP)
            frozen, t_stop = True, time.monotonic()
            during = threading.Thread(target=produce, args=(bootstrap, topics["input_topic"],
                                                            msgs[N_BEFORE:N_BEFORE + N_DURING]), daemon=True)
            during.start()  # buffered by the client until the broker answers again
            health: list[tuple[float, int, int, dict]] = []
            while time.monotonic() - t_stop < OUTAGE_S:
                hz, _ = w.get("/healthz", timeout=3)
                rz, body = w.get("/readyz", timeout=3)
                health.append((time.monotonic() - t_stop, hz, rz, json.loads(body)))
                time.sleep(0.5)
            os.kill(pid, signal.SIGCONT)
            frozen, t_cont = False, time.monotonic()

            recovered_ready = None
            while time.monotonic() - t_cont < 60:
                if w.get("/readyz")[0] == 200:
                    recovered_ready = time.monotonic() - t_cont
                    break
                time.sleep(0.25)
            during.join(timeout=60)
            assert not during.is_alive(), "the producer did not finish after the broker came back"
            produce(bootstrap, topics["input_topic"], msgs[N_BEFORE + N_DURING:], timestamp_ms=int(time.time() * 1000))
            committed: dict[int, int] = {}
            while time.monotonic() - t_cont < 120:
                committed = committed_offsets(bootstrap, group, topics["input_topic"])
                if sum(committed.values()) >= n:
                    break
                time.sleep(0.5)
            caught_up = time.monotonic() - t_cont
            assert w.proc.poll() is None and w.proc.pid == worker_pid, "the worker restarted or died"
            assert sum(committed.values()) == n, f"committed {committed}\n{w.tail()}"
            positions = input_positions(read_topic(bootstrap, topics["input_topic"], expect=n, timeout=60))
            latest = latest_lists(read_topic(bootstrap, topics["output_topic"], idle=2.0, timeout=60))
            for user, evs in positions.items():
                assert latest[user]["as_of"]["offset"] == evs[-1][1], user
            metrics = w.metrics()
            code, _ = w.terminate(timeout=20)
            assert code == 0
            log = w.log.read_text(errors="replace")
        finally:
            if frozen:
                os.kill(pid, signal.SIGCONT)
            w.kill()

    assert all(hz == 200 for _, hz, _, _ in health), [(round(t, 1), hz) for t, hz, _, _ in health]
    unready = [(t, body) for t, _, rz, body in health if rz == 503]
    assert unready, "readyz never reported the outage"
    first_unready = unready[0][0]
    assert first_unready <= STALL_AFTER_S + 4.0
    reasons = [body.get("reason", "") for _, body in unready]
    assert all(r.startswith(("broker unreachable since", "delivery of a micro-batch's output stalled since"))
               for r in reasons), reasons[:3]
    late = [body.get("reason", "") for t, body in unready if t > STALL_AFTER_S + 3.0]  # the probe has failed by now
    assert late and all(r.startswith("broker unreachable since") for r in late), late[:3]
    assert all(rz == 503 for t, _, rz, _ in health if t > STALL_AFTER_S + 4.0)
    assert recovered_ready is not None, "readyz did not return to 200 after the outage"
    assert "broker unreachable" in log and "broker reachable again" in log
    figures(outage_s=OUTAGE_S, events=n, users_checked=len(positions), first_503_after_s=round(first_unready, 1),
            ready_again_after_sigcont_s=round(recovered_ready, 1), all_committed_after_sigcont_s=round(caught_up, 1),
            healthz_samples_200=len(health), readyz_reason=reasons[-1][:70],
            gap_events=int(metrics.get("metarec_gap_events_total", 0)), same_pid=True)
