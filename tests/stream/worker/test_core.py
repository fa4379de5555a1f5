"""The pure worker core without a broker: a micro-batch of raw messages and a state in, writes and messages out.

Ordering, idempotence, dead-letter reasons, expiry and model versions, on a real (small, untrained) checkpoint.
"""
from __future__ import annotations

import doctest
import json

import pytest
from worker_support import event_bytes, make_checkpoint

from adapters.meta.checkpoint import Checkpoint
from adapters.online.learner import OnlineConfig, OnlineLearner
from adapters.online.records import UserRecord
from stream.worker.core import MemoryState, RawMessage, StateWrite, WorkerCore
from stream.worker.expiry import StateExpiry
from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import user_key

ITEMS = [str(i) for i in range(1, 60)]
T0 = 1.0e9


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    make_checkpoint(root / "v1", ITEMS, seed=3)
    make_checkpoint(root / "v2", ITEMS, seed=4)
    return Checkpoint.load(root / "v1"), Checkpoint.load(root / "v2")


def _core(ck: Checkpoint, ttl: float | None = None) -> tuple[WorkerCore, WorkerMetrics]:
    metrics = WorkerMetrics()
    learner = OnlineLearner(ck, OnlineConfig(top_k=5))
    return WorkerCore(learner, metrics, "in", "out", expiry=StateExpiry(ttl)), metrics


def _msg(partition: int, offset: int, user: str, item: str, ts: float, rating: float = 4.0) -> RawMessage:
    return RawMessage("in", partition, offset, user.encode(), event_bytes(user, item, rating, ts), T0)


def _lists(out) -> dict[str, dict]:
    return {o.key.decode(): json.loads(o.value) for o in out.lists}


def test_a_batch_gives_one_list_and_one_record_per_user_in_their_partition(checkpoints):
    core, metrics = _core(checkpoints[0])
    store = MemoryState()
    msgs = [_msg(0, 0, "a", "1", T0), _msg(1, 0, "b", "2", T0 + 1), _msg(0, 1, "a", "3", T0 + 2)]
    out = core.process(msgs, store)
    assert sorted(_lists(out)) == ["a", "b"] and out.dead == []
    assert {(w.partition, w.key) for w in out.writes} == {(0, b"a"), (1, b"b")}
    lst = _lists(out)["a"]
    assert lst["as_of"] == {"topic": "in", "partition": 0, "offset": 1}  # the user's newest event
    assert len(lst["items"]) == 5 and lst["model_version"] == checkpoints[0].version
    assert not {"1", "3"} & set(lst["items"])  # items the user has seen are never recommended
    # the optional "because": per listed item, one of the user's own items or null
    assert len(lst["because"]) == 5 and set(lst["because"]) <= {"1", "3", None}
    assert "uncertainty" not in lst  # the gradient task learner has no posterior
    rec = UserRecord.from_bytes(next(w.value for w in out.writes if w.key == b"a"))
    assert rec.offsets.tolist() == [0, 1] and rec.last_offset == 1  # applied in offset order
    assert metrics.registry.get_sample_value("metarec_events_consumed_total") == 3


def test_state_carries_over_between_batches_in_event_order(checkpoints):
    core, _ = _core(checkpoints[0])
    store = MemoryState()
    store.apply(core.process([_msg(0, 0, "a", "1", T0), _msg(0, 1, "a", "2", T0 + 1)], store).writes)
    out = core.process([_msg(0, 2, "a", "7", T0 + 2)], store)
    rec = UserRecord.from_bytes(out.writes[0].value)
    assert rec.offsets.tolist() == [0, 1, 2]
    assert not {"1", "2", "7"} & set(_lists(out)["a"]["items"])


def test_a_redelivered_batch_is_applied_once_and_its_lists_are_published_again(checkpoints):
    core, metrics = _core(checkpoints[0])
    store = MemoryState()
    msgs = [_msg(0, 0, "a", "1", T0), _msg(0, 1, "b", "2", T0 + 1)]
    first = core.process(msgs, store)
    store.apply(first.writes)
    again = core.process(msgs, store)  # at-least-once: the same offsets come back after a crash
    assert sorted(_lists(again)) == ["a", "b"]
    for w in again.writes:
        before = UserRecord.from_bytes(store.data[w.key][1])
        after = UserRecord.from_bytes(w.value)
        assert after.offsets.tolist() == before.offsets.tolist()  # no event entered a window twice
    assert metrics.registry.get_sample_value("metarec_duplicates_total") == 2


BAD = [
    (b"not json", "invalid_json"), (b"", "empty_value"), (None, "empty_value"), (b"[1]", "not_an_object"),
    (b'{"user_id": "u"}', "missing_item_id"), (b'{"user_id": "u", "item_id": "1", "rating": "x"}',
                                                "bad_rating_type"),
    (b"\xff\xfe", "invalid_utf8"), (b'{"user_id": "u", "item_id": "1", "timestamp": 1e15}', "timestamp_out_of_range"),
    (b'{"user_id": "' + b"x" * 2000 + b'", "item_id": "1"}', "oversized"),
]


