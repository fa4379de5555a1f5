"""The prequential protocol: hand-checkable ranks, candidate sets, score-before-learn; the popularity baselines and
River's figures against the naive per-event implementation (``tests/support/naive_prequential.py``), and against the
contract's reference tool where ``../shared/tools`` exists next to the repository."""
from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import naive_prequential as naive
import adapters.evaluation.metrics
import adapters.evaluation.prequential
import adapters.evaluation.progressbar
import adapters.evaluation.ranks
from adapters.evaluation.baselines import HALF_LIFE_EVENTS, Popularity
from adapters.errors import MetarecError
from adapters.evaluation.metrics import rolling_mean
from adapters.evaluation.prequential import (EventStream, PrequentialConfig, PrequentialResult, Scores, SeenTracker,
                                             run_protocol)
from adapters.evaluation.ranks import candidate_mask, ranks_of_targets

#: ``../shared/tools`` relative to the repository root (the tool is part of the contract, not of the project)
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "tools" / "prequential_reference.py"
#: the comparisons with the reference tool run where it exists; a clone without ``../shared`` skips them, saying why
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_file(),
    reason=f"../shared/tools is absent next to the repository (no {REFERENCE}): the contract's reference tool "
           "is not here; the naive implementation in tests/support stands in for it")
NONE = np.zeros(0, dtype=np.int64)


def test_doctests() -> None:
    for module in (adapters.evaluation.prequential, adapters.evaluation.ranks, adapters.evaluation.metrics, adapters.evaluation.progressbar):
        assert doctest.testmod(module).failed == 0, module.__name__


def rank1(scores: list[float], target: int, position: int = 10**6, first_pos: list[int] | None = None,
          excluded: list[int] = (), repeat: bool = False) -> float:
    s = np.array([scores], dtype=np.float64)
    fp = np.zeros(len(scores), np.int64) if first_pos is None else np.array(first_pos)
    ex = np.array(list(excluded), dtype=np.int64)
    return float(ranks_of_targets(s, np.array([target]), np.array([position]), fp,
                                  np.zeros(len(ex), np.int64), ex, np.array([repeat]))[0])


def test_rank_counts_strictly_higher_and_half_the_ties() -> None:
    assert rank1([5, 4, 3, 2], target=0) == 0.0
    assert rank1([5, 4, 3, 2], target=2) == 2.0
    assert rank1([1, 1, 1, 0], target=1) == 1.0          # two other ties → 2/2
    assert rank1([2, 1, 1, 1, 1, 3], target=4) == 2 + 3 / 2   # cols 0 and 5 higher, 3 other ties


def test_constant_scorer_earns_nothing() -> None:
    n = 100
    r = rank1([0.0] * n, target=17)
    assert r == (n - 1) / 2
    assert not r < 10


def test_never_seen_item_is_a_miss_and_only_seen_items_are_candidates() -> None:
    # target col 2 first appears at position 50: at position 40 it has never been seen
    assert rank1([0, 0, 9, 0], target=2, position=40, first_pos=[0, 1, 50, 2]) == math.inf
    # col 0 is higher but not seen yet at position 3: not a candidate
    assert rank1([9, 1, 5, 0], target=2, position=3, first_pos=[7, 0, 1, 2]) == 0.0
    assert rank1([9, 1, 5, 0], target=2, position=8, first_pos=[7, 0, 1, 2]) == 1.0


def test_items_the_user_had_are_excluded_and_a_repeat_is_a_miss() -> None:
    assert rank1([9, 8, 1, 0], target=2, excluded=[0, 1]) == 0.0
    assert rank1([9, 8, 1, 0], target=2, excluded=[0]) == 1.0
    assert rank1([9, 8, 1, 0], target=2, excluded=[2]) == math.inf
    assert rank1([9, 8, 1, 0], target=2, repeat=True) == math.inf


def test_nan_scores() -> None:
    assert rank1([0, float("nan"), 0], target=1) == math.inf   # NaN target: a miss
    assert rank1([float("nan"), 1, 0], target=1) == 1.0         # NaN elsewhere counts as higher


def test_candidate_mask_per_row() -> None:
    cand = candidate_mask(np.array([1, 3]), np.array([0, 1, 2, 5]), np.array([1]), np.array([0]))
    assert cand.tolist() == [[True, False, False, False], [False, True, True, False]]


