"""A live scrape of a real worker's /metrics: every contract metric present, counters equal to what was sent,
histograms observed, every metric the dashboard and the alert rules use exported."""
from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path

import pytest
from worker_support import event_bytes, make_checkpoint, ml100k, produce, read_topic, start_worker

from stream.worker.metrics import CONTRACT_METRICS

pytestmark = pytest.mark.broker

N = 400
BAD = [(b"{", "invalid_json"), (b'{"item_id": "1"}', "missing_user_id"), (b'{"user_id": "u", "item_id": "1"', "invalid_json")]


def _metric_names_module():
    path = Path(__file__).resolve().parents[2] / "deploy" / "metric_names.py"
    if not path.is_file():  # pragma: no cover - the deploy helper's module is part of the repo
        pytest.fail(f"{path} is missing")
    spec = importlib.util.spec_from_file_location("metric_names", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_live_metrics_match_what_was_sent(broker, tmp_path):
    ds, events = ml100k(N)
    version = make_checkpoint(tmp_path / "ck", sorted({str(i) for i in ds.item_ids}), seed=4)
    tag = uuid.uuid4().hex[:8]
    src, dst = f"in-{tag}", f"out-{tag}"
    w = start_worker(broker, tmp_path / "ck", tmp_path, group=f"g-{tag}", input_topic=src, output_topic=dst)
    try:
        w.wait_ready()
        before = w.get("/metrics")[1]
        for name in CONTRACT_METRICS:  # declared from the start, before any event
            assert f"# TYPE {name} " in before, name
        msgs = [(u.encode(), event_bytes(u, i, r, ts)) for u, i, r, ts in events] + [(b"k", v) for v, _ in BAD]
        total = produce(broker, src, msgs, timestamp_ms=int(time.time() * 1000))
        w.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= total, 60, what="all consumed")
        time.sleep(2.5)  # one more lag/active-users tick after the last batch
        text = w.get("/metrics")[1]
        m = w.metrics()
        lists = read_topic(broker, dst, expect=int(m["metarec_recommendations_published_total"]))

        assert m["metarec_events_consumed_total"] == total
        assert m['metarec_events_invalid_total{reason="invalid_json"}'] == 2
        assert m['metarec_events_invalid_total{reason="missing_user_id"}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("metarec_events_invalid_total")) == len(BAD)
        assert m["metarec_recommendations_published_total"] == len(lists) > 0
        assert m["metarec_batches_total"] >= 1
        assert m["metarec_adaptation_seconds_count"] == m["metarec_batches_total"]
        assert m["metarec_adaptation_seconds_sum"] > 0
        assert m["metarec_event_to_publish_seconds_count"] == N  # one observation per valid event
        # produced "now" and processed within seconds: the latency histogram holds live figures
        assert 0 < m["metarec_event_to_publish_seconds_sum"] / N < 30
        assert m[f'metarec_model_info{{meta="fomaml",model="mf",version="{version}"}}'] == 1.0
        users = {u for u, _, _, _ in events}
        assert m["metarec_users_active"] == len(users)
        assert 0.0 <= m["metarec_online_hit_rate"] <= 1.0
        assert 0.0 < m["metarec_list_coverage_ratio"] <= 1.0  # lists were published
        assert 0.0 < m["metarec_list_diversity"] <= 2.0  # 1 - cos of random embeddings: above 0
        assert m["metarec_model_rollout_failing"] == 0.0
        assert sum(v for k, v in m.items() if k.startswith("metarec_model_load_failures_total")) == 0.0
        assert m["metarec_unknown_items_total"] == 0
        assert m["metarec_model_switches_total"] == 0
        lags = {k: v for k, v in m.items() if k.startswith("metarec_consumer_lag{")}
        assert len(lags) == 4 and all(v >= 0 for v in lags.values())
        assert all(f'topic="{src}"' in k for k in lags)
        label_names = {lbl.split("=")[0] for k in m if "{" in k for lbl in k.split("{", 1)[1].rstrip("}").split(",")}
        assert label_names <= {"reason", "topic", "partition", "version", "model", "meta", "le"}, label_names
        assert {json.loads(x.value())["user_id"] for x in lists} == users

        names = _metric_names_module()
        scraped = names.series_names_in_exposition(text)
        assert names.exported_series_names() <= scraped
        assert names.referenced_worker_series() <= scraped
    finally:
        w.kill()
