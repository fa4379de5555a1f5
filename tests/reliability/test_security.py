"""Security: HTTP on loopback by default, Kafka security settings reach every client, no code runs from a
checkpoint, input size bounded."""
from __future__ import annotations

import os
import pickle
import socket
import urllib.request
from pathlib import Path

import pytest
from worker_support import make_checkpoint

from adapters.errors import MetarecError

SASL_ENV = {"METAREC_KAFKA_SASL_MECHANISM": "PLAIN", "METAREC_KAFKA_SASL_USERNAME": "alice-rel",
            "METAREC_KAFKA_SASL_PASSWORD": "s3cret-rel"}


# --- HTTP -----------------------------------------------------------------------------------------

def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_http_binds_loopback_unless_configured(figures):
    from stream.cli.commands.worker import add_arguments
    from stream.worker.http import HealthServer, WorkerHealth
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.config import WorkerConfig

    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--bootstrap", "h:1", "--checkpoint", "x"])
    assert args.metrics_host == "127.0.0.1"
    assert WorkerConfig(bootstrap="h:1", checkpoint=Path("x")).metrics_host == "127.0.0.1"

    server = HealthServer(WorkerMetrics(), WorkerHealth(), port=0).start()
    try:
        assert server._server.socket.getsockname()[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.status == 200
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError):  # refused: nothing listens on the machine's other address
                socket.create_connection((other, server.port), timeout=2).close()
        figures(bound=server._server.socket.getsockname()[0], other_address_checked=other or "none on this host")
    finally:
        server.close()
    server = HealthServer(WorkerMetrics(), WorkerHealth(), host="0.0.0.0", port=0).start()  # explicit opt-in
    try:
        assert server._server.socket.getsockname()[0] == "0.0.0.0"
    finally:
        server.close()


# --- Kafka security pass-through ------------------------------------------------------------------

@pytest.fixture
def spy_clients(monkeypatch):
    """Record the configuration of every confluent-kafka client created (the real clients still run)."""
    import confluent_kafka
    import confluent_kafka.admin

    seen: list[tuple[str, dict]] = []

    def spy(kind: str, real: type):
        def create(config: dict, *a: object, **kw: object) -> object:
            seen.append((kind, dict(config)))
            return real(config, *a, **kw)
        return create

    monkeypatch.setattr(confluent_kafka, "Producer", spy("producer", confluent_kafka.Producer))
    monkeypatch.setattr(confluent_kafka, "Consumer", spy("consumer", confluent_kafka.Consumer))
    admin_init = confluent_kafka.admin.AdminClient.__init__

    def admin_spy(self: object, conf: dict, **kw: object) -> None:
        seen.append(("admin", dict(conf)))
        admin_init(self, conf, **kw)

    monkeypatch.setattr(confluent_kafka.admin.AdminClient, "__init__", admin_spy)
    for var, value in SASL_ENV.items():
        monkeypatch.setenv(var, value)
    return seen


def _carries_sasl(cfg: dict) -> bool:
    return cfg.get("sasl.username") == "alice-rel" and cfg.get("sasl.password") == "s3cret-rel" \
        and cfg.get("sasl.mechanism") == "PLAIN"


@pytest.mark.broker
def test_security_settings_reach_every_confluent_client(broker, spy_clients, tmp_path, topic_name, figures):
    """Replay (admin, producer, consumers of a topic copy), the worker's topic set-up, its broker probe, its
    gap-fill consumer (faust runtime) and the kafka runtime's clients: each client's configuration carries the METAREC_KAFKA_* settings (PLAINTEXT here, so the
    SASL credentials are inert on the embedded broker; on a SASL listener they authenticate)."""
    import numpy as np

    from adapters.data.datasets import Dataset
    from stream.kafka.ranges import fetch_range
    from stream.worker.http import WorkerHealth
    from stream.worker.probe import BrokerProbe
    from stream.kafka.replay import replay_dataset, replay_topic
    from stream.worker.config import WorkerConfig
    from stream.worker.topics import prepare_topics
    from stream.runtime.kafka.changelog import restore
    from stream.runtime.kafka.runner import KafkaRunner
    from stream.runtime.kafka.store import PartitionStore
    from stream.worker.core import WorkerCore
    from stream.worker.metrics import WorkerMetrics

    ds = Dataset(name="t", fingerprint="x", user_ids=np.array(["u1", "u2"], dtype=object),
                 item_ids=np.array(["i1", "i2"], dtype=object), ratings=np.array([4.0, 5.0], np.float32),
                 timestamps=np.array([1.0e9, 1.0e9 + 1], np.float64), item_features=None, user_features=None)
    points: dict[str, list[str]] = {}

    def mark(name: str) -> None:
        points[name] = [kind for kind, _ in spy_clients[sum(len(v) for v in points.values()):]]

    replay_dataset(ds, broker, topic_name)
    mark("replay --dataset")
    replay_topic(broker, topic_name, topic_name + "-copy", 0)
    mark("replay --from-topic")
    cfg = WorkerConfig(bootstrap=broker, checkpoint=tmp_path, input=topic_name + "-w", group="g-" + topic_name,
                       data_dir=tmp_path / "d")
    prepare_topics(cfg)
    mark("worker topic set-up")
    probe = BrokerProbe(broker, WorkerHealth())
    assert probe.probe_once()
    mark("worker broker probe")
    assert len(fetch_range(broker, topic_name, 0, 0, 1)) + len(fetch_range(broker, topic_name, 1, 0, 1)) >= 1
    mark("worker gap fill")
    runner = KafkaRunner(cfg, WorkerCore(None, WorkerMetrics()), None, WorkerMetrics(), WorkerHealth(), 1)
    try:  # the kafka runtime: its group consumer and producer, its committed-offset reader, its restore consumer
        runner.ownership._committed([0])
        restore(runner.ownership.restore_config, topic_name, {0: PartitionStore(None)}, {0: 0})
    finally:
        runner.consumer.close()
    mark("worker runtime kafka")
    assert {k for kinds in points.values() for k in kinds} == {"producer", "consumer", "admin"}
    assert all(kinds for kinds in points.values()), points
    bad = [(kind, cfg) for kind, cfg in spy_clients if not _carries_sasl(cfg)]
    assert not bad, bad
    figures(clients_checked=len(spy_clients), points=";".join(f"{k}:{'+'.join(sorted(set(v)))}"
                                                               for k, v in points.items()))


