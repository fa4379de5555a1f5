"""``because`` (adapters/online/explain.py) and the online learner under the Bayesian task learner."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from online_events import interactions as events, run_batches as run
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.meta.training import TrainConfig, train
from adapters.online.explain import explain
from adapters.online.learner import OnlineConfig, OnlineLearner
from adapters.online.tasklearner import support_batch


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_users=30, n_items=40, seed=3)


@pytest.fixture(scope="module", params=["mf", "seq"])
def checkpoint(request, dataset):
    return train(dataset, TrainConfig(model=request.param, meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                                      model_config={"dim": 8, "rating_dim": 4}, task_learner="bayes"))


def test_every_reason_is_an_item_of_the_user_s_own_window(checkpoint, dataset):
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5))
    records, lists = run(learner, events(dataset, 300))
    assert lists and learner.task.kind == "bayes"  # the checkpoint's task learner by default
    named = 0
    for user, rec in lists.items():
        window = {learner.item_ids[i] for i in records[user].items}
        assert rec.because is not None and len(rec.because) == len(rec.items)
        assert all(b is None or b in window for b in rec.because)
        named += sum(b is not None for b in rec.because)
        assert rec.uncertainty is not None and len(rec.uncertainty) == len(rec.items)
        assert all(u > 0 and math.isfinite(u) for u in rec.uncertainty)
    # mf's scores have no term that depends on the window (its co-occurrence prior is off by default): no reason
    assert named > 0 if checkpoint.model == "seq" else named == 0
    off = OnlineLearner(checkpoint, OnlineConfig(top_k=5, explain=False, task_learner="gradient"))
    _, plain = run(off, events(dataset, 300))
    assert all(r.because is None and r.uncertainty is None for r in plain.values())


def _explain(learner: OnlineLearner, rec, users: torch.Tensor, states: torch.Tensor, listed: np.ndarray):
    """:func:`explain` of one record as ``learner`` ranks it (its model, item table, window and model states)."""
    return explain(learner.adapter, learner.items, [learner._window(rec)], learner.task.model_states(states), users,
                   listed)


def test_the_reason_is_the_window_item_that_co_occurred_with_the_listed_item(checkpoint, dataset):
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5, prior_weight=1.0))
    records, _ = run(learner, events(dataset, 200))
    user = next(u for u, r in records.items() if len(r.items) >= 3)
    rec = records[user]
    anchor = int(rec.items[-3])  # an older window item, not the newest
    listed = np.array([[i for i in range(1, learner.n_items) if not rec.seen[i]][:2]])
    x, y = int(listed[0, 0]), int(listed[0, 1])
    side = learner.items
    for z in (x, y):  # no co-occurrence of x or y with anything, in either direction
        side.links[:, z] = 0.0
        side.links[z, :] = 0.0
    side.links[x, anchor] = 1e4  # a strong co-occurrence: the counted part dominates any learned part
    users = torch.tensor([learner.user_row(user)])
    states = learner._states([rec], users)
    reasons = _explain(learner, rec, users, states, listed)[0]
    assert reasons[0] == learner.item_ids[anchor]
    if checkpoint.model == "mf":  # no co-occurrence and no learned context: nothing supports y
        assert reasons[1] is None


def test_seq_s_learned_part_names_the_position_of_the_largest_attention_term(dataset):
    ck = train(dataset, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                                    model_config={"dim": 8, "rating_dim": 4}))
    learner = OnlineLearner(ck, OnlineConfig(top_k=5, prior_weight=0.0))
    records, lists = run(learner, events(dataset, 200))
    user = next(u for u, r in records.items() if len(r.items) >= 4)
    rec, a = records[user], learner.adapter
    listed = np.array([[learner.item_index[i] for i in lists[user].items]])
    users = torch.tensor([learner.user_row(user)])
    states = learner._states([rec], users)
    sb = support_batch([rec], users)
    terms = (states[0, a.gain_index] * a.attention(sb)[0, :, None]
             * (a.ctx_emb[sb.items[0]] @ a.item_emb[torch.from_numpy(listed[0])].T)).detach().numpy()
    expected = [learner.item_ids[int(rec.items[terms[:, j].argmax()])] if terms[:, j].max() > 0 else None
                for j in range(listed.shape[1])]
    assert _explain(learner, rec, users, states, listed)[0] == expected == lists[user].because


def test_bayes_records_start_from_theta0_under_gradient_and_back(checkpoint, dataset):
    evs = events(dataset, 120)
    bayes = OnlineLearner(checkpoint, OnlineConfig())
    records, _ = run(bayes, evs)
    width = bayes.task.width
    assert all(r.state.shape == (width,) for r in records.values())
    grad = OnlineLearner(checkpoint, OnlineConfig(task_learner="gradient"))
    users = torch.tensor([grad.user_row(u) for u in records])
    # a state of the other learner's width is not read: θ0 instead (and its next batch re-adapts on the window)
    assert torch.equal(grad._states(list(records.values()), users), grad.task.init_states(users))


def test_exploration_needs_the_bayes_task_learner(checkpoint):
    with pytest.raises(MetarecError, match="needs --task-learner bayes"):
        OnlineLearner(checkpoint, OnlineConfig(task_learner="gradient", explore="ucb"))
    with pytest.raises(MetarecError, match="explore-scale"):
        OnlineConfig(explore_scale=-1.0)


def test_the_reasons_terms_add_up_to_the_prior_the_learner_ranks_with(checkpoint, dataset):
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5, prior_weight=1.0))
    records, _ = run(learner, events(dataset, 200))
    side, cols = learner.items, np.arange(1, learner.n_items)
    for rec in list(records.values())[:10]:
        window = learner._window(rec)
        terms, total = side.prior_terms(window, cols)
        assert terms.shape == (min(len(window), side.config.cooc_window), len(cols))
        assert np.allclose(total, side.prior([window])[0][cols], rtol=1e-5, atol=1e-6)
