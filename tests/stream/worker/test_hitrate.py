"""The live hit-rate tracker behind metarec_online_hit_rate."""
from __future__ import annotations

import doctest
import threading

import pytest

import stream.worker.hitrate
from stream.worker.hitrate import OnlineHitRate


def test_doctest() -> None:
    assert doctest.testmod(stream.worker.hitrate).failed == 0


def test_no_list_means_not_counted() -> None:
    t = OnlineHitRate()
    assert t.on_event("u", "a") is None
    assert t.counted == 0 and t.rate == 0.0


def test_hit_and_miss_against_latest_list_only() -> None:
    t = OnlineHitRate(window=10)
    t.on_published("u", ["a", "b"])
    assert t.on_event("u", "a") is True
    t.on_published("u", ["c"])          # replaces the previous list
    assert t.on_event("u", "b") is False
    assert t.on_event("u", "c") is True
    assert t.on_event("v", "c") is None  # another user's list does not count
    assert t.counted == 3
    assert t.rate == pytest.approx(2 / 3)


def test_negative_ratings_ignored_implicit_counted() -> None:
    t = OnlineHitRate()
    t.on_published("u", ["a"])
    assert t.on_event("u", "a", rating=2.0) is None
    assert t.on_event("u", "a", rating=4.0) is True
    assert t.on_event("u", "a", rating=None) is True
    assert t.on_event("u", "b", rating=float("nan")) is False
    assert t.counted == 3
    everything = OnlineHitRate(positive_threshold=None)
    everything.on_published("u", ["a"])
    assert everything.on_event("u", "a", rating=1.0) is True


def test_rolling_window_forgets_old_outcomes() -> None:
    t = OnlineHitRate(window=4)
    t.on_published("u", ["a"])
    for _ in range(4):
        t.on_event("u", "a")          # 4 hits
    assert t.rate == 1.0
    for _ in range(3):
        t.on_event("u", "z")          # 3 misses push 3 hits out
    assert t.counted == 4
    assert t.rate == pytest.approx(1 / 4)
    assert t.total_rate == pytest.approx(4 / 7)
    for _ in range(10):
        t.on_event("u", "z")
    assert t.rate == 0.0


def test_bounded_users_evicts_least_recent() -> None:
    t = OnlineHitRate(max_users=2)
    t.on_published("a", ["x"])
    t.on_published("b", ["x"])
    assert t.on_event("a", "x") is True   # touches a: b is now the least recent
    t.on_published("c", ["x"])
    assert t.users_tracked == 2
    assert t.on_event("b", "x") is None   # evicted
    assert t.on_event("a", "x") is True
    assert t.on_event("c", "x") is True


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        OnlineHitRate(window=0)
    with pytest.raises(ValueError):
        OnlineHitRate(max_users=0)


def test_concurrent_reads_and_writes_stay_consistent() -> None:
    t = OnlineHitRate(window=1_000)
    t.on_published("u", ["a"])
    rates: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            rates.append(t.rate)

    th = threading.Thread(target=reader)
    th.start()
    for n in range(20_000):
        t.on_event("u", "a" if n % 2 == 0 else "b")
    stop.set()
    th.join()
    assert all(0.0 <= r <= 1.0 for r in rates)
    assert t.rate == pytest.approx(0.5)
    assert t.total_rate == pytest.approx(0.5)
