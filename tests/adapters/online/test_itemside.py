"""The online item side (adapters/online/itemside.py): new items get rows, learn, get recommended; bounded; no future leak."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

from adapters.evaluation.baselines import LearnerModel
from adapters.errors import MetarecError
from adapters.online.itemside import ItemSide, ItemSideConfig
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from adapters.meta.training import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint():
    return train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                 TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                             model_config={"dim": 8, "rating_dim": 4}))


def test_new_item_gets_its_own_row_and_is_recommended_after_it_co_occurs(checkpoint):
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5, item_prior=4.0))
    base = learner.n_items
    anchor = checkpoint.item_ids[1]
    records: dict = {}
    offset = 0

    def batch(events):
        nonlocal offset
        evs = [Interaction(u, i, 5.0, 1e6 + offset + n, 0, offset + n) for n, (u, i) in enumerate(events)]
        offset += len(evs)
        out = learner.process(evs, records)
        records.update(out.records)
        return out

    batch([("first", "brand-new")])
    row = learner.item_row("brand-new")
    assert row >= base and learner.items.online[row]  # its own row, not the shared unknown row 0
    assert learner.items.row("brand-new") != learner.items.row(anchor)
    # ten other users meet the anchor item, then the new one
    for k in range(10):
        batch([(f"fan{k}", anchor)])
        batch([(f"fan{k}", "brand-new")])
    assert learner.items.cooc[learner.item_row(anchor), row] == 10
    out = batch([("newcomer", anchor)])  # a user whose window holds the anchor only
    assert out.recommendations[0].items[0] == "brand-new"
    # the new row learned from its neighbours: it is no longer the unknown row
    assert not np.allclose(learner.adapter.item_emb[row].numpy(), learner.adapter.item_emb[0].numpy())


def test_eviction_keeps_the_table_within_max_items(checkpoint):
    base = len(checkpoint.item_ids)
    learner = OnlineLearner(checkpoint, OnlineConfig(max_items=base + 20))
    records: dict = {}
    for n in range(200):
        out = learner.process([Interaction(f"u{n % 7}", f"new{n}", 4.0, 1e6 + n, 0, n)], records)
        records.update(out.records)
        assert learner.n_items <= base + 20
        assert learner.adapter.item_emb.shape[0] == learner.n_items
    side = learner.items
    assert side.evicted > 0
    assert side.row("new199") > 0 and side.row("new198") > 0  # the newest items are kept
    assert sum(1 for i in side.ids[1:] if i) <= base + 20 - 1
    assert side.row("new0") == 0  # the oldest online item was evicted ...
    learner.process([Interaction("u0", "new0", 4.0, 2e6, 0, 10_000)], records)
    assert side.row("new0") > 0  # ... and gets a row again when it comes back


def test_max_items_is_validated():
    with pytest.raises(MetarecError):
        ItemSideConfig(max_items=1)
    with pytest.raises(MetarecError):
        OnlineConfig(max_items=0)


def test_burst_inside_one_micro_batch_is_scored_with_the_pre_batch_item_side(checkpoint):
    """Item 'fresh' first appears at a burst's first event; the burst's later events must not see its row, its
    co-occurrences or its count: they are scored with the state from before the batch (here: a miss)."""
    known = checkpoint.item_ids[1:13]
    users = [f"h{k}" for k in range(12)] + ["x", "y", "z"]
    items = known + ["fresh"] * 3
    stamps = [10.0 * k for k in range(12)] + [500.0, 500.2, 500.4]  # the last three: one 1-second micro-batch
    stream = EventStream.from_arrays(users, items, [5.0] * 15, stamps, history=0.8)
    model = LearnerModel(stream, OnlineLearner(checkpoint, OnlineConfig(item_prior=4.0)), "metarec")
    result = run_protocol(stream, [model], PrequentialConfig(history=0.8, batch_seconds=1.0), progress=False)
    ranks = result.traces["metarec"].rank_array()
    # x: 'fresh' never seen before (a miss by definition); y, z: a candidate by position, but unknown to the
    # pre-batch learner, so ranked below all 12 other candidates
    assert len(ranks) == 3 and np.isinf(ranks[0]) and (ranks[1:] == 12).all()
    assert model.learner.item_row("fresh") > 0  # learned after the batch


def test_prior_matches_the_reference_formula():
    side = ItemSide(["<unk>", "a", "b", "c"], ItemSideConfig(cooc_weight=1.0, cooc_window=2, cooc_decay=0.5,
                                                             cooc_alpha=0.5))
    side.observe([[], [1], [1, 2]], np.array([1, 2, 3]))
    prior = side.prior([[1, 2]])[0]
    counts = np.array([0.0, 1.0, 1.0, 1.0])
    raw = 0.5 * side.cooc[1] + 1.0 * side.cooc[2]
    np.testing.assert_allclose(prior, np.log1p(raw / np.sqrt(counts + 1.0)), rtol=1e-6)


def test_a_new_item_with_features_starts_from_the_items_that_share_them():
    ds = synthetic_dataset(n_users=30, n_items=40, seed=3)
    keep = ds.item_ids != "i5"  # i5 is described by the dataset's item features but never in training
    from dataclasses import replace as dc_replace
    part = dc_replace(ds, user_ids=ds.user_ids[keep], item_ids=ds.item_ids[keep], ratings=ds.ratings[keep],
                      timestamps=ds.timestamps[keep])
    ck = train(part, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                                 model_config={"dim": 8, "rating_dim": 4}))
    assert "i5" not in ck.item_index and ck.item_features["i5"]
    learner = OnlineLearner(ck, OnlineConfig())
    row = learner.items.add("i5")
    emb = learner.adapter.item_emb
    itf = ds.item_features
    genre = itf.genres[itf.item_ids.index("i5")].argmax()
    same = [ck.item_index[i] for n, i in enumerate(itf.item_ids) if i in ck.item_index and itf.genres[n, genre] > 0]
    assert not np.allclose(emb[row].numpy(), emb[0].numpy())
    # a mean of rows of its own genre: within their span, closer to their mean than the unknown row is
    centre = emb[same].mean(0)
    assert float((emb[row] - centre).norm()) < float((emb[0] - centre).norm())


def test_new_items_of_one_batch_never_evict_each_other(checkpoint):
    base = len(checkpoint.item_ids)
    learner = OnlineLearner(checkpoint, OnlineConfig(max_items=base + 3))
    batch = [Interaction(f"u{n}", f"burst{n}", 4.0, 1e6 + n, 0, n) for n in range(8)]
    learner.process(batch, {})
    rows = [learner.item_row(f"burst{n}") for n in range(8)]
    assert min(rows) > 0 and len(set(rows)) == 8  # trained items were evicted instead
    assert learner.n_items == base + 3


def test_melu_serves_new_items_as_unknown():
    """melu's item tables cannot grow: a new item stays the unknown row, and lists are still served."""
    ck = train(synthetic_dataset(n_users=20, n_items=40), TrainConfig(
        model="melu", meta="fomaml", epochs=1, model_config={"emb_dim": 4, "hidden": 8, "n_negatives": 6}))
    learner = OnlineLearner(ck, OnlineConfig(top_k=3))
    out = learner.process([Interaction("a", "i1", 4.0, 1.0, 0, 0), Interaction("a", "zzz-new", 5.0, 2.0, 0, 1)], {})
    assert out.unknown_items == 1 and learner.item_row("zzz-new") == 0 and learner.n_items == ck.adapter.n_items
    assert len(out.recommendations[0].items) == 3
