"""Durable user records (adapters/online/records.py): bytes formats, and online item rows named so that a record
written by one process reads the same items in another (where new items got rows in another order)."""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.meta.training import TrainConfig, train
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner
from adapters.online.records import UserRecord, record_position, vocab_hash


@pytest.fixture(scope="module")
def checkpoint():
    return train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                 TrainConfig(model="mf", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                             model_config={"dim": 8, "rating_dim": 4}))


def _record(n_items: int = 12) -> UserRecord:
    r = UserRecord.empty(n_items, vocab=99)
    for k, item in enumerate([3, 9, 10]):
        r.append(item, 4.0 if k != 1 else math.nan, 100.0 + k, 2, 40 + k)
    r.state, r.model_version = np.linspace(-1, 1, 6, dtype=np.float32), "v7"
    return r


def _format_1_bytes(r: UserRecord) -> bytes:
    """``r`` in the format-1 layout (no names section), built by hand."""
    version = r.model_version.encode("utf-8")
    packed = np.packbits(r.seen).tobytes()
    squeezed = zlib.compress(packed, 1)
    flags = 1 if r.state is not None else 0
    if len(squeezed) < len(packed):
        flags, packed = flags | 2, squeezed
    state = b"" if r.state is None else r.state.astype("<f4").tobytes()
    header = struct.pack("<2sBBHIIiqdQH", b"MR", 1, flags, len(r.items), len(state) // 4, r.n_items, r.partition,
                         r.last_offset, r.last_timestamp, r.vocab, len(version))
    return b"".join([header, version, state, r.items.astype("<i4").tobytes(), r.ratings.astype("<f4").tobytes(),
                     r.timestamps.astype("<f8").tobytes(), r.offsets.astype("<i8").tobytes(), packed])


# -- bytes ------------------------------------------------------------------------------------------------
def test_format_2_round_trips_names_exactly():
    r = _record()
    r.names = {9: "nouveauté-é", 10: "", 11: "x\x1fy"}  # any id: lengths, not a separator
    raw = r.to_bytes()
    back = UserRecord.from_bytes(raw)
    assert back == r and back.names == r.names and back.to_bytes() == raw
    assert raw[2] == 2 and record_position(raw) == (2, 102.0)
    assert back != UserRecord.from_bytes(_record().to_bytes())  # names take part in equality


def test_a_format_1_record_still_decodes_with_no_names():
    r = _record()
    old = _format_1_bytes(r)
    assert old[2] == 1 and record_position(old) == (2, 102.0)
    back = UserRecord.from_bytes(old)
    assert back == r and back.names == {}
    new = back.to_bytes()
    assert new[2] == 2 and len(new) == len(old)  # no names: no bytes spent on them


@pytest.mark.parametrize("cut", [1, 4, 10])
def test_a_truncated_names_section_is_a_clear_error(cut):
    r = _record()
    r.names = {9: "abc", 10: "def"}
    raw = r.to_bytes()
    seen = len(zlib.compress(np.packbits(r.seen).tobytes(), 1))
    seen = min(seen, len(np.packbits(r.seen).tobytes()))
    with pytest.raises(MetarecError, match="corrupt user record"):
        UserRecord.from_bytes(raw[:len(raw) - seen - cut])


# -- naming and re-expressing online rows -----------------------------------------------------------------------
def test_name_online_rows_names_the_referenced_rows_past_the_checkpoint_only():
    r = _record(n_items=14)  # window rows 3, 9, 10; seen 3, 9, 10
    r.seen[12] = True  # seen but out of the window
    r.seen[13] = True  # beyond the writer's table: ignored
    r.names = {5: "stale"}
    ids = ["<unk>", *"abcdefgh", "n9", "n10", "", "n12"]  # 13 rows, checkpoint rows 0..8
    assert r.name_online_rows(n_base=9, item_ids=ids) is r
    assert r.names == {9: "n9", 10: "n10", 12: "n12"}
    online = np.zeros(13, bool)
    online[[3, 9, 10, 11, 12]] = True  # row 3: a checkpoint item's row reused online
    ids[3] = "reused"
    assert r.name_online_rows(9, ids, online).names == {3: "reused", 9: "n9", 10: "n10", 12: "n12"}


