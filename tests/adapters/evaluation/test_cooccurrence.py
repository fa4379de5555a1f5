"""The ``cooccurrence`` baseline: agreement with the naive per-event implementation (``tests/support``), and with the
contract's reference tool where ``../shared/tools`` exists next to the repository; per-event learning; behaviour by
hand."""
from __future__ import annotations

import doctest
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import naive_prequential as naive
import adapters.evaluation.cooccurrence
from adapters.evaluation.cooccurrence import Cooccurrence
from adapters.data.datasets import load_dataset
from adapters.errors import MetarecError
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol

#: ``../shared/tools`` relative to the repository root (the tool is part of the contract, not of the project)
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "tools" / "cooccurrence_reference.py"
#: the comparisons with the reference tool run where it exists; a clone without ``../shared`` skips them, saying why
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_file(),
    reason=f"../shared/tools is absent next to the repository (no {REFERENCE}): the contract's reference tool "
           "is not here; the naive implementation in tests/support stands in for it")


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.cooccurrence).failed == 0


def load_reference() -> ModuleType:
    """The reference tool as a module (callers are marked :data:`needs_reference`)."""
    spec = importlib.util.spec_from_file_location("cooccurrence_reference", REFERENCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path: Path, n: int = 4000, seed: int = 11) -> Path:
    """Several hundred users and items, popularity skew, shuffled rows with many tied timestamps, ratings below
    4, and implicit events (empty rating: positive for the project and the naive implementation, 5 for the
    reference tool)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 300, n)
    items = rng.zipf(1.3, n) % 500
    ratings = [str(r) for r in rng.integers(1, 6, n)]
    for at in rng.choice(n, n // 10, replace=False):
        ratings[at] = ""
    ts = np.sort(rng.integers(0, n // 4, n))[rng.permutation(n)]
    with open(path, "w") as f:
        f.write("user_id,item_id,rating,timestamp\n")
        f.writelines(f"u{u},i{i},{r},{t}\n" for u, i, r, t in zip(users, items, ratings, ts))
    return path


def ours(path: Path, config: PrequentialConfig, **kwargs: int) -> tuple[dict[str, float], np.ndarray]:
    stream = EventStream.from_dataset(load_dataset(str(path)), history=config.history)
    res = run_protocol(stream, [Cooccurrence(stream, **kwargs)], config, progress=False)
    return res.summary()["cooccurrence"], res.traces["cooccurrence"].rank_array()


def assert_same_ranking(fig: dict[str, float], ranks: np.ndarray, expected: naive.RankingFigures) -> None:
    """The project ranks every scored positive event exactly as the naive implementation."""
    assert len(ranks) == expected.positives
    assert ranks.tolist() == expected.ranks
    assert abs(fig["hr@10"] - expected.hr) < 1e-9
    assert abs(fig["ndcg@10"] - expected.ndcg) < 1e-9


def test_the_naive_implementation_by_hand() -> None:
    """The naive model (tests/support) on streams small enough to follow by hand, per event and in micro-batches."""
    # a met x then y (C[x][y] = 1), b met z. Scored: c:x at t=10, c:y at t=10.2
    events = [naive.Event(u, i, 5.0, t) for u, i, t in
              [("a", "x", 0.0), ("a", "y", 1.0), ("b", "z", 2.0), ("c", "x", 10.0), ("c", "y", 10.2)]]
    model = naive.CooccurrenceModel(max_count=5)
    for e in events[:4]:
        model.learn(e.user, e.item)
    scores = model.scores("c", ["x", "y", "z"])   # c's last item x: y 1 / (1 + 1) ** 0.5; x and z never met x
    assert scores == {"x": 0.0, "y": pytest.approx(1 / math.sqrt(2), rel=1e-7), "z": 0.0}
    # c:x: c has no items, x, y, z tie (rank 1). c:y, per event: c's last item x, y first among y, z (x is c's own)
    per_event = naive.cooccurrence(events, history=0.6, k=1)
    assert per_event.ranks == [1.0, 0.0]
    assert (per_event.hr, per_event.ndcg) == (0.5, pytest.approx(0.5))
    # in 1-second micro-batches c:y is scored with the state from before c:x: c has no items, y and z tie
    assert naive.cooccurrence(events, history=0.6, batch_seconds=1.0, k=1).ranks == [1.0, 0.5]
    # ... and a 0.1-second batch ends before c:y
    assert naive.cooccurrence(events, history=0.6, batch_seconds=0.1, k=1).ranks == [1.0, 0.0]
    # a never-seen item is a miss; an item the user had is a miss
    tail = [naive.Event("d", "w", None, 11.0), naive.Event("a", "x", 4.0, 12.0)]
    assert naive.cooccurrence(events + tail, history=4 / 7).ranks[-2:] == [math.inf, math.inf]


def test_matches_the_naive_implementation_per_event(tmp_path: Path) -> None:
    """Exactly the naive per-event ranks although the protocol runs in 1-second micro-batches: the model learns
    event by event inside ``step`` and candidates follow event positions, so the micro-batching changes nothing;
    the scores are float32 in both, so ties agree too. The same holds with the sparse counts (``dense_limit=0``)."""
    path = write_csv(tmp_path / "events.csv")
    expected = naive.cooccurrence(naive.read_events(path), history=0.5, window=10, decay=0.8, alpha=0.5)
    config = PrequentialConfig(history=0.5, batch_seconds=1.0)
    fig, ranks = ours(path, config)
    assert 0.05 < expected.hr < 0.95   # a demanding comparison: neither trivial nor saturated
    assert_same_ranking(fig, ranks, expected)
    sparse_fig, sparse_ranks = ours(path, config, dense_limit=0)
    assert np.array_equal(sparse_ranks, ranks)
    assert sparse_fig == fig


@pytest.mark.parametrize("window, decay, alpha", [(10, 0.8, 0.5), (3, 0.5, 1.0)])
def test_ml100k_head_matches_the_naive_implementation(tmp_path: Path, window: int, decay: float,
                                                        alpha: float) -> None:
    """The same on the first 10,000 events of ML-100K, at the contract's settings and at others."""
    path = tmp_path / "ml100k-head.csv"
    load_dataset("ml-100k").head(10_000).to_csv(path)
    expected = naive.cooccurrence(naive.read_events(path), history=0.5, window=window, decay=decay, alpha=alpha)
    fig, ranks = ours(path, PrequentialConfig(history=0.5), window=window, decay=decay, alpha=alpha)
    assert_same_ranking(fig, ranks, expected)


