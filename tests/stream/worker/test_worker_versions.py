"""A new checkpoint version is picked up without restart and shows in the lists' model_version."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from worker_support import event_bytes, make_checkpoint, ml100k, produce, read_topic, start_worker

pytestmark = pytest.mark.broker


def test_new_checkpoint_is_served_without_restart(broker, tmp_path, runtime):
    ds, events = ml100k(1000)
    items = sorted({str(i) for i in ds.item_ids})
    models = tmp_path / "models"
    v1 = make_checkpoint(models / "v1", items, seed=11)
    (models / "LATEST").write_text("v1\n")
    tag = uuid.uuid4().hex[:8]
    src, dst = f"in-{tag}", f"out-{tag}"
    w = start_worker(broker, models, tmp_path, group=f"g-{tag}", input_topic=src, output_topic=dst, runtime=runtime,
                     extra=["--model-poll", "0.5"])
    try:
        w.wait_ready()
        pid = w.proc.pid
        assert w.value(f'metarec_model_info{{meta="fomaml",model="mf",version="{v1}"}}') == 1.0
        msgs = [(u.encode(), event_bytes(u, i, r, ts)) for u, i, r, ts in events]
        produce(broker, src, msgs[:500])
        w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= 500, 60, what="first half consumed")
        before = read_topic(broker, dst, idle=1.5)
        assert before and {json.loads(m.value())["model_version"] for m in before} == {v1}

        # LATEST names a corrupt version: counted once (not per poll), logged once, flagged; v1 stays served
        make_checkpoint(models / "broken", items, seed=13)
        (models / "broken" / "weights.safetensors").write_bytes(b"half written")
        (models / "LATEST").write_text("broken\n")
        w.wait_for(lambda m: m.get("metarec_model_rollout_failing") == 1.0, 30, what="the failed roll-out")
        time.sleep(2.5)  # five more polls of the same broken version
        m = w.metrics()
        assert m['metarec_model_load_failures_total{reason="corrupt"}'] == 1.0
        assert sum(v for k, v in m.items() if k.startswith("metarec_model_load_failures_total")) == 1.0
        assert m["metarec_model_rollout_failing"] == 1.0 and m["metarec_model_switches_total"] == 0
        assert m[f'metarec_model_info{{meta="fomaml",model="mf",version="{v1}"}}'] == 1.0
        assert w.log.read_text(errors="replace").count("model roll-out: cannot serve") == 1

        # publish v2 the safe way: write the directory completely, then point LATEST at it
        v2 = make_checkpoint(models / "v2", items, seed=12)
        assert v2 != v1
        (models / "LATEST").write_text("v2\n")
        m = w.wait_for(lambda m: m.get("metarec_model_switches_total", 0) >= 1, 30, what="the model switch")
        switched = time.time()
        assert m[f'metarec_model_info{{meta="fomaml",model="mf",version="{v2}"}}'] == 1.0
        assert not any(k.startswith("metarec_model_info") and v1 in k for k in m)
        assert m["metarec_model_rollout_failing"] == 0.0  # settled
        assert 0.0 <= m["metarec_model_version_age_seconds"] < 120.0  # v2 was written moments ago
        assert w.get("/readyz")[0] == 200 and v2 in w.get("/readyz")[1]

        produce(broker, src, msgs[500:])
        w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= 1000, 60, what="second half consumed")
        time.sleep(1.0)
        lists = [json.loads(m.value()) for m in read_topic(broker, dst, idle=1.5)]
        after = [v for v in lists if v["generated_at"] > switched]
        assert len(lists) > len(before) and len(after) == len(lists) - len(before)
        assert {v["model_version"] for v in after} == {v2}
        assert w.proc.poll() is None and w.proc.pid == pid, "the worker must not restart"
        assert w.value("metarec_model_switches_total") == 1.0
    finally:
        w.kill()


def test_resolve_checkpoint_latest_newest_and_errors(tmp_path):
    import os

    from adapters.errors import MetarecError
    from stream.worker.versions import resolve_checkpoint

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.safetensors").write_bytes(b"")
    os.utime(tmp_path / "a", (1e9, 1e9))
    os.utime(tmp_path / "a" / "weights.safetensors", (1e9, 1e9))
    assert resolve_checkpoint(tmp_path) == tmp_path / "b"  # newest without LATEST
    (tmp_path / "LATEST").write_text("a\n")
    assert resolve_checkpoint(tmp_path) == tmp_path / "a"
    assert resolve_checkpoint(tmp_path / "b") == tmp_path / "b"  # a checkpoint directory itself
    (tmp_path / "LATEST").write_text("missing\n")
    with pytest.raises(MetarecError, match="not a checkpoint directory"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(MetarecError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")


def test_watcher_skips_an_unloadable_candidate_and_keeps_serving(tmp_path):
    from adapters.meta.checkpoint import Checkpoint
    from stream.worker.versions import CheckpointWatcher

    items = [str(i) for i in range(1, 30)]
    v1 = make_checkpoint(tmp_path / "v1", items, seed=1)
    (tmp_path / "LATEST").write_text("v1")
    watcher = CheckpointWatcher(tmp_path, Checkpoint.load)
    assert watcher.load_initial().version == v1
    assert watcher.poll() is None
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "weights.safetensors").write_bytes(b"half written")
    (tmp_path / "LATEST").write_text("v2")
    assert watcher.poll() is None and watcher.current.version == v1  # broken candidate: still v1
    v2 = make_checkpoint(tmp_path / "v2", items, seed=2)
    assert watcher.poll().version == v2


def test_unreadable_latest_file_is_a_clear_error(tmp_path) -> None:
    from adapters.errors import MetarecError
    from stream.worker.versions import resolve_checkpoint

    (tmp_path / "LATEST").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(MetarecError, match="cannot read .*LATEST"):
        resolve_checkpoint(tmp_path)
