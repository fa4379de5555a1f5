"""Online item rows across a model switch (adapters/online/carryover.py): kept for items the new version does not
know, the new version's rows for the items it knows, statistics by item id, user records re-expressed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.meta.training import TrainConfig, train
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner

SMALL = {"dim": 8, "rating_dim": 4}


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{"model": "seq", "meta": "fomaml", "epochs": 1, "pretrain_epochs": 1, "seed": 0,
                          "model_config": SMALL, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dataset():  # noqa: ANN201
    return synthetic_dataset(n_users=30, n_items=40, seed=3)


@pytest.fixture(scope="module")
def checkpoint(dataset):  # noqa: ANN001, ANN201
    return train(dataset, _cfg())


class Driver:
    """A learner fed micro-batches of (user, item) events, with the records a worker would store."""

    def __init__(self, checkpoint) -> None:  # noqa: ANN001
        self.learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5, prior_weight=4.0))
        self.records: dict = {}
        self.offset = 0

    def batch(self, events: list[tuple[str, str]]):  # noqa: ANN201
        evs = [Interaction(u, i, 5.0, 1e6 + self.offset + n, 0, self.offset + n) for n, (u, i) in enumerate(events)]
        self.offset += len(evs)
        out = self.learner.process(evs, self.records)
        self.records.update(out.records)
        return out

    def learn_new_item(self, anchor: str, item: str = "brand-new") -> None:
        """Ten users meet ``anchor`` then ``item`` (unknown to the checkpoint): it gets a row that learns."""
        for k in range(10):
            self.batch([(f"fan{k}", anchor)])
            self.batch([(f"fan{k}", item)])

    def rows(self, item: str) -> list[torch.Tensor]:
        r = self.learner.item_row(item)
        return [t[r].clone() for t in self.learner.adapter.item_tables()]


def _with_item(ds, item: str, users: int = 10):  # noqa: ANN001, ANN202
    """``ds`` plus one event on ``item`` for each of the first ``users`` users (after their others)."""
    extra_u = np.array([f"u{k}" for k in range(users)], dtype=object)
    ts = ds.timestamps[-1] + 1 + np.arange(users, dtype=np.float64)
    return ds.__class__(**{**ds.__dict__, "user_ids": np.concatenate([ds.user_ids, extra_u]),
                           "item_ids": np.concatenate([ds.item_ids, np.full(users, item, dtype=object)]),
                           "ratings": np.concatenate([ds.ratings, np.full(users, 5.0, np.float32)]),
                           "timestamps": np.concatenate([ds.timestamps, ts])})


def test_doctests() -> None:
    import doctest

    import adapters.online.carryover
    assert doctest.testmod(adapters.online.carryover).failed == 0


def test_an_item_learned_online_keeps_its_row_across_a_switch_to_a_version_trained_without_it(dataset, checkpoint):
    d = Driver(checkpoint)
    anchor = checkpoint.item_ids[1]
    d.learn_new_item(anchor)
    learned = d.rows("brand-new")
    side = d.learner.items
    old_row, a_row = side.row("brand-new"), side.row(anchor)
    cooc, total = float(side.cooc(np.array([a_row]))[0, old_row]), float(side.total[old_row])
    count = float(side.popularity(side.stream_time)[old_row])
    newer = train(dataset, _cfg(seed=1), init=checkpoint)               # warm-started, never saw "brand-new"
    assert "brand-new" not in newer.item_index
    d.learner.switch(newer)
    side = d.learner.items
    row = side.row("brand-new")
    assert row > 0 and side.online[row] and d.learner.carried.items == 1 and d.learner.carried.copied
    for now, before in zip(d.rows("brand-new"), learned):              # the same learned values
        torch.testing.assert_close(now, before, rtol=0, atol=0)
    torch.testing.assert_close(d.rows(anchor)[0], newer.adapter.item_emb[newer.item_index[anchor]], rtol=0, atol=0)
    assert side.cooc(np.array([side.row(anchor)]))[0, row] == cooc and side.total[row] == total
    assert side.popularity(side.stream_time)[row] == pytest.approx(count)
    fan = d.learner._current(d.records["fan0"])                        # a stored record remaps by item id
    assert row in fan.items.tolist() and fan.seen[row]
    out = d.batch([("newcomer", anchor)])                              # and it is recommended
    assert out.recommendations[0].items[0] == "brand-new"


def test_a_switch_to_a_version_that_knows_the_item_uses_its_trained_row(dataset, checkpoint):
    d = Driver(checkpoint)
    anchor = checkpoint.item_ids[1]
    d.learn_new_item(anchor)
    learned = d.rows("brand-new")
    knows = train(_with_item(dataset, "brand-new"), _cfg(seed=1), init=checkpoint)
    d.learner.switch(knows)
    side = d.learner.items
    row = side.row("brand-new")
    assert row == knows.item_index["brand-new"] and not side.online[row] and d.learner.carried.items == 0
    for name, now, before in zip(knows.adapter.ITEM_TABLES, d.rows("brand-new"), learned):
        torch.testing.assert_close(now, getattr(knows.adapter, name)[row], rtol=0, atol=0)
        assert not torch.equal(now, before)
    assert side.cooc(np.array([side.row(anchor)]))[0, row] == 10      # the statistics follow the item


def test_after_a_switch_to_an_unrelated_version_the_row_is_rebuilt_in_its_space(dataset, checkpoint):
    d = Driver(checkpoint)
    anchor = checkpoint.item_ids[1]
    d.learn_new_item(anchor)
    learned = d.rows("brand-new")
    cold = train(dataset, _cfg(seed=5))                                 # trained from scratch: another space
    d.learner.switch(cold)
    assert d.learner.item_row("brand-new") > 0 and not d.learner.carried.copied
    # its only co-occurring item is the anchor: the rebuilt row is the anchor's row of the new model
    for name, now, before in zip(cold.adapter.ITEM_TABLES, d.rows("brand-new"), learned):
        torch.testing.assert_close(now, getattr(cold.adapter, name)[cold.item_index[anchor]])
        assert not torch.equal(now, before)


def test_a_switch_over_the_same_vocabulary_keeps_every_row_so_records_stay_valid(dataset, checkpoint):
    d = Driver(checkpoint)
    anchor = checkpoint.item_ids[1]
    d.learn_new_item(anchor, "first")
    d.learn_new_item(anchor, "second")
    rows = {i: d.learner.item_row(i) for i in ("first", "second")}
    d.learner.items.vocab._evict(1)                                     # a hole before the online rows
    rows = {i: r for i, r in rows.items() if d.learner.item_row(i) == r}
    vocab = d.learner.vocab
    same = train(dataset, _cfg(seed=2), init=checkpoint)
    assert same.item_ids == checkpoint.item_ids
    d.learner.switch(same)
    assert d.learner.vocab == vocab and rows
    assert {i: d.learner.item_row(i) for i in rows} == rows


def test_readapt_re_expresses_stored_records_in_the_new_version(dataset, checkpoint):
    d = Driver(checkpoint)
    for k in range(6):
        d.batch([(f"u{k}", checkpoint.item_ids[1 + k]), (f"u{k}", checkpoint.item_ids[2 + k])])
    d.batch([("empty", "brand-new")])
    d.records["empty"].items = d.records["empty"].items[:0]            # a record without a window
    newer = train(_with_item(dataset, "other"), _cfg(seed=1), init=checkpoint)
    d.learner.switch(newer)
    fresh = d.learner.readapt(d.records)
    assert set(fresh) == set(d.records)
    users = torch.tensor([d.learner.user_row("u0")])
    for user, rec in fresh.items():
        assert rec.vocab == d.learner.vocab and rec.n_items == d.learner.n_items
        if user == "empty":
            assert rec.state is None
            continue
        assert rec.model_version == newer.version
        theta0 = newer.adapter.init_states(torch.tensor([d.learner.user_row(user)]))[0]
        assert not torch.allclose(torch.from_numpy(rec.state), theta0)  # adapted on its window
    d.records.update(fresh)
    assert d.learner.readapt(d.records) == {}                           # nothing left of another version
    probe = Interaction("u0", "x", None, 0.0)
    state = torch.from_numpy(fresh["u0"].state)[None]
    np.testing.assert_allclose(d.learner.ranking_scores([probe], d.records)[0, 1].item(),
                               d.learner._scores(state, users, windows=[d.learner._window(fresh["u0"])])[0, 1].item())
