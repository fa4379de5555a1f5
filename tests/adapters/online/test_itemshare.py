"""The group's item state as data (adapters/online/itemshare.py): the merge rule, bounds, bytes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adapters.errors import MetarecError
from adapters.online.itemshare import ItemContribution, ItemRow, ShareConfig, merge, row_header

CFG = ShareConfig(half_life_s=100.0, max_neighbours=3, young_events=2)


def _c(space="v1", t=0.0, events=1.0, **kw) -> ItemContribution:
    return ItemContribution(space, t, events, **kw)


def test_sums_what_adds_and_skips_what_it_applied():
    a = _c(events=2, rated=1, d_rating=0.1, init=np.zeros(2, np.float32), neighbours={"x": 1.0})
    b = _c(t=5.0, events=1, rated=1, d_rating=-0.3, neighbours={"x": 2.0, "y": 1.0})
    row = merge(merge(None, a, 10, CFG), b, 11, CFG)
    assert (row.total, row.rated, row.offset) == (3.0, 2.0, 11)
    assert row.rating_delta == pytest.approx(-0.2)
    assert row.neighbours == {"x": 3.0, "y": 1.0}
    assert merge(row, b, 11, CFG) is row and merge(row, a, 3, CFG) is row  # redelivered: skipped
    assert merge(row, b, -1, CFG) is not row  # no position (a test, a tool): applied


def test_two_workers_same_item_same_second_both_steps_count():
    """Two workers' SGD steps on the same item add up, whatever their order (once the row is set)."""
    base = merge(None, _c(events=5, init=np.ones(3, np.float32)), 0, CFG)
    s1, s2 = np.array([0.1, 0, 0], np.float32), np.array([0, 0.2, 0], np.float32)
    one = merge(merge(base, _c(t=1.0, d_tables=s1), 1, CFG), _c(t=1.0, d_tables=s2), 2, CFG)
    two = merge(merge(base, _c(t=1.0, d_tables=s2), 1, CFG), _c(t=1.0, d_tables=s1), 2, CFG)
    np.testing.assert_allclose(one.tables, [1.1, 1.2, 1.0])
    np.testing.assert_allclose(one.tables, two.tables)
    assert one.count == pytest.approx(two.count)


def test_young_rows_are_set_by_the_last_writer_then_learn():
    row = merge(None, _c(init=np.zeros(2, np.float32)), 0, CFG)  # total 1 < young_events 2
    row = merge(row, _c(init=np.ones(2, np.float32)), 1, CFG)  # still young: set
    assert row.tables.tolist() == [1.0, 1.0] and row.total == 2
    row = merge(row, _c(init=np.full(2, 9, np.float32)), 2, CFG)  # no longer young: an init does not overwrite
    assert row.tables.tolist() == [1.0, 1.0]
    row = merge(row, _c(d_tables=np.full(2, 0.5, np.float32)), 3, CFG)
    assert row.tables.tolist() == [1.5, 1.5]


def test_a_new_model_version_resets_the_rows():
    row = merge(None, _c(events=50, init=np.ones(2, np.float32)), 0, CFG)
    step = merge(row, _c("v2", d_tables=np.ones(2, np.float32)), 1, CFG)  # a step in another space: rows unset
    assert step.space == "v2" and step.tables is None and step.total == 51
    assert merge(step, _c("v2", init=np.full(2, 3, np.float32)), 2, CFG).tables.tolist() == [3.0, 3.0]


def test_popularity_decays_in_event_time_in_any_order():
    late_first = merge(merge(None, _c(t=200.0), 0, CFG), _c(t=100.0), 1, CFG)
    in_order = merge(merge(None, _c(t=100.0), 0, CFG), _c(t=200.0), 1, CFG)
    assert late_first.count == pytest.approx(in_order.count) == pytest.approx(1.5)
    assert in_order.decayed_count(300.0, CFG.half_life_s) == pytest.approx(0.75)
    assert ItemRow().decayed_count(5.0, 1.0) == 0.0


def test_neighbours_are_bounded_and_never_underestimated():
    row = merge(None, _c(neighbours={"a": 5.0, "b": 4.0, "c": 1.0}), 0, CFG)
    row = merge(row, _c(neighbours={"d": 1.0}), 1, CFG)  # replaces the smallest (c) and inherits its count
    assert row.neighbours == {"a": 5.0, "b": 4.0, "d": 2.0}


def test_bytes_round_trip_and_corruption():
    c = _c(t=3.5, events=2, rated=1, d_rating=0.25, d_tables=np.arange(4, dtype=np.float32),
           neighbours={"é": 1.0, "x y": 2.0})
    back = ItemContribution.from_bytes(c.to_bytes())
    assert (back.space, back.t, back.events, back.rated, back.d_rating, back.neighbours, back.init) == (
        "v1", 3.5, 2, 1, 0.25, {"é": 1.0, "x y": 2.0}, None)
    np.testing.assert_array_equal(back.d_tables, c.d_tables)
    init = ItemContribution.from_bytes(_c(init=np.ones(2, np.float32)).to_bytes())
    assert init.d_tables is None and init.init.tolist() == [1.0, 1.0]
    row = merge(None, c, 7, CFG)
    data = row.to_bytes()
    assert ItemRow.from_bytes(data) == row
    assert row_header(data) == (3.5, 2.0, 3.5)
    for bad in (b"", b"junk", data[:-1], data + b"x"):
        with pytest.raises(MetarecError):
            ItemRow.from_bytes(bad)
    with pytest.raises(MetarecError):
        ItemContribution.from_bytes(data)
    with pytest.raises(MetarecError):
        _c(init=np.ones(1, np.float32), d_tables=np.ones(1, np.float32)).to_bytes()
    assert math.isinf(ItemRow.from_bytes(ItemRow().to_bytes()).t_last)


def test_config_is_checked():
    with pytest.raises(MetarecError):
        ShareConfig(half_life_s=0)
    with pytest.raises(MetarecError):
        ShareConfig(max_neighbours=0)


def test_bundles_carry_many_contributions_and_reject_corruption():
    from adapters.online.itemshare import pack_bundle, unpack_bundle

    parts = [(b"a", _c(events=2).to_bytes()), ("é".encode(), _c(init=np.ones(3, np.float32)).to_bytes()), (b"z", b"")]
    assert unpack_bundle(pack_bundle(parts)) == parts and unpack_bundle(pack_bundle([])) == []
    data = pack_bundle(parts)
    for bad in (data[:-1], data + b"x", b"XX" + data[2:], b""):
        with pytest.raises(MetarecError):
            unpack_bundle(bad)
