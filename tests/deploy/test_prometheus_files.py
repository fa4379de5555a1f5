"""Prometheus configuration, alert rules and their unit tests, checked with the real ``promtool``.

``promtool`` comes from Debian's ``prometheus`` package; ``make test`` runs deploy/install-promtool.sh
first, which installs it when it is missing and apt is usable as root. Without it the promtool tests
skip and say why; the structural checks below run regardless.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from metric_names import ALERTS, dashboard_expressions

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
REQUIRED_ALERTS = {
    "MetarecConsumerLagGrowing", "MetarecDeadLettersHigh", "MetarecNoListsPublished", "MetarecWorkerDown",
    "MetarecModelRolloutFailing",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: Debian package 'prometheus' is missing and "
                    "deploy/install-promtool.sh could not install it (needs root and apt-get)")
    return path


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- promtool -------------------------------------------------------------------------------------

def test_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check can fail: an expression with a syntax error is rejected."""
    broken = ALERTS.read_text(encoding="utf-8").replace(
        "expr: up{job=\"metarec-worker\"} == 0", "expr: up{job=\"metarec-worker\" == 0")
    assert broken != ALERTS.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    assert run(promtool, "check", "rules", tmp_path / "alerts.yml").returncode != 0


def test_promtool_unit_tests_catch_a_wrong_threshold(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: lowering the dead-letter threshold to 0 makes the 'trickle' case fire."""
    text = ALERTS.read_text(encoding="utf-8")
    mutated = text.replace("rate(metarec_events_invalid_total[5m])) > 1", "rate(metarec_events_invalid_total[5m])) > 0")
    assert mutated != text
    (tmp_path / "alerts.yml").write_text(mutated, encoding="utf-8")
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    assert run(promtool, "test", "rules", tmp_path / "alerts_test.yml").returncode != 0


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every Grafana query parses as PromQL (Grafana's $__rate_interval replaced by a duration)."""
    rules = [{"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
             for i, expr in enumerate(e for exprs in dashboard_expressions().values() for e in exprs)]
    assert rules, "the dashboard has no queries"
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    rules.append({"record": "dashboard:broken", "expr": "sum(rate(metarec_events_consumed_total[1m])"})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    assert run(promtool, "check", "rules", path).returncode != 0


# --- structure (no promtool needed) ---------------------------------------------------------------

def test_scrape_config_finds_every_worker_replica_by_dns() -> None:
    config = load(CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["metarec-worker"]
    assert "static_configs" not in worker, "static targets would miss scaled replicas"
    (sd,) = worker["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == 8000
    assert worker.get("metrics_path", "/metrics") == "/metrics"


def test_every_alert_is_documented_and_has_a_severity() -> None:
    rules = [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert REQUIRED_ALERTS <= names
    for rule in rules:
        annotations = rule.get("annotations", {})
        assert len(annotations.get("summary", "")) > 20, rule["alert"]
        assert len(annotations.get("description", "")) > 80, rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, rule["alert"]
        assert rule.get("for"), f"{rule['alert']} would fire on a single evaluation"


def test_required_alert_semantics() -> None:
    exprs = {rule["alert"]: rule for group in load(ALERTS)["groups"] for rule in group["rules"]}
    lag = exprs["MetarecConsumerLagGrowing"]
    assert "deriv(metarec_consumer_lag[5m])" in lag["expr"] and "> 1000" in lag["expr"] and lag["for"] == "5m"
    assert "rate(metarec_events_invalid_total[5m])" in exprs["MetarecDeadLettersHigh"]["expr"]
    nolists = exprs["MetarecNoListsPublished"]
    assert "metarec_recommendations_published_total" in nolists["expr"]
    assert "metarec_events_consumed_total" in nolists["expr"] and nolists["for"] == "2m"
    rollout = exprs["MetarecModelRolloutFailing"]
    assert "metarec_model_rollout_failing" in rollout["expr"] and rollout["for"] == "5m"
    down = exprs["MetarecWorkerDown"]
    assert down["expr"].strip() == 'up{job="metarec-worker"} == 0' and down["for"] == "1m"


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    doc = load(ALERTS_TEST)
    assert doc["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for group in load(ALERTS)["groups"] for rule in group["rules"]}
    assert names - firing == set(), "alerts without a firing case"
    assert names - silent == set(), "alerts without a not-firing case"
