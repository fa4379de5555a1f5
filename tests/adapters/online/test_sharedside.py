"""Two learners sharing one item state through an in-memory owner (adapters/online/sharedside.py, itemstep.py):
what the stream side does with topics, without a broker."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

from adapters.meta.training import TrainConfig, train
from adapters.online.itemshare import ItemRow, ShareConfig, merge
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner

SHARE = ShareConfig(half_life_s=3_600.0)


@pytest.fixture(scope="module")
def checkpoint():  # noqa: ANN201
    ds = synthetic_dataset(n_users=30, n_items=40, seed=3)
    return train(ds, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                                 model_config={"dim": 8, "rating_dim": 4}))


class Group:
    """Learners in shared mode and the owner of every item row (a dict), as the item agent keeps it."""

    def __init__(self, checkpoint, n: int = 2) -> None:  # noqa: ANN001
        cfg = OnlineConfig(top_k=5, item_prior=4.0, item_lr=0.05, item_factor_lr=0.005, shared_items=SHARE)
        self.learners = [OnlineLearner(checkpoint, cfg) for _ in range(n)]
        self.records: list[dict] = [{} for _ in range(n)]
        self.rows: dict[str, ItemRow] = {}
        self.offset = 0
        self.positions: dict[int, int] = {}
        self.log: list[tuple[str, bytes | None, float]] = []  # <group>-items, in order

    def batch(self, k: int, events: list[tuple[str, str, float]], t0: float = 1e6):  # noqa: ANN201
        first = self.positions.get(k, 0)  # each learner reads its own partition k, offsets in order
        evs = [Interaction(u, i, r, t0 + n, k, first + n) for n, (u, i, r) in enumerate(events)]
        self.positions[k] = first + len(evs)
        out = self.learners[k].process(evs, self.records[k])
        self.records[k].update(out.records)
        for item, c in out.item_updates:  # through bytes, as on the topics
            self.offset += 1
            row = merge(self.rows.get(item), type(c).from_bytes(c.to_bytes()), self.offset, SHARE)
            self.rows[item] = row
            self.log.append((item, row.to_bytes(), float(self.offset)))
        return out

    def deliver(self, k: int | None = None) -> None:
        """Every learner (or learner ``k``) applies the published rows it has not applied yet."""
        for n, learner in enumerate(self.learners):
            if k is None or n == k:
                done = getattr(learner, "_test_applied", 0)
                learner.apply_items(self.log[done:])
                learner._test_applied = len(self.log)


def test_two_learners_end_with_the_same_item_rows(checkpoint):
    g = Group(checkpoint)
    items = checkpoint.item_ids[1:9]
    rng = np.random.default_rng(0)
    for step in range(6):
        for k in range(2):  # both learners meet the same items in the same "second"
            g.batch(k, [(f"u{k}-{rng.integers(5)}", str(rng.choice(items)), float(rng.integers(1, 6)))
                        for _ in range(12)], t0=1e6 + 100 * step)
        g.deliver()
    for item in items:
        sa, sb = g.learners[0].item_state(item), g.learners[1].item_state(item)
        np.testing.assert_allclose(sa["tables"], sb["tables"], rtol=1e-6, atol=1e-7)
        for key in ("events", "popularity", "rating_delta", "rated"):
            assert sa[key] == pytest.approx(sb[key]), (item, key)
        assert sa["shared"] == sb["shared"]
        assert sa["events"] > 0 and sa["shared"]["neighbours"]
        np.testing.assert_allclose(sa["tables"], g.rows[item].tables, rtol=1e-6)
    assert g.learners[0].items.n_active == g.learners[1].items.n_active


def test_the_item_side_changes_only_through_the_owner(checkpoint):
    g = Group(checkpoint, n=1)
    item = checkpoint.item_ids[3]
    before = g.learners[0].item_state(item)
    out = g.batch(0, [("u1", checkpoint.item_ids[2], 5.0), ("u1", item, 4.0)])
    assert {i for i, _ in out.item_updates} == {checkpoint.item_ids[2], item}
    assert g.learners[0].item_state(item)["tables"] == before["tables"]  # not learned locally
    g.deliver()
    after = g.learners[0].item_state(item)
    assert after["tables"] != before["tables"] and after["events"] == before["events"] + 1
    assert after["shared"]["neighbours"] == {checkpoint.item_ids[2]: 1.0}


def test_a_new_item_met_by_one_learner_is_recommended_by_the_other(checkpoint):
    g = Group(checkpoint)
    anchor = checkpoint.item_ids[5]
    for k in range(25):  # learner 0's users meet the anchor, then the new item
        g.batch(0, [(f"fan{k}", anchor, 5.0), (f"fan{k}", "brand-new", 5.0)], t0=1e6 + 10 * k)
    assert g.learners[1].item_row("brand-new") == 0
    g.deliver()
    assert g.learners[1].item_row("brand-new") > 0
    out = g.batch(1, [("other", anchor, 5.0)], t0=2e6)
    assert "brand-new" in out.recommendations[0].items


def test_a_deleted_item_leaves_the_learner(checkpoint):
    g = Group(checkpoint, n=1)
    g.batch(0, [("u1", "fresh", 5.0)])
    g.deliver()
    n = g.learners[0].items.n_active
    assert g.learners[0].item_row("fresh") > 0
    g.learners[0].apply_items([("fresh", None, 5.0)])
    assert g.learners[0].item_row("fresh") == 0 and g.learners[0].items.n_active == n - 1
    assert g.learners[0].item_state("fresh") is None and g.learners[0].shared_newest_update() == 5.0


def test_popularity_follows_the_published_counts_in_event_time(checkpoint):
    g = Group(checkpoint, n=1)
    item = checkpoint.item_ids[4]
    g.batch(0, [(f"u{k}", item, 4.0) for k in range(4)], t0=1e6)
    g.deliver()
    learner = g.learners[0]
    learner.shared.refresh(learner.items, learner.freshness, 1e6 + 3)
    fresh = learner.freshness.counts[learner.item_row(item)]
    learner.shared.refresh(learner.items, learner.freshness, 1e6 + 3 + SHARE.half_life_s)
    assert fresh == pytest.approx(4.0) and learner.freshness.counts[learner.item_row(item)] == pytest.approx(2.0)


def test_a_model_switch_keeps_popularity_and_moves_the_shared_rows_to_the_new_version(checkpoint):
    from synthetic_data import synthetic_dataset

    g = Group(checkpoint, n=1)
    item = checkpoint.item_ids[4]
    for step in range(3):
        g.batch(0, [(f"u{k}", item, 4.0) for k in range(8)], t0=1e6 + step)
    g.deliver()
    learner = g.learners[0]
    learner.shared.refresh(learner.items, learner.freshness, 1e6 + 10)
    popular = learner.freshness.counts[learner.item_row(item)]
    other = train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                  TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=5,
                              model_config={"dim": 8, "rating_dim": 4}))
    learner.switch(other)
    learner.shared.refresh(learner.items, learner.freshness, 1e6 + 10)
    assert learner.freshness.counts[learner.item_row(item)] == pytest.approx(popular) and popular > 20
    assert g.rows[item].space == checkpoint.version
    out = g.batch(0, [("u1", item, 4.0)], t0=1e6 + 11)
    mine = dict(out.item_updates)[item]
    assert mine.space == other.version and mine.init is not None  # the row is set again, in the new version
    g.deliver()
    assert g.rows[item].space == other.version and g.rows[item].total == 25
    np.testing.assert_allclose(learner.item_state(item)["tables"], g.rows[item].tables, rtol=1e-6)


def test_what_a_worker_keeps_of_the_group_is_bounded_by_its_item_table(checkpoint):
    cfg = OnlineConfig(top_k=5, item_prior=4.0, max_items=48, shared_items=SHARE)
    learner = OnlineLearner(checkpoint, cfg)
    rows, offset = {}, 0
    for k in range(300):  # a group catalog far larger than this worker's 48 rows
        offset += 1
        c = _contribution(checkpoint.version, f"new-{k - 1}" if k else None)
        rows[f"new-{k}"] = merge(None, c, offset, SHARE)
        learner.apply_items([(f"new-{k}", rows[f"new-{k}"].to_bytes(), float(k))])
    assert learner.items.capacity <= 48 and learner.items.n_active <= 47
    assert len(learner.shared.inlinks) <= 2 * learner.items.capacity + 2
    assert learner.item_row("new-299") > 0  # the newest stay


def _contribution(space: str, previous: str | None):  # noqa: ANN202
    from adapters.online.itemshare import ItemContribution

    return ItemContribution(space, 1e6, 1.0, neighbours={previous: 1.0} if previous else {})
