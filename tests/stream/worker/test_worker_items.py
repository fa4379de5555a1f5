"""The group's shared item state with real worker processes on a real broker, on each runtime
(stream/worker/item_owner.py, stream/kafka/topic_feed.py, adapters/online/items): two workers converge on the same
item rows, a new item met on one worker's partition is recommended on the other's, a worker killed with SIGKILL
restores the item state before it reports ready, and an idle item is deleted from every worker."""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from worker_support import (committed_offsets, event_bytes, latest_lists, produce, read_topic, start_worker,
                            wait_until)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

T0 = 1_000_000.0


@pytest.fixture(scope="module")
def seq_checkpoint(tmp_path_factory) -> Path:  # noqa: ANN001
    """A small trained seq checkpoint (items i0..i39) served with seq's online item side (prior, rows that learn)."""
    from synthetic_data import synthetic_dataset

    from adapters.meta.training import TrainConfig, train

    ck = train(synthetic_dataset(n_users=30, n_items=40, seed=3),
               TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                           model_config={"dim": 8, "rating_dim": 4}))
    out = tmp_path_factory.mktemp("items-ck") / "ck"
    ck.save(out)
    return out


def partition_of(user: str, partitions: int = 4) -> int:
    """The input partition of ``user``'s events (murmur2, as the test producer and faust partition)."""
    from aiokafka.partitioner import DefaultPartitioner

    every = list(range(partitions))
    return int(DefaultPartitioner()(user.encode(), every, every))


def users_on(partition: int, n: int, prefix: str) -> list[str]:
    out, k = [], 0
    while len(out) < n:
        if partition_of(f"{prefix}{k}") == partition:
            out.append(f"{prefix}{k}")
        k += 1
    return out


def owned(worker) -> list[int]:  # noqa: ANN001
    """The input partitions ``worker`` was assigned last (its log)."""
    found = re.findall(r"assigned input partitions \[([0-9, ]*)\]", worker.log.read_text(errors="replace"))
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


def item(worker, item_id: str) -> dict | None:  # noqa: ANN001
    code, body = worker.get(f"/items?id={item_id}")
    return json.loads(body) if code == 200 else None


def same_row(a: dict | None, b: dict | None) -> bool:
    """Both workers hold the same row of the item: as its owner merged it, and as the other applied it."""
    if a is None or b is None or a.get("model_version") is None or b.get("model_version") is None:
        return False
    return (a["events"] == b["events"] and a["model_version"] == b["model_version"] and a["offset"] == b["offset"]
            and a["neighbours"] == b["neighbours"]
            and np.allclose(a["tables"], b["tables"], rtol=1e-5, atol=1e-6)
            and abs(a["rating_delta"] - b["rating_delta"]) < 1e-6)


def wait(predicate, timeout: float, what: str, workers=(), step: float = 0.3):  # noqa: ANN001, ANN201
    return wait_until(predicate, timeout, what, step=step, alive=workers)


def two_workers(broker: str, ck: Path, tmp: Path, runtime: str, extra=()):  # noqa: ANN001, ANN201
    tag = uuid.uuid4().hex[:8]
    common = dict(group=f"g-{tag}", input_topic=f"in-{tag}", output_topic=f"out-{tag}", runtime=runtime,
                  extra=["--item-state", "shared", *extra])
    a = start_worker(broker, ck, tmp, name="a", **common)
    a.wait_ready()
    b = start_worker(broker, ck, tmp, name="b", **common)
    b.wait_ready()
    wait(lambda: a.get("/readyz")[0] == b.get("/readyz")[0] == 200 and len(owned(a)) == len(owned(b)) == 2
         and not set(owned(a)) & set(owned(b)), 60, "the two workers to split the 4 partitions", [a, b])
    return a, b, common


