"""The item state as the OnlineLearner and training use it (adapters/online/items, learner.py, meta/training.py): new
items get rows, learn and get recommended; the table stays bounded; no future leak; popularity, rating corrections
and their settings from training to serving and across a version switch."""
from __future__ import annotations

import math
from dataclasses import replace as dc_replace

import numpy as np
import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.evaluation.baselines import LearnerModel
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from adapters.meta.config import DEFAULT_ITEMS
from adapters.meta.training import TrainConfig, train
from adapters.online.items.config import ItemConfig
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner

SMALL = {"dim": 8, "rating_dim": 4}


@pytest.fixture(scope="module")
def dataset():  # noqa: ANN201
    return synthetic_dataset(n_users=30, n_items=40, seed=3)


@pytest.fixture(scope="module")
def seq(dataset):  # noqa: ANN001, ANN201
    return train(dataset, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                                      model_config=SMALL))


@pytest.fixture(scope="module")
def mf(dataset):  # noqa: ANN001, ANN201
    return train(dataset, TrainConfig(model="mf", meta="maml", epochs=1, pretrain_epochs=1, seed=0,
                                      popularity_weight=0.7, item_half_life=50.0, bias_lr=0.05, model_config=SMALL))


def _end(checkpoint) -> float:  # noqa: ANN001
    """Event time of the end of the checkpoint's training data."""
    return float(checkpoint.config["popularity"]["t"])


def _events(dataset, lo: int, hi: int) -> list[Interaction]:  # noqa: ANN001
    return [Interaction(str(dataset.user_ids[k]), str(dataset.item_ids[k]),
                        None if math.isnan(dataset.ratings[k]) else float(dataset.ratings[k]),
                        float(dataset.timestamps[k]), 0, k) for k in range(lo, hi)]


class Driver:
    """A learner fed micro-batches of (user, item) events after the end of its training data."""

    def __init__(self, checkpoint, config: OnlineConfig) -> None:  # noqa: ANN001
        self.learner = OnlineLearner(checkpoint, config)
        self.records: dict = {}
        self.offset = 0
        self.t0 = _end(checkpoint) + 1.0

    def batch(self, events: list[tuple[str, str]]):  # noqa: ANN201
        evs = [Interaction(u, i, 5.0, self.t0 + self.offset + n, 0, self.offset + n) for n, (u, i) in enumerate(events)]
        self.offset += len(evs)
        out = self.learner.process(evs, self.records)
        self.records.update(out.records)
        return out


# -- new items, bounded --------------------------------------------------------------------------------------------
def test_new_item_gets_its_own_row_and_is_recommended_after_it_co_occurs(seq):
    d = Driver(seq, OnlineConfig(top_k=5, prior_weight=4.0))
    learner, base = d.learner, d.learner.n_items
    anchor = seq.item_ids[1]
    d.batch([("first", "brand-new")])
    row = learner.item_row("brand-new")
    assert row >= base and learner.items.online[row]  # its own row, not the shared unknown row 0
    assert row != learner.item_row(anchor)
    for k in range(10):  # ten other users meet the anchor item, then the new one
        d.batch([(f"fan{k}", anchor)])
        d.batch([(f"fan{k}", "brand-new")])
    assert learner.items.cooc(np.array([learner.item_row(anchor)]))[0, row] == 10
    assert learner.item_state("brand-new")["events"] == 11
    out = d.batch([("newcomer", anchor)])  # a user whose window holds the anchor only
    assert out.recommendations[0].items[0] == "brand-new"
    # the new row learned from its neighbours: it is no longer the unknown row
    assert not np.allclose(learner.adapter.item_emb[row].numpy(), learner.adapter.item_emb[0].numpy())


def test_eviction_keeps_the_table_within_max_items(seq):
    base = len(seq.item_ids)
    d = Driver(seq, OnlineConfig(max_items=base + 20, steps=0))
    learner = d.learner
    for n in range(120):
        d.batch([(f"u{n % 7}", f"new{n}")])
        assert learner.n_items <= base + 20
        assert learner.adapter.item_emb.shape[0] == learner.n_items
    items = learner.items
    assert items.vocab.evicted > 0 and items.n_active <= base + 19
    assert items.row("new119") > 0 and items.row("new118") > 0  # the newest items are kept
    assert items.row("new0") == 0  # the oldest online item was evicted ...
    d.batch([("u0", "new0")])
    assert items.row("new0") > 0  # ... and gets a row again when it comes back


