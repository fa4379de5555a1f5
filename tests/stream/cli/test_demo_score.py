"""The demo's scoreboard without Kafka: popularity, the worker's list matching, the aligned θ0 outcome."""
from __future__ import annotations

import math

from stream.cli.demo_score import Popularity, Scoreboard, WorkerLists, is_positive


def test_popularity_ranks_by_count_and_excludes_seen_items() -> None:
    pop = Popularity(k=2)
    for user, item in [("a", "x"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z")]:
        pop.learn(user, item)
    assert pop.top("new") == ["x", "y"]  # 2 and 2: first seen first
    assert pop.top("b") == ["z"]  # x and y seen
    assert pop.top("a") == ["y", "z"]


def test_positive_events_follow_the_prequential_rule() -> None:
    assert is_positive(4.0) and is_positive(None) and is_positive(math.nan) and not is_positive(3.5)


def test_worker_list_before_an_event_is_the_newest_as_of_below_its_offset() -> None:
    lists = WorkerLists()
    for offset, items in [(3, ["a"]), (7, ["b"]), (9, ["c"])]:
        lists.add({"user_id": "u", "items": items, "as_of": {"topic": "i", "partition": 0, "offset": offset}})
    assert lists.before("u", 8) == (True, (7, frozenset({"b"})))
    assert lists.before("u", 3) == (True, None)  # only lists that include it or later
    assert lists.before("u", 12) == (False, None)  # the worker has not answered event 12 yet
    assert lists.before("u", 12, final=True) == (True, (9, frozenset({"c"})))
    assert lists.counts == {"u": 3} and lists.latest["u"]["items"] == ["c"]


class _FakeTheta0:
    """θ0's lists by live sequence number, as ThetaZero keeps them."""

    def __init__(self, history: dict[str, list[tuple[int, frozenset[str]]]]) -> None:
        self.history = history

    def learn(self, events: list) -> None:  # the lists are given
        pass

    def latest(self, user: str) -> frozenset[str] | None:
        return self.history[user][-1][1] if self.history.get(user) else None

    def as_of(self, user: str, seq: int) -> frozenset[str] | None:
        earlier = [items for s, items in self.history.get(user, ()) if s <= seq]
        return earlier[-1] if earlier else None


def test_theta0_is_scored_with_the_information_of_the_worker_list() -> None:
    from stream.cli.demo_score import LiveEvent

    # θ0 made a list after seq 0 (contains r) and after seq 1 (no r); the worker's list before event 12 is as of
    # offset 10 (seq 0): θ0 must be judged on its list as of seq 0, which contains r
    board = Scoreboard(_FakeTheta0({"u": [(-1, frozenset()), (0, frozenset({"r"})), (1, frozenset({"s"}))]}))
    board.users.add("u")  # u had a backfill event
    # live events of user u: seq 0 at offset 10 (item p), seq 1 at offset 11 (item q), seq 2 at offset 12 (item r)
    events = [LiveEvent("u", item, 5.0, 0.0, seq) for seq, item in enumerate("pqr")]
    board.score_and_learn(events)
    assert all(ev.scored for ev in events)
    assert board.resolve(WorkerLists()) == 3  # not delivered yet
    for ev in events:
        ev.partition, ev.offset = 0, 10 + ev.seq  # the delivery reports
    worker = WorkerLists()
    worker.add({"user_id": "u", "items": ["x"], "as_of": {"topic": "i", "partition": 0, "offset": 10}})
    assert board.resolve(worker) == 2  # no worker list includes events 11 and 12 yet
    worker.add({"user_id": "u", "items": ["r"], "as_of": {"topic": "i", "partition": 0, "offset": 12}})
    assert board.resolve(worker) == 0
    assert events[2].outcome["metarec"] is False and events[2].outcome["no_adaptation"] is True
    # at its own pace θ0 had its list after seq 1 (no r)
    assert events[2].outcome["no_adaptation_own_pace"] is False
    assert board.rates()["metarec"]["events"] == 3
    assert board.paired("metarec", "no_adaptation") == {"metarec_only": 0, "no_adaptation_only": 1}
