"""Who merges a learner's item contributions (adapters/online/items/owner.py, OnlineConfig.owner_delay): its own
table at once, one micro-batch later (a group's round trip simulated), or the group's owners (shared mode), which
merge every learner's contributions and publish rows that every learner applies."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.meta.training import TrainConfig, train
from adapters.online.carryover import new_item_table
from adapters.online.items.config import ItemConfig
from adapters.online.items.contributions import INIT, Contributions
from adapters.online.items.owner import InProcessOwner
from adapters.online.items.table import ItemTable
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner

HALF_LIFE = 3_600.0


@pytest.fixture(scope="module")
def checkpoint():  # noqa: ANN201
    return train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                 TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                             model_config={"dim": 8, "rating_dim": 4}))


def test_doctests() -> None:
    import doctest

    import adapters.online.items.owner
    assert doctest.testmod(adapters.online.items.owner).failed == 0


# -- the in-process owner ----------------------------------------------------------------------------------------
def test_the_in_process_owner_merges_delay_micro_batches_later_in_order() -> None:
    def batch(t: float) -> Contributions:
        return Contributions.of(["a"], t=[t], events=[1])

    for delay in (0, 1, 2):
        table, owner = ItemTable(["<unk>", "a"], ItemConfig()), InProcessOwner(delay)
        seen = []
        for k in range(4):
            owner.settle(table, batch(float(k)))
            seen.append((float(table.total[1]), float(table.t_last[1])))
        assert seen == [(max(0, k + 1 - delay), k - delay if k >= delay else -np.inf) for k in range(4)], delay
        owner.flush(table)  # the end of a stream: nothing left waiting
        assert table.total[1] == 4 and table.t_last[1] == 3.0 and not owner.queue
    with pytest.raises(MetarecError):
        InProcessOwner(-1)
    with pytest.raises(MetarecError):
        OnlineConfig(owner_delay=-1)


def _events(item: str, n: int, t0: float, offset: int = 0) -> list[Interaction]:
    return [Interaction(f"u{offset + k}", item, 4.0, t0 + k, 0, offset + k) for k in range(n)]


def test_a_learner_s_own_owner_merges_at_once_or_one_micro_batch_later(checkpoint) -> None:
    a, b = checkpoint.item_ids[3], checkpoint.item_ids[4]
    local = OnlineLearner(checkpoint, OnlineConfig(owner_delay=0))
    delayed = OnlineLearner(checkpoint, OnlineConfig(owner_delay=1))
    for learner in (local, delayed):
        out = learner.process(_events(a, 3, 2e6), {})
        assert len(out.item_updates) == 0  # merged here, nothing for anybody else
    ra = local.item_row(a)
    assert local.items.total[ra] == 3 and local.items.t_last[ra] == 2e6 + 2 and local.items.space[ra] != ""
    assert delayed.items.total[ra] == 0 and delayed.items.space[ra] == ""  # still on its way
    for learner in (local, delayed):
        learner.process(_events(b, 2, 2e6 + 10, offset=3), {})
    rb = local.item_row(b)
    assert delayed.items.total[ra] == 3 and delayed.items.total[rb] == 0 and local.items.total[rb] == 2


def test_a_switch_merges_what_is_still_on_its_way_before_carrying_over(checkpoint) -> None:
    item = checkpoint.item_ids[3]
    learner = OnlineLearner(checkpoint, OnlineConfig(owner_delay=1))
    learner.process(_events(item, 4, 2e6), {})
    learner.switch(checkpoint)
    assert learner.items.total[learner.item_row(item)] == 4 and not learner.owner.queue


def test_in_shared_mode_the_learner_hands_its_contributions_over(checkpoint) -> None:
    learner = OnlineLearner(checkpoint, OnlineConfig(owner_delay=None))
    a = checkpoint.item_ids[3]
    out = learner.process(_events(a, 3, 2e6), {})
    c = out.item_updates
    assert learner.owner is None and not learner.items.total.any()  # nothing merged by itself
    k = c.items.index(a)
    assert c.space == learner.model_version and c.events[k] == 3 and c.kind[k] == INIT and c.t[k] == 2e6 + 2
    assert learner.merge_items(Contributions.from_bytes(c.to_bytes()), offset=0).tolist() == [
        learner.item_row(i) for i in c.items]  # the items this process owns: merged on demand
    assert learner.items.total[learner.item_row(a)] == 3
    assert len(learner.merge_items(c, offset=0)) == 0  # redelivered: skipped


# -- shared mode: two learners, one owner ---------------------------------------------------------------------------
class Group:
    """Learners in shared mode and the owner of every item: an item table built like a learner's, which merges the
    contributions (as bytes, as on ``<group>-item-updates``) and publishes rows (as bytes, as on ``<group>-items``)."""

    def __init__(self, checkpoint, n: int = 2, **config: object) -> None:  # noqa: ANN001
        cfg = OnlineConfig(**{"top_k": 5, "prior_weight": 4.0, "item_half_life": HALF_LIFE, **config})
        self.learners = [OnlineLearner(checkpoint, replace(cfg, owner_delay=None)) for _ in range(n)]
        _, self.owner = new_item_table(checkpoint, cfg)
        self.records: list[dict] = [{} for _ in range(n)]
        self.positions: dict[int, int] = {}
        self.offset = -1  # of the owner's input
        self.log: list[tuple[str, bytes | None, float]] = []  # <group>-items, in order
        self.applied = [0] * n

    def batch(self, k: int, events: list[tuple[str, str, float]], t0: float = 2e6):  # noqa: ANN201
        first = self.positions.get(k, 0)  # each learner reads its own input partition k, offsets in order
        evs = [Interaction(u, i, r, t0 + n, k, first + n) for n, (u, i, r) in enumerate(events)]
        self.positions[k] = first + len(evs)
        out = self.learners[k].process(evs, self.records[k])
        self.records[k].update(out.records)
        if len(out.item_updates):
            self.offset += 1
            rows = self.owner.merge(Contributions.from_bytes(out.item_updates.to_bytes()), offset=self.offset)
            self.log += [(item, row.to_bytes(), float(self.offset)) for item, row in self.owner.publish(rows)]
        return out

    def deliver(self) -> None:
        """Every learner applies the published rows it has not applied yet."""
        for n, learner in enumerate(self.learners):
            learner.apply_items(self.log[self.applied[n]:])
            self.applied[n] = len(self.log)


def test_two_learners_end_with_the_same_item_rows(checkpoint) -> None:
    g = Group(checkpoint)
    items = checkpoint.item_ids[1:9]
    rng = np.random.default_rng(0)
    for step in range(6):
        for k in range(2):  # both learners meet the same items in the same "second"
            g.batch(k, [(f"u{k}-{rng.integers(5)}", str(rng.choice(items)), float(rng.integers(1, 6)))
                        for _ in range(12)], t0=2e6 + 100 * step)
        g.deliver()
    a, b = g.learners
    for item in items:
        sa, sb, so = a.item_state(item), b.item_state(item), g.owner.describe(item)
        assert sa["events"] > 0 and sa["neighbours"] and sa["model_version"] == a.model_version, item
        for key in ("events", "rated", "rating_delta", "popularity", "last_event", "neighbours", "model_version",
                    "offset"):
            assert sa[key] == sb[key] == so[key], (item, key)
        np.testing.assert_allclose(sa["tables"], sb["tables"], rtol=0, atol=0)
        np.testing.assert_allclose(sa["tables"], so["tables"], rtol=0, atol=0)
    assert sum(a.item_state(i)["events"] for i in items) == 6 * 2 * 12
    assert a.items.n_active == b.items.n_active


def test_the_item_state_changes_only_through_the_owner(checkpoint) -> None:
    g = Group(checkpoint, n=1)
    learner = g.learners[0]
    other, item = checkpoint.item_ids[2], checkpoint.item_ids[3]
    r = learner.item_row(item)
    before, count = learner.item_state(item), (learner.items.count[r], learner.items.count_t[r])
    out = g.batch(0, [("u1", other, 5.0), ("u1", item, 4.0)])
    assert {other, item} <= set(out.item_updates.items)
    now = learner.item_state(item)  # not learned locally (its popularity is read at the stream's time: moved on)
    assert {k: v for k, v in now.items() if k != "popularity"} == {k: v for k, v in before.items() if k != "popularity"}
    assert (learner.items.count[r], learner.items.count_t[r]) == count
    g.deliver()
    after = learner.item_state(item)
    assert after["tables"] != before["tables"] and after["events"] == before["events"] + 1
    assert after["neighbours"] == {other: 1.0} and after["offset"] == 0


def test_a_new_item_met_by_one_learner_is_recommended_by_the_other(checkpoint) -> None:
    g = Group(checkpoint)
    anchor = checkpoint.item_ids[5]
    for k in range(25):  # learner 0's users meet the anchor, then the new item
        g.batch(0, [(f"fan{k}", anchor, 5.0), (f"fan{k}", "brand-new", 5.0)], t0=2e6 + 10 * k)
    assert g.learners[1].item_row("brand-new") == 0
    g.deliver()
    assert g.learners[1].item_row("brand-new") > 0
    out = g.batch(1, [("other", anchor, 5.0)], t0=3e6)
    assert "brand-new" in out.recommendations[0].items


def test_a_deleted_item_leaves_the_learner(checkpoint) -> None:
    g = Group(checkpoint, n=1)
    learner = g.learners[0]
    g.batch(0, [("u1", "fresh", 5.0)])
    g.deliver()
    n = learner.items.n_active
    assert learner.item_row("fresh") > 0 and learner.shared_newest_update() == 0.0
    learner.apply_items([("fresh", None, 5.0)])
    assert learner.item_row("fresh") == 0 and learner.items.n_active == n - 1
    assert learner.item_state("fresh") is None and learner.shared_newest_update() == 5.0


def test_popularity_follows_the_published_counts_in_event_time(checkpoint) -> None:
    g = Group(checkpoint, n=1)
    learner = g.learners[0]
    item = checkpoint.item_ids[4]
    r = learner.item_row(item)
    start = learner.items.popularity(2e6 + 3)[r]  # what the training data left
    g.batch(0, [(f"u{k}", item, 4.0) for k in range(4)], t0=2e6)  # at 2e6 + 0, 1, 2, 3
    assert learner.items.popularity(2e6 + 3)[r] == start
    g.deliver()
    fresh = start + 4  # a micro-batch's events count as of its newest event of the item
    assert learner.items.popularity(2e6 + 3)[r] == pytest.approx(fresh)
    assert learner.items.popularity(2e6 + 3 + HALF_LIFE)[r] == pytest.approx(fresh / 2)


def test_a_model_switch_keeps_popularity_and_moves_the_rows_to_the_new_version(checkpoint) -> None:
    g = Group(checkpoint, n=1)
    learner = g.learners[0]
    item = checkpoint.item_ids[4]
    for step in range(3):
        g.batch(0, [(f"u{k}", item, 4.0) for k in range(8)], t0=2e6 + 10 * step)
    g.deliver()
    popular = learner.items.popularity(2e6 + 30)[learner.item_row(item)]
    other = train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                  TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=5,
                              model_config={"dim": 8, "rating_dim": 4}))
    learner.switch(other)
    assert learner.items.popularity(2e6 + 30)[learner.item_row(item)] == pytest.approx(popular) and popular > 20
    assert g.owner.space[g.owner.row(item)] == checkpoint.version
    out = g.batch(0, [("u1", item, 4.0)], t0=2e6 + 31)
    mine = out.item_updates
    k = mine.items.index(item)
    assert mine.space == other.version and mine.kind[k] == INIT  # the row is set again, in the new version
    g.deliver()
    state = learner.item_state(item)
    assert g.owner.space[g.owner.row(item)] == other.version and state["events"] == 25
    assert state["model_version"] == other.version
    np.testing.assert_allclose(state["tables"], g.owner.describe(item)["tables"], rtol=1e-6)


def test_what_a_worker_keeps_of_the_group_is_bounded_by_its_item_table(checkpoint) -> None:
    learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5, prior_weight=4.0, max_items=48, owner_delay=None))
    group = ItemTable(list(checkpoint.item_ids), ItemConfig(max_items=10_000), growable=True)
    for k in range(300):  # a group catalog far larger than this worker's 48 rows
        links = [(0, f"new-{k - 1}", 1.0)] if k else []
        rows = group.merge(Contributions.of([f"new-{k}"], learner.model_version, t=[2e6 + k], events=[1],
                                            links=links), offset=k)
        learner.apply_items([(i, row.to_bytes(), float(k)) for i, row in group.publish(rows)])
        assert learner.items.capacity <= 48 and learner.items.links.shape == (learner.items.capacity,) * 2
    assert learner.items.n_active <= 47 and learner.items.vocab.evicted > 0
    assert learner.item_row("new-299") > 0 and learner.item_state("new-299")["neighbours"] == {"new-298": 1.0}
    out = learner.process([Interaction("u", "new-299", 4.0, 3e6, 0, 0)], {})
    assert len(out.recommendations[0].items) == 5
