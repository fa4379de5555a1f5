"""The item state (adapters/online/items/table.py, vocabulary.py, rows.py, config.py): the owner's merge rule, what
it publishes, what a worker applies, the bounded vocabulary, and what ranking reads (popularity, bonus, prior)."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from adapters.errors import MetarecError
from adapters.online.items.config import ItemConfig
from adapters.online.items.contributions import DELTA, INIT, Contributions
from adapters.online.items.rows import ItemRow, row_header
from adapters.online.items.table import ItemTable
from adapters.online.items.tablerows import ArrayRows

IDS = ["<unk>", "a", "b", "c"]


def _table(ids: list[str] = IDS, width: int = 2, **config: object) -> ItemTable:
    """An owner's table over ``ids`` whose rows are ``width`` floats, row r = [r, r, ...] (row 0: zeros)."""
    rows = ArrayRows(capacity=len(ids), width=width)
    rows.data[:] = np.arange(len(ids), dtype=np.float32)[:, None]
    return ItemTable(ids, ItemConfig(**{"half_life_s": 100.0, **config}), rows)  # type: ignore[arg-type]


def _c(items: list[str], space: str = "v1", **kw: object) -> Contributions:
    return Contributions.of(items, space, **kw)  # type: ignore[arg-type]


def _rows(t: ItemTable, item: str) -> list[float]:
    return t.rows.get(np.array([t.row(item)]))[0].tolist()


@pytest.mark.parametrize("module", ["config", "rows", "tablerows", "vocabulary", "table"])
def test_doctests(module: str) -> None:
    import doctest
    assert doctest.testmod(importlib.import_module(f"adapters.online.items.{module}")).failed == 0


# -- merge: what adds ---------------------------------------------------------------------------------------------
def test_merge_adds_counts_rating_steps_and_in_links_and_keeps_the_newest_time() -> None:
    t = _table()
    changed = t.merge(_c(["a", "b"], t=[10.0, 5.0], events=[2, 1], rated=[1, 1], d_rating=[0.1, -0.2],
                         links=[(0, "b", 1.0)]))
    t.merge(_c(["a"], t=[7.0], events=[1], rated=[1], d_rating=[-0.3], links=[(0, "b", 2.0), (0, "c", 1.0)]))
    a, b, c = t.row("a"), t.row("b"), t.row("c")
    assert sorted(changed.tolist()) == [a, b]
    assert (t.total[a], t.rated[a], t.t_last[a]) == (3.0, 2.0, 10.0)  # 7 is older than 10
    assert t.rating_delta[a] == pytest.approx(-0.2) and t.rating_delta[b] == pytest.approx(-0.2)
    assert t.links[a, b] == 3.0 and t.links[a, c] == 1.0 and t.links[b, a] == 0.0  # directed: in-links of a
    assert t.cooc(np.array([b]))[0, a] == 3.0 == t.cooc(np.array([a]))[0, b]  # ranking reads both directions
    assert t.stream_time == 10.0 and t.total[c] == 0.0


def test_merge_ignores_self_links() -> None:
    t = _table()
    t.merge(_c(["a"], t=[1.0], events=[1], links=[(0, "a", 4.0)]))
    assert not t.links.any() and t.total[t.row("a")] == 1.0


def test_merge_refuses_two_entries_for_one_item() -> None:
    t = _table()
    with pytest.raises(MetarecError, match="one entry per item"):  # numpy's a[rows] += … would keep only one
        t.merge(_c(["a", "a"], t=[1.0, 2.0], events=[1, 1]))


def test_an_entry_at_or_below_the_row_s_last_offset_is_skipped() -> None:
    t = _table()
    a = t.row("a")
    t.merge(_c(["a"], t=[1.0], events=[2], links=[(0, "b", 1.0)]), offset=10)
    t.merge(_c(["a"], t=[2.0], events=[1], links=[(0, "b", 1.0)]), offset=11)
    for redelivered in (11, 3):
        assert len(t.merge(_c(["a"], t=[3.0], events=[5], links=[(0, "b", 9.0)]), offset=redelivered)) == 0
    assert (t.total[a], t.offset[a], t.links[a, t.row("b")]) == (3.0, 11, 2.0)
    t.merge(_c(["b"], t=[2.0], events=[1]), offset=4)  # offsets are per item: b has merged nothing yet
    assert t.total[t.row("b")] == 1.0
    t.merge(_c(["a"], t=[4.0], events=[1]), offset=-1)  # no position (a test, the in-process owner): merged
    assert t.total[a] == 4.0


