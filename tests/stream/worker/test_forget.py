"""Forgetting a user without a broker: the core's deletions and acknowledgements, the request format, the CLI's
argument errors. The broker test is ``test_worker_forget.py``."""
from __future__ import annotations

import doctest
import json
import subprocess
import sys

import pytest
from worker_support import REPO, event_bytes, make_checkpoint

from adapters.meta.checkpoint import Checkpoint
from adapters.online.learner import OnlineConfig, OnlineLearner
from adapters.online.records import UserRecord
from stream.kafka.control import ACK_HEADER, InvalidRequest, control_topic, forget_request, parse_request
from stream.kafka.partitioner import partition_for
from stream.worker.core import MemoryState, RawMessage, StateWrite, WorkerCore
from stream.worker.expiry import StateExpiry
from stream.worker.forget import forget_users
from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import user_key

ITEMS = [str(i) for i in range(1, 30)]
T0 = 1.0e9


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    make_checkpoint(root / "v1", ITEMS, seed=5)
    return Checkpoint.load(root / "v1")


def _core(ck: Checkpoint) -> tuple[WorkerCore, WorkerMetrics]:
    metrics = WorkerMetrics()
    return WorkerCore(OnlineLearner(ck, OnlineConfig(top_k=5)), metrics, "in", "out",
                      expiry=StateExpiry(1000.0)), metrics


def _event(partition: int, offset: int, user: str, item: str, ts: float) -> RawMessage:
    return RawMessage("in", partition, offset, user.encode(), event_bytes(user, item, 5.0, ts), T0)


def _request(partition: int, offset: int, user: str, request_id: str = "r") -> RawMessage:
    key, value = forget_request(user, request_id=request_id)
    return RawMessage(control_topic("g"), partition, offset, key, value, T0)


def test_forgetting_deletes_the_record_in_its_partition_acks_and_the_user_starts_afresh(checkpoint):
    core, metrics = _core(checkpoint)
    store = MemoryState()
    seen = ["1", "2", "3", "4"]
    store.apply(core.process([_event(2, n, "a", item, T0 + n) for n, item in enumerate(seen)]
                             + [_event(1, 0, "b", "1", T0)], store).writes)
    assert store.read({b"a": 2})[b"a"] is not None and core.expiry.size() == 2
    out = forget_users(core, [_request(2, 0, "a", "req-1")], store)
    assert out.writes == [StateWrite(2, user_key("a"), None)]  # a tombstone where the record lives
    assert [(o.topic, o.key, o.value, o.headers) for o in out.lists] == [("out", b"a", None, [(ACK_HEADER, b"req-1")])]
    store.apply(out.writes)
    assert store.read({b"a": 2, b"b": 1}) == {b"a": None, b"b": store.data[b"b"][1]}  # b is untouched
    assert core.expiry.size() == 1 and "a" not in core.hitrate._lists
    assert metrics.registry.get_sample_value("metarec_users_forgotten_total") == 1
    # the next event starts a new record: that one event in its window and its seen set, and no state adapted
    # from the forgotten events (a record rebuilt from stored state would carry offsets 0-3 and items 1-4)
    out = core.process([_event(2, 10, "a", "5", T0 + 20)], store)
    rec = UserRecord.from_bytes(next(w.value for w in out.writes if w.key == b"a"))
    assert rec.offsets.tolist() == [10]
    assert [checkpoint.item_ids[r] for r in rec.seen_rows()] == ["5"]
    assert len(json.loads(out.lists[0].value)["items"]) == 5


def test_forgetting_is_idempotent_and_an_unknown_user_is_acknowledged(checkpoint):
    core, metrics = _core(checkpoint)
    store = MemoryState()
    out = forget_users(core, [_request(0, 0, "nobody", "x"), _request(0, 1, "nobody", "y")], store)
    assert [w.key for w in out.writes] == [b"nobody", b"nobody"] and all(w.value is None for w in out.writes)
    assert [dict(o.headers)[ACK_HEADER] for o in out.lists] == [b"x", b"y"]
    assert metrics.registry.get_sample_value("metarec_users_forgotten_total") == 2


def test_a_malformed_control_message_is_skipped_not_acknowledged(checkpoint):
    core, metrics = _core(checkpoint)
    good = _request(1, 2, "u", "ok")
    bad = [RawMessage("c", 1, 0, None, good.value, T0), RawMessage("c", 1, 1, b"other", good.value, T0),
           RawMessage("c", 1, 3, b"u", b"not json", T0), RawMessage("c", 1, 4, b"u", b'{"action":"x","user_id":"u"}', T0)]
    out = forget_users(core, bad + [good], MemoryState())
    assert [o.key for o in out.lists] == [b"u"] and len(out.writes) == 1
    assert metrics.registry.get_sample_value("metarec_users_forgotten_total") == 1


def test_requests_are_keyed_by_user_and_land_in_the_users_input_partition():
    key, value = forget_request("user-42")
    assert key == user_key("user-42") and parse_request(key, value).user_id == "user-42"
    assert partition_for(key, 4) == partition_for("user-42".encode(), 4)  # murmur2, as the input's producers
    for raw in (b"", b"[]", b'{"action":"forget"}'):
        with pytest.raises(InvalidRequest):
            parse_request(key, raw)
    with pytest.raises(InvalidRequest):
        forget_request("")


def test_doctests():
    import stream.kafka.control
    import stream.worker.forget

    for module in (stream.kafka.control, stream.worker.forget):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("args, message", [
    (["--bootstrap", "127.0.0.1:1"], "the following arguments are required: --user"),
    (["--bootstrap", "127.0.0.1:1", "--user", ""], "user id must be a non-empty string"),
    (["--bootstrap", "127.0.0.1:1", "--user", "u", "--wait", "-1"], "--wait: must be ≥ 0"),
    (["--user", "u"], "the following arguments are required: --bootstrap"),
])
def test_cli_argument_errors_are_one_line_and_exit_2(args, message):
    r = subprocess.run([sys.executable, "-m", "stream", "forget", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
