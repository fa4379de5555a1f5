"""The ``cooccurrence`` baseline: agreement with the reference tool, per-event learning, behaviour by hand."""
from __future__ import annotations

import doctest
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import adapters.evaluation.cooccurrence
from adapters.evaluation.cooccurrence import Cooccurrence
from adapters.data.datasets import load_dataset
from adapters.errors import MetarecError
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol

#: ``../shared/tools`` relative to the repository root (the tool is part of the contract, not of the project)
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "tools" / "cooccurrence_reference.py"


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.cooccurrence).failed == 0


def load_reference() -> ModuleType:
    """The reference tool as a module; a missing tool fails the calling test (never a skip)."""
    if not REFERENCE.is_file():
        pytest.fail(f"the co-occurrence reference tool is missing: expected it at {REFERENCE} "
                    "(../shared/tools/cooccurrence_reference.py next to the repository)")
    spec = importlib.util.spec_from_file_location("cooccurrence_reference", REFERENCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path: Path, n: int = 4000, seed: int = 11) -> Path:
    """Several hundred users and items, popularity skew, shuffled rows with many tied timestamps, ratings below
    4, and implicit events (empty rating: positive for the project, 5 for the reference tool)."""
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


def test_matches_the_reference_tool_per_event(tmp_path: Path) -> None:
    """Exactly the reference's per-event figure (``batch_seconds=0``) although the protocol runs in 1-second
    micro-batches: the model learns event by event inside ``step`` and candidates follow event positions, so the
    micro-batching changes nothing; the scores are float32 with the reference's expressions, so ties agree too.
    The same holds with the sparse counts (``dense_limit=0``)."""
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


def test_micro_batching_does_not_change_a_per_event_model(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events.csv", n=1500, seed=5)
    _, one = ours(path, PrequentialConfig(history=0.4, batch_size=1, batch_seconds=None))
    _, big = ours(path, PrequentialConfig(history=0.4, batch_size=256, batch_seconds=None))
    assert np.array_equal(one, big)


@pytest.mark.slow
def test_ml100k_matches_the_reference_tool(tmp_path: Path) -> None:
    reference = load_reference()
    path = tmp_path / "ml100k.csv"
    load_dataset("ml-100k").to_csv(path)
    ref = reference.run(reference.load(str(path)), history=0.5, window=10, decay=0.8, alpha=0.5, batch_seconds=0.0)
    fig, _ = ours(path, PrequentialConfig(history=0.5, batch_seconds=1.0))
    assert abs(fig["hr@10"] - ref["hr@10"]) <= 0.002
    assert abs(fig["hr@10"] - 0.212) <= 0.002   # the contract's published per-event figure


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
