"""The synthetic drift stream: determinism, planted drift visible in the data, CSV form, and `metarec synth`."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from adapters.data.datasets import load_dataset
from adapters.errors import MetarecError
from adapters.data.synth import SynthConfig, SynthStream, drift_path, generate

REPO = Path(__file__).resolve().parents[3]
SMALL = SynthConfig(n_users=400, n_items=300, events_per_user=50, seed=11)


@pytest.fixture(scope="module")
def small() -> SynthStream:
    return generate(SMALL)


def _per_user(stream: SynthStream) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for e, u in enumerate(stream.user_ids.tolist()):
        rows[u].append(e)
    return rows


def test_deterministic_under_seed(small: SynthStream) -> None:
    again = generate(SMALL)
    assert again.user_ids.tolist() == small.user_ids.tolist()
    assert again.item_ids.tolist() == small.item_ids.tolist()
    assert np.array_equal(again.ratings, small.ratings) and np.array_equal(again.timestamps, small.timestamps)
    assert again.truth == small.truth
    other = generate(SynthConfig(n_users=400, n_items=300, events_per_user=50, seed=12))
    assert other.item_ids.tolist() != small.item_ids.tolist()


def test_shape_order_and_no_repeats(small: SynthStream) -> None:
    assert len(small.user_ids) == 400 * 50
    assert np.all(np.diff(small.timestamps) >= 0)
    assert len(set(zip(small.user_ids.tolist(), small.item_ids.tolist()))) == 400 * 50   # no user repeats an item
    assert set(np.unique(small.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    per_user = _per_user(small)
    assert all(len(rows) == 50 for rows in per_user.values())
    assert all(np.all(np.diff(small.timestamps[rows]) > 0) for rows in per_user.values())
    # users interleave: the first tenth of the stream already involves many users
    assert len(set(small.user_ids[: len(small.user_ids) // 10].tolist())) > 100


def _cluster_shares(stream: SynthStream, kind: str) -> tuple[float, float, float]:
    """(old-topic share before drift, new-topic share before drift, new-topic share after drift/span)."""
    clusters = stream.truth["item_clusters"]
    counts = np.zeros(3)
    totals = np.zeros(3)
    for user, rows in _per_user(stream).items():
        truth = stream.truth["users"][user]
        if truth["kind"] != kind:
            continue
        d = truth["drift_index"]
        assert stream.timestamps[rows[d]] == truth["drift_timestamp"]
        after = d + truth.get("span", 0)
        topics = [clusters[i] for i in stream.item_ids[rows].tolist()]
        old, new = set(truth["old_clusters"]), set(truth["new_clusters"])
        assert not old & new
        before = topics[:d]
        counts += [sum(t in old for t in before), sum(t in new for t in before),
                   sum(t in new for t in topics[after:])]
        totals += [len(before), len(before), len(topics) - after]
    return tuple(counts / np.maximum(totals, 1))


def test_abrupt_drift_switches_topics_at_the_recorded_event(small: SynthStream) -> None:
    old_before, new_before, new_after = _cluster_shares(small, "abrupt")
    assert old_before > 0.85 and new_before < 0.08 and new_after > 0.85


def test_gradual_drift_completes_after_its_span(small: SynthStream) -> None:
    old_before, new_before, new_after = _cluster_shares(small, "gradual")
    assert old_before > 0.85 and new_before < 0.08 and new_after > 0.85
    # halfway through the span the new topics are mixed in, neither absent nor complete
    clusters, mid = small.truth["item_clusters"], []
    for user, rows in _per_user(small).items():
        t = small.truth["users"][user]
        if t["kind"] == "gradual":
            d, s = t["drift_index"], t["span"]
            window = small.item_ids[rows][d + s // 4: d + 3 * s // 4].tolist()
            mid += [clusters[i] in set(t["new_clusters"]) for i in window]
    assert 0.25 < np.mean(mid) < 0.75


def test_stable_users_keep_their_topics(small: SynthStream) -> None:
    clusters = small.truth["item_clusters"]
    stable = [u for u, t in small.truth["users"].items() if t["kind"] == "none"]
    assert 40 < len(stable) < 130                     # stable_fraction 0.2 of 400
    share = np.mean([clusters[i] in set(small.truth["users"][u]["old_clusters"])
                     for u, rows in _per_user(small).items() if u in stable
                     for i in small.item_ids[rows].tolist()])
    assert share > 0.85


def test_ratings_are_higher_for_liked_topics(small: SynthStream) -> None:
    clusters = small.truth["item_clusters"]
    liked, other = [], []
    for user, rows in _per_user(small).items():
        t = small.truth["users"][user]
        if t["kind"] != "abrupt":
            continue
        for pos, e in enumerate(rows):
            topics = set(t["new_clusters"] if pos >= t["drift_index"] else t["old_clusters"])
            (liked if clusters[small.item_ids[e]] in topics else other).append(small.ratings[e])
    assert np.mean(liked) - np.mean(other) > 1.5


@pytest.mark.parametrize("drift", ["abrupt", "gradual"])
def test_single_drift_kind(drift: str) -> None:
    stream = generate(SynthConfig(n_users=100, n_items=100, events_per_user=20, drift=drift, seed=3))
    assert {t["kind"] for t in stream.truth["users"].values()} == {drift, "none"}


def test_defaults_are_fast_and_sized() -> None:
    t0 = time.perf_counter()
    stream = generate()
    seconds = time.perf_counter() - t0
    assert len(stream.user_ids) == 2000 * 60
    assert seconds < 5.0, f"generating 120k events took {seconds:.1f} s"


def test_written_csv_loads_back(small: SynthStream, tmp_path: Path) -> None:
    out = tmp_path / "drift.csv"
    sidecar = small.write(out)
    assert sidecar == drift_path(out) == tmp_path / "drift.drift.json"
    ds = load_dataset(str(out))
    assert ds.user_ids.tolist() == small.user_ids.tolist() and ds.item_ids.tolist() == small.item_ids.tolist()
    assert np.array_equal(ds.ratings, small.ratings) and np.array_equal(ds.timestamps, small.timestamps)
    truth = json.loads(sidecar.read_text())
    assert truth["config"]["seed"] == 11 and len(truth["users"]) == 400


@pytest.mark.parametrize(("config", "pattern"), [
    (SynthConfig(n_items=100, events_per_user=60), "at most half of --items"),
    (SynthConfig(n_clusters=3, interests=2), "interests"),
    (SynthConfig(n_items=10, n_clusters=10, events_per_user=4), "at least 2 per cluster"),
    (SynthConfig(drift="sudden"), "--drift must be one of"),
])
def test_impossible_config_is_one_line_error(config: SynthConfig, pattern: str) -> None:
    with pytest.raises(MetarecError, match=pattern) as exc:
        generate(config)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------------ metarec synth
def _parser() -> argparse.ArgumentParser:
    from stream.cli.main import _OneLineParser
    from stream.cli.commands import synth

    parser = _OneLineParser(prog="metarec synth")
    synth.add_arguments(parser)
    return parser


def test_command_writes_stream_and_truth(tmp_path: Path) -> None:
    from stream.cli.commands import synth

    out = tmp_path / "s.csv"
    args = _parser().parse_args(["--out", str(out), "--users", "50", "--items", "60", "--events-per-user", "10",
                                 "--drift", "abrupt", "--seed", "5"])
    assert synth.run(args) == 0
    ds = load_dataset(str(out))
    assert len(ds) == 500 and ds.n_users == 50
    truth = json.loads((tmp_path / "s.drift.json").read_text())
    assert {t["kind"] for t in truth["users"].values()} <= {"abrupt", "none"}


@pytest.mark.parametrize("argv", [
    ["--users", "10"],                                   # --out missing
    ["--out", "x.csv", "--users", "0"],
    ["--out", "x.csv", "--items", "many"],
    ["--out", "x.csv", "--drift", "sideways"],
    ["--out", "x.csv", "--stable-fraction", "1.5"],
])
def test_command_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_command_impossible_combination_is_metarec_error(tmp_path: Path) -> None:
    from stream.cli.commands import synth

    args = _parser().parse_args(["--out", str(tmp_path / "s.csv"), "--items", "50", "--events-per-user", "40"])
    with pytest.raises(MetarecError, match="at most half"):
        synth.run(args)
    args = _parser().parse_args(["--out", str(tmp_path / "missing" / "s.csv")])
    with pytest.raises(MetarecError, match="does not exist"):
        synth.run(args)


def test_cli_subprocess_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    for argv in (["--out", str(tmp_path / "s.csv"), "--items", "50", "--events-per-user", "40"],
                 ["--out", str(tmp_path / "s.csv"), "--drift", "sideways"]):
        proc = subprocess.run([sys.executable, "-m", "stream", "synth", *argv], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], proc.stderr
    proc = subprocess.run([sys.executable, "-m", "stream", "synth", "--out", str(tmp_path / "ok.csv"),
                           "--users", "20", "--items", "40", "--events-per-user", "8"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(load_dataset(str(tmp_path / "ok.csv"))) == 160
