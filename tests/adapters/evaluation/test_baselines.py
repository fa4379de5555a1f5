"""The models of the prequential evaluation: popularity, River BiasedMF, the OnlineLearner wrapper."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import adapters.evaluation.baselines
from adapters.evaluation.baselines import LearnerModel, Popularity, RiverBiasedMF
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.baselines).failed == 0


def test_popularity_rating_is_the_item_mean_so_far() -> None:
    s = EventStream.from_arrays(users=list("abcdef"), items=list("xxyxyz"), ratings=[5, 3, 2, 1, np.nan, 4],
                                history=2 / 6)
    res = run_protocol(s, [Popularity(s)], PrequentialConfig(history=2 / 6), progress=False)
    pred = res.traces["popularity"].prediction_array()
    # c:y unseen → global mean (5+3)/2 ; d:x → (5+3)/2 ; e:y (implicit) → y's mean 2 ; f:z unseen → mean of 5,3,2,1
    assert pred.tolist() == pytest.approx([4.0, 4.0, 2.0, 11 / 4])
    fig = res.summary()["popularity"]
    y = np.array([2, 1, 4], dtype=float)
    p = np.array([4.0, 4.0, 11 / 4])
    assert fig["rmse"] == pytest.approx(float(np.sqrt(np.mean((p - y) ** 2))))   # implicit event not in rmse


def test_decayed_popularity_forgets() -> None:
    # x is popular early, y recently: all-time ranks x first, a short half-life ranks y first
    items = ["x"] * 6 + ["y"] * 3 + ["y", "x"]
    users = [f"u{n}" for n in range(len(items))]
    s = EventStream.from_arrays(users=users, items=items, ratings=[5] * len(items), history=9 / 11)
    cfg = PrequentialConfig(history=9 / 11, k=1)
    res = run_protocol(s, [Popularity(s), Popularity(s, half_life=1.0)], cfg, progress=False)
    assert res.traces["popularity"].rank_array().tolist() == [1.0, 0.0]
    assert res.traces["popularity_decayed"].rank_array().tolist() == [0.0, 1.0]


def test_decayed_popularity_scores_by_hand() -> None:
    # half-life 1 event: event n weighs 2**n. History x(5) x(3) y(2); then x(1) y(4) z(4), scored in one batch
    s = EventStream.from_arrays(users=list("abcdef"), items=list("xxyxyz"), ratings=[5, 3, 2, 1, 4, 4], history=0.5)
    m = Popularity(s, half_life=1.0)
    m.learn(0, s.start)
    out = m.step(s.start, len(s), np.arange(3))
    col = {name: c for c, name in enumerate(s.item_names)}
    ranking = {name: out.ranking[:, c].tolist() for name, c in col.items()}
    # each event sees the counts before it: x 1+2, y 4; then x +8; then y +16
    assert ranking == {"x": [3.0, 11.0, 11.0], "y": [4.0, 4.0, 20.0], "z": [0.0, 0.0, 0.0]}
    # rating = the item's decay-weighted mean rating so far; z unseen: the global weighted mean
    assert out.ratings.tolist() == pytest.approx([(5 * 1 + 3 * 2) / 3, 2.0, (5 + 3 * 2 + 2 * 4 + 1 * 8 + 4 * 16) / 31])


def test_river_mirror_ranks_like_predict_one() -> None:
    rng = np.random.default_rng(0)
    n = 600
    s = EventStream.from_arrays(users=rng.integers(0, 20, n).astype(str), items=rng.integers(0, 40, n).astype(str),
                                ratings=rng.integers(1, 6, n), history=0.9)
    m = RiverBiasedMF(s)
    m.learn(0, s.start)
    user = s.user_ids[s.start]
    out = m.step(s.start, s.start + 1, np.array([0]))
    row = out.ranking[0]
    seen = [c for c in range(s.n_cols) if s.first_pos[c] < s.start]
    direct = np.array([m.model.predict_one(user, s.item_names[c]) for c in seen])
    # predict_one adds the global mean and user bias (constants), after one more learned event: compare orders
    m2 = RiverBiasedMF(s)
    m2.learn(0, s.start)
    m2.model.predict_one(user, s.item_ids[s.start])
    expect = np.array([m2.model.predict_one(user, s.item_names[c]) for c in seen])
    assert np.argsort(-row[seen], kind="stable").tolist() == np.argsort(-expect, kind="stable").tolist()
    assert np.allclose(row[seen] - row[seen].mean(), expect - expect.mean(), atol=1e-5)
    # after scoring, the step learned the event: m now predicts what m2 predicts once it has learned that event
    m2.model.learn_one(user, s.item_ids[s.start], float(s.ratings[s.start]))
    learned = np.array([m2.model.predict_one(user, s.item_names[c]) for c in seen])
    assert np.allclose(direct, learned, atol=1e-9)
    assert not np.allclose(direct, expect)


@pytest.fixture(scope="module")
def tiny() -> tuple[EventStream, object]:
    from adapters.data.datasets import Dataset
    from adapters.data.synth import SynthConfig, generate
    from adapters.meta.training import TrainConfig, train
    st = generate(SynthConfig(n_users=80, n_items=60, events_per_user=20, n_clusters=4, seed=5))
    ds = Dataset(name="tiny", fingerprint="tiny", user_ids=st.user_ids, item_ids=st.item_ids, ratings=st.ratings,
                 timestamps=st.timestamps)
    # popularity_weight=0: these tests are about the user states (θ0 vs adapted), not the item-popularity bonus
    ck = train(ds, TrainConfig(model="mf", meta="fomaml", epochs=1, pretrain_epochs=1, history=0.5,
                               popularity_weight=0.0,
                               model_config={"dim": 8, "rating_dim": 4}))
    return EventStream.from_dataset(ds, history=0.5), ck


def _theta0_row(ck: object, learner: object, stream: EventStream, user: str) -> np.ndarray:
    users = torch.tensor([learner.user_row(user)])
    with torch.no_grad():
        scores = ck.adapter.score(ck.adapter.init_states(users), users)[0].numpy()
    rows = np.array([learner.item_row(i) for i in stream.item_names])
    return np.where(rows > 0, scores[rows], -np.inf)   # unknown items are never recommended


def test_learner_scores_each_event_before_learning_it(tiny: tuple[EventStream, object]) -> None:
    from adapters.online.learner import OnlineConfig, OnlineLearner
    s, ck = tiny
    model = LearnerModel(s, OnlineLearner(ck, OnlineConfig()), "metarec")
    model.learn(0, s.start)
    # the first scored event of a user never seen in the history: scored by θ0, then learned
    seen_users = set(s.user_ids[: s.start].tolist())
    n = next(n for n in range(s.start, len(s)) if s.user_ids[n] not in seen_users)
    model.learn(s.start, n) if n > s.start else None
    user = s.user_ids[n]
    out = model.step(n, n + 1, np.array([0]))
    assert np.allclose(out.ranking[0], _theta0_row(ck, model.learner, s, user), atol=1e-6)
    assert user in model.records                                  # learned after scoring
    # its next event is scored with the adapted state, no longer θ0
    m = next(m for m in range(n + 1, len(s)) if s.user_ids[m] == user)
    model.learn(n + 1, m)
    again = model.step(m, m + 1, np.array([0]))
    assert not np.allclose(again.ranking[0], _theta0_row(ck, model.learner, s, user), atol=1e-6)


def test_no_adaptation_stays_at_theta0(tiny: tuple[EventStream, object]) -> None:
    from adapters.online.learner import OnlineConfig, OnlineLearner
    s, ck = tiny
    model = LearnerModel(s, OnlineLearner(ck, OnlineConfig(steps=0)), "no_adaptation")
    model.learn(0, s.start)
    lo = s.start
    out = model.step(lo, lo + 8, np.arange(8))
    for r in range(8):
        assert np.allclose(out.ranking[r], _theta0_row(ck, model.learner, s, s.user_ids[lo + r]), atol=1e-6)


def test_learner_models_run_the_protocol(tiny: tuple[EventStream, object]) -> None:
    from adapters.online.learner import OnlineConfig, OnlineLearner
    s, ck = tiny
    models = [LearnerModel(s, OnlineLearner(ck, OnlineConfig()), "metarec"),
              LearnerModel(s, OnlineLearner(ck, OnlineConfig(steps=0)), "no_adaptation")]
    res = run_protocol(s, models, PrequentialConfig(batch_size=64), progress=False)
    fig = res.summary()
    for name in ("metarec", "no_adaptation"):
        expected = {"rmse", "mae", "hr@10", "ndcg@10", "coverage@10", "novelty@10"}   # no genres: no diversity
        assert expected <= set(fig[name]) <= expected | {"new_item_hr@10"}
        assert 0.0 <= fig[name]["hr@10"] <= 1.0 and fig[name]["rmse"] > 0
    assert fig["metarec"] != fig["no_adaptation"]