# -- merge: what is set, what is stepped -----------------------------------------------------------------------
def test_a_row_is_set_until_published_then_only_stepped_and_steps_add_up_in_any_order() -> None:
    t = _table(young_events=0)
    a = t.row("a")
    t.merge(_c(["a"], kind=[DELTA], tables=[[5.0, 5.0]]))  # a step on a row not published yet: nothing to step
    assert _rows(t, "a") == [1.0, 1.0] and t.space[a] == ""
    t.merge(_c(["a"], kind=[INIT], tables=[[2.0, 2.0]]))
    assert _rows(t, "a") == [2.0, 2.0] and t.space[a] == "v1"
    t.merge(_c(["a"], kind=[INIT], tables=[[9.0, 9.0]]))  # published: a set comes too late, it is ignored
    assert _rows(t, "a") == [2.0, 2.0]
    s1, s2 = [[0.1, 0.0]], [[0.0, 0.2]]
    other = _table(young_events=0)
    other.merge(_c(["a"], kind=[INIT], tables=[[2.0, 2.0]]))
    for table, order in ((t, (s1, s2)), (other, (s2, s1))):  # two workers' steps, in either order
        for s in order:
            table.merge(_c(["a"], t=[1.0], events=[1], tables=s))
    np.testing.assert_allclose(_rows(t, "a"), [2.1, 2.2], rtol=1e-6)
    np.testing.assert_allclose(_rows(other, "a"), _rows(t, "a"), rtol=1e-6)
    assert t.count[a] == pytest.approx(other.count[a])


def test_young_rows_are_set_by_the_last_writer_then_learn() -> None:
    t = _table(young_events=2)
    x = t.add("x")  # an item created online
    assert t.online[x]
    t.merge(_c(["x"], events=[1], kind=[INIT], tables=[[0.0, 0.0]]))  # total 0 < 2: set
    t.merge(_c(["x"], events=[1], kind=[INIT], tables=[[1.0, 1.0]]))  # total 1 < 2: still young, set again
    assert _rows(t, "x") == [1.0, 1.0] and t.total[x] == 2
    t.merge(_c(["x"], events=[1], kind=[INIT], tables=[[9.0, 9.0]]))  # no longer young: a set does not overwrite
    assert _rows(t, "x") == [1.0, 1.0]
    t.merge(_c(["x"], events=[1], tables=[[0.5, 0.5]]))
    assert _rows(t, "x") == [1.5, 1.5]
    a = t.row("a")  # a checkpoint item is never young: its first set is its last
    t.merge(_c(["a"], events=[1], kind=[INIT], tables=[[3.0, 3.0]]))
    t.merge(_c(["a"], events=[1], kind=[INIT], tables=[[4.0, 4.0]]))
    assert _rows(t, "a") == [3.0, 3.0] and t.total[a] == 2


def test_a_new_model_version_sets_the_rows_again() -> None:
    t = _table(young_events=0)
    a = t.row("a")
    t.merge(_c(["a"], events=[50], kind=[INIT], tables=[[1.0, 1.0]]))
    t.merge(_c(["a"], "v2", events=[1], tables=[[0.5, 0.5]]))  # a step in another version: not onto v1's rows
    assert t.total[a] == 51  # the counts are the item's, whatever the version
    [(_, row)] = t.publish(np.array([a]))
    assert row.space != "v2"
    assert row.tables is None or (row.space == "v1" and row.tables.tolist() == [1.0, 1.0])
    t.merge(_c(["a"], "v2", events=[1], kind=[INIT], tables=[[3.0, 3.0]]))  # an old item, yet set in v2
    assert _rows(t, "a") == [3.0, 3.0] and t.space[a] == "v2"
    t.merge(_c(["a"], "v2", events=[1], tables=[[0.5, 0.5]]))
    [(_, row)] = t.publish(np.array([a]))
    assert row.space == "v2" and row.tables.tolist() == [3.5, 3.5] and row.total == 53


