"""Rolling coverage and diversity of the published lists: values on hand-made lists, the window, and the gauges a
real worker core sets after a micro-batch (no broker)."""
from __future__ import annotations

import doctest
import json
import itertools
import math

import numpy as np
import pytest
from worker_support import event_bytes, make_checkpoint

from adapters.evaluation.listmetrics import diversity as offline_diversity
from adapters.meta.checkpoint import Checkpoint
from adapters.online.learner import OnlineConfig, OnlineLearner
from stream.worker.core import MemoryState, RawMessage, WorkerCore
from stream.worker.liststats import ListStats, pairwise_diversity
from stream.worker.metrics import WorkerMetrics

VECTORS = {"a": [1.0, 0.0, 0.0], "b": [2.0, 0.0, 0.0], "c": [0.0, 1.0, 0.0], "d": [1.0, 1.0, 0.0],
           "z": [0.0, 0.0, 0.0]}


def lookup(ids: list[str]) -> np.ndarray:
    return np.array([VECTORS[i] for i in ids])


def brute_force(items: list[str]) -> float:
    """Mean pairwise 1 - cos, pair by pair (cos 0 with a zero vector)."""
    def cos(x, y):
        u, v = np.array(VECTORS[x]), np.array(VECTORS[y])
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        return 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))
    pairs = list(itertools.combinations(items, 2))
    return sum(1 - cos(x, y) for x, y in pairs) / len(pairs)


def test_diversity_of_hand_made_lists_matches_pair_by_pair_and_the_offline_formula():
    lists = [["a", "b"], ["a", "c"], ["a", "c", "d"], ["a", "z", "c"], ["d"]]
    got = pairwise_diversity(lists, lookup)
    assert got[0] == pytest.approx(0.0, abs=1e-7)  # same direction
    assert got[1] == pytest.approx(1.0)  # orthogonal
    for lst, value in zip(lists[:4], got[:4]):
        assert value == pytest.approx(brute_force(lst), abs=1e-6)
    assert math.isnan(got[4])  # one item: no pair
    # the offline diversity@k (adapters.evaluation.listmetrics) on the same vectors: the same mean
    names = sorted(VECTORS)
    cols = np.array([[names.index(i) for i in lst] for lst in [["a", "c", "d"], ["a", "z", "c"]]])
    offline = offline_diversity(cols, np.array([VECTORS[n] for n in names]))
    assert np.mean(got[2:4]) == pytest.approx(offline, abs=1e-6)


def test_gauges_over_the_last_window_lists():
    stats = ListStats(window=3)
    assert stats.coverage(10) == 0.0 and math.isnan(stats.diversity)
    stats.on_published([["a", "b"], ["a", "c"]], lookup)
    assert stats.coverage(10) == pytest.approx(0.3)  # a, b, c of 10
    assert stats.diversity == pytest.approx(0.5)  # (0 + 1) / 2
    stats.on_published([["c", "d"], ["d"]], lookup)  # ["a", "b"] leaves the window; ["d"] has no pair
    assert stats.lists == 3
    assert stats.coverage(10) == pytest.approx(0.3)  # a, c, d
    assert stats.diversity == pytest.approx((1.0 + brute_force(["c", "d"])) / 2)
    stats.on_published([["z", "b"]] * 3, lookup)  # a whole window at once
    assert stats.coverage(4) == pytest.approx(0.5) and stats.diversity == pytest.approx(1.0)
    assert stats.coverage(1) == 1.0 and stats.coverage(0) == 0.0  # capped; no catalog
    stats.on_published([["a", "c"]], None)  # a model without item embeddings: not counted
    assert stats.diversity == pytest.approx(1.0) and stats.coverage(10) == pytest.approx(0.4)


def test_large_batches_sample_evenly_spaced_lists_for_diversity_but_count_every_list_for_coverage():
    lists = [["a", "c"] if n % 10 == 0 else ["a", "b"] for n in range(100)]  # diversity 1 every 10th list, else 0
    stats = ListStats(window=1000, sample=10)
    stats.on_published(lists, lookup)  # step 10: lists 0, 10, ..., 90
    assert stats.diversity == pytest.approx(1.0)
    assert stats.coverage(3) == 1.0 and stats.lists == 100
    small = ListStats(window=1000, sample=100)
    small.on_published(lists, lookup)  # at most `sample` lists: every one
    assert small.diversity == pytest.approx(0.1)


def test_many_distinct_items_recycle_slots_and_stay_exact():
    stats = ListStats(window=50)
    rng = np.random.default_rng(1)
    history: list[list[str]] = []
    for _ in range(60):  # 60 batches of 20 lists over 5,000 items: the slot table is compacted several times
        batch = [[str(i) for i in rng.choice(5000, 10, replace=False)] for _ in range(20)]
        history += batch
        stats.on_published(batch, None)
        distinct = len({i for lst in history[-50:] for i in lst})
        assert stats.coverage(5000) == pytest.approx(distinct / 5000)


def test_a_worker_core_sets_both_gauges_from_the_lists_it_publishes(tmp_path):
    items = [str(i) for i in range(1, 40)]
    make_checkpoint(tmp_path / "v1", items, seed=7)
    learner = OnlineLearner(Checkpoint.load(tmp_path / "v1"), OnlineConfig(top_k=5))
    metrics = WorkerMetrics()
    core = WorkerCore(learner, metrics, "in", "out")
    assert math.isnan(metrics.registry.get_sample_value("metarec_list_diversity"))
    msgs = [RawMessage("in", 0, n, f"u{n % 7}".encode(), event_bytes(f"u{n % 7}", items[n], 5.0, 1e9 + n), 1e9)
            for n in range(20)]
    out = core.process(msgs, MemoryState())
    lists = [json.loads(o.value)["items"] for o in out.lists]
    assert len(lists) == 7 and all(len(lst) == 5 for lst in lists)
    distinct = {i for lst in lists for i in lst}
    assert metrics.registry.get_sample_value("metarec_list_coverage_ratio") == pytest.approx(
        len(distinct) / learner.items.n_active)
    emb = learner.adapter.item_emb.detach().numpy()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected = np.mean([np.mean([1 - unit[learner.items.row(x)] @ unit[learner.items.row(y)]
                                 for x, y in itertools.combinations(lst, 2)]) for lst in lists])
    assert metrics.registry.get_sample_value("metarec_list_diversity") == pytest.approx(expected, abs=1e-5)


def test_doctests():
    import stream.worker.liststats

    result = doctest.testmod(stream.worker.liststats)
    assert result.attempted > 0 and result.failed == 0