def test_two_workers_converge_and_a_new_item_crosses_partitions(broker, tmp_path, seq_checkpoint, runtime):
    a, b, common = two_workers(broker, seq_checkpoint, tmp_path, runtime)
    try:
        pa, pb = owned(a)[0], owned(b)[0]
        fans_a, fans_b = users_on(pa, 12, "fa"), users_on(pb, 12, "fb")
        shared = ["i1", "i2", "i3", "i4"]
        events = []
        for n in range(3):  # the same items on partitions of both workers, in the same seconds
            for k, u in enumerate(fans_a + fans_b):
                events.append((u, shared[(k + n) % 4], 4.0, T0 + 10 * n + k % 3))
        for k, u in enumerate(fans_a):  # only on a's partition: the anchor i7, then an item nobody has seen
            events += [(u, "i7", 5.0, T0 + 100 + 2 * k), (u, "brand-new", 5.0, T0 + 101 + 2 * k)]
        produce(broker, common["input_topic"], [(u.encode(), event_bytes(u, i, r, t)) for u, i, r, t in events])
        total = len(events)
        wait(lambda: a.value("metarec_events_consumed_total") + b.value("metarec_events_consumed_total") >= total,
             60, "both workers to consume every event", [a, b])
        assert a.value("metarec_events_consumed_total") > 0 and b.value("metarec_events_consumed_total") > 0

        # Convergence: the same rows, learned from both workers' events, in both workers.
        for i in shared + ["i7", "brand-new"]:
            wait(lambda i=i: same_row(item(a, i), item(b, i)), 30, f"the same row of {i} in both workers", [a, b])
        assert item(a, "i1")["events"] == sum(1 for e in events if e[1] == "i1")
        assert item(b, "brand-new")["online"] and item(b, "brand-new")["events"] == len(fans_a)
        wait(lambda: a.value("metarec_items_total") == b.value("metarec_items_total") == 41, 30,
             "metarec_items_total equal (40 items + the new one)", [a, b])
        lag = b.metrics()["metarec_item_state_lag_seconds"]
        assert 0 <= lag < 60

        # A new item in a list: a user of b's partition meets the anchor; b never saw brand-new in its own events.
        user = users_on(pb, 1, "newcomer")[0]
        produce(broker, common["input_topic"], [(user.encode(), event_bytes(user, "i7", 5.0, T0 + 200))])
        lists = wait(lambda: (latest_lists(read_topic(broker, common["output_topic"], idle=0.5)).get(user)), 30,
                     "the newcomer's list", [a, b])
        assert "brand-new" in lists["items"], lists
    finally:
        for w in (a, b):
            w.kill()


