"""Recovery after planted drift, on constructed cases whose answer is known."""
from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest

import adapters.evaluation.drift
from adapters.evaluation.drift import (RecoveryConfig, load_truth, own_indices, recovery_report, sidecar_path,
                            user_recovery)
from adapters.errors import MetarecError
from adapters.evaluation.prequential import EventStream, ModelTrace, PrequentialConfig, PrequentialResult


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.drift).failed == 0


def test_user_recovery_cases() -> None:
    idx = np.arange(12)
    kw = dict(window=3, pre_window=10, min_pre=3, threshold=0.9)
    # level 1.0 before index 4; misses at 4..6, hits from 7 on: recovery = 7 - 4 = 3
    hits = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1])
    assert user_recovery(idx, hits, drift_index=4, **kw) == (1.0, 3)
    # never degraded: recovery 0
    assert user_recovery(idx, np.ones(12), drift_index=4, **kw) == (1.0, 0)
    # never recovers
    assert user_recovery(idx, np.r_[np.ones(4), np.zeros(8)], drift_index=4, **kw) == (1.0, None)
    # not measurable: too few pre-drift events, or nothing to recover to
    assert user_recovery(idx, hits, drift_index=2, **kw) is None
    assert user_recovery(idx, np.r_[np.zeros(4), np.ones(8)], drift_index=4, **kw) is None
    # level 0.5: runs of 3 need ≥ 0.45 → 2 of 3 hits; own indices with gaps count own events
    gap_idx = np.array([0, 2, 4, 6, 10, 11, 13, 15, 16])
    gap_hits = np.array([1, 0, 1, 0, 0, 0, 1, 1, 0])
    assert user_recovery(gap_idx, gap_hits, drift_index=8, **kw) == (0.5, 11 - 8)


def test_own_indices() -> None:
    assert own_indices(np.array([3, 1, 3, 3, 1, 2])).tolist() == [0, 0, 1, 2, 1, 0]


def _constructed() -> tuple[PrequentialResult, dict]:
    """Users d1, d2 drift at their own event 6; s1 never drifts. History: 6 filler events."""
    users = ["h"] * 6
    for n in range(14):
        users += ["d1", "d2", "s1"]
    items = [f"i{n}" for n in range(len(users))]
    stream = EventStream.from_arrays(users=users, items=items, ratings=[5.0] * len(users), history=6 / len(users))
    pos = np.arange(stream.start, len(stream))
    who = stream.user_ids[pos]
    own = own_indices(stream.users)[pos]
    fast = np.where(who == "d1", np.where((own >= 6) & (own < 8), 0, 1), 1)      # d1 back after 2 events
    fast = np.where(who == "d2", np.where((own >= 6) & (own < 9), 0, 1), fast)   # d2 back after 3
    slow = np.where((who != "s1") & (own >= 6), np.where(own < 12, 0, 1), 1)     # back after 6
    never = np.where((who != "s1") & (own >= 6), 0, 1)
    traces = {name: ModelTrace(name, ranks=[np.where(h == 1, 0.0, math.inf)])
              for name, h in (("fast", fast), ("slow", slow), ("never", never))}
    truth = {"users": {"d1": {"kind": "abrupt", "drift_index": 6}, "d2": {"kind": "gradual", "drift_index": 6},
                       "s1": {"kind": "none"}, "h": {"kind": "none"}}}
    return PrequentialResult(stream, PrequentialConfig(history=6 / len(users)), traces), truth


def test_recovery_report_on_a_constructed_stream() -> None:
    result, truth = _constructed()
    rep = recovery_report(result, truth, RecoveryConfig(window=2, pre_window=5, min_pre=3, curve_before=3,
                                                        curve_after=6))
    assert rep["drifting_users"] == 2
    fast, slow, never = (rep["models"][n] for n in ("fast", "slow", "never"))
    assert fast["measured_users"] == 2 and fast["recovered_share"] == 1.0
    assert fast["median_events"] == 2.5 and fast["mean_events"] == 2.5
    assert slow["median_events"] == 6.0
    assert never["recovered_share"] == 0.0 and never["median_events"] is None
    assert rep["curve_offsets"] == list(range(-3, 7))
    assert fast["curve"][:3] == [1.0, 1.0, 1.0]      # before the drift
    assert fast["curve"][3:5] == [0.0, 0.0]          # offsets 0, 1: both users miss
    assert fast["curve"][5] == 0.5                   # offset 2: d1 is back, d2 not yet
    assert fast["hr@10_before"] == 1.0
    assert fast["curve_recovery_events"] == 3        # pooled: offsets 3-4 are back at 100 %
    assert slow["curve_recovery_events"] is None     # back at offset 6: no full run of 2 inside the curve
    assert never["curve_recovery_events"] is None
    json.dumps(rep)                                  # JSON-able


def test_truth_without_drifting_users_of_this_stream_is_an_error(tmp_path: Path) -> None:
    result, _ = _constructed()
    with pytest.raises(MetarecError):
        recovery_report(result, {"users": {"zz": {"kind": "abrupt", "drift_index": 3}}})
    bad = tmp_path / "x.drift.json"
    bad.write_text("{not json")
    with pytest.raises(MetarecError):
        load_truth(bad)
    bad.write_text("[]")
    with pytest.raises(MetarecError):
        load_truth(bad)
    assert sidecar_path("data/s.csv") == Path("data/s.drift.json")


def test_synthetic_stream_end_to_end(tmp_path: Path) -> None:
    """The sidecar written by `metarec synth` is understood, and a per-user adaptive model recovers."""
    from adapters.evaluation.baselines import Popularity, RiverBiasedMF
    from adapters.data.datasets import load_dataset
    from adapters.evaluation.prequential import run_protocol
    from adapters.data.synth import SynthConfig, generate
    path = tmp_path / "drift.csv"
    generate(SynthConfig(n_users=150, n_items=120, events_per_user=40, n_clusters=6, seed=2)).write(path)
    stream = EventStream.from_dataset(load_dataset(str(path)), history=0.3)
    res = run_protocol(stream, [Popularity(stream), RiverBiasedMF(stream)], PrequentialConfig(history=0.3),
                       progress=False)
    rep = recovery_report(res, load_truth(sidecar_path(path)))
    assert rep["drifting_users"] > 50
    for name in ("popularity", "river_biasedmf"):
        assert rep["models"][name]["measured_users"] > 0
        assert len(rep["models"][name]["curve"]) == len(rep["curve_offsets"])
