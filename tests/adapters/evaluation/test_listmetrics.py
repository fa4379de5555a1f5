"""Beyond-accuracy figures of the scored top-k lists: hand-computed on tiny streams, through ``run_protocol``."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import adapters.evaluation.listmetrics
from adapters.data.datasets import Dataset, ItemFeatures
from adapters.evaluation.listmetrics import count_before, coverage, diversity, novelty, top_k_lists
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from fixed_scores import Table


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.listmetrics).failed == 0


def test_top_k_lists_follow_the_candidates_best_first() -> None:
    scores = np.array([[1.0, 5.0, 3.0, 4.0, 2.0],
                       [1.0, 5.0, 3.0, 4.0, 2.0],
                       [0.0, -np.inf, np.nan, 0.5, 9.0]])
    cand = np.array([[True] * 5,
                     [True, False, True, False, True],     # the user's own items / unseen items are not listed
                     [True, True, True, True, False]])
    assert top_k_lists(scores, cand, 3).tolist() == [[1, 3, 2], [2, 4, 0], [3, 0, -1]]   # -inf/NaN never listed
    assert top_k_lists(scores[:1], cand[:1], 7).tolist() == [[1, 3, 2, 4, 0, -1, -1]]   # k > catalog
    assert top_k_lists(scores[:0], cand[:0], 3).shape == (0, 3)


def test_small_pieces() -> None:
    assert coverage(np.array([[0, 1], [1, -1]]), 4) == 0.5
    assert count_before(np.array([2, 0, 2, 2]), 3, np.array([2, 2, 0]), np.array([1, 4, 1])).tolist() == [1, 3, 0]
    assert novelty(np.array([[-1, -1]]), np.array([3]), np.array([0, 0, 0]), 1) is None
    g = np.array([[1, 1], [1, 0], [0, 0]], dtype=np.float32)
    assert diversity(np.array([[0, 1]]), g) == pytest.approx(1 - 1 / math.sqrt(2))
    assert diversity(np.array([[0, 2]]), g) == pytest.approx(1.0)     # no genres: cosine 0
    assert diversity(np.array([[0, -1]]), g) is None                  # no pair in any list


def hand_stream() -> EventStream:
    """History a:x b:y c:x d:z h:v; scored e:x, e:w (w never seen: a miss), f:w, g:y (rating 2), i:x (rating 3)."""
    s = EventStream.from_arrays(users=list("abcdheefgi"), items=list("xyxzvxwwyx"),
                                ratings=[5, 5, 5, 5, 5, 5, 4, np.nan, 2, 3], history=0.5)
    assert s.item_names == list("xyzvw") and s.start == 5 and s.first_pos[4] == 6
    #                              x    y    z    v    w
    s.item_genres = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 1]], dtype=np.float32)
    return s


def test_hand_computed_figures_through_the_protocol() -> None:
    s = hand_stream()
    table = np.array([4.0, 3.0, 2.0, 1.0, 5.0])          # w > x > y > z > v
    res = run_protocol(s, [Table(table), Table(None, "blind")], PrequentialConfig(history=0.5, k=2),
                       progress=False)
    tr = res.traces["table"]
    # e:x → candidates x y z v → [x, y] (w not seen yet: not listed), hit; e:w → y z v (x is e's) → [y, z], miss;
    # f:w → all five → [w, x], hit
    assert np.concatenate(tr.lists).tolist() == [[0, 1], [1, 2], [4, 0]]
    assert np.concatenate(tr.list_positions).tolist() == [5, 6, 7]
    fig = res.summary()["table"]
    assert fig["hr@2"] == pytest.approx(2 / 3)
    assert fig["new_item_hr@2"] == 0.5                  # only e:w (miss) and f:w (hit): x was seen in the history
    assert fig["coverage@2"] == pytest.approx(4 / 5)     # v never listed
    # events before 5: x 2, y 1; before 6: y 1, z 1; before 7: w 1, x 3
    expected = [math.log2(5 / 2), math.log2(5), math.log2(6), math.log2(6), math.log2(7), math.log2(7 / 3)]
    assert fig["novelty@2"] == pytest.approx(sum(expected) / 6)
    assert fig["diversity@2"] == pytest.approx(2 / 3)   # [x, y] same genre: 0; [y, z]: 1; [w, x]: 1
    assert set(res.summary()["blind"]) == {"hr@2", "ndcg@2"}   # no lists: no beyond-accuracy keys


def test_new_item_hr_only_counts_items_first_seen_after_the_history() -> None:
    # x, y in the history; scored: c:x hit (not a new item), d:z never seen (new: miss), e:z (new: hit)
    s = EventStream.from_arrays(users=list("abcde"), items=list("xyxzz"), ratings=[5] * 5, history=0.4)
    res = run_protocol(s, [Table(np.array([1.0, 0.0, 2.0]))], PrequentialConfig(history=0.4, k=1), progress=False)
    fig = res.summary()["table"]
    assert fig["hr@1"] == pytest.approx(2 / 3)
    assert fig["new_item_hr@1"] == 0.5
    old = EventStream.from_arrays(users=list("abcd"), items=list("xyxy"), ratings=[5] * 4, history=0.5)
    res = run_protocol(old, [Table(np.array([1.0, 0.0]))], PrequentialConfig(history=0.5), progress=False)
    assert "new_item_hr@10" not in res.summary()["table"]      # no new-item positive: no figure
    assert "diversity@10" not in res.summary()["table"]        # no genres


def test_event_stream_takes_genres_from_the_dataset() -> None:
    features = ItemFeatures(item_ids=["1", "2", "3"], genres=np.array([[1, 0], [0, 1], [1, 1]], np.float32),
                            genre_names=["a", "b"], year=np.zeros(3, np.int64), titles=["p", "q", "r"])
    ds = Dataset(name="toy", fingerprint="f", user_ids=np.array(["u", "v", "u", "w"], dtype=object),
                 item_ids=np.array(["3", "1", "9", "3"], dtype=object), ratings=np.full(4, 5.0, np.float32),
                 timestamps=np.arange(4.0), item_features=features)
    s = EventStream.from_dataset(ds)
    assert s.item_names == ["3", "1", "9"]
    assert s.item_genres is not None and s.item_genres.tolist() == [[1, 1], [1, 0], [0, 0]]   # 9: no features
    ds.item_features = None
    assert EventStream.from_dataset(ds).item_genres is None