def test_in_table_moves_named_rows_to_their_items_rows_and_drops_unknown_items():
    r = _record(n_items=12)  # window rows 3, 9, 10; seen 3, 9, 10
    r.seen[11] = True
    r.names = {9: "x", 10: "y", 11: "gone"}
    before = r.to_bytes()
    ids = ["<unk>", *"abcdefgh", "y", "x", "z", "", "w"]  # x and y swapped, "gone" unknown, a larger table
    index = {i: k for k, i in enumerate(ids) if k and i}
    m = r.in_table(ids, index)
    assert m.items.tolist() == [3, 10, 9] and m.items.dtype == np.int32
    assert m.seen_rows().tolist() == [3, 9, 10]
    assert m.names == {9: "y", 10: "x"} and m.n_items == 12
    assert m.ratings.tolist()[0] == 4.0 and math.isnan(m.ratings[1]) and r.to_bytes() == before  # input unchanged
    assert m.in_table(ids, index) is m  # every name holds now

    lost = r.in_table(["<unk>", *"abcdefgh"], {c: k + 1 for k, c in enumerate("abcdefgh")})  # a smaller table
    assert lost.items.tolist() == [3, 0, 0] and lost.seen_rows().tolist() == [3] and lost.names == {}
    far = r.in_table(ids + [""] * 10 + ["x"], {**index, "x": 24})  # an item's row beyond the record's size
    assert far.n_items == 25 and far.items.tolist() == [3, 24, 9] and far.seen_rows().tolist() == [3, 9, 24]


def test_in_table_returns_a_record_without_names_or_with_valid_names_unchanged():
    r = _record()
    assert r.in_table(["<unk>"], {}) is r
    r.names = {9: "x"}
    ids = ["<unk>", *"abcdefgh", "x"]
    assert r.in_table(ids, {i: k for k, i in enumerate(ids) if k}) is r


def test_remap_maps_a_named_row_by_its_name():
    old_ids = ["<unk>", "a", "b", "c", "local"]  # row 4: what the reading process holds there
    r = UserRecord.empty(6, vocab_hash(old_ids[:4]))
    r.append(1, 4.0, 1.0, 0, 0)
    r.append(4, 4.0, 2.0, 0, 1)
    r.append(5, 4.0, 3.0, 0, 2)  # beyond the reader's old table
    r.names = {4: "writer", 5: "local"}
    new_ids = ["<unk>", "local", "a", "writer"]
    m = r.remap(old_ids, {i: k for k, i in enumerate(new_ids) if k}, 4, vocab_hash(new_ids))
    assert m.items.tolist() == [2, 3, 1] and m.seen_rows().tolist() == [1, 2, 3] and m.names == {}


# -- across learners ------------------------------------------------------------------------------------
def _feed(learner: OnlineLearner, user: str, items: list[str], records: dict, start: int = 0) -> None:
    events = [Interaction(user, i, 4.0, 1e6 + start + k, 0, start + k) for k, i in enumerate(items)]
    records.update(learner.process(events, records).records)


def test_a_record_written_by_one_learner_reads_the_same_items_in_another(checkpoint):
    """A and B serve the same checkpoint but met the new items in other orders: the rows differ, the ids agree."""
    b1, b2 = checkpoint.item_ids[1], checkpoint.item_ids[2]
    a, b = OnlineLearner(checkpoint, OnlineConfig(top_k=5)), OnlineLearner(checkpoint, OnlineConfig(top_k=5))
    written: dict = {}
    _feed(a, "u0", [b1, "n1", "n2", "n3", "n4"], written)
    _feed(b, "u1", ["n3", "n2", "n1", "m"], {})
    base = len(checkpoint.item_ids)
    assert [a.item_row(i) for i in ("n1", "n2", "n3", "n4")] == [base, base + 1, base + 2, base + 3]
    assert [b.item_row(i) for i in ("n1", "n2", "n3", "m")] == [base + 2, base + 1, base, base + 3]
    raw = written["u0"].to_bytes()
    assert UserRecord.from_bytes(raw).names == {base: "n1", base + 1: "n2", base + 2: "n3", base + 3: "n4"}

    stored = {"u0": UserRecord.from_bytes(raw)}
    out = b.process([Interaction("u0", b2, 3.0, 2e6, 0, 5)], stored)
    rec = out.records["u0"]
    assert [b.item_ids[r] if r else None for r in rec.items] == [b1, "n1", "n2", "n3", None, b2]
    assert {b.item_ids[r] for r in rec.seen_rows()} == {b1, "n1", "n2", "n3", b2}  # n4: unknown to B, unseen
    assert not rec.seen[b.item_row("m")]  # the row n4 had in A holds m in B
    assert rec.names == {b.item_row(i): i for i in ("n1", "n2", "n3")}
    assert not {b1, b2, "n1", "n2", "n3"} & set(out.recommendations[0].items)
    assert stored["u0"] == UserRecord.from_bytes(raw)  # the stored record itself is left as it was

    other = UserRecord.from_bytes(raw)
    other.model_version = "older"
    again = b.readapt({"u0": other})["u0"]  # re-adapted under B: re-expressed in B's rows too
    assert [b.item_ids[r] if r else None for r in again.items] == [b1, "n1", "n2", "n3", None]
    assert again.names == {b.item_row(i): i for i in ("n1", "n2", "n3")} and again.model_version == b.model_version