def test_new_items_of_one_batch_never_evict_each_other(seq):
    base = len(seq.item_ids)
    learner = OnlineLearner(seq, OnlineConfig(max_items=base + 3))
    learner.process([Interaction(f"u{n}", f"burst{n}", 4.0, 2e6 + n, 0, n) for n in range(8)], {})
    rows = [learner.item_row(f"burst{n}") for n in range(8)]
    assert min(rows) > 0 and len(set(rows)) == 8  # trained items were evicted instead
    assert learner.n_items == base + 3


def test_a_new_item_never_evicts_an_item_of_its_own_batch(seq):
    base = len(seq.item_ids)
    learner = OnlineLearner(seq, OnlineConfig(max_items=base + 1, steps=0))
    t = _end(seq) + 1
    learner.process([Interaction("w", "x", 4.0, t, 0, 0)], {})  # the table is full from here on
    cold = seq.item_ids[7]
    learner.items.count[:] = 10.0
    learner.items.count[learner.item_row(cold)] = 0.0  # the coldest item is one the next batch meets
    out = learner.process([Interaction("u", cold, 4.0, t + 1, 0, 1), Interaction("u", "new", 4.0, t + 2, 0, 2)], {})
    window = [learner.item_ids[r] for r in out.records["u"].items]
    assert window == [cold, "new"] and learner.item_row(cold) > 0


def test_max_items_is_validated():
    with pytest.raises(MetarecError):
        OnlineConfig(max_items=1)
    with pytest.raises(MetarecError):
        OnlineConfig(max_items=0)


def test_burst_inside_one_micro_batch_is_scored_with_the_pre_batch_item_state(seq):
    """Item 'fresh' first appears at a burst's first event; the burst's later events must not see its row, its
    co-occurrences or its count: they are scored with the state from before the batch (here: a miss)."""
    known = seq.item_ids[1:13]
    users = [f"h{k}" for k in range(12)] + ["x", "y", "z"]
    items = known + ["fresh"] * 3
    stamps = [10.0 * k for k in range(12)] + [500.0, 500.2, 500.4]  # the last three: one 1-second micro-batch
    stream = EventStream.from_arrays(users, items, [5.0] * 15, stamps, history=0.8)
    model = LearnerModel(stream, OnlineLearner(seq, OnlineConfig(prior_weight=4.0)), "metarec")
    result = run_protocol(stream, [model], PrequentialConfig(history=0.8, batch_seconds=1.0), progress=False)
    ranks = result.traces["metarec"].rank_array()
    # x: 'fresh' never seen before (a miss by definition); y, z: a candidate by position, but unknown to the
    # pre-batch learner, so ranked below all 12 other candidates
    assert len(ranks) == 3 and np.isinf(ranks[0]) and (ranks[1:] == 12).all()
    assert model.learner.item_row("fresh") > 0  # learned after the batch


def test_a_new_item_with_features_starts_from_the_items_that_share_them(dataset):
    keep = dataset.item_ids != "i5"  # i5 is described by the dataset's item features but never in training
    part = dc_replace(dataset, user_ids=dataset.user_ids[keep], item_ids=dataset.item_ids[keep],
                      ratings=dataset.ratings[keep], timestamps=dataset.timestamps[keep])
    ck = train(part, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0, model_config=SMALL))
    assert "i5" not in ck.item_index and ck.item_features["i5"]
    learner = OnlineLearner(ck, OnlineConfig())
    row = learner.items.add("i5")
    emb = learner.adapter.item_emb
    itf = dataset.item_features
    genre = itf.genres[itf.item_ids.index("i5")].argmax()
    same = [ck.item_index[i] for n, i in enumerate(itf.item_ids) if i in ck.item_index and itf.genres[n, genre] > 0]
    assert not np.allclose(emb[row].numpy(), emb[0].numpy())
    # a mean of rows of its own genre: within their span, closer to their mean than the unknown row is
    centre = emb[same].mean(0)
    assert float((emb[row] - centre).norm()) < float((emb[0] - centre).norm())