# -- popularity --------------------------------------------------------------------------------------------------
def test_popularity_decays_in_event_time_in_any_order() -> None:
    late_first, in_order = _table(), _table()
    for table, times in ((late_first, (200.0, 100.0)), (in_order, (100.0, 200.0))):
        for s in times:
            table.merge(_c(["a"], t=[s], events=[1]))
    a = in_order.row("a")
    assert late_first.count[a] == pytest.approx(in_order.count[a]) == pytest.approx(1.5)  # 1 + 2^(-100/100)
    assert late_first.popularity(200.0)[a] == pytest.approx(1.5)
    assert in_order.popularity(300.0)[a] == pytest.approx(0.75)
    assert in_order.popularity(100.0)[a] == pytest.approx(1.5)  # never grows backwards in time
    assert in_order.popularity(300.0)[in_order.row("b")] == 0.0  # never seen
    before = (in_order.count[a], in_order.count_t[a], in_order.t_last[a])
    in_order.merge(_c(["a"], tables=[[0.1, 0.1]]))  # only a negative of a ranking step: it did not occur
    assert (in_order.count[a], in_order.count_t[a], in_order.t_last[a]) == before
    assert ItemRow().decayed_count(5.0, 1.0) == 0.0
    assert ItemRow(count=2.0, count_t=0.0).decayed_count(10.0, 10.0) == pytest.approx(1.0)


def test_counts_without_a_time_are_anchored_at_the_first_event_time() -> None:
    t = _table()
    t.count[1] = 4.0
    assert t.popularity(50.0)[1] == 0.0
    t.anchor(50.0)
    assert t.popularity(150.0)[1] == pytest.approx(2.0) and t.stream_time == 50.0


def test_the_bonus_is_beta_log1p_popularity_and_none_when_off() -> None:
    t = _table(popularity_weight=0.5)
    t.merge(_c(["a"], t=[100.0], events=[3]))
    np.testing.assert_allclose(t.bonus(100.0).numpy(), 0.5 * np.log1p(t.popularity(100.0)), rtol=1e-6)
    assert t.bonus(100.0)[t.row("a")] == pytest.approx(0.5 * math.log(4.0))
    t.merge(_c(["b"], t=[100.0], events=[1]))  # what was cached is no longer current
    assert t.bonus(100.0)[t.row("b")] == pytest.approx(0.5 * math.log(2.0))
    assert _table().bonus(100.0) is None


# -- publish / apply ---------------------------------------------------------------------------------------------
def test_publish_carries_the_largest_in_links_up_to_max_neighbours_and_the_owner_keeps_them_all() -> None:
    ids = ["<unk>", "a", "b", "c", "d", "e"]
    t = _table(ids, max_neighbours=2)
    t.merge(_c(["a"], t=[5.0], events=[4], rated=[2], d_rating=[0.5], kind=[INIT], tables=[[7.0, 8.0]],
               links=[(0, "b", 5.0), (0, "c", 1.0), (0, "d", 3.0), (0, "e", 2.0)]), offset=9)
    a = t.row("a")
    assert np.count_nonzero(t.links[a]) == 4  # the owner keeps every in-link
    [(item, row)] = t.publish(np.array([a]))
    assert item == "a" and row.neighbours == {"b": 5.0, "d": 3.0}
    assert (row.space, row.offset, row.t_last, row.total, row.rated) == ("v1", 9, 5.0, 4.0, 2.0)
    assert (row.count, row.count_t, row.rating_delta) == (4.0, 5.0, 0.5) and row.tables.tolist() == [7.0, 8.0]
    [(_, unset)] = t.publish(np.array([t.row("b")]))  # no rows set in any version yet: no tables published
    assert unset.tables is None and unset.space == "" and unset.neighbours == {}
    assert t.publish(np.zeros(0, np.int64)) == []


