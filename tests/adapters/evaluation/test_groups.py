"""Per-group ranking figures (the contract's ``groups``): hand-computed on a tiny stream through ``run_protocol``."""
from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest

import adapters.evaluation.groups
from adapters.data.datasets import UserFeatures
from adapters.evaluation.groups import (activity_bounds, activity_edges, activity_labels, group_bounds,
                                        group_breakdown, prior_activity)
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from adapters.evaluation.report import write_report
from fixed_scores import Table

ONE_THIRD_GAIN = 1 / math.log2(3)   # a hit at rank 1


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.groups).failed == 0


def hand_run():  # noqa: ANN201
    """History a:x b:y a:z c:x a:y b:x; scored d:x a:v c:y b:z d:y e:z, scores x 4 > z 3 > v 2 > y 1, k = 2.

    Scored (prior activity; candidates → rank): d:x (0; x y z → 0, hit), a:v (3; v first seen here → miss),
    c:y (1; y z v → 2, miss), b:z (2; z v → 0, hit), d:y (1; y z v → 2, miss), e:z (0; x y z v → 1, hit).
    """
    s = EventStream.from_arrays(users=list("abacabdacbde"), items=list("xyzxyxxvyzyz"), ratings=[5] * 12,
                                history=0.5)
    assert s.item_names == list("xyzv") and s.start == 6
    res = run_protocol(s, [Table(np.array([4.0, 1.0, 3.0, 2.0])), Table(None, "blind")],
                       PrequentialConfig(history=0.5, k=2), progress=False)
    assert res.traces["table"].rank_array().tolist() == [0.0, np.inf, 2.0, 0.0, 2.0, 1.0]
    return res


def features(users: list[str], gender: list[int], age: list[int]) -> UserFeatures:
    return UserFeatures(user_ids=users, age=np.array(age, np.int64), gender=np.array(gender, np.int64),
                        occupation=np.zeros(len(users), np.int64), n_age=8, n_gender=3, n_occupation=1,
                        occupation_names=[])


def test_activity_groups_by_hand() -> None:
    res = hand_run()
    assert prior_activity(res.stream.users, res.positive_positions).tolist() == [0, 3, 1, 2, 1, 0]
    groups = group_breakdown(res)
    # warm activities 3 1 2 1 → sorted 1 1 2 3 → edges (1, 1, 2): q1 = {c:y, d:y}, q2 empty, q3 = {b:z}, q4 = {a:v}
    assert list(groups) == ["activity:cold", "activity:q1", "activity:q3", "activity:q4"]
    assert all(set(per_model) == {"table"} for per_model in groups.values())   # the blind model does not rank
    table = {g: per_model["table"] for g, per_model in groups.items()}
    assert table["activity:cold"] == pytest.approx({"hr@2": 1.0, "ndcg@2": (1 + ONE_THIRD_GAIN) / 2,
                                                    "positive_events": 2})
    assert table["activity:q1"] == {"hr@2": 0.0, "ndcg@2": 0.0, "positive_events": 2}
    assert table["activity:q3"] == {"hr@2": 1.0, "ndcg@2": 1.0, "positive_events": 1}
    assert table["activity:q4"] == {"hr@2": 0.0, "ndcg@2": 0.0, "positive_events": 1}
    assert group_bounds(res) == {"activity:cold": [0, 0], "activity:q1": [1, 1], "activity:q3": [2, 2],
                                 "activity:q4": [3, 3]}
    # the groups of a dimension partition the scored positives, and their pooled hits are the model's
    assert sum(f["positive_events"] for f in table.values()) == len(res.positive_positions)
    pooled = sum(f["hr@2"] * f["positive_events"] for f in table.values()) / len(res.positive_positions)
    assert pooled == pytest.approx(res.summary()["table"]["hr@2"])