def test_security_settings_reach_the_faust_worker(tmp_path, monkeypatch):
    """The worker's faust app (its producer, consumer and admin client, all aiokafka) gets broker_credentials
    mapped from the same settings: SASL_SSL with SCRAM, and SSL with a client certificate."""
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from stream.runtime.faust.app import build_app
    from stream.runtime.faust.process import build_runner, worker_credentials
    from stream.worker.config import WorkerConfig

    make_checkpoint(tmp_path / "ck", ["a", "b", "c"], seed=1)
    env = {"METAREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "METAREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "METAREC_KAFKA_SASL_USERNAME": "alice", "METAREC_KAFKA_SASL_PASSWORD": "pw"}
    cfg = WorkerConfig(bootstrap="h:1", checkpoint=tmp_path / "ck", data_dir=tmp_path / "d")
    creds = worker_credentials(cfg, environ=env)
    assert isinstance(creds, faust.SASLCredentials)
    app = build_app(build_runner(cfg, 1), creds)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("alice", "pw")
    assert auth["ssl_context"] is not None
    # the same from --kafka-option (flag wins over the environment)
    cfg2 = WorkerConfig(bootstrap="h:1", checkpoint=tmp_path / "ck", data_dir=tmp_path / "d",
                        kafka_options={"sasl.username": "bob"})
    assert worker_credentials(cfg2, environ=env).username == "bob"
    ssl_creds = worker_credentials(cfg, environ={"METAREC_KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert credentials_to_aiokafka_auth(ssl_creds)["security_protocol"] == "SSL"
    assert worker_credentials(cfg, environ={}) is None  # PLAINTEXT


# --- checkpoints never run code -------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker: Path) -> bytes:
    payload = pickle.dumps(_Evil(marker), protocol=4)
    assert b"system" in payload
    return payload


def _evil_torch_file(marker: Path, path: Path) -> None:
    import torch

    torch.save({"weights": _Evil(marker)}, path)  # what torch.load(weights_only=False) would execute


@pytest.mark.parametrize("where", ["weights-as-pickle", "weights-as-torch-save", "config-as-pickle",
                                   "vocab-as-pickle", "pt-file-as-checkpoint", "pt-file-beside-weights"])
def test_checkpoint_loading_never_unpickles(tmp_path, where, figures):
    from adapters.meta.checkpoint import Checkpoint
    from stream.worker.versions import resolve_checkpoint

    marker = tmp_path / "PWNED"
    ck = tmp_path / "ck"
    make_checkpoint(ck, ["a", "b", "c"], seed=2)
    target: Path = ck
    if where == "weights-as-pickle":
        (ck / "weights.safetensors").write_bytes(_evil_pickle(marker))
    elif where == "weights-as-torch-save":
        _evil_torch_file(marker, ck / "weights.safetensors")
    elif where == "config-as-pickle":
        (ck / "config.json").write_bytes(_evil_pickle(marker))
    elif where == "vocab-as-pickle":
        (ck / "vocab.json").write_bytes(_evil_pickle(marker))
    elif where == "pt-file-as-checkpoint":
        target = tmp_path / "model.pt"
        _evil_torch_file(marker, target)
    elif where == "pt-file-beside-weights":  # extra files are never read: the checkpoint loads, nothing runs
        _evil_torch_file(marker, ck / "model.pt")
        (ck / "weights.pkl").write_bytes(_evil_pickle(marker))
        assert Checkpoint.load(ck).item_ids == ["<unk>", "a", "b", "c"]
        assert not marker.exists()
        figures(case=where, payload_ran=marker.exists(), loaded=True)
        return
    with pytest.raises(MetarecError) as err:
        Checkpoint.load(resolve_checkpoint(target))
    assert "\n" not in str(err.value)
    assert not marker.exists(), "the pickle payload ran"
    figures(case=where, payload_ran=marker.exists(), error=str(err.value).split(": ", 1)[-1][:100])


def test_crafted_pickle_would_run_code_if_unpickled(tmp_path):
    """Guard against a vacuous test above: the same payload does run when unpickled."""
    marker = tmp_path / "PWNED"
    pickle.loads(_evil_pickle(marker))
    assert marker.exists()


# --- bounded input size ---------------------------------------------------------------------------

def test_input_size_is_bounded():
    from stream.worker.core import RawMessage, WorkerCore
    from stream.worker.metrics import WorkerMetrics

    core = WorkerCore(None, WorkerMetrics(), "in", max_event_bytes=1000)
    small = b'{"user_id":"u","item_id":"i","pad":"' + b"x" * 900 + b'"}'
    big = b'{"user_id":"u","item_id":"i","pad":"' + b"x" * 1000 + b'"}'
    good, dead = core.parse([RawMessage("in", 0, 0, b"u", small, 1e9), RawMessage("in", 0, 1, b"u", big, 1e9)])
    assert len(good) == 1 and [dict(d.headers)["error"] for d in dead] == [b"oversized"]
    assert dead[0].value == big  # the dead letter keeps the original bytes
