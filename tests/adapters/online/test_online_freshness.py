"""The online item side (adapters/online/freshness.py) and its use by the OnlineLearner and by training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapters.errors import MetarecError
from adapters.online.freshness import FreshnessConfig, ItemFreshness, decayed_counts
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner
from adapters.meta.training import TrainConfig, train
from synthetic_data import synthetic_dataset


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_users=30, n_items=40, seed=5)


@pytest.fixture(scope="module")
def checkpoint(dataset):
    return train(dataset, TrainConfig(model="mf", meta="maml", epochs=1, pretrain_epochs=1, seed=0,
                                      freshness=0.7, freshness_half_life=50.0, item_rating_lr=0.05,
                                      model_config={"dim": 8, "rating_dim": 4}))


def events_of(dataset, lo: int, hi: int) -> list[Interaction]:
    return [Interaction(str(dataset.user_ids[k]), str(dataset.item_ids[k]),
                        None if math.isnan(dataset.ratings[k]) else float(dataset.ratings[k]),
                        float(dataset.timestamps[k]), 0, k) for k in range(lo, hi)]


def test_batched_decay_equals_event_by_event_decay() -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 12, 200)
    one, batched = ItemFreshness(12, 1.0, 30.0), ItemFreshness(12, 1.0, 30.0)
    for r in rows:
        one.observe(np.array([r]))
    for s in range(0, 200, 17):
        batched.observe(rows[s:s + 17])
    np.testing.assert_allclose(one.counts, batched.counts, rtol=1e-9)
    np.testing.assert_allclose(batched.counts, decayed_counts(rows, 12, 30.0), rtol=1e-9)
    assert batched.counts[0] == 0.0  # the unknown item never gains popularity


def test_rating_correction_moves_toward_the_residual_and_off_means_off() -> None:
    f = ItemFreshness(5, rating_lr=0.1)
    f.observe(np.array([2, 2, 3]), errors=np.array([-1.0, -1.0, np.nan]))  # item 2 predicted 1 too low, twice
    assert f.rating_delta[2] == pytest.approx(0.2) and f.rating_delta[3] == 0.0
    off = ItemFreshness(5)
    off.observe(np.array([2]), errors=np.array([-1.0]))
    assert not off.rating_delta.any() and not off.bonus().any()


def test_training_stores_the_settings_and_the_counts_at_the_end_of_the_training_data(dataset, checkpoint, tmp_path):
    stored = checkpoint.config["freshness"]
    assert stored["weight"] == 0.7 and stored["half_life"] == 50.0 and stored["rating_lr"] == 0.05
    rows = np.array([checkpoint.item_index.get(i, 0) for i in dataset.item_ids.tolist()])
    np.testing.assert_allclose(stored["counts"], decayed_counts(rows, len(checkpoint.item_ids), 50.0), atol=1e-4)
    from adapters.meta.checkpoint import Checkpoint
    back = Checkpoint.load(checkpoint.save(tmp_path / "ck"))
    learner = OnlineLearner(back)
    assert learner.freshness.config.weight == 0.7
    # every stored setting reaches the serving side, the rating prior (mf default) included
    assert learner.freshness.config == FreshnessConfig.from_dict(stored)
    np.testing.assert_allclose(learner.freshness.counts, stored["counts"])


def test_scores_gain_the_popularity_bonus_of_the_items_just_seen(dataset, checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(steps=0))
    probe = Interaction("someone", "x", None, 0.0)
    before = learner.ranking_scores([probe], {})[0]
    hot = checkpoint.item_ids[3]
    learner.process([Interaction(f"u{k}", hot, 4.0, float(k), 0, k) for k in range(20)], {})
    after = learner.ranking_scores([probe], {})[0]
    gain = after - before
    assert gain[3] > 0 and int(torch.argmax(gain)) == 3
    off = OnlineLearner(checkpoint, OnlineConfig(steps=0, freshness=0.0))
    off.process([Interaction(f"u{k}", hot, 4.0, float(k), 0, k) for k in range(20)], {})
    users = torch.zeros(1, dtype=torch.long)
    torch.testing.assert_close(off.ranking_scores([probe], {}),
                               checkpoint.adapter.score(checkpoint.adapter.init_states(users), users))


def test_predicted_ratings_follow_an_item_rated_above_expectation(checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(steps=0))
    item = checkpoint.item_ids[4]
    probe = Interaction("someone", item, None, 0.0)
    before = float(learner.predict_ratings([probe], {})[0])
    for k in range(10):
        learner.process([Interaction(f"u{k}", item, 5.0, float(k), 0, k)], {})
    after = float(learner.predict_ratings([probe], {})[0])
    assert before < after <= 5.0


def test_redelivered_events_do_not_count_twice(dataset, checkpoint):
    learner = OnlineLearner(checkpoint)
    events = events_of(dataset, 0, 40)
    records = dict(learner.process(events, {}).records)
    counts = learner.freshness.counts.copy()
    learner.process(events, records)
    np.testing.assert_array_equal(learner.freshness.counts, counts)


def test_a_version_switch_keeps_the_live_counts(dataset, checkpoint):
    learner = OnlineLearner(checkpoint)
    learner.process(events_of(dataset, 0, 60), {})
    live = learner.freshness.counts.copy()
    newer = train(dataset, TrainConfig(model="mf", meta="fomaml", epochs=1, pretrain_epochs=1, seed=1,
                                       model_config={"dim": 8, "rating_dim": 4}))
    learner.switch(newer)
    assert learner.freshness.config.weight == newer.config["freshness"]["weight"]
    moved = {checkpoint.item_ids[r]: c for r, c in enumerate(live) if c > 0}
    for item, c in moved.items():
        assert learner.freshness.counts[newer.item_index[item]] == pytest.approx(c)


@pytest.mark.parametrize("kwargs", [{"freshness": -1.0}, {"freshness_half_life": 0.0}, {"item_rating_lr": -0.1}])
def test_bad_freshness_settings_are_user_errors(kwargs) -> None:
    with pytest.raises(MetarecError):
        OnlineConfig(**kwargs)
    with pytest.raises(MetarecError):
        FreshnessConfig(weight=-1.0)
