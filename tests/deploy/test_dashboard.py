"""Grafana dashboard and provisioning: valid, complete, and built only on metrics the worker exports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from metric_names import (
    DASHBOARD,
    EXPORTED_SERIES_NAMES,
    TRAINER_SERIES_NAMES,
    PROMETHEUS_SYNTHETIC,
    WORKER_METRICS,
    dashboard_expressions,
    promql_metric_names,
    referenced_metric_names,
)

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels_of(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_identity(dashboard: dict) -> None:
    assert dashboard["uid"] == "metarec"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"]


def test_every_panel_is_described_and_queries_prometheus(dashboard: dict) -> None:
    panels = panels_of(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert len(panel.get("description", "")) > 40, f"panel {panel['title']!r} needs a description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"] and all(t.get("expr") for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]


def test_panels_fit_the_grid_without_overlap(dashboard: dict) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels_of(dashboard):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


REQUIRED_PANELS = {
    # what the issue asks for -> a query fragment that must appear in one panel
    "events/s": "rate(metarec_events_consumed_total[",
    "lists/s": "rate(metarec_recommendations_published_total[",
    "lag per partition": "max by (topic, partition) (metarec_consumer_lag)",
    "event->publish p50": "histogram_quantile(0.5, sum by (le) (rate(metarec_event_to_publish_seconds_bucket[",
    "event->publish p99": "histogram_quantile(0.99, sum by (le) (rate(metarec_event_to_publish_seconds_bucket[",
    "adaptation p50": "histogram_quantile(0.5, sum by (le) (rate(metarec_adaptation_seconds_bucket[",
    "adaptation p99": "histogram_quantile(0.99, sum by (le) (rate(metarec_adaptation_seconds_bucket[",
    "adaptation loss": "metarec_adaptation_loss",
    "online hit rate": "metarec_online_hit_rate",
    "DLQ rate by reason": "sum by (reason) (rate(metarec_events_invalid_total[",
    "model version": "metarec_model_info",
    "users active": "metarec_users_active",
    "model version age": "max by (instance) (metarec_model_version_age_seconds)",
    "roll-out failing": "max by (instance) (metarec_model_rollout_failing)",
    "model load failures by reason": "sum by (reason) (increase(metarec_model_load_failures_total[",
    "list coverage": "metarec_list_coverage_ratio",
    "list diversity": "metarec_list_diversity",
    # the continual trainer
    "versions trained": "metarec_trainer_versions_total",
    "last training time": "metarec_trainer_last_training_timestamp_seconds",
    "training loss": "metarec_trainer_training_loss",
}


@pytest.mark.parametrize("what", sorted(REQUIRED_PANELS))
def test_required_panel_present(what: str) -> None:
    fragment = REQUIRED_PANELS[what]
    assert any(fragment in expr for exprs in dashboard_expressions().values() for expr in exprs), what


def test_lag_panel_has_one_line_per_partition(dashboard: dict) -> None:
    (panel,) = [p for p in panels_of(dashboard) if p["title"] == "Consumer lag per partition"]
    assert "{{partition}}" in panel["targets"][0]["legendFormat"]


def test_model_version_panel_shows_the_labels(dashboard: dict) -> None:
    (panel,) = [p for p in panels_of(dashboard) if "metarec_model_info" in p["targets"][0]["expr"]]
    assert panel["type"] in {"table", "stat"}
    target = panel["targets"][0]
    assert target["format"] == "table" and target["instant"] is True
    assert all(label in target["expr"] for label in ("version", "model", "meta"))


def test_rollout_state_sits_beside_the_served_version(dashboard: dict) -> None:
    """One table row per worker: served version, its age and the roll-out flag, merged on the instance."""
    (panel,) = [p for p in panels_of(dashboard) if "metarec_model_info" in p["targets"][0]["expr"]]
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("metarec_model_version_age_seconds" in e for e in exprs)
    assert any("metarec_model_rollout_failing" in e for e in exprs)
    assert all(t.get("format") == "table" and t.get("instant") is True for t in panel["targets"])
    assert all("by (instance" in e for e in exprs)  # the merge key
    assert panel["transformations"][0]["id"] == "merge"


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    used = referenced_metric_names()
    unknown = {name: sorted(where) for name, where in used.items()
               if name not in EXPORTED_SERIES_NAMES | TRAINER_SERIES_NAMES | PROMETHEUS_SYNTHETIC}
    assert unknown == {}, "metrics the worker does not export (see tests/deploy/metric_names.py)"


def test_dashboard_shows_every_worker_metric() -> None:
    used = set(referenced_metric_names())
    for name, kind in WORKER_METRICS.items():
        expected = f"{name}_bucket" if kind == "histogram" else name
        assert expected in used, f"{name} is exported but not on the dashboard or in an alert"


def test_extractor_catches_a_misspelled_metric() -> None:
    """The check above can fail: a typo in a query surfaces as an unknown name."""
    names = promql_metric_names('sum by (reason) (rate(metrec_events_invalid_total{reason!="x"}[$__rate_interval]))')
    assert names == {"metrec_events_invalid_total"}
    assert not names <= EXPORTED_SERIES_NAMES
    # bare histogram names are not exported: only _bucket/_sum/_count are
    assert "metarec_adaptation_seconds" not in EXPORTED_SERIES_NAMES


def test_datasource_provisioning_matches_the_dashboard() -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090" and ds["access"] == "proxy"


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "metarec.yml").read_text(encoding="utf-8"))
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_worker_metrics_module_exports_the_expected_names() -> None:
    """stream/worker/metrics.py renders every name the dashboard and alerts use (labelled series given one label set).

    The live test that scrapes a running worker's /metrics checks the same sets end to end.
    """
    from metric_names import referenced_worker_series, series_names_in_exposition

    from stream.worker.metrics import WorkerMetrics

    m = WorkerMetrics()
    m.events_invalid.labels("invalid_json").inc()
    m.set_lag({("interactions", 0): 5})
    m.set_model("v1", "mf", "fomaml")
    rendered = series_names_in_exposition(m.render().decode())
    assert EXPORTED_SERIES_NAMES - rendered == set()
    assert referenced_worker_series() - rendered == set()


def test_the_trainer_exports_what_the_dashboard_uses():
    """stream/trainer/metrics.py renders every trainer series of the dashboard (and every declared one)."""
    from metric_names import referenced_trainer_series, series_names_in_exposition

    from stream.trainer.metrics import TrainerMetrics

    m = TrainerMetrics()
    m.trained("v1", 1.0, 0.5)
    rendered = series_names_in_exposition(m.render().decode())
    assert referenced_trainer_series() and referenced_trainer_series() - rendered == set()
    assert TRAINER_SERIES_NAMES - rendered == set()