def test_event_stream_sorts_stably_and_numbers_items_by_first_appearance() -> None:
    s = EventStream.from_arrays(users=["b", "a", "c", "a"], items=["q", "p", "p", "r"], ratings=[5, 3, np.nan, 4],
                                timestamps=[2, 1, 1, 3], history=0.5)
    assert s.user_ids.tolist() == ["a", "c", "b", "a"]          # ties (t=1) keep file order
    assert s.item_names == ["p", "q", "r"]
    assert s.items.tolist() == [0, 0, 1, 2]
    assert s.first_pos.tolist() == [0, 2, 3]
    assert s.positive.tolist() == [False, True, True, True]     # implicit (NaN) is positive
    assert s.start == 2
    with pytest.raises(MetarecError):
        EventStream.from_arrays(users=["a"], items=["x"], ratings=[1])
    with pytest.raises(MetarecError):
        PrequentialConfig(history=1.0)


def test_seen_tracker_sees_earlier_events_of_the_same_batch() -> None:
    s = EventStream.from_arrays(users=list("aaaab"), items=list("xyxzx"), ratings=[5] * 5, history=0.2)
    t = SeenTracker(s)
    t.advance(0, 1)                                  # a:x in history
    rows, cols, repeat = t.exclusions(1, 5, np.array([0, 1, 2, 3]))
    pairs = sorted(zip(rows.tolist(), cols.tolist()))
    # row0 (a:y) excludes x; row1 (a:x) excludes x,y and is a repeat; row2 (a:z) excludes x,y; row3 (b:x) nothing
    assert pairs == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert repeat.tolist() == [False, True, False, False]


class Scripted:
    """A model whose item scores are a fixed table; logs what it is asked, to check the driver's order."""

    def __init__(self, stream: EventStream, table: np.ndarray, name: str = "scripted") -> None:
        self.stream, self.table, self.name = stream, table, name
        self.log: list[tuple[str, int, int]] = []

    def learn(self, lo: int, hi: int) -> None:
        self.log.append(("learn", lo, hi))

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        self.log.append(("step", lo, hi))
        return Scores(ratings=np.full(hi - lo, 3.0), ranking=np.tile(self.table, (len(rank_rows), 1)))