def test_gender_and_age_groups_by_hand() -> None:
    # a F 18-24, b M 56+, c F under 18, d M 18-24; e has no demographics (unknown)
    feats = features(["a", "b", "c", "d"], gender=[2, 1, 2, 1], age=[2, 7, 1, 2])
    groups = group_breakdown(hand_run(), feats)
    table = {g: per_model["table"] for g, per_model in groups.items()}
    assert [g for g in groups if not g.startswith("activity:")] == [
        "gender:F", "gender:M", "gender:unknown", "age:under 18", "age:18-24", "age:56+", "age:unknown"]
    assert table["gender:F"] == {"hr@2": 0.0, "ndcg@2": 0.0, "positive_events": 2}          # a:v, c:y
    assert table["gender:M"] == pytest.approx({"hr@2": 2 / 3, "ndcg@2": 2 / 3, "positive_events": 3})
    assert table["gender:unknown"] == pytest.approx({"hr@2": 1.0, "ndcg@2": ONE_THIRD_GAIN, "positive_events": 1})
    assert table["age:under 18"] == {"hr@2": 0.0, "ndcg@2": 0.0, "positive_events": 1}      # c:y
    assert table["age:18-24"] == pytest.approx({"hr@2": 1 / 3, "ndcg@2": 1 / 3, "positive_events": 3})
    assert table["age:56+"] == {"hr@2": 1.0, "ndcg@2": 1.0, "positive_events": 1}           # b:z


def test_missing_demographics_give_no_gender_or_age_groups() -> None:
    res = hand_run()
    for feats in (None, features([], [], []), features(["a", "b"], gender=[0, 0], age=[0, 0])):
        assert {g.split(":")[0] for g in group_breakdown(res, feats)} == {"activity"}
    only_gender = features(["a", "b"], gender=[1, 2], age=[0, 0])
    assert {g.split(":")[0] for g in group_breakdown(res, only_gender)} == {"activity", "gender"}


def test_quartile_edges() -> None:
    act = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert activity_edges(act) == (2, 4, 6)                       # np.quantile(1..8, .25/.5/.75, 'lower')
    assert activity_labels(act).tolist() == ["cold", "cold", "q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"]
    # an event exactly on an edge belongs to the lower quartile
    assert activity_labels(np.array([1, 2, 3, 4, 5])).tolist() == ["q1", "q1", "q2", "q3", "q4"]
    # ties stay together: every warm event has the same activity → all q1, no empty quartile reported
    assert activity_labels(np.array([5, 5, 5, 5])).tolist() == ["q1"] * 4
    assert activity_bounds(np.array([5, 5, 5, 5])) == {"activity:q1": [1, 5]}
    assert activity_edges(np.array([0, 0])) is None and activity_labels(np.array([0, 0])).tolist() == ["cold"] * 2
    assert activity_bounds(np.array([0, 0])) == {"activity:cold": [0, 0]}
    assert prior_activity(np.array([3, 3, 1, 3]), np.array([0, 1, 2, 3])).tolist() == [0, 1, 0, 2]


def test_report_shows_the_groups_table(tmp_path: Path) -> None:
    res = hand_run()
    groups = group_breakdown(res, features(["a"], gender=[2], age=[3]))
    write_report(tmp_path, res, res.summary(), {}, "x", groups=groups)
    section = (tmp_path / "index.html").read_text().split("<h2>Groups</h2>")[1].split("<h2>")[0]
    assert "<h3>hr@2 by group</h3>" in section and "<h3>ndcg@2 by group</h3>" in section
    assert "<th>table</th>" in section and "<th>blind</th>" not in section
    for g in groups:
        assert section.count(f"<b>{g}</b>") == 2                                # one row per table
    # the activity:cold row of the ndcg table: 2 positive events, ndcg (1 + 1/log2 3) / 2
    assert f"<td><b>activity:cold</b></td><td>2</td><td>{(1 + ONE_THIRD_GAIN) / 2:.4f}</td>" in section
    write_report(tmp_path, res, res.summary(), {}, "x")
    assert "<h2>Groups</h2>" not in (tmp_path / "index.html").read_text()
