"""The online path shared by the worker and the prequential evaluation (adapters/online/learner.py, adapters/online/records.py)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from adapters.errors import MetarecError
from adapters.meta.checkpoint import Checkpoint
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner
from adapters.online.records import UserRecord, vocab_hash
from adapters.online.tasklearner import support_batch
from adapters.meta.training import TrainConfig, train
from online_events import interactions as stream, run_batches as run
from synthetic_data import synthetic_dataset


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_users=30, n_items=40, seed=3)


@pytest.fixture(scope="module")
def checkpoint(dataset):
    return train(dataset, TrainConfig(model="mf", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                                      model_config={"dim": 8, "rating_dim": 4}))


def test_every_touched_user_gets_k_distinct_unseen_items_as_of_their_newest_event(dataset, checkpoint):
    events = stream(dataset, 300)
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5, window=8))
    records, lists = run(learner, events)
    assert set(lists) == {e.user_id for e in events}
    for user, rec in lists.items():
        mine = [e for e in events if e.user_id == user]
        assert len(rec.items) == 5 == len(set(rec.items))
        assert not set(rec.items) & {e.item_id for e in mine}
        assert rec.offset == mine[-1].offset and rec.event_timestamp == mine[-1].timestamp
        assert rec.scores == sorted(rec.scores, reverse=True)
        assert records[user].last_offset == mine[-1].offset
        assert len(records[user].items) == min(8, len(mine))


def test_redelivered_offsets_never_enter_a_window_twice_and_the_list_is_published_again(dataset, checkpoint):
    events = stream(dataset, 120)
    learner = OnlineLearner(checkpoint, OnlineConfig(window=64))
    records, _ = run(learner, events)
    before = {u: r.to_bytes() for u, r in records.items()}
    out = learner.process(events[40:120], records)  # at-least-once input: a redelivered range
    assert out.duplicates == 80 and out.records == {}
    assert {u: r.to_bytes() for u, r in records.items()} == before
    assert {r.user_id for r in out.recommendations} == {e.user_id for e in events[40:120]}
    for r in out.recommendations:
        assert r.offset == records[r.user_id].last_offset
    for rec in records.values():
        assert len(set(rec.offsets.tolist())) == len(rec.offsets)


def test_window_keeps_the_last_w_events_none_older_than_max_age(checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(window=4, max_age=50.0))
    item = checkpoint.item_ids[1]
    events = [Interaction("u0", item, 4.0, 1000.0 + 10 * k, 0, k) for k in range(6)]
    events.append(Interaction("u0", item, 4.0, 1200.0, 0, 6))  # 140 s after the previous one
    records, _ = run(learner, events[:6], batch=6)
    assert records["u0"].offsets.tolist() == [2, 3, 4, 5]
    records, _ = run(learner, events[6:], records=records)
    assert records["u0"].offsets.tolist() == [6]


def test_warm_start_continues_from_the_stored_state(dataset, checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(window=32, steps=2))
    events = [e for e in stream(dataset) if e.user_id == "u1"][:12]
    records, _ = run(learner, events[:6], batch=6)
    previous = torch.from_numpy(records["u1"].state.copy())
    records, _ = run(learner, events[6:], batch=6, records=records)
    rec = records["u1"]
    support = support_batch([rec], torch.tensor([learner.user_row("u1")]))
    expected = checkpoint.adapter.adapt(previous[None], support, steps=2)[0]
    torch.testing.assert_close(torch.from_numpy(rec.state), expected, rtol=1e-5, atol=1e-6)
    cold = checkpoint.adapter.adapt(checkpoint.adapter.init_states(support.users), support, steps=2)[0]
    assert not torch.allclose(torch.from_numpy(rec.state), cold)


def test_inner_steps_are_the_checkpoint_s_unless_the_config_sets_them(dataset, tmp_path):
    trained = train(dataset, TrainConfig(model="mf", meta="fomaml", epochs=0, pretrain_epochs=0, steps=1,
                                         model_config={"dim": 8, "rating_dim": 4}))
    trained.save(tmp_path / "ck")
    ck = Checkpoint.load(tmp_path / "ck")
    events = [e for e in stream(dataset) if e.user_id == "u1"][:8]
    states = {}
    for config, steps in ((OnlineConfig(), 1), (OnlineConfig(steps=None), 1), (OnlineConfig(steps=4), 4)):
        learner = OnlineLearner(ck, config)
        assert learner.steps == steps
        records, _ = run(learner, events, batch=8)
        support = support_batch([records["u1"]], torch.tensor([learner.user_row("u1")]))
        expected = ck.adapter.adapt(ck.adapter.init_states(support.users), support, steps=steps)[0]
        states[steps] = torch.from_numpy(records["u1"].state)
        torch.testing.assert_close(states[steps], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(states[1], states[4])


def test_no_adaptation_keeps_theta0(dataset, checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(steps=0))
    records, _ = run(learner, stream(dataset, 100))
    for user, rec in records.items():
        theta0 = checkpoint.adapter.init_states(torch.tensor([learner.user_row(user)]))[0]
        torch.testing.assert_close(torch.from_numpy(rec.state), theta0)


def test_unknown_users_and_items_get_lists_and_are_counted(checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=3))
    out = learner.process([Interaction("new-user", "never-seen-item", None, 5.0, 0, 0),
                           Interaction("new-user", checkpoint.item_ids[2], 5.0, 6.0, 0, 1)], {})
    assert out.unknown_items == 1 and math.isfinite(out.support_loss)
    (rec,) = out.recommendations
    assert len(rec.items) == 3 and checkpoint.item_ids[2] not in rec.items and "<unk>" not in rec.items
    assert all(math.isfinite(s) for s in rec.scores)


def test_retrieval_above_max_catalog_reranks_the_top_m_by_theta0(dataset, checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=4, max_catalog=10, retrieval_m=12))
    allowed = {checkpoint.item_ids[r] for r in learner._candidates.tolist()}
    assert len(allowed) == 12 and "<unk>" not in allowed
    _, lists = run(learner, stream(dataset, 100))
    for rec in lists.values():
        assert set(rec.items) <= allowed and len(rec.items) == len(set(rec.items))


def test_score_before_learn_uses_the_current_state(dataset, checkpoint):
    learner = OnlineLearner(checkpoint)
    events = stream(dataset, 80)
    records, _ = run(learner, events)
    probe = events[-1]
    scores = learner.ranking_scores([probe], records)
    users = torch.tensor([learner.user_row(probe.user_id)])
    state = torch.from_numpy(records[probe.user_id].state)[None]
    torch.testing.assert_close(scores, checkpoint.adapter.score(state, users) + learner.items.bonus(learner.items.stream_time))
    rating = learner.predict_ratings([probe], records)
    assert rating.shape == (1,) and 1.0 <= rating[0] <= 5.0


def test_switch_keeps_windows_and_readapts_from_the_new_theta0(dataset, checkpoint):
    learner = OnlineLearner(checkpoint)
    events = stream(dataset, 200)
    records, _ = run(learner, events[:150])
    newer = train(dataset, TrainConfig(model="mf", meta="reptile", epochs=1, pretrain_epochs=1, seed=1,
                                       model_config={"dim": 8, "rating_dim": 4}))
    assert newer.version != checkpoint.version
    learner.switch(newer)
    out = learner.process(events[150:], records)
    for user, rec in out.records.items():
        assert rec.model_version == newer.version
        assert rec.offsets[-1] == max(e.offset for e in events if e.user_id == user)
    untouched = set(records) - set(out.records)
    for user in untouched:  # still the old version until their next event: scored from the new θ0
        assert records[user].model_version == checkpoint.version
        scores = learner.ranking_scores([Interaction(user, "x", None, 0.0)], records)
        users = torch.tensor([learner.user_row(user)])
        torch.testing.assert_close(scores, newer.adapter.score(newer.adapter.init_states(users), users)
                                   + learner.items.bonus(learner.items.stream_time))


def test_record_bytes_round_trip_and_remap_between_vocabularies() -> None:
    old_ids = ["<unk>", "a", "b", "c"]
    r = UserRecord.empty(4, vocab_hash(old_ids))
    r.append(1, 4.0, 10.0, 0, 5)
    r.append(3, float("nan"), 11.0, 0, 6)
    r.state, r.model_version = np.arange(5, dtype=np.float32), "v1"
    assert UserRecord.from_bytes(r.to_bytes()) == r
    assert r.is_duplicate(0, 6) and not r.is_duplicate(0, 7) and not r.is_duplicate(1, 3)
    new_ids = ["<unk>", "c", "d", "a", "e"]
    m = r.remap(old_ids, {i: k for k, i in enumerate(new_ids) if k}, 5, vocab_hash(new_ids))
    assert m.items.tolist() == [3, 1] and m.seen_rows().tolist() == [1, 3] and m.state is None
    assert m.last_offset == 6


@pytest.mark.parametrize("bad", [b"", b"XX" + bytes(60), b"MR\x01" + bytes(10)])
def test_corrupt_record_bytes_raise_a_clear_error(bad: bytes) -> None:
    with pytest.raises(MetarecError, match="corrupt user record"):
        UserRecord.from_bytes(bad)


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"steps": -1}, {"top_k": 0}, {"max_age": 0.0},
                                    {"prox": -1.0}, {"top_k": 20, "retrieval_m": 10}, {"explore": "sometimes"},
                                    {"explore": "ucb", "task_learner": "gradient"}, {"persistence": 1.0}])
def test_bad_online_config_is_a_user_error(kwargs) -> None:
    with pytest.raises(MetarecError):
        OnlineConfig(**kwargs)


def test_config_is_a_frozen_dataclass() -> None:
    cfg = OnlineConfig()
    assert replace(cfg, window=8).window == 8 and cfg.window == 32


def test_evaluation_mode_skips_lists_and_loss_but_learns_the_same(dataset, checkpoint):
    events = stream(dataset, 160)
    full, lean = OnlineLearner(checkpoint), OnlineLearner(checkpoint)
    rec_full: dict = {}
    rec_lean: dict = {}
    for s in range(0, len(events), 16):
        a = full.process(events[s:s + 16], rec_full)
        b = lean.process(events[s:s + 16], rec_lean, publish=False, measure_loss=False)
        rec_full.update(a.records)
        rec_lean.update(b.records)
        assert a.recommendations and not b.recommendations
        assert math.isfinite(a.support_loss) and math.isnan(b.support_loss)
    assert {u: r.to_bytes() for u, r in rec_full.items()} == {u: r.to_bytes() for u, r in rec_lean.items()}


def test_a_batch_grows_each_window_once_with_the_same_result_as_appending_event_by_event():
    events = [(3, 4.0, 10.0, 0, 7), (5, math.nan, 12.0, 0, 8), (0, 2.0, 11.0, 0, 9), (9, 5.0, 13.0, 0, 10)]
    one, batched = UserRecord.empty(12, vocab=1), UserRecord.empty(12, vocab=1)
    for item, rating, ts, part, off in events:
        one.append(item, rating, ts, part, off)
    for item, _, ts, part, off in events:
        batched.mark_applied(item, ts, part, off)
    items, ratings, stamps, _, offsets = zip(*events)
    batched.extend_window(items, ratings, stamps, offsets)
    assert batched == one
    assert one.items.dtype == np.int32 and one.offsets.dtype == np.int64 and one.ratings.dtype == np.float32
    assert one.last_offset == 10 and one.last_timestamp == 13.0 and one.seen_rows().tolist() == [3, 5, 9]