def test_a_worker_applies_published_rows() -> None:
    owner = _table()
    owner.merge(_c(["a", "b"], t=[5.0, 6.0], events=[2, 1], rated=[1, 0], d_rating=[0.25, 0.0], kind=[INIT, INIT],
                   tables=[[7.0, 7.0], [8.0, 8.0]], links=[(0, "b", 2.0), (1, "new", 1.0)]), offset=3)
    owner.merge(_c(["new"], t=[6.0], events=[1], kind=[INIT], tables=[[9.0, 9.0]], links=[(0, "a", 1.0)]), offset=4)
    published = owner.publish(np.array([owner.row(i) for i in ("a", "b", "new")]))
    worker = _table()
    assert worker.apply([(i, r, 100.0 + n) for n, (i, r) in enumerate(published)], "v1") == 3
    for item, row in published:
        r = worker.row(item)
        assert r > 0 and worker.publish(np.array([r]))[0][1] == row, item  # the same row, read back
    assert worker.newest_update == 102.0 and worker.stream_time == 6.0
    assert worker.cooc(np.array([worker.row("a")]))[0, worker.row("b")] == 2.0
    assert _rows(worker, "new") == [9.0, 9.0] and worker.online[worker.row("new")]


def test_apply_rows_of_another_version_keep_the_worker_s_tables_and_the_last_update_wins() -> None:
    worker = _table()
    a = worker.row("a")
    v0 = ItemRow("v0", 1, 5.0, 2.0, 5.0, 2.0, tables=np.full(2, 9.0, np.float32))
    v1 = ItemRow("v1", 2, 6.0, 3.0, 6.0, 3.0, tables=np.full(2, 4.0, np.float32))
    worker.apply([("a", v1, 1.0), ("a", v0, 2.0)], "v1")  # the later update of the item wins
    assert worker.total[a] == 2.0 and worker.space[a] == "" and _rows(worker, "a") == [1.0, 1.0]
    worker.apply([("a", v1, 3.0)], "v1")
    assert worker.total[a] == 3.0 and worker.space[a] == "v1" and _rows(worker, "a") == [4.0, 4.0]
    assert worker.apply([("a", v0, float("nan"))], "v1") == 1 and worker.newest_update == 3.0


def test_a_deleted_item_leaves_the_table() -> None:
    t = _table()
    t.merge(_c(["a", "b"], t=[5.0, 5.0], events=[3, 1], kind=[INIT, INIT], tables=[[7.0, 7.0], [8.0, 8.0]],
               links=[(0, "b", 1.0), (1, "a", 1.0)]))
    a, n = t.row("a"), t.n_active
    t.apply([("a", None, 9.0)], "v1")
    assert t.row("a") == 0 and t.n_active == n - 1 and not t.active()[a] and t.describe("a") is None
    assert (t.total[a], t.count[a], t.t_last[a], t.space[a]) == (0.0, 0.0, -math.inf, "")
    assert not t.links[a].any() and not t.links[:, a].any() and _rows(t, "b") == [8.0, 8.0]
    assert t.rows.get(np.array([a]))[0].tolist() == [0.0, 0.0]  # back to the unknown row
    assert t.add("a") > 0 and t.total[t.row("a")] == 0.0  # it may come back, from nothing


def test_a_late_reference_to_a_deleted_item_does_not_bring_it_back() -> None:
    """An in-link or a neighbour computed before the deletion may arrive after it (another partition, another
    worker): it refers to the item, it does not recreate it; the item's own contribution or row does."""
    t = _table()
    t.merge(_c(["a", "b"], t=[5.0, 5.0], events=[3, 1], kind=[INIT, INIT], tables=[[7.0, 7.0], [8.0, 8.0]]))
    n = t.n_active
    t.apply([("a", None, 9.0)], "v1")
    t.merge(_c(["b"], t=[6.0], events=[1], links=[(0, "a", 1.0)]), offset=5)  # a stale in-link of b
    assert t.row("a") == 0 and t.n_active == n - 1
    t.apply([("c", ItemRow("v1", 7, 6.0, 1.0, 6.0, 1.0, neighbours={"a": 2.0, "b": 1.0}), 10.0)], "v1")
    assert t.row("a") == 0 and t.n_active == n - 1 and t.links[t.row("c"), t.row("b")] == 1.0
    assert t.apply([("a", ItemRow("v1", 8, 7.0, 1.0, 7.0, 1.0), 11.0)], "v1") == 1  # its own row: back
    assert t.row("a") > 0 and t.total[t.row("a")] == 1.0
    t.vocab.drop(["a"])
    t.merge(_c(["a"], t=[8.0], events=[1]), offset=9)  # met again (its own contribution): back
    assert t.row("a") > 0 and t.total[t.row("a")] == 1.0