def test_melu_serves_new_items_as_unknown():
    """melu's item tables cannot grow: a new item stays the unknown row, and lists are still served."""
    ck = train(synthetic_dataset(n_users=20, n_items=40), TrainConfig(
        model="melu", meta="fomaml", epochs=1, model_config={"emb_dim": 4, "hidden": 8, "n_negatives": 6}))
    learner = OnlineLearner(ck, OnlineConfig(top_k=3))
    out = learner.process([Interaction("a", "i1", 4.0, 1.0, 0, 0), Interaction("a", "zzz-new", 5.0, 2.0, 0, 1)], {})
    assert out.unknown_items == 1 and learner.item_row("zzz-new") == 0 and learner.n_items == ck.adapter.n_items
    assert len(out.recommendations[0].items) == 3 and learner.items.rows is None
    assert learner.items.total[learner.item_row("i1")] == 1  # its statistics are kept all the same


# -- counts, popularity, rating corrections ------------------------------------------------------------------------
def test_every_event_counts_once_whatever_the_ranking_step_draws(seq):
    """An item of the batch is also a candidate of its ranking step (here the whole catalogue): its events count."""
    learner = OnlineLearner(seq, OnlineConfig(negatives=0))
    assert learner.items.config.embed_lr > 0
    t = _end(seq) + 10
    item = seq.item_ids[4]
    r = learner.item_row(item)
    before = learner.items.popularity(t)[r]
    learner.process([Interaction(f"u{k}", item, 4.0, t, 0, k) for k in range(5)], {})
    assert learner.items.total[r] == 5 and learner.items.t_last[r] == t
    assert learner.items.popularity(t)[r] == pytest.approx(before + 5)


def test_training_stores_the_settings_and_the_counts_at_the_end_of_the_training_data(dataset, mf, seq, tmp_path):
    stored, popularity = mf.config["items"], mf.config["popularity"]
    expected = ItemConfig.from_dict(DEFAULT_ITEMS["mf"]).overridden(popularity_weight=0.7, half_life_s=50.0,
                                                                    bias_lr=0.05)
    assert stored == expected.to_dict() and stored["bias_prior"] == 5.0
    end = float(dataset.timestamps.max())
    rows = np.array([mf.item_index.get(i, 0) for i in dataset.item_ids.tolist()])
    counts = np.bincount(rows, weights=np.exp2(-(end - dataset.timestamps) / 50.0), minlength=len(mf.item_ids))
    counts[0] = 0.0
    assert popularity["t"] == end
    np.testing.assert_allclose(popularity["counts"], counts, atol=1e-4)
    span = float(dataset.timestamps.max() - dataset.timestamps.min())  # fewer than 5,000 events: all of them
    assert seq.config["items"]["half_life_s"] == span and "item_half_life" not in seq.config["items"]
    from adapters.meta.checkpoint import Checkpoint
    back = Checkpoint.load(mf.save(tmp_path / "ck"))
    learner = OnlineLearner(back)
    # every stored setting reaches the serving side, the rating prior (mf default) included
    assert learner.items.config == ItemConfig.from_dict(stored)
    np.testing.assert_allclose(learner.items.count, popularity["counts"])
    assert (learner.items.count_t == end).all()
    np.testing.assert_allclose(learner.items.popularity(end + 50.0), np.asarray(popularity["counts"]) / 2)


def test_serving_overrides_the_stored_settings(mf):
    learner = OnlineLearner(mf, OnlineConfig(max_items=99, prior_weight=1.5, popularity_weight=0.0,
                                             item_half_life=7.0, embed_lr=0.01, factor_lr=0.02, bias_lr=0.0,
                                             negatives=0))
    assert learner.items.config == ItemConfig.from_dict(mf.config["items"]).overridden(
        max_items=99, prior_weight=1.5, popularity_weight=0.0, half_life_s=7.0, embed_lr=0.01, factor_lr=0.02,
        bias_lr=0.0, negatives=0)


