"""The synthetic item-churn stream: determinism, release times, followers, sessions, new-item share, CLI, evaluate."""
from __future__ import annotations

import argparse
import doctest
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import adapters.data.synth_churn
from adapters.data.datasets import load_dataset
from adapters.evaluation.drift import load_truth, sidecar_path
from adapters.errors import MetarecError
from adapters.data.synth import SynthStream
from adapters.data.synth_churn import ChurnConfig, generate_churn

REPO = Path(__file__).resolve().parents[3]
SMALL = ChurnConfig(n_users=300, n_initial_items=150, n_new_items=600, events_per_user=25.0, seed=11)
SESSION_BREAK = 1_800.0      # seconds: a longer gap starts a new session (in-session gaps are at most 605 s)


@pytest.fixture(scope="module")
def small() -> SynthStream:
    return generate_churn(SMALL)


def _per_user(stream: SynthStream) -> dict[str, np.ndarray]:
    rows: dict[str, list[int]] = defaultdict(list)
    for e, u in enumerate(stream.user_ids.tolist()):
        rows[u].append(e)
    return {u: np.array(r) for u, r in rows.items()}


def _release(stream: SynthStream) -> np.ndarray:
    items = stream.truth["items"]
    return np.array([items[i]["release"] for i in stream.item_ids.tolist()], dtype=np.float64)


def _topic(stream: SynthStream) -> np.ndarray:
    items = stream.truth["items"]
    return np.array([items[i]["topic"] for i in stream.item_ids.tolist()])


def test_doctest() -> None:
    assert doctest.testmod(adapters.data.synth_churn).failed == 0


def test_deterministic_under_seed(small: SynthStream) -> None:
    again = generate_churn(SMALL)
    assert again.user_ids.tolist() == small.user_ids.tolist()
    assert again.item_ids.tolist() == small.item_ids.tolist()
    assert np.array_equal(again.ratings, small.ratings) and np.array_equal(again.timestamps, small.timestamps)
    assert again.truth == small.truth
    other = generate_churn(ChurnConfig(n_users=300, n_initial_items=150, n_new_items=600, events_per_user=25.0,
                                       seed=12))
    assert other.item_ids.tolist() != small.item_ids.tolist()