# -- the bounded vocabulary ----------------------------------------------------------------------------------------
def test_the_table_stays_within_max_items_by_evicting_the_least_popular() -> None:
    t = _table(max_items=5)
    t.merge(_c(["a", "b", "c"], t=[10.0] * 3, events=[5, 1, 9]))
    n0 = t.add("n0")  # a free row first: the table grows up to max_items
    t.merge(_c(["n0"], t=[10.0], events=[3]))
    t.vocab.pending = []  # as a learner after its batch
    assert (t.capacity, t.vocab.evicted, t.n_active) == (5, 0, 4)
    b = t.row("b")
    n1 = t.add("n1")  # full: the least popular item (b, 1 event) makes room
    assert (t.capacity, t.vocab.evicted, t.n_active) == (5, 1, 4)
    assert n1 == b and t.row("b") == 0 and t.row("n0") == n0 and t.row("a") > 0 and t.row("c") > 0
    assert t.add("b") > 0 and t.row("n1") == n1  # b comes back: the least popular now makes room for it


def test_new_items_of_one_batch_never_evict_each_other() -> None:
    t = _table(max_items=6)
    rows = [t.add(f"n{k}") for k in range(5)]  # 2 free rows, then the 3 checkpoint items evicted one by one
    assert len(set(rows)) == 5 and min(rows) > 0 and all(t.row(f"n{k}") == rows[k] for k in range(5))
    assert t.capacity == 6 and t.vocab.evicted == 3 and t.n_active == 5
    with pytest.raises(MetarecError, match="max-items"):
        t.add("one-too-many")


def test_a_merge_never_evicts_an_item_it_merges() -> None:
    t = _table(max_items=4)  # full from the start
    t.merge(_c(["a", "b", "c"], t=[1.0] * 3, events=[1, 5, 5]))
    t.vocab.pending = []
    t.merge(_c(["a", "new"], t=[2.0, 2.0], events=[3, 1]))  # a is the least popular item
    assert t.row("a") > 0 and t.row("new") > 0 and t.row("a") != t.row("new")
    assert (t.total[t.row("a")], t.total[t.row("new")]) == (4.0, 1.0)


def test_an_owner_that_only_merges_stays_bounded() -> None:
    t = _table(max_items=4)
    for k in range(8):  # one new item per contribution batch, as an owner receives them
        t.merge(_c([f"n{k}"], t=[float(k)], events=[1]), offset=k)
        assert t.capacity == 4 and t.row(f"n{k}") > 0


def test_eviction_clears_the_row() -> None:
    t = _table(max_items=4)
    t.merge(_c(["a", "b", "c"], t=[10.0] * 3, events=[1, 5, 5], kind=[INIT] * 3, tables=[[7.0, 7.0]] * 3,
               links=[(0, "b", 1.0), (1, "a", 2.0)]))
    t.vocab.pending = []
    a = t.row("a")
    x = t.add("x")  # full: a, the least popular, is evicted and its row reused
    assert x == a and t.row("a") == 0 and t.ids[x] == "x" and t.online[x]
    assert (t.total[x], t.count[x], t.space[x], t.offset[x]) == (0.0, 0.0, "", -1)
    assert not t.links[x].any() and not t.links[:, x].any()
    assert _rows(t, "x") == [0.0, 0.0]  # the unknown row, not a's