def test_scores_gain_the_popularity_bonus_of_the_items_just_seen(mf):
    learner = OnlineLearner(mf, OnlineConfig(steps=0))
    probe = Interaction("someone", "x", None, 0.0)
    t = _end(mf) + 1000.0  # twenty half-lives after the training data: its counts are gone
    learner.process([Interaction("warm", mf.item_ids[9], 4.0, t, 0, 0)], {})
    before = learner.ranking_scores([probe], {})[0]
    hot = mf.item_ids[3]
    learner.process([Interaction(f"u{k}", hot, 4.0, t, 0, k + 1) for k in range(20)], {})
    gain = learner.ranking_scores([probe], {})[0] - before
    assert gain[3] == pytest.approx(0.7 * math.log(21.0), rel=1e-4) and int(torch.argmax(gain)) == 3
    off = OnlineLearner(mf, OnlineConfig(steps=0, popularity_weight=0.0))
    off.process([Interaction(f"u{k}", hot, 4.0, t, 0, k) for k in range(20)], {})
    users = torch.zeros(1, dtype=torch.long)
    torch.testing.assert_close(off.ranking_scores([probe], {}), mf.adapter.score(mf.adapter.init_states(users), users))


def test_predicted_ratings_follow_an_item_rated_above_expectation(mf):
    learner = OnlineLearner(mf, OnlineConfig(steps=0))
    item = mf.item_ids[4]
    probe = Interaction("someone", item, None, 0.0)
    before = float(learner.predict_ratings([probe], {})[0])
    for k in range(10):
        learner.process([Interaction(f"u{k}", item, 5.0, _end(mf) + k, 0, k)], {})
    after = float(learner.predict_ratings([probe], {})[0])
    assert before < after <= 5.0 and learner.items.rating_delta[learner.item_row(item)] > 0
    off = OnlineLearner(mf, OnlineConfig(steps=0, bias_lr=0.0))
    for k in range(10):
        off.process([Interaction(f"u{k}", item, 5.0, _end(mf) + k, 0, k)], {})
    assert float(off.predict_ratings([probe], {})[0]) == pytest.approx(before)


def test_a_micro_batch_of_implicit_events_only_is_learned(mf):
    learner = OnlineLearner(mf)
    assert learner.items.config.bias_lr > 0
    out = learner.process([Interaction("u1", mf.item_ids[3], None, _end(mf) + 1, 0, 0)], {})
    assert len(out.recommendations[0].items) == 10 and learner.items.total[learner.item_row(mf.item_ids[3])] == 1


def test_redelivered_events_do_not_count_twice(dataset, mf):
    learner = OnlineLearner(mf)
    events = _events(dataset, 0, 40)
    records = dict(learner.process(events, {}).records)
    items = learner.items
    assert items.total.sum() == 40
    state = [a.copy() for a in (items.count, items.count_t, items.total, items.rated, items.rating_delta,
                                items.t_last, items.links)]
    out = learner.process(events, records)
    assert out.duplicates == 40
    for before, now in zip(state, (items.count, items.count_t, items.total, items.rated, items.rating_delta,
                                   items.t_last, items.links)):
        np.testing.assert_array_equal(now, before)


def test_a_version_switch_keeps_the_live_popularity(dataset, mf):
    learner = OnlineLearner(mf)
    learner.process(_events(dataset, 0, 60), {})
    t = learner.items.stream_time
    live = learner.items.popularity(t)
    newer = train(dataset, TrainConfig(model="mf", meta="fomaml", epochs=1, pretrain_epochs=1, seed=1,
                                       model_config=SMALL))
    learner.switch(newer)
    assert learner.items.config == ItemConfig.from_dict(newer.config["items"])  # the new version's settings
    moved = {mf.item_ids[r]: c for r, c in enumerate(live) if c > 0}
    assert len(moved) > 10
    now = learner.items.popularity(t)
    for item, c in moved.items():
        assert now[newer.item_index[item]] == pytest.approx(c), item


@pytest.mark.parametrize("kwargs", [{"popularity_weight": -1.0}, {"item_half_life": 0.0}, {"bias_lr": -0.1},
                                    {"prior_weight": -1.0}, {"embed_lr": -0.1}, {"factor_lr": -0.1},
                                    {"negatives": -1}, {"owner_delay": -1}, {"max_items": 1}])
def test_bad_item_settings_are_user_errors(kwargs) -> None:
    with pytest.raises(MetarecError):
        OnlineConfig(**kwargs)