def test_shape_ids_ratings_and_no_repeats(small: SynthStream) -> None:
    n = len(small.user_ids)
    assert 300 * 25 * 0.7 < n < 300 * 25 * 1.3
    assert all(isinstance(u, str) for u in small.user_ids) and all(isinstance(i, str) for i in small.item_ids)
    assert len(set(zip(small.user_ids.tolist(), small.item_ids.tolist()))) == n      # never the same item twice
    assert set(np.unique(small.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 0.3 < float((small.ratings >= 4).mean()) < 0.7
    assert np.all(np.diff(small.timestamps) >= 0)
    assert all(np.all(np.diff(small.timestamps[rows]) > 0) for rows in _per_user(small).values())
    start = SMALL.start
    assert small.timestamps.min() >= start and small.timestamps.max() < start + SMALL.days * 86_400
    assert set(small.truth["items"]) >= set(small.item_ids.tolist()) and len(small.truth["items"]) == 750


def test_items_never_occur_before_their_release(small: SynthStream) -> None:
    release = _release(small)
    assert np.all(small.timestamps >= release)
    released = [v["release"] for v in small.truth["items"].values()]
    assert sum(r > SMALL.start for r in released) >= 590        # released during the stream (a few at its start)
    # the new releases are spread over the whole stream, and taken up soon after they come out
    mid = small.truth["midpoint"]
    assert 240 < sum(r > mid for r in released) < 360
    new = release > SMALL.start
    assert np.median(small.timestamps[new] - release[new]) < 60 * 86_400


def test_followers_pick_recent_releases(small: SynthStream) -> None:
    followers = set(small.truth["followers"])
    assert 0.25 < len(followers) / SMALL.n_users < 0.45
    age = small.timestamps - _release(small)
    recent = age <= SMALL.recent_days * 86_400
    is_follower = np.array([u in followers for u in small.user_ids.tolist()])
    follower_share, other_share = recent[is_follower].mean(), recent[~is_follower].mean()
    assert follower_share > 0.55, follower_share
    assert follower_share > 5 * other_share, (follower_share, other_share)
    summary = small.truth["summary"]
    assert summary["follower_recent_share"] == pytest.approx(follower_share, abs=1e-4)
    assert summary["others_recent_share"] == pytest.approx(other_share, abs=1e-4)


def test_sessions_and_consecutive_topics(small: SynthStream) -> None:
    topic = _topic(small)
    same = pairs = 0
    chance_num = chance_den = 0.0
    sessions = 0
    for rows in _per_user(small).values():
        gaps = np.diff(small.timestamps[rows])
        within = gaps < SESSION_BREAK
        assert np.all(gaps[within] <= 605) and np.all(gaps[~within] >= 3_600)   # minutes vs hours apart
        sessions += 1 + int((~within).sum())
        t = topic[rows]
        same += int((t[1:] == t[:-1])[within].sum())
        pairs += int(within.sum())
        counts = np.bincount(t).astype(float)
        chance_num += float((counts * (counts - 1)).sum())
        chance_den += float(len(t) * (len(t) - 1))
    assert 2.0 < len(small.user_ids) / sessions < 5.0                 # a few events per session
    rate, chance = same / pairs, chance_num / chance_den
    assert rate > chance + 0.3, (rate, chance)                        # related items one after another
    assert small.truth["summary"]["session_same_topic_share"] == pytest.approx(rate, abs=1e-4)


def test_new_item_share_in_the_configured_range(small: SynthStream) -> None:
    mid = small.truth["midpoint"]
    second = small.timestamps >= mid
    new = _release(small) > mid
    positives = second & (small.ratings >= 4)
    share = float(new[positives].mean())
    low, high = SMALL.new_share_range
    assert low <= share <= high, share
    summary = small.truth["summary"]
    assert summary["new_item_share_second_half_positives"] == pytest.approx(share, abs=1e-4)
    assert summary["new_item_share_second_half"] == pytest.approx(float(new[second].mean()), abs=1e-4)
    assert summary["new_item_share_in_range"] is True


def test_ratings_depend_on_topic_affinity_and_appeal(small: SynthStream) -> None:
    topic = _topic(small)
    favourite, other = [], []
    for rows in _per_user(small).values():
        counts = np.bincount(topic[rows])
        fav = topic[rows] == counts.argmax()
        favourite += small.ratings[rows][fav].tolist()
        other += small.ratings[rows][counts[topic[rows]] <= 1].tolist()     # topics the user barely visits
    assert np.mean(favourite) - np.mean(other) > 1.0
    appeal = np.log([small.truth["items"][i]["appeal"] for i in small.item_ids.tolist()])
    assert np.corrcoef(appeal, small.ratings)[0, 1] > 0.15


def test_defaults_are_fast_and_sized() -> None:
    t0 = time.perf_counter()
    stream = generate_churn()
    seconds = time.perf_counter() - t0
    summary = stream.truth["summary"]
    assert 60_000 <= len(stream.user_ids) <= 120_000
    assert summary["users"] == 2000 and summary["items"] == 1500 and summary["items_seen"] > 1400
    low, high = ChurnConfig().new_share_range
    assert low <= summary["new_item_share_second_half_positives"] <= high
    assert seconds < 5.0, f"generating the default churn stream took {seconds:.1f} s"


@pytest.mark.parametrize(("config", "pattern"), [
    (ChurnConfig(n_initial_items=10, n_topics=10), "at least 2 items per topic"),
    (ChurnConfig(n_initial_items=20, n_new_items=20, events_per_user=20.0), "at most a quarter"),
    (ChurnConfig(follower_share=1.5), "within \\[0, 1\\]"),
])
def test_impossible_config_is_one_line_error(config: ChurnConfig, pattern: str) -> None:
    with pytest.raises(MetarecError, match=pattern) as exc:
        generate_churn(config)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------- the .drift.json sidecar
def test_sidecar_written_and_skipped_by_drift_recovery(small: SynthStream, tmp_path: Path) -> None:
    out = tmp_path / "churn.csv"
    sidecar = small.write(out)
    assert sidecar == sidecar_path(out) == tmp_path / "churn.drift.json"
    truth = json.loads(sidecar.read_text())
    assert truth["kind"] == "item_churn" and truth["seed"] == 11 and truth["config"]["n_users"] == 300
    first = next(iter(truth["items"].values()))
    assert set(first) == {"release", "topic", "appeal", "half_life_days"}
    ds = load_dataset(str(out))
    assert ds.user_ids.tolist() == small.user_ids.tolist() and ds.item_ids.tolist() == small.item_ids.tolist()
    assert np.array_equal(ds.timestamps, small.timestamps)
    assert load_truth(sidecar) is None           # no per-user drift: evaluate leaves the "drift" section out


def test_prequential_evaluation_runs_on_a_churn_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`metarec evaluate --protocol prequential` on a churn stream: no crash, no "drift" section.

    Training θ0 and the learners is replaced by popularity alone to keep the test fast: what is tested is the
    sidecar's path through the evaluation.
    """
    from types import SimpleNamespace

    import adapters.evaluation.prequential_run as prequential_run
    from adapters.evaluation.baselines import Popularity
    from adapters.evaluation.config import EvaluationConfig

    path = tmp_path / "churn.csv"
    generate_churn(ChurnConfig(n_users=40, n_initial_items=40, n_new_items=120, events_per_user=12.0,
                               seed=4)).write(path)
    fake = SimpleNamespace(version="fake", model="mf", meta="maml", adapter=SimpleNamespace(inner=SimpleNamespace(steps=3)))
    monkeypatch.setattr(prequential_run, "_train", lambda *a, **k: fake)
    monkeypatch.setattr(prequential_run, "build_models", lambda stream, *a, **k: [Popularity(stream)])
    report = prequential_run.run_prequential(EvaluationConfig(dataset=str(path), epochs=1, progress=False))
    assert report["protocol"] == "prequential" and report["events"] == len(load_dataset(str(path)))
    assert "popularity" in report["models"] and "drift" not in report


# ---------------------------------------------------------------------------------------------- metarec synth
def _parser() -> argparse.ArgumentParser:
    from stream.cli.main import _OneLineParser
    from stream.cli.commands import synth

    parser = _OneLineParser(prog="metarec synth")
    synth.add_arguments(parser)
    return parser


def test_command_writes_stream_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli.commands import synth

    out = tmp_path / "c.csv"
    args = _parser().parse_args(["--out", str(out), "--item-churn", "--users", "80", "--items", "200",
                                 "--events-per-user", "15", "--clusters", "5", "--seed", "5"])
    assert synth.run(args) == 0
    truth = json.loads((tmp_path / "c.drift.json").read_text())
    assert truth["kind"] == "item_churn" and truth["config"]["n_topics"] == 5
    assert truth["config"]["n_initial_items"] == 40 and truth["config"]["n_new_items"] == 160
    ds = load_dataset(str(out))
    assert len(ds) == truth["summary"]["events"] and ds.n_users == 80
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{len(ds):,} events" in lines[0] and "80 users" in lines[0] and "200 items" in lines[0]
    assert "new-item share" in lines[0]


def test_command_rejects_item_churn_with_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli.commands import synth

    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["--out", str(tmp_path / "c.csv"), "--item-churn", "--drift", "abrupt"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # METAREC_DRIFT in the environment sets --drift's default: still refused, by run()
    args = _parser().parse_args(["--out", str(tmp_path / "c.csv"), "--item-churn"])
    args.drift = "abrupt"
    with pytest.raises(MetarecError, match="mutually exclusive"):
        synth.run(args)
    args = _parser().parse_args(["--out", str(tmp_path / "c.csv"), "--item-churn", "--items", "15"])
    with pytest.raises(MetarecError, match="at least 20"):
        synth.run(args)
    assert not (tmp_path / "c.csv").exists()


def test_cli_subprocess_item_churn(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "stream", "synth", "--out", str(tmp_path / "c.csv"),
                           "--item-churn", "--drift", "both"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "--drift" in lines[0], proc.stderr
    assert not (tmp_path / "c.csv").exists()
    proc = subprocess.run([sys.executable, "-m", "stream", "synth", "--out", str(tmp_path / "ok.csv"), "--item-churn",
                           "--users", "30", "--items", "100", "--events-per-user", "10", "--seed", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ok.csv").exists() and load_truth(tmp_path / "ok.drift.json") is None
    proc = subprocess.run([sys.executable, "-m", "stream", "synth", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--item-churn" in proc.stdout and "item_churn" in proc.stdout
