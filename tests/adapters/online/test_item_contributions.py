"""What micro-batches teach about items, as data (adapters/online/items/contributions.py): one entry per item,
batches that add up (``combine``), a part of them (``select``), the wire format."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adapters.errors import MetarecError
from adapters.online.items.contributions import _HEAD, DELTA, INIT, NONE, Contributions
from adapters.online.items.rows import ItemRow


def _tables(*rows: list[float]) -> np.ndarray:
    return np.asarray(rows, np.float32)


def test_doctests() -> None:
    import doctest

    import adapters.online.items.contributions
    assert doctest.testmod(adapters.online.items.contributions).failed == 0


def test_of_fills_what_is_missing_and_kinds_follow_the_tables() -> None:
    c = Contributions.of(["a", "b"], space="v1")
    assert c.t.tolist() == [-math.inf, -math.inf]  # no time: the item did not occur
    assert c.events.tolist() == c.rated.tolist() == c.d_rating.tolist() == [0.0, 0.0]
    assert c.kind.tolist() == [NONE, NONE] and c.width == 0 and c.links() == []
    d = Contributions.of(["a"], tables=_tables([1.0, 2.0]))
    assert d.kind.tolist() == [DELTA] and d.width == 2
    assert len(Contributions.empty("v1", 3)) == 0 and Contributions.empty("v1", 3).width == 3


def test_combine_adds_counts_steps_and_links_and_keeps_the_newest_time() -> None:
    a = Contributions.of(["x", "y"], "v1", t=[10.0, 11.0], events=[1, 2], rated=[1, 1], d_rating=[0.1, 0.2],
                         tables=_tables([1, 0], [0, 1]), links=[(1, "x", 1.0)])
    b = Contributions.of(["y", "z"], "v1", t=[9.0, 12.0], events=[3, 1], rated=[2, 0], d_rating=[-0.3, 0.0],
                         tables=_tables([0, 2], [5, 5]), links=[(0, "x", 2.0), (1, "y", 1.0)])
    c = a.combine(b)
    assert c.items == ["x", "y", "z"] and c.space == "v1"
    assert c.t.tolist() == [10.0, 11.0, 12.0]  # y: 11 is newer than b's 9
    assert c.events.tolist() == [1.0, 5.0, 1.0] and c.rated.tolist() == [1.0, 3.0, 0.0]
    np.testing.assert_allclose(c.d_rating, [0.1, -0.1, 0.0])
    np.testing.assert_array_equal(c.tables, _tables([1, 0], [0, 3], [5, 5]))
    assert c.kind.tolist() == [DELTA, DELTA, DELTA]
    assert sorted(c.links()) == [("y", "x", 1.0), ("y", "x", 2.0), ("z", "y", 1.0)]
    assert a.combine(Contributions.empty("v1")) is a and Contributions.empty().combine(b) is b


def test_combine_a_set_replaces_what_came_before_and_a_later_step_adds_to_it() -> None:
    step = Contributions.of(["x"], "v1", tables=_tables([1.0, 1.0]))
    init = Contributions.of(["x"], "v1", kind=[INIT], tables=_tables([5.0, 5.0]))
    replaced = step.combine(init)
    assert replaced.kind.tolist() == [INIT] and replaced.tables.tolist() == [[5.0, 5.0]]
    stepped = init.combine(step)
    assert stepped.kind.tolist() == [INIT] and stepped.tables.tolist() == [[6.0, 6.0]]


def test_combine_across_a_model_switch_keeps_the_later_version_only() -> None:
    old = Contributions.of(["x"], "v1", t=[1.0], events=[4], tables=_tables([1.0]))
    new = Contributions.of(["y"], "v2", t=[2.0], events=[1], tables=_tables([2.0]))
    assert old.combine(new) == new


def test_select_keeps_the_entries_in_that_order_with_their_links() -> None:
    c = Contributions.of(["x", "y", "z"], "v1", t=[1.0, 2.0, 3.0], events=[1, 2, 3], kind=[DELTA, INIT, DELTA],
                         tables=_tables([1], [2], [3]), links=[(0, "y", 1.0), (2, "x", 2.0), (2, "y", 3.0)])
    s = c.select([2, 0])
    assert s.items == ["z", "x"] and s.space == "v1"
    assert s.t.tolist() == [3.0, 1.0] and s.events.tolist() == [3.0, 1.0] and s.kind.tolist() == [DELTA, DELTA]
    assert s.tables.tolist() == [[3.0], [1.0]]
    assert sorted(s.links()) == [("x", "y", 1.0), ("z", "x", 2.0), ("z", "y", 3.0)]
    assert c.select([1]).links() == [] and len(c.select([])) == 0


def test_wire_round_trip() -> None:
    c = Contributions.of(["é", "x y", "z"], "v1-é", t=[3.5, -math.inf, 1.0], events=[2, 0, 1], rated=[1, 0, 0],
                         d_rating=[0.25, 0.0, -1.0], kind=[INIT, DELTA, DELTA], tables=_tables([1, 2], [3, 4], [5, 6]),
                         links=[(0, "x y", 2.0), (2, "outside", 1.0)])
    back = Contributions.from_bytes(c.to_bytes())
    assert back == c and back.links() == [("é", "x y", 2.0), ("z", "outside", 1.0)]
    assert back.t[1] == -math.inf and back.kind.dtype == np.uint8
    for empty in (Contributions.empty("v1"), Contributions.empty("v1", 4), Contributions.of(["a"], "v1")):
        assert Contributions.from_bytes(empty.to_bytes()) == empty
    assert back != Contributions.of(["é", "x y", "z"], "v1-é")  # equality is not vacuous


def test_corrupt_bytes_raise_metarec_error() -> None:
    data = Contributions.of(["a", "b"], "v1", t=[1.0, 2.0], events=[1, 1], tables=_tables([1, 2], [3, 4]),
                            links=[(0, "b", 1.0)]).to_bytes()
    bad_entry = bytearray(data)
    bad_entry[-8:-4] = np.array([7], "<i4").tobytes()  # the link's entry: beyond the two items
    bad_magic = b"XX" + data[2:]
    bad_names = data[:_HEAD.size] + b"\xff" + data[_HEAD.size + 1:]
    row = ItemRow("v1", 1, 1.0, 1.0, 1.0, 1.0).to_bytes()
    for bad in (b"", b"junk", data[:-1], data + b"x", bytes(bad_entry), bad_magic, bad_names, row):
        with pytest.raises(MetarecError):
            Contributions.from_bytes(bad)