def test_a_killed_worker_restores_the_item_state_before_it_is_ready(broker, tmp_path, seq_checkpoint, runtime):
    a, b, common = two_workers(broker, seq_checkpoint, tmp_path, runtime, extra=["--store", "memory"])
    try:
        users = users_on(owned(a)[0], 10, "x") + users_on(owned(b)[0], 10, "y")
        events = [(u, f"i{(k * 7 + n) % 40}", 3.0 + n % 3, T0 + n) for n in range(4) for k, u in enumerate(users)]
        events += [(u, f"online-{k % 3}", 5.0, T0 + 50 + k) for k, u in enumerate(users)]
        produce(broker, common["input_topic"], [(u.encode(), event_bytes(u, i, r, t)) for u, i, r, t in events])
        probe = sorted({e[1] for e in events})
        wait(lambda: all(same_row(item(a, i), item(b, i)) for i in probe), 60, "both workers to agree", [a, b])
        before = {i: item(b, i) for i in probe}
        b.kill()  # SIGKILL: no goodbye; its item agent's partitions move to a, then back
        b2 = start_worker(broker, seq_checkpoint, tmp_path, name="b2", **{**common, "extra": ["--item-state", "shared", "--store", "memory"]})
        seen: list[tuple[int, str]] = []

        def ready() -> bool:
            try:
                code, body = b2.get("/readyz")
            except OSError:
                return False
            seen.append((code, json.loads(body).get("reason", "")))
            return code == 200

        wait(ready, 90, "the restarted worker to be ready", [b2, a], step=0.05)
        after = {i: item(b2, i) for i in probe}  # at the first 200: restored already
        for i in probe:
            assert same_row(after[i], before[i]), (i, after[i], before[i])
            assert same_row(after[i], item(a, i)), i
        assert all(code == 503 for code, _ in seen[:-1]) and seen[-1][0] == 200
        assert b2.value("metarec_items_total") == a.value("metarec_items_total") == 43

        # Killed mid-stream: what the group learned about items survives (counted at least once).
        more = [(u, f"i{(k * 3 + n) % 40}", 4.0, T0 + 100 + n) for n in range(6) for k, u in enumerate(users)]
        produce(broker, common["input_topic"], [(u.encode(), event_bytes(u, i, r, t)) for u, i, r, t in more])
        wait(lambda: a.value("metarec_events_consumed_total") > 0.3 * len(events), 30, "a in the new events", [a])
        a.kill()
        a2 = start_worker(broker, seq_checkpoint, tmp_path, name="a2", **{**common, "extra": ["--item-state", "shared", "--store", "memory"]})
        a2.wait_ready(90)
        produced: dict[str, int] = {}
        for e in events + more:
            produced[e[1]] = produced.get(e[1], 0) + 1

        def offsets() -> str:
            topic = f"{common['group']}-item-updates"
            msgs = read_topic(broker, topic, idle=1.0)
            ends: dict[int, int] = {}
            for m in msgs:
                ends[m.partition()] = max(ends.get(m.partition(), -1), m.offset())
            return (f"\n{topic}: last offset per partition {ends}, committed "
                    f"{committed_offsets(broker, common['group'], topic)}")

        def short() -> str:
            rows = {i: (item(a2, i), item(b2, i)) for i in produced}
            return "every item's events, in both workers; not yet (item, produced, a2 row, b2 row): " + "; ".join(
                f"{i} {n} {rows[i][0] and {k: rows[i][0][k] for k in ('events', 'offset')}} "
                f"{rows[i][1] and {k: rows[i][1][k] for k in ('events', 'offset')}}"
                for i, n in produced.items()
                if not (same_row(*rows[i]) and rows[i][0]["events"] >= n)) + offsets()

        wait(lambda: all(same_row(item(a2, i), item(b2, i)) and item(a2, i)["events"] >= n
                         for i, n in produced.items()), 90, short, [a2, b2])
    finally:
        for w in (a, b, locals().get("b2"), locals().get("a2")):
            if w is not None:
                w.kill()


def test_an_idle_item_is_deleted_from_every_worker(broker, tmp_path, seq_checkpoint, runtime):
    a, b, common = two_workers(broker, seq_checkpoint, tmp_path, runtime, extra=["--item-ttl", "600"])
    try:
        users = users_on(owned(a)[0], 3, "p") + users_on(owned(b)[0], 3, "q")
        early = [(u, "short-lived", 5.0, T0) for u in users] + [(u, "i1", 4.0, T0 + 1) for u in users]
        produce(broker, common["input_topic"], [(u.encode(), event_bytes(u, i, r, t)) for u, i, r, t in early])
        wait(lambda: item(a, "short-lived") and item(b, "short-lived"), 30, "the item in both workers", [a, b])
        assert a.value("metarec_items_total") == 41
        later = [(u, f"i{1 + k}", 4.0, T0 + 5_000 + k) for k, u in enumerate(users)]  # event time moves on
        produce(broker, common["input_topic"], [(u.encode(), event_bytes(u, i, r, t)) for u, i, r, t in later])
        wait(lambda: item(a, "short-lived") is None and item(b, "short-lived") is None, 60,
             lambda: f"the idle item to leave both workers; a: {item(a, 'short-lived')}, b: {item(b, 'short-lived')}",
             [a, b])
        assert a.value("metarec_items_total") == b.value("metarec_items_total") == 40
        assert a.value("metarec_items_expired_total") + b.value("metarec_items_expired_total") == 1
        assert item(a, "i1") is not None and item(b, "i1") is not None  # met again after the gap: kept
        tomb = [m for m in read_topic(broker, f"{common['group']}-items", idle=1.0)
                if m.key() == b"short-lived" and m.value() is None]
        assert tomb, "a tombstone on <group>-items"
    finally:
        for w in (a, b):
            w.kill()
