"""``metarec trainer`` with a worker running: new versions from the topic, switched to without restart, and the
worker's online item rows survive the switches."""
from __future__ import annotations

import sys
import time
import uuid

import pytest
from worker_support import (Worker, event_bytes, free_port, latest_lists, make_checkpoint, produce, read_topic, spawn,
                            start_worker)

from stream.worker.versions import publish_version

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ITEMS = [str(i) for i in range(1, 80)]
NEW = "brand-new-item"  # not in v0; met by the worker online, never in the trainer's window


def _start_trainer(broker: str, topic: str, out, workdir) -> Worker:
    port = free_port()
    log = workdir / "trainer.log"
    cmd = [sys.executable, "-m", "stream", "-v", "trainer", "--bootstrap", broker, "--topic", topic, "--out", str(out),
           "--retrain-every", "500", "--retrain-window", "300", "--epochs", "1", "--metrics-port", str(port)]
    return spawn(cmd, port, log)


def _events(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        u = f"u{(i * 7 + seed) % 40}"
        out.append((u.encode(), event_bytes(u, ITEMS[(i * 13 + seed) % len(ITEMS)], 4.0, 1.6e9 + seed * 10_000 + i)))
    return out


def test_trainer_versions_are_served_without_restart_and_online_items_survive(broker, tmp_path):
    from adapters.meta.checkpoint import Checkpoint

    tag = uuid.uuid4().hex[:8]
    src, dst, models = f"in-{tag}", f"out-{tag}", tmp_path / "models"
    make_checkpoint(tmp_path / "v0", ITEMS, seed=1)
    publish_version(models, Checkpoint.load(tmp_path / "v0"), name="v0")
    worker = start_worker(broker, models, tmp_path, group=f"g-{tag}", input_topic=src, output_topic=dst,
                          extra=["--model-poll", "1"])
    trainer = None
    try:
        worker.wait_ready()
        # the new item first: the trainer's window (the last 300 of ≥ 500 events) never holds it
        produce(broker, src, [(f"u{i}".encode(), event_bytes(f"u{i}", NEW, 5.0, 1.6e9 + i)) for i in range(3)])
        worker.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= 3, 60, "the new item's events")
        unknown = worker.value("metarec_unknown_items_total")
        assert unknown >= 1  # (events whose item had no row before their batch) the item got a row online
        trainer = _start_trainer(broker, src, models, tmp_path)
        trainer.wait_ready()
        versions = []
        for phase in (1, 2):
            produce(broker, src, _events(600, phase))
            trainer.wait_for(lambda m, n=phase: m.get("metarec_trainer_versions_total", 0) >= n, 120,
                             f"version {phase}")
            versions.append((models / "LATEST").read_text().strip())
            worker.wait_for(lambda m, n=phase: m.get("metarec_model_switches_total", 0) >= n, 60,
                            f"the worker's switch to version {phase}")
        assert len(set(versions)) == 2 and "v0" not in versions
        produce(broker, src, [(b"u5", event_bytes("u5", NEW, 5.0, 1.7e9))])
        worker.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= 1204, 60, "the last event")
        lists = latest_lists(read_topic(broker, dst, idle=1.5))
        assert lists["u5"]["model_version"] == Checkpoint.load(models / versions[-1]).version
        assert worker.value("metarec_unknown_items_total") == unknown  # the online row survived both switches
        assert worker.proc.poll() is None and trainer.proc.poll() is None  # no restart
        m = trainer.metrics()
        assert m["metarec_trainer_training_loss"] == m["metarec_trainer_training_loss"]  # a number, not NaN
        assert m["metarec_trainer_last_training_timestamp_seconds"] > time.time() - 300
        code, _ = trainer.terminate()
        assert code == 0
    finally:
        worker.kill()
        if trainer is not None:
            trainer.kill()