def test_micro_batching_does_not_change_a_per_event_model(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events.csv", n=1500, seed=5)
    _, one = ours(path, PrequentialConfig(history=0.4, batch_size=1, batch_seconds=None))
    _, big = ours(path, PrequentialConfig(history=0.4, batch_size=256, batch_seconds=None))
    assert np.array_equal(one, big)


@pytest.fixture(scope="module")
def ml100k_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ml100k") / "ml100k.csv"
    load_dataset("ml-100k").to_csv(path)
    return path


@pytest.fixture(scope="module")
def ml100k_figure(ml100k_csv: Path) -> dict[str, float]:
    """The project's per-event figures on the whole of ML-100K (computed once for the tests below)."""
    fig, _ = ours(ml100k_csv, PrequentialConfig(history=0.5, batch_seconds=1.0))
    return fig


@pytest.mark.slow
def test_ml100k_gives_the_contracts_published_figure(ml100k_figure: dict[str, float]) -> None:
    assert abs(ml100k_figure["hr@10"] - 0.212) <= 0.002   # CONTRACT.md: the per-event figure


@needs_reference
@pytest.mark.parametrize("batch_seconds", [0.0, 1.0])
@pytest.mark.parametrize("history", [0.5, 0.3])
def test_the_naive_implementation_matches_the_reference_tool(tmp_path: Path, history: float,
                                                             batch_seconds: float) -> None:
    """The naive implementation is itself pinned to the contract's tool, per event and in micro-batches (the mode
    the project's per-event baseline has no counterpart for)."""
    reference = load_reference()
    path = write_csv(tmp_path / "events.csv")
    ref = reference.run(reference.load(str(path)), history=history, window=10, decay=0.8, alpha=0.5,
                        batch_seconds=batch_seconds)
    mine = naive.cooccurrence(naive.read_events(path), history=history, window=10, decay=0.8, alpha=0.5,
                              batch_seconds=batch_seconds)
    assert mine.positives == ref["positives"]
    assert abs(mine.hr - ref["hr@10"]) < 1e-9
    assert abs(mine.ndcg - ref["ndcg@10"]) < 1e-9


@needs_reference
def test_matches_the_reference_tool_per_event(tmp_path: Path) -> None:
    """Exactly the reference's per-event figure (``batch_seconds=0``) under 1-second protocol micro-batches, dense
    and sparse counts (see :func:`test_matches_the_naive_implementation_per_event`)."""
    reference = load_reference()
    path = write_csv(tmp_path / "events.csv")
    ref = reference.run(reference.load(str(path)), history=0.5, window=10, decay=0.8, alpha=0.5, batch_seconds=0.0)
    config = PrequentialConfig(history=0.5, batch_seconds=1.0)
    fig, ranks = ours(path, config)
    assert len(ranks) == ref["positives"]
    assert 0.05 < ref["hr@10"] < 0.95   # a demanding comparison: neither trivial nor saturated
    assert abs(fig["hr@10"] - ref["hr@10"]) < 1e-9
    assert abs(fig["ndcg@10"] - ref["ndcg@10"]) < 1e-9
    sparse_fig, sparse_ranks = ours(path, config, dense_limit=0)
    assert np.array_equal(sparse_ranks, ranks)
    assert sparse_fig == fig


@needs_reference
@pytest.mark.slow
def test_ml100k_matches_the_reference_tool(ml100k_csv: Path, ml100k_figure: dict[str, float]) -> None:
    reference = load_reference()
    ref = reference.run(reference.load(str(ml100k_csv)), history=0.5, window=10, decay=0.8, alpha=0.5,
                        batch_seconds=0.0)
    assert abs(ml100k_figure["hr@10"] - ref["hr@10"]) <= 0.002


def stream_of(pairs: str, history: float) -> EventStream:
    """``"ax ay bz"`` → events (user a, item x), (a, y), (b, z), all positive, in that order."""
    events = pairs.split()
    return EventStream.from_arrays(users=[e[0] for e in events], items=[e[1] for e in events],
                                   ratings=[5] * len(events), history=history)


def scores_after(stream: EventStream, n: int, user: str, **kwargs: float) -> dict[str, float]:
    model = Cooccurrence(stream, **kwargs)
    model.learn(0, n)
    code = int(stream.users[list(stream.user_ids).index(user)])
    return dict(zip(stream.item_names, model.score(code).astype(float).tolist()))


def test_an_item_that_co_occurred_ranks_above_a_more_popular_one_that_did_not() -> None:
    # z is the most popular item, but only y ever followed x; c's last item is x
    s = stream_of("ax ay bz dz ez cx cy", history=0.8)
    score = scores_after(s, 6, "c")
    assert score["y"] == pytest.approx(1 / np.sqrt(2)) and score["z"] == 0.0
    res = run_protocol(s, [Cooccurrence(s)], PrequentialConfig(history=0.8, k=1), progress=False)
    # c:x: no items yet, x, y, z tie (rank 1); c:y: y first among y, z
    assert res.traces["cooccurrence"].rank_array().tolist() == [1.0, 0.0]


def test_the_newest_window_item_weighs_most() -> None:
    # r co-occurred with p only, s with q only (same counts); d met p then q: q is newest
    s = stream_of("ap ar bq bs dp dq", history=0.5)
    score = scores_after(s, 6, "d")
    assert score["s"] == pytest.approx(1.0 / np.sqrt(2)) and score["r"] == pytest.approx(0.8 / np.sqrt(2))
    assert score["s"] > score["r"]
    assert scores_after(s, 6, "d", window=1)["r"] == 0.0   # p has left a one-item window


def test_a_user_without_items_scores_nothing_and_events_must_come_in_order() -> None:
    s = stream_of("ax ay bx", history=0.5)
    assert set(scores_after(s, 2, "b").values()) == {0.0}
    model = Cooccurrence(s)
    with pytest.raises(MetarecError):
        model.learn(1, 2)