# -- what ranking reads ------------------------------------------------------------------------------------------
def test_prior_matches_the_reference_formula() -> None:
    t = _table(prior_weight=2.0, cooc_window=2, cooc_decay=0.5, cooc_alpha=0.5)
    inlinks = {("a", "b"): 1.0, ("c", "a"): 2.0, ("c", "b"): 1.0, ("b", "a"): 3.0, ("b", "c"): 4.0}
    for (i, j), n in inlinks.items():
        t.merge(_c([i], t=[1.0], events=[1], links=[(0, j, n)]))
    t.merge(_c(["a"], t=[1.0], events=[2]))
    ids = {"a": 1, "b": 2, "c": 3}
    L = np.zeros((4, 4))
    for (i, j), n in inlinks.items():
        L[ids[i], ids[j]] = n
    C = L + L.T  # co-occurrences: both directions
    n_events = np.array([0.0, 3.0, 2.0, 2.0])  # each merge above: one event of its item
    # window a, b, c: its last two items, c (age 0, weight 1) and b (age 1, weight 0.5)
    expected = 2.0 * np.log1p((0.5 * C[2] + 1.0 * C[3]) / np.sqrt(n_events + 1.0))
    prior = t.prior([[1, 2, 3], [0, 3], []])
    np.testing.assert_allclose(prior[0][:4], expected, rtol=1e-6)
    np.testing.assert_allclose(prior[1][:4], 2.0 * np.log1p(C[3] / np.sqrt(n_events + 1.0)), rtol=1e-6)  # row 0
    assert not prior[2].any() and prior[0][2] > 0
    cols = np.array([1, 2, 3])
    terms, total = t.prior_terms([1, 2, 3], cols)
    np.testing.assert_allclose(terms, [0.5 * C[2, cols], C[3, cols]], rtol=1e-6)
    np.testing.assert_allclose(total, expected[cols], rtol=1e-6)
    assert not _table().prior([[1, 2, 3]]).any()  # weight 0: off


def test_a_new_item_with_features_starts_from_the_items_that_share_them() -> None:
    rows = ArrayRows(capacity=4, width=2)
    rows.data[:] = np.arange(4, dtype=np.float32)[:, None]
    t = ItemTable(IDS, ItemConfig(), rows, features={"a": [0], "b": [1], "c": [0, 1], "n": [0], "far": [7]})
    # n shares genre 0 with a (cosine 1) and c (cosine 1/√2), nothing with b: their similarity-weighted mean
    w = np.array([1.0, 1.0 / math.sqrt(2.0)])
    n = t.add("n")
    np.testing.assert_allclose(t.rows.get(np.array([n]))[0], [w @ [1.0, 3.0] / w.sum()] * 2, rtol=1e-6)
    assert t.rows.get(np.array([t.add("plain")]))[0].tolist() == [0.0, 0.0]  # no features: the unknown row
    assert t.rows.get(np.array([t.add("far")]))[0].tolist() == [0.0, 0.0]  # features no checkpoint item has


def test_describe_is_json_ready() -> None:
    import json

    t = _table()
    t.merge(_c(["a"], t=[5.0], events=[2], rated=[1], d_rating=[0.5], kind=[INIT], tables=[[7.0, 8.0]],
               links=[(0, "b", 1.0)]), offset=4)
    d = t.describe("a")
    assert d == {"item_id": "a", "row": 1, "online": False, "events": 2.0, "rated": 1.0, "rating_delta": 0.5,
                 "popularity": 2.0, "last_event": 5.0, "model_version": "v1", "offset": 4, "neighbours": {"b": 1.0},
                 "tables": [7.0, 8.0]}
    assert t.describe("b")["last_event"] is None and t.describe("b")["model_version"] is None
    assert t.describe("nope") is None and json.dumps(t.describe("b"))


# -- a published row as bytes ----------------------------------------------------------------------------------
def test_row_bytes_round_trip_and_header() -> None:
    row = ItemRow("v1", 7, 3.5, 2.0, 3.5, 2.0, 1.0, 0.25, np.arange(4, dtype=np.float32), {"é": 1.0, "x y": 2.0})
    data = row.to_bytes()
    back = ItemRow.from_bytes(data)
    assert back == row and back.tables.dtype == np.float32 and back.neighbours == {"é": 1.0, "x y": 2.0}
    assert row_header(data) == (3.5, 2.0, 3.5)
    empty = ItemRow.from_bytes(ItemRow().to_bytes())
    assert empty == ItemRow() and empty.tables is None and math.isinf(empty.t_last)
    assert back != ItemRow("v1", 7, 3.5, 2.0, 3.5, 2.0, 1.0, 0.25, None, {"é": 1.0, "x y": 2.0})