def test_driver_covers_history_by_learning_and_the_rest_by_scoring_in_order() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    s = EventStream.from_arrays(users=rng.integers(0, 30, n).astype(str), items=rng.integers(0, 300, n).astype(str),
                                ratings=rng.integers(1, 6, n), history=0.3)
    m = Scripted(s, np.zeros(s.n_cols))
    res = run_protocol(s, [m], PrequentialConfig(history=0.3, batch_size=64, batch_seconds=None), progress=False)
    learned = [(lo, hi) for kind, lo, hi in m.log if kind == "learn"]
    stepped = [(lo, hi) for kind, lo, hi in m.log if kind == "step"]
    assert learned[0][0] == 0 and learned[-1][1] == s.start == 300
    assert all(a[1] == b[0] for a, b in zip(learned, learned[1:]))
    assert stepped[0][0] == 300 and stepped[-1][1] == n
    assert all(a[1] == b[0] and b[1] - b[0] <= 64 for a, b in zip(stepped, stepped[1:]))
    assert m.log.index(("step", 300, 364)) > m.log.index(("learn", *learned[-1]))
    fig = res.summary()["scripted"]
    y = s.ratings[300:]
    assert fig["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - 3.0) ** 2))))
    assert fig["mae"] == pytest.approx(float(np.mean(np.abs(y - 3.0))))
    assert fig["hr@10"] == 0.0 and fig["ndcg@10"] == 0.0      # constant scorer over ≥ 200 candidates


def test_micro_batches_follow_event_time_like_a_live_worker() -> None:
    rng = np.random.default_rng(1)
    n = 600
    ts = np.sort(rng.integers(0, 200, n)).astype(float)  # bursts: several events share a second
    s = EventStream.from_arrays(users=rng.integers(0, 20, n).astype(str), items=rng.integers(0, 90, n).astype(str),
                                ratings=rng.integers(1, 6, n), timestamps=ts, history=0.5)
    m = Scripted(s, np.zeros(s.n_cols))
    run_protocol(s, [m], PrequentialConfig(history=0.5, batch_size=4, batch_seconds=1.0), progress=False)
    batches = [(lo, hi) for _, lo, hi in m.log]
    assert batches[0][0] == 0 and batches[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(batches, batches[1:]))
    for lo, hi in batches:
        assert hi - lo <= 4 and s.timestamps[hi - 1] - s.timestamps[lo] < 1.0
        if hi < n and hi - lo < 4 and hi != s.start:  # cut early only where time (or the history end) says so
            assert s.timestamps[hi] - s.timestamps[lo] >= 1.0


def test_hand_computed_hr_and_ndcg() -> None:
    # history: a:x, b:y, c:z ; scored: d:x (pos), d:z (pos), e:w (never seen: miss), a:y (rating 2: not ranked)
    s = EventStream.from_arrays(users=list("abcddea"), items=list("xyzxzwy"), ratings=[5, 5, 5, 5, 4, 5, 2],
                                history=3 / 7)
    table = np.zeros(s.n_cols)
    table[s.item_names.index("x")] = 3.0   # x > y = z
    table[s.item_names.index("y")] = 1.0
    table[s.item_names.index("z")] = 1.0
    res = run_protocol(s, [Scripted(s, table)], PrequentialConfig(history=3 / 7, k=1), progress=False)
    ranks = res.traces["scripted"].rank_array()
    # d:x → candidates x,y,z: rank 0. d:z → x excluded: candidates y,z tie: rank 0.5. e:w never seen: inf
    assert ranks.tolist() == [0.0, 0.5, math.inf]
    fig = res.summary()["scripted"]
    assert fig["hr@1"] == pytest.approx(2 / 3)
    assert fig["ndcg@1"] == pytest.approx((1 / math.log2(2) + 1 / math.log2(2.5)) / 3)


def test_popularity_scores_before_learning() -> None:
    # history: x, x, y. Scored: c likes y. With counts before the event, x (2) beats y (1): a miss at k=1.
    # Learning first would tie y with x (rank 0.5 < 1): a hit.
    s = EventStream.from_arrays(users=list("abdc"), items=list("xxyy"), ratings=[5] * 4, history=0.75)
    res = run_protocol(s, [Popularity(s)], PrequentialConfig(history=0.75, k=1), progress=False)
    assert res.traces["popularity"].rank_array().tolist() == [1.0]


@pytest.mark.parametrize("half_life", [None, 50.0])
def test_popularity_batch_size_does_not_change_anything(half_life: float | None) -> None:
    rng = np.random.default_rng(1)
    n = 2000
    items = (rng.zipf(1.3, n) % 80).astype(str)
    s = EventStream.from_arrays(users=rng.integers(0, 60, n).astype(str), items=items,
                                ratings=rng.integers(1, 6, n), history=0.5)
    a = run_protocol(s, [Popularity(s, half_life)], PrequentialConfig(batch_size=1), progress=False)
    b = run_protocol(s, [Popularity(s, half_life)], PrequentialConfig(batch_size=97), progress=False)
    name = "popularity" if half_life is None else "popularity_decayed"
    assert np.array_equal(a.traces[name].rank_array(), b.traces[name].rank_array())
    assert np.allclose(a.traces[name].prediction_array(), b.traces[name].prediction_array())


def test_rolling_mean() -> None:
    assert rolling_mean(np.array([1.0, 0.0, 1.0, 1.0]), 3).tolist() == pytest.approx([1.0, 0.5, 2 / 3, 2 / 3])


# ------------------------------------------------------------------ the naive implementation and the reference
def write_csv(path: Path, n: int = 6000, seed: int = 3) -> Path:
    """A stream with popularity skew, tied timestamps and tied counts: a demanding comparison."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 120, n)
    items = rng.zipf(1.2, n) % 400
    ratings = rng.integers(1, 6, n)
    ts = np.sort(rng.integers(0, n // 3, n))[rng.permutation(n)]   # shuffled rows with many ties
    with open(path, "w") as f:
        f.write("user_id,item_id,rating,timestamp\n")
        f.writelines(f"u{u},i{i},{r},{t}\n" for u, i, r, t in zip(users, items, ratings, ts))
    return path


def ml100k_head(path: Path, n: int) -> Path:
    """The first ``n`` events of ML-100K (time order) as a contract CSV file."""
    from adapters.data.datasets import load_dataset
    load_dataset("ml-100k").head(n).to_csv(path)
    return path


#: a half-life (events) under which, unlike the contract's 5,000, the counts of a few-thousand-event stream really
#: decay: the project's ``popularity_hl200`` is compared with the naive implementation too
SHORT_HALF_LIFE = 200.0


def reference(path: Path, history: float = 0.5, river: bool = False) -> dict:
    """The reference tool's figures for ``path`` (callers are marked :data:`needs_reference`)."""
    cmd = [sys.executable, str(REFERENCE), str(path), "--history", str(history)] + (["--river"] if river else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def ours(path: Path, history: float, river: bool, short_half_life: bool = False) -> PrequentialResult:
    """The project's ``popularity`` and ``popularity_decayed`` (half-life 5,000 events), optionally
    ``popularity_hl200`` and River, under the protocol."""
    from adapters.evaluation.baselines import RiverBiasedMF
    from adapters.data.datasets import load_dataset
    s = EventStream.from_dataset(load_dataset(str(path)), history=history)
    models: list = [Popularity(s), Popularity(s, half_life=HALF_LIFE_EVENTS)]
    models += [Popularity(s, half_life=SHORT_HALF_LIFE, name="popularity_hl200")] if short_half_life else []
    models += [RiverBiasedMF(s)] if river else []
    return run_protocol(s, models, PrequentialConfig(history=history), progress=False)


def assert_same_ranking(res: PrequentialResult, name: str, expected: naive.RankingFigures) -> None:
    """The project's model ``name`` ranks every scored positive event exactly as the naive implementation."""
    ranks = res.traces[name].rank_array()
    assert len(ranks) == expected.positives == len(res.positive_positions), name
    assert ranks.tolist() == expected.ranks, name
    fig = res.summary()[name]
    assert abs(fig["hr@10"] - expected.hr) < 1e-9, name
    assert abs(fig["ndcg@10"] - expected.ndcg) < 1e-9, name


def assert_popularity_matches_the_naive_implementation(res: PrequentialResult, path: Path, history: float) -> None:
    """All-time, contract-decayed and short-decayed popularity: every rank as the naive implementation's."""
    events = naive.read_events(path)
    assert_same_ranking(res, "popularity", naive.popularity(events, history))
    assert_same_ranking(res, "popularity_decayed", naive.popularity(events, history, half_life=HALF_LIFE_EVENTS))
    assert_same_ranking(res, "popularity_hl200", naive.popularity(events, history, half_life=SHORT_HALF_LIFE))


def test_the_naive_implementation_by_hand() -> None:
    """The naive popularity (tests/support) and the project's on a stream small enough to follow by hand."""
    # history: a:x, b:x, c:y. Scored: d:y (positive), e:z (never seen: miss), a:x (a had x: miss),
    # f:y (rating 3: not ranked), g:x (implicit: positive)
    users, items, ratings = list("abcdeafg"), list("xxyyzxyx"), [5, 5, 5, 5, 5, 5, 3, None]
    events = [naive.Event(u, i, r, float(t)) for t, (u, i, r) in enumerate(zip(users, items, ratings))]
    # all-time: d:y → x 2 > y 1: rank 1. g:x → x 3, y 3, z 1: one tie, rank 0.5
    all_time = naive.popularity(events, history=3 / 8, k=1)
    assert all_time.ranks == [1.0, math.inf, math.inf, 0.5]
    assert all_time.hr == pytest.approx(1 / 4)
    assert all_time.ndcg == pytest.approx(1 / math.log2(2.5) / 4)
    # half-life 1 event: d:y → x 0.75 < y 1: rank 0. g:x → x 0.546875 < y 1.1875, z 0.25 lower: rank 1
    decayed = naive.popularity(events, history=3 / 8, half_life=1.0, k=1)
    assert decayed.ranks == [0.0, math.inf, math.inf, 1.0]
    s = EventStream.from_arrays(users=users, items=items, ratings=[np.nan if r is None else r for r in ratings],
                                history=3 / 8)
    res = run_protocol(s, [Popularity(s), Popularity(s, half_life=1.0)], PrequentialConfig(history=3 / 8, k=1),
                       progress=False)
    assert res.traces["popularity"].rank_array().tolist() == all_time.ranks
    assert res.traces["popularity_decayed"].rank_array().tolist() == decayed.ranks


@pytest.mark.parametrize("history", [0.5, 0.3])
def test_popularity_and_river_match_the_naive_implementation(tmp_path: Path, history: float) -> None:
    """Every rank of the project's popularity baselines equals the naive per-event one (so hr@10 and ndcg@10 agree
    to rounding); River's rmse/mae equal those of River driven event by event."""
    path = write_csv(tmp_path / "events.csv")
    res = ours(path, history, river=True, short_half_life=True)
    assert_popularity_matches_the_naive_implementation(res, path, history)
    river = naive.river_biasedmf(naive.read_events(path), history)
    fig = res.summary()["river_biasedmf"]
    assert river.scored == len(res.scored_positions)
    assert abs(fig["rmse"] - river.rmse) < 1e-9
    assert abs(fig["mae"] - river.mae) < 1e-9


def test_ml100k_head_matches_the_naive_implementation(tmp_path: Path) -> None:
    """The same on the first 10,000 events of ML-100K (real ties, a growing catalog)."""
    path = ml100k_head(tmp_path / "ml100k-head.csv", 10_000)
    res = ours(path, 0.5, river=False, short_half_life=True)
    assert_popularity_matches_the_naive_implementation(res, path, 0.5)


@pytest.fixture(scope="module")
def ml100k_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adapters.data.datasets import load_dataset
    path = tmp_path_factory.mktemp("ml100k") / "ml100k.csv"
    load_dataset("ml-100k").to_csv(path)
    return path


@pytest.fixture(scope="module")
def ml100k_popularity(ml100k_csv: Path) -> dict[str, dict[str, float]]:
    """The project's popularity figures on the whole of ML-100K (computed once for the tests below)."""
    return ours(ml100k_csv, 0.5, river=False).summary()


@pytest.mark.slow
def test_full_ml100k_gives_the_contracts_published_figures(ml100k_popularity: dict[str, dict[str, float]]) -> None:
    assert abs(ml100k_popularity["popularity"]["hr@10"] - 0.0955) <= 1e-3          # CONTRACT.md
    assert abs(ml100k_popularity["popularity_decayed"]["hr@10"] - 0.0970) <= 1e-3


@needs_reference
@pytest.mark.parametrize("history", [0.5, 0.3])
def test_the_naive_implementation_matches_the_reference_tool(tmp_path: Path, history: float) -> None:
    """The naive implementation is itself pinned to the contract's tool, on the stream of the tests above."""
    path = write_csv(tmp_path / "events.csv")
    ref = reference(path, history, river=True)
    events = naive.read_events(path)
    for key, mine in (("popularity", naive.popularity(events, history)),
                      ("popularity_decayed_hl5000", naive.popularity(events, history, half_life=5000))):
        assert mine.positives == ref[key]["positives"], key
        assert abs(mine.hr - ref[key]["hr@10"]) < 1e-9, key
        assert abs(mine.ndcg - ref[key]["ndcg@10"]) < 1e-9, key
    river = naive.river_biasedmf(events, history)
    assert abs(river.rmse - ref["river_biasedmf"]["rmse"]) < 1e-9
    assert abs(river.mae - ref["river_biasedmf"]["mae"]) < 1e-9


@needs_reference
@pytest.mark.parametrize("history", [0.5, 0.3])
def test_popularity_and_river_match_the_reference_tool(tmp_path: Path, history: float) -> None:
    path = write_csv(tmp_path / "events.csv")
    ref = reference(path, history, river=True)
    res = ours(path, history, river=True)
    fig = res.summary()
    assert len(res.positive_positions) == ref["popularity"]["positives"]
    for name, key in (("popularity", "popularity"), ("popularity_decayed", "popularity_decayed_hl5000")):
        for metric in ("hr@10", "ndcg@10"):
            assert abs(fig[name][metric] - ref[key][metric]) < 1e-9, (name, metric)
    for metric in ("rmse", "mae"):
        assert abs(fig["river_biasedmf"][metric] - ref["river_biasedmf"][metric]) < 1e-9


@needs_reference
@pytest.mark.slow
def test_full_ml100k_matches_the_reference_tool(ml100k_csv: Path, ml100k_popularity: dict[str, dict[str, float]]
                                                ) -> None:
    from adapters.evaluation.baselines import RiverBiasedMF
    from adapters.data.datasets import load_dataset
    ref = reference(ml100k_csv, 0.5, river=True)
    fig = ml100k_popularity
    assert abs(fig["popularity"]["hr@10"] - ref["popularity"]["hr@10"]) <= 1e-3
    assert abs(fig["popularity_decayed"]["hr@10"] - ref["popularity_decayed_hl5000"]["hr@10"]) <= 1e-3
    s = EventStream.from_dataset(load_dataset(str(ml100k_csv)), history=0.5)
    river = run_protocol(s, [RiverBiasedMF(s)], PrequentialConfig(history=0.5), progress=False).summary()
    assert abs(river["river_biasedmf"]["rmse"] - ref["river_biasedmf"]["rmse"]) <= 1e-6