def test_every_bad_message_is_dead_lettered_with_its_reason_and_source(checkpoints):
    metrics = WorkerMetrics()
    core = WorkerCore(OnlineLearner(checkpoints[0], OnlineConfig(top_k=5)), metrics, "in", "out",
                      max_event_bytes=1000)
    msgs = [RawMessage("in", 2, n, b"k", value, T0) for n, (value, _) in enumerate(BAD)]
    msgs.append(_msg(2, len(BAD), "good", "1", T0))
    out = core.process(msgs, MemoryState())
    assert [dict(d.headers)["error"].decode() for d in out.dead] == [r for _, r in BAD]
    assert [dict(d.headers)["source"] for d in out.dead] == [f"in/2/{n}".encode() for n in range(len(BAD))]
    assert all(d.topic == "in.dlq" and d.value == m.value for d, m in zip(out.dead, msgs))  # original bytes kept
    assert sorted(_lists(out)) == ["good"] and out.publish == out.lists + out.dead
    assert metrics.registry.get_sample_value("metarec_events_invalid_total", {"reason": "oversized"}) == 1


def test_an_unreadable_stored_record_starts_the_user_afresh(checkpoints):
    core, _ = _core(checkpoints[0])
    store = MemoryState()
    store.apply([StateWrite(0, user_key("a"), b"MRgarbage")])
    out = core.process([_msg(0, 5, "a", "1", T0)], store)
    assert UserRecord.from_bytes(out.writes[0].value).offsets.tolist() == [5] and out.dead == []


def test_users_past_the_ttl_are_deleted_in_their_own_partition(checkpoints):
    core, metrics = _core(checkpoints[0], ttl=100.0)
    store = MemoryState()
    store.apply(core.process([_msg(0, 0, "old", "1", T0), _msg(1, 0, "other", "1", T0)], store).writes)
    out = core.process([_msg(0, 1, "new", "2", T0 + 500)], store)  # partition 0's event time moves on
    assert StateWrite(0, user_key("old"), None) in out.writes and out.expired == 1
    assert user_key("other") not in {w.key for w in out.writes}  # partition 1's stream time did not move
    assert metrics.registry.get_sample_value("metarec_state_expired_total") == 1


def test_a_model_switch_applies_from_the_next_batch_and_a_bad_one_is_refused(checkpoints):
    v1, v2 = checkpoints
    core, metrics = _core(v1)
    store = MemoryState()
    store.apply(core.process([_msg(0, 0, "a", "1", T0)], store).writes)
    assert core.switch(v2) is True
    out = core.process([_msg(0, 1, "a", "2", T0 + 1)], store)
    assert _lists(out)["a"]["model_version"] == v2.version
    assert UserRecord.from_bytes(out.writes[0].value).offsets.tolist() == [0, 1]  # the window survived
    assert core.switch(_Broken(v1)) is False  # keeps serving v2
    assert _lists(core.process([_msg(0, 2, "a", "3", T0 + 2)], store))["a"]["model_version"] == v2.version
    assert metrics.registry.get_sample_value("metarec_model_switches_total") == 1


class _Broken:
    """A checkpoint whose vocabulary does not match its model (the learner refuses it)."""

    def __init__(self, ck: Checkpoint) -> None:
        self.__dict__.update(ck.__dict__)
        self.item_ids = list(ck.item_ids)[:-1]
        self.version = "broken"


def test_doctests():
    import adapters.online.records
    import stream.worker.core
    import stream.worker.expiry
    import stream.worker.offsets
    import stream.worker.state_layout

    for module in (stream.worker.core, stream.worker.state_layout, stream.worker.offsets, stream.worker.expiry,
                   adapters.online.records):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_items_total_counts_the_rows_that_can_be_recommended_new_items_included(checkpoints):
    core, metrics = _core(checkpoints[0])
    core.set_model_metrics()
    before = metrics.registry.get_sample_value("metarec_items_total")
    assert before == len(ITEMS)  # the checkpoint's items (row 0 is no item)
    out = core.process([_msg(0, 0, "a", "never-seen-item", T0)], MemoryState())
    assert out.result.unknown_items == 1
    assert metrics.registry.get_sample_value("metarec_items_total") == before + 1


def test_under_the_bayes_task_learner_lists_carry_an_uncertainty_and_records_the_posterior(checkpoints):
    learner = OnlineLearner(checkpoints[0], OnlineConfig(top_k=5, task_learner="bayes", explore="thompson",
                                                          explore_scale=0.1))
    core = WorkerCore(learner, WorkerMetrics(), "in", "out", expiry=StateExpiry(None))
    out = core.process([_msg(0, 0, "a", "1", T0), _msg(0, 1, "a", "3", T0 + 2)], MemoryState())
    lst = _lists(out)["a"]
    assert len(lst["uncertainty"]) == len(lst["items"]) == 5 and all(u > 0 for u in lst["uncertainty"])
    rec = UserRecord.from_bytes(next(w.value for w in out.writes if w.key == b"a"))
    assert rec.state.shape == (learner.task.width,) and learner.task.width > checkpoints[0].adapter.state_dim