def test_corrupt_row_bytes_raise_metarec_error() -> None:
    data = ItemRow("v1", 7, 3.5, 2.0, 3.5, 2.0, tables=np.ones(2, np.float32), neighbours={"x": 1.0}).to_bytes()
    contributions = Contributions.of(["a"], "v1", t=[1.0], events=[1]).to_bytes()
    for bad in (b"", b"junk", data[:-1], data + b"x", b"XX" + data[2:], contributions):
        with pytest.raises(MetarecError):
            ItemRow.from_bytes(bad)
    for bad in (b"", b"junk", b"XX" + data[2:]):
        with pytest.raises(MetarecError):
            row_header(bad)


def test_a_corrupt_row_body_raises_metarec_error() -> None:
    from adapters.online.items.rows import _ROW

    row = ItemRow("v1", 7, 3.5, 2.0, 3.5, 2.0, tables=np.ones(2, np.float32), neighbours={"x": 1.0})
    data = row.to_bytes()
    body = _ROW.size + 2 + 8  # the neighbours: their count first
    huge_count = data[:body] + np.array([10**6], "<u4").tobytes() + data[body + 4:]
    bad_space = data[:_ROW.size] + b"\xff\xfe" + data[_ROW.size + 2:]
    for bad in (huge_count, bad_space):
        with pytest.raises(MetarecError):
            ItemRow.from_bytes(bad)


# -- settings ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"max_items": 1}, {"cooc_window": 0}, {"half_life_s": 0.0}, {"max_neighbours": 0},
                                 {"young_events": -1}, {"negatives": -1}, {"prior_weight": -1.0},
                                 {"popularity_weight": -0.1}, {"embed_lr": -1.0}, {"factor_lr": -1.0},
                                 {"bias_lr": -0.1}, {"bias_reg": -1.0}, {"bias_prior": -1.0}, {"cooc_decay": -1.0},
                                 {"cooc_alpha": float("nan")}])
def test_bad_item_settings_are_user_errors(bad: dict) -> None:
    with pytest.raises(MetarecError):
        ItemConfig(**bad)


def test_settings_round_trip_and_legacy_checkpoints_map_to_them() -> None:
    cfg = ItemConfig(max_items=99, prior_weight=4.0, half_life_s=60.0, bias_prior=5.0, negatives=0)
    assert ItemConfig.from_dict(cfg.to_dict()) == cfg and ItemConfig.from_dict({**cfg.to_dict(), "gone": 1}) == cfg
    assert ItemConfig.from_dict(None) == ItemConfig() and ItemConfig.from_checkpoint({"items": cfg.to_dict()}) == cfg
    assert ItemConfig.from_dict({"max_items": 99.0}).max_items == 99 and isinstance(
        ItemConfig.from_dict({"max_items": 99.0}).max_items, int)
    legacy = ItemConfig.from_checkpoint({
        "itemside": {"max_items": 500, "cooc_weight": 4.0, "embed_lr": 0.05, "rating_lr": 0.005, "new_row_events": 3},
        "freshness": {"weight": 0.7, "half_life": 5000.0, "rating_lr": 0.01, "rating_reg": 0.1, "rating_prior": 5,
                      "events_per_s": 0.5, "counts": [0.0, 1.0]}})
    assert legacy == ItemConfig(max_items=500, prior_weight=4.0, embed_lr=0.05, factor_lr=0.005, young_events=3,
                                popularity_weight=0.7, half_life_s=10_000.0, bias_lr=0.01, bias_reg=0.1,
                                bias_prior=5.0)
    # a half-life in events without the event rate: the default; a checkpoint written before the rating prior: 0
    old = ItemConfig.from_checkpoint({"freshness": {"weight": 1.0, "half_life": 5000.0, "rating_lr": 0.01}})
    assert old.half_life_s == ItemConfig().half_life_s and old.bias_prior == 0.0 and old.popularity_weight == 1.0
    assert cfg.overridden(max_items=None, prior_weight=1.0) == ItemConfig(
        max_items=99, prior_weight=1.0, half_life_s=60.0, bias_prior=5.0, negatives=0)
