"""The metric names the worker exports, and the names the dashboard and alert rules use.

One place for the expected set (``WORKER_METRICS``, from TEAM.md / CONTRACT.md), and extractors that
read every metric name referenced by ``deploy/grafana/dashboards/metarec.json`` and
``deploy/prometheus/alerts.yml``. tests/deploy checks the referenced names against the expected set;
a live test that scrapes a real worker's ``/metrics`` can check the same sets against reality::

    import importlib.util, pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "deploy" / "metric_names.py"   # from tests/<x>/
    spec = importlib.util.spec_from_file_location("metric_names", path)
    metric_names = importlib.util.module_from_spec(spec); spec.loader.exec_module(metric_names)

    scraped = metric_names.series_names_in_exposition(text_of_metrics_endpoint)
    assert metric_names.EXPORTED_SERIES_NAMES <= scraped
    assert metric_names.referenced_worker_series() <= scraped

Examples
--------
>>> sorted(promql_metric_names('sum by (reason) (rate(metarec_events_invalid_total{job="w"}[5m])) > 1'))
['metarec_events_invalid_total']
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "metarec.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

#: Metric names as declared in stream/worker/metrics.py (TEAM.md "Prometheus metric names"), with their type.
WORKER_METRICS: dict[str, str] = {
    "metarec_events_consumed_total": "counter",
    "metarec_events_invalid_total": "counter",
    "metarec_recommendations_published_total": "counter",
    "metarec_adaptation_seconds": "histogram",
    "metarec_event_to_publish_seconds": "histogram",
    "metarec_consumer_lag": "gauge",
    "metarec_users_active": "gauge",
    "metarec_adaptation_loss": "gauge",
    "metarec_model_info": "gauge",
    "metarec_online_hit_rate": "gauge",
    "metarec_unknown_items_total": "counter",
    "metarec_items_total": "gauge",
    "metarec_batches_total": "counter",
    "metarec_model_switches_total": "counter",
    "metarec_item_state_lag_seconds": "gauge",
    "metarec_item_contributions_total": "counter",
    "metarec_items_expired_total": "counter",
    # model roll-outs (stream/worker/rollout.py) and the published lists (stream/worker/liststats.py)
    "metarec_model_load_failures_total": "counter",
    "metarec_model_rollout_failing": "gauge",
    "metarec_model_version_age_seconds": "gauge",
    "metarec_list_coverage_ratio": "gauge",
    "metarec_list_diversity": "gauge",
}

#: Metric names of the continual trainer (stream/trainer/metrics.py), with their type.
TRAINER_METRICS: dict[str, str] = {
    "metarec_trainer_versions_total": "counter",
    "metarec_trainer_last_training_timestamp_seconds": "gauge",
    "metarec_trainer_training_loss": "gauge",
    "metarec_trainer_training_seconds": "histogram",
    "metarec_trainer_events_total": "counter",
    "metarec_trainer_window_events": "gauge",
    "metarec_trainer_failures_total": "counter",
    "metarec_trainer_model_info": "gauge",
}

#: Series Prometheus itself attaches to every scrape target (not exported by the worker).
PROMETHEUS_SYNTHETIC: frozenset[str] = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
     "scrape_series_added"}
)


def exported_series_names(metrics: dict[str, str] = WORKER_METRICS) -> frozenset[str]:
    """Sample names a worker's ``/metrics`` carries for ``metrics``.

    Histograms expand to ``_bucket``, ``_sum`` and ``_count``; counters and gauges keep their name.
    (prometheus-client may add ``*_created`` samples too; nothing here relies on them.)

    >>> sorted(exported_series_names({"x_seconds": "histogram", "y_total": "counter"}))
    ['x_seconds_bucket', 'x_seconds_count', 'x_seconds_sum', 'y_total']
    """
    names: set[str] = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)


#: Every sample name the dashboard and alert rules may use from the worker.
EXPORTED_SERIES_NAMES: frozenset[str] = exported_series_names()
#: ... and from the trainer.
TRAINER_SERIES_NAMES: frozenset[str] = exported_series_names(TRAINER_METRICS)

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"})
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (also with Grafana ``$variables``).

    Strings, label matchers, ranges, grouping clauses, function and aggregation names, keywords and
    numbers are not metric names.

    >>> sorted(promql_metric_names(
    ...     'histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval]))) / on(x) b or vector(0)'))
    ['a_bucket', 'b']
    >>> sorted(promql_metric_names('absent(up{job="metarec-worker"} == 1) and ignoring(le) c offset 5m'))
    ['c', 'up']
    """
    s = _STRING.sub('""', expr)
    s = _RANGE.sub("", s)
    s = _MATCHERS.sub("", s)
    s = _GROUPING.sub("", s)
    names: set[str] = set()
    for match in _IDENT.finditer(s):
        token = match.group(0)
        if s[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names


def dashboard_expressions(path: Path = DASHBOARD) -> dict[str, list[str]]:
    """``{panel title: [PromQL expression, ...]}`` for every panel of a Grafana dashboard JSON."""
    dashboard = json.loads(Path(path).read_text(encoding="utf-8"))
    panels = list(dashboard.get("panels", []))
    for panel in list(panels):  # rows may nest panels
        panels.extend(panel.get("panels", []))
    return {p.get("title", f"panel {p.get('id')}"): [t["expr"] for t in p.get("targets", []) if t.get("expr")]
            for p in panels if p.get("type") != "row"}


def rule_expressions(path: Path = ALERTS) -> dict[str, str]:
    """``{alert or record name: expression}`` for every rule of a Prometheus rules file."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return {rule.get("alert") or rule["record"]: rule["expr"]
            for group in doc["groups"] for rule in group["rules"]}


def referenced_metric_names(dashboard: Path = DASHBOARD, alerts: Path = ALERTS) -> dict[str, set[str]]:
    """Every metric name the dashboard and the alert rules use, mapped to where it is used."""
    used: dict[str, set[str]] = {}
    for title, exprs in dashboard_expressions(dashboard).items():
        for expr in exprs:
            for name in promql_metric_names(expr):
                used.setdefault(name, set()).add(f"dashboard panel {title!r}")
    for alert, expr in rule_expressions(alerts).items():
        for name in promql_metric_names(expr):
            used.setdefault(name, set()).add(f"alert {alert}")
    return used


def referenced_worker_series(dashboard: Path = DASHBOARD, alerts: Path = ALERTS) -> set[str]:
    """The referenced names a worker must export (Prometheus' own ``up`` etc. and the trainer's left out)."""
    return {n for n in set(referenced_metric_names(dashboard, alerts)) - PROMETHEUS_SYNTHETIC
            if not n.startswith("metarec_trainer_")}


def referenced_trainer_series(dashboard: Path = DASHBOARD, alerts: Path = ALERTS) -> set[str]:
    """The referenced names the trainer must export."""
    return {n for n in referenced_metric_names(dashboard, alerts) if n.startswith("metarec_trainer_")}


def series_names_in_exposition(text: str) -> set[str]:
    """Sample names present in a Prometheus text exposition (the body of ``GET /metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
