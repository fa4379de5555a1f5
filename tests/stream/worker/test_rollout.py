"""Safe roll-outs without a broker: a version LATEST names but the worker cannot serve is counted once per
distinct (version, reason), logged once, flagged by metarec_model_rollout_failing, and the old version stays served.

The watcher polls real checkpoint directories with the real loader (Checkpoint.load); the metrics are the worker's.
"""
from __future__ import annotations

import doctest
import json
import logging
import os
import time

import pytest
from worker_support import make_checkpoint

from adapters.meta.checkpoint import Checkpoint
from adapters.online.learner import OnlineConfig, OnlineLearner
from stream.worker.core import WorkerCore
from stream.worker.metrics import WorkerMetrics
from stream.worker.rollout import REASONS, ModelRollout, classify
from stream.worker.versions import CheckpointWatcher

ITEMS = [str(i) for i in range(1, 30)]


def failures(metrics: WorkerMetrics) -> dict[str, float]:
    return {r: metrics.registry.get_sample_value("metarec_model_load_failures_total", {"reason": r}) for r in REASONS}


def failing(metrics: WorkerMetrics) -> float | None:
    return metrics.registry.get_sample_value("metarec_model_rollout_failing")


def rollout_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "roll-out" in r.getMessage()]


@pytest.fixture
def served(tmp_path):
    """A model directory serving v1 through a watcher wired like the worker's (metrics.rollout shared)."""
    v1 = make_checkpoint(tmp_path / "v1", ITEMS, seed=1)
    (tmp_path / "LATEST").write_text("v1\n")
    metrics = WorkerMetrics()
    watcher = CheckpointWatcher(tmp_path, Checkpoint.load, rollout=metrics.rollout)
    ck = watcher.load_initial()
    metrics.set_model(ck.version, ck.model, ck.meta)  # what WorkerCore.set_model_metrics does at start
    assert ck.version == v1 and watcher.poll() is None
    return tmp_path, metrics, watcher, v1


def corrupt_copy(root, name: str, how: str) -> None:
    """A copy of v1 under ``name``, broken in one way."""
    make_checkpoint(root / name, ITEMS, seed=2)
    d = root / name
    if how == "missing":
        (d / "vocab.json").unlink()
    elif how == "corrupt":
        (d / "weights.safetensors").write_bytes(b"half written")
    elif how == "pickle":
        (d / "weights.safetensors").write_bytes(b"\x80\x04\x95 a pickle")
    elif how == "json":
        (d / "config.json").write_text("{ not json")
    elif how == "format":
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "format": 99}))
    elif how == "shapes":
        cfg = json.loads((d / "config.json").read_text())
        cfg["model_config"]["dim"] = 7
        (d / "config.json").write_text(json.dumps(cfg))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how, reason", [("missing", "missing"), ("corrupt", "corrupt"), ("pickle", "corrupt"),
                                         ("json", "corrupt"), ("format", "incompatible"),
                                         ("shapes", "incompatible")])
def test_every_way_the_real_loader_fails_has_its_reason(tmp_path, how, reason):
    """Pins the reason classification to the real Checkpoint.load messages (a reworded message fails here)."""
    corrupt_copy(tmp_path, "bad", how)
    with pytest.raises(Exception) as info:
        Checkpoint.load(tmp_path / "bad")
    assert classify(info.value) == reason, str(info.value)


def test_a_corrupt_version_is_counted_and_logged_once_and_the_old_one_stays(served, caplog):
    root, metrics, watcher, v1 = served
    assert failures(metrics) == {r: 0.0 for r in REASONS} and failing(metrics) == 0.0
    corrupt_copy(root, "v2", "corrupt")
    (root / "LATEST").write_text("v2\n")
    with caplog.at_level(logging.INFO, logger="stream.worker"):
        for _ in range(20):  # 20 polls of the same broken candidate
            assert watcher.poll() is None
    assert failures(metrics) == {"missing": 0.0, "corrupt": 1.0, "incompatible": 0.0, "other": 0.0}
    assert failing(metrics) == 1.0
    assert len(rollout_warnings(caplog)) == 1 and "v2" in rollout_warnings(caplog)[0]
    assert watcher.served_version() == v1 and metrics.rollout.version == v1

    # the same version broken another way (rewritten, a file now missing): a second distinct failure
    (root / "v2" / "weights.safetensors").unlink()
    for _ in range(5):
        assert watcher.poll() is None
    assert failures(metrics)["missing"] == 1.0 and failures(metrics)["corrupt"] == 1.0
    assert len(rollout_warnings(caplog)) == 2

    # repaired: the watcher returns it, the switch happens (set_model), the roll-out settles
    make_checkpoint(root / "v2", ITEMS, seed=3)
    ck = watcher.poll()
    assert ck is not None and ck.version != v1
    metrics.set_model(ck.version, ck.model, ck.meta)
    assert failing(metrics) == 0.0 and metrics.rollout.version == ck.version
    assert sum(failures(metrics).values()) == 2.0  # counters never go back


