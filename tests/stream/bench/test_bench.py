"""``metarec bench``: a real (small) run against the embedded broker; the JSON has the contract's shape.

Behaviour only: no speed is asserted (benchmarks report, tests check).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stream.bench.report import check_targets
from stream.bench.workers import histogram_buckets, parse_metrics
from stream.cli.main import main

CONTRACT = {
    "end_to_end": {"events", "events_per_s", "latency_p50_s", "latency_p99_s"},
    "adaptation": {"mf", "melu"},
    "scale_out": {"one_process_events_per_s", "two_processes_events_per_s"},
    "references": {"faust_passthrough_events_per_s", "kafka_passthrough_events_per_s",
                   "river_full_ranking_events_per_s", "naive_loop_events_per_s"},
    "runtimes": {"kafka", "faust"},
    "restore": {"records", "records_per_s"},
}
TOP = {"end_to_end", "adaptation", "scale_out", "references", "runtimes", "peak_rss_bytes", "state_bytes_per_user"}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_bench_writes_the_contract_json(broker: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--limit", "3000", "--dataset", "ml-100k", "--bootstrap", broker,
                 "--latency-seconds", "3", "--reference-events", "100", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert TOP <= set(r)
    for section, keys in CONTRACT.items():
        assert keys <= set(r[section]), section
    e2e = r["end_to_end"]
    assert isinstance(e2e["events"], int) and e2e["events"] == 3000
    for key in ("events_per_s", "latency_p50_s", "latency_p99_s"):
        assert _positive(e2e[key]), key
    assert e2e["latency_p50_s"] <= e2e["latency_p99_s"]
    for model in ("seq", "mf", "melu"):
        assert _positive(r["adaptation"][model]["users_per_s"]), model
    for section in ("scale_out", "references", "restore"):
        for key in CONTRACT[section]:
            assert _positive(r[section][key]), key
    for runtime in ("kafka", "faust"):  # both runtimes measured in the same run
        for key in ("events_per_s", "latency_p50_s", "latency_p99_s"):
            assert _positive(r["runtimes"][runtime][key]), (runtime, key)
        assert r["details"][f"one_worker_{runtime}"]["lists"] > 0
        assert r["details"][f"latency_{runtime}"]["missing"] == 0
    assert r["end_to_end"]["runtime"] in ("kafka", "faust")
    assert r["runtimes"][e2e["runtime"]]["events_per_s"] == e2e["events_per_s"]
    assert isinstance(r["peak_rss_bytes"], int) and r["peak_rss_bytes"] > 10 * 2**20  # a python+torch process
    # a record holds at least the header and one window event, and at most a full window + state + seen set
    assert 64 < r["state_bytes_per_user"] < 64_000
    # the shared item state's cost: an end-to-end run without it, and the per-event steps (some items learned)
    items = r["item_state"]
    for key in ("two_workers_events_per_s", "two_workers_shared_events_per_s", "latency_p99_s",
                "latency_p99_shared_s", "peak_rss_bytes", "peak_rss_shared_bytes"):
        assert _positive(items[key]), key
    assert items["latency_p99_s"] == e2e["latency_p99_s"]
    assert items["two_workers_events_per_s"] == r["scale_out"]["two_processes_events_per_s"]
    assert 0 < items["messages_per_event"] <= 1 and 0 < items["rows_per_event"] <= 1
    assert _positive(items["bytes_per_event"])
    for step in ("learner", "encode", "owner", "apply"):
        assert _positive(items["us_per_event"][step]), step
    # the targets judge this run's own figures, and "met" agrees with each threshold
    targets = {t["target"]: t for t in r["targets"]}
    assert len(targets) == 12
    ref, so, rt = r["references"], r["scale_out"], r["runtimes"]
    assert targets["runtime kafka / runtime faust, end to end"]["value"] == pytest.approx(
        rt["kafka"]["events_per_s"] / rt["faust"]["events_per_s"])
    assert targets["end to end / learner alone (batched)"]["value"] == pytest.approx(
        e2e["events_per_s"] / ref["batched_learner_events_per_s"])
    assert targets["restore of a partition's state, records/s"]["value"] == r["restore"]["records_per_s"]
    assert targets["end-to-end / River full ranking"]["value"] == pytest.approx(
        e2e["events_per_s"] / ref["river_full_ranking_events_per_s"])
    assert targets["two processes / one process"]["value"] == pytest.approx(
        so["two_processes_events_per_s"] / so["one_process_events_per_s"])
    assert targets["mf adaptation, users/s"]["value"] == r["adaptation"]["mf"]["users_per_s"]
    assert targets["melu adaptation, users/s"]["value"] == r["adaptation"]["melu"]["users_per_s"]
    assert targets["p99 event→publish at half max rate, s"]["value"] == e2e["latency_p99_s"]
    assert targets["durable state per user, bytes"]["value"] == r["state_bytes_per_user"]
    for t in r["targets"]:
        assert t["met"] == (t["value"] >= t["threshold"] if t["op"] == ">=" else t["value"] <= t["threshold"]), t
    printed = capsys.readouterr().out
    assert "targets" in printed and f"wrote {out}" in printed and "shared item state per event" in printed


@pytest.mark.parametrize("argv, message", [
    (["--limit", "10"], "--limit must be at least 100"),
    (["--partitions", "1"], "--partitions must be >= 2"),
    (["--checkpoint", "/nonexistent/ck"], "is not a checkpoint directory"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                           message: str) -> None:
    code = main(["bench", "--json", str(tmp_path / "b.json"), "--dataset", "ml-100k", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("metarec bench: error:") and err.count("\n") == 1
    assert not (tmp_path / "b.json").exists()


def test_json_into_a_missing_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--json", str(tmp_path / "no" / "b.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_metrics_parsing() -> None:
    text = ("# TYPE metarec_event_to_publish_seconds histogram\n"
            'metarec_event_to_publish_seconds_bucket{le="0.1"} 3.0\n'
            'metarec_event_to_publish_seconds_bucket{le="+Inf"} 4.0\n'
            "metarec_event_to_publish_seconds_count 4.0\n"
            'metarec_consumer_lag{topic="t",partition="0"} 2.0\n'
            'metarec_consumer_lag{topic="t",partition="1"} 5.0\n')
    m = parse_metrics(text)
    assert m["metarec_event_to_publish_seconds_count"] == 4.0
    assert m["metarec_consumer_lag"] == 7.0
    assert "metarec_event_to_publish_seconds_bucket" not in m
    assert histogram_buckets(text, "metarec_event_to_publish_seconds") == [(0.1, 3.0), (math.inf, 4.0)]


def test_targets_flag_misses() -> None:
    r = {"end_to_end": {"events_per_s": 100.0, "latency_p99_s": 0.5},
         "runtimes": {"kafka": {"events_per_s": 100.0}, "faust": {"events_per_s": 50.0}},
         "references": {"batched_learner_events_per_s": 150.0, "river_full_ranking_events_per_s": 50.0},
         "adaptation": {"mf": {"users_per_s": 40_000.0}, "melu": {"users_per_s": 100.0}},
         "scale_out": {"one_process_events_per_s": 100.0, "two_processes_events_per_s": 170.0},
         "restore": {"records_per_s": 45_000.0}, "state_bytes_per_user": 4096.0,
         "item_state": {"two_workers_events_per_s": 100.0, "two_workers_shared_events_per_s": 95.0,
                        "latency_p99_s": 0.1, "latency_p99_shared_s": 0.2, "peak_rss_bytes": 100.0 * 2**20,
                        "peak_rss_shared_bytes": 120.0 * 2**20}}
    met = {t["target"]: t["met"] for t in check_targets(r)}
    assert met == {"runtime kafka / runtime faust, end to end": False, "end to end / learner alone (batched)": True,
                   "mf adaptation, users/s": True, "melu adaptation, users/s": False,
                   "p99 event→publish at half max rate, s": False, "two processes / one process": True,
                   "restore of a partition's state, records/s": True, "end-to-end / River full ranking": False,
                   "durable state per user, bytes": False, "two workers: shared item state / without": True,
                   "p99 latency: shared item state / without": False,
                   "peak RSS: shared item state − without, MiB": True}