def test_latest_naming_no_directory_counts_once_and_rolling_back_settles(served):
    root, metrics, watcher, v1 = served
    (root / "LATEST").write_text("v9\n")
    for _ in range(10):
        assert watcher.poll() is None
    assert failures(metrics)["missing"] == 1.0 and failing(metrics) == 1.0
    (root / "LATEST").write_text("v1\n")  # roll back to the version served
    assert watcher.poll() is None
    assert failing(metrics) == 0.0 and metrics.rollout.version == v1
    (root / "LATEST").write_text("v9\n")  # a new episode: the same failure counts again
    assert watcher.poll() is None
    assert failures(metrics)["missing"] == 2.0


def test_a_broken_candidate_is_not_reloaded_until_it_changes(served):
    root, metrics, watcher, _ = served
    calls = []

    def counting_loader(path):
        calls.append(path.name)
        return Checkpoint.load(path)

    watcher.loader = counting_loader
    corrupt_copy(root, "v2", "shapes")
    (root / "LATEST").write_text("v2\n")
    for _ in range(10):
        watcher.poll()
    assert calls == ["v2"] and failures(metrics)["incompatible"] == 1.0
    watcher.retry_s = 0.0  # past the retry delay: read again, still the same failure, not counted again
    watcher.poll()
    assert calls == ["v2", "v2"] and failures(metrics)["incompatible"] == 1.0


class _Refused:
    """A checkpoint that loads but that the online learner refuses (vocabulary shorter than its model)."""

    def __init__(self, ck: Checkpoint) -> None:
        self.__dict__.update(ck.__dict__)
        self.item_ids = list(ck.item_ids)[:-1]
        self.version = "v2-refused"


def test_a_switch_the_learner_refuses_is_an_incompatible_failure_until_latest_changes(served):
    root, metrics, watcher, v1 = served
    core = WorkerCore(OnlineLearner(watcher.current, OnlineConfig(top_k=5)), metrics, "in", "out")
    core.set_model_metrics()
    make_checkpoint(root / "v2", ITEMS, seed=5)
    watcher.loader = lambda path: _Refused(Checkpoint.load(path))
    (root / "LATEST").write_text("v2\n")
    ck = watcher.poll()
    assert ck is not None and core.switch(ck) is False  # what the runner does with a new candidate
    assert core.learner.model_version == v1
    for _ in range(5):  # LATEST still names it: still failing, counted once
        assert watcher.poll() is None
    assert failures(metrics)["incompatible"] == 1.0 and failing(metrics) == 1.0
    assert metrics.registry.get_sample_value("metarec_model_switches_total") == 0.0
    (root / "LATEST").write_text("v1\n")
    watcher.loader = Checkpoint.load
    assert watcher.poll() is None  # v1 is what is served: no switch, settled
    assert failing(metrics) == 0.0


def test_version_age_counts_from_the_served_checkpoints_write_time(served):
    root, metrics, watcher, _ = served
    written = max(p.stat().st_mtime for p in [root / "v1", *(root / "v1").iterdir()])
    expected = time.time() - written
    age = metrics.registry.get_sample_value("metarec_model_version_age_seconds")
    assert 0.0 <= age - expected < 5.0
    # a version written an hour ago is an hour old once served
    make_checkpoint(root / "v2", ITEMS, seed=6)
    hour_ago = time.time() - 3600
    for p in [*(root / "v2").iterdir(), root / "v2"]:
        os.utime(p, (hour_ago, hour_ago))
    (root / "LATEST").write_text("v2\n")
    ck = watcher.poll()
    metrics.set_model(ck.version, ck.model, ck.meta)
    age = metrics.registry.get_sample_value("metarec_model_version_age_seconds")
    assert 3600.0 <= age < 3610.0


def test_age_is_nan_before_a_version_is_served_and_uses_the_serve_time_without_a_write_time():
    now = [1000.0]
    rollout = ModelRollout(clock=lambda: now[0])
    assert rollout.age() != rollout.age()  # NaN
    rollout.served("v1")
    now[0] = 1042.0
    assert rollout.age() == 42.0
    rollout.loaded("v2", written_at=900.0)
    rollout.served("v2")
    assert rollout.age() == 142.0


def test_doctests():
    import stream.worker.rollout

    result = doctest.testmod(stream.worker.rollout)
    assert result.attempted > 0 and result.failed == 0
