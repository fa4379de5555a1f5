"""Bad command-line input: exit code 2 and exactly one line on stderr, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream.kafka.broker import free_port

REPO = Path(__file__).resolve().parents[3]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_dataset(broker):
    assert_one_line_error(run_cli("replay", "--dataset", "ml-42m", "--bootstrap", broker, "--topic", "x"),
                          "metarec replay: error:", "ml-42m")


@pytest.mark.parametrize("content", [None, "a,b\n1,2\n", "user_id,item_id,rating,timestamp\nu,i,x,y\n",
                                     b"\x00\xff\xfe binary"])
def test_unreadable_csv(broker, tmp_path, content):
    path = tmp_path / "events.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert_one_line_error(run_cli("replay", "--dataset", str(path), "--bootstrap", broker, "--topic", "x"),
                          "metarec replay: error:")


def test_dataset_path_is_a_directory(broker, tmp_path):
    assert_one_line_error(run_cli("replay", "--dataset", str(tmp_path), "--bootstrap", broker, "--topic", "x"),
                          "metarec replay: error:")


@pytest.mark.parametrize("address", ["nohost", "127.0.0.1:99999", "tcp://127.0.0.1:9092", "a:1,,b:2", ""])
def test_bad_bootstrap(address):
    assert_one_line_error(run_cli("replay", "--dataset", "ml-100k", "--bootstrap", address, "--topic", "x"),
                          "metarec replay: error:", "bootstrap")


def test_unreachable_broker_fails_fast():
    port = free_port()
    done = run_cli("replay", "--dataset", "ml-100k", "--bootstrap", f"127.0.0.1:{port}", "--topic", "x")
    assert_one_line_error(done, f"no Kafka broker answered at 127.0.0.1:{port}")


def test_unreachable_broker_for_topic_copy():
    port = free_port()
    done = run_cli("replay", "--from-topic", "a", "--from-time", "2024-01-01T00:00:00Z",
                   "--bootstrap", f"127.0.0.1:{port}", "--topic", "b")
    assert_one_line_error(done, f"no Kafka broker answered at 127.0.0.1:{port}")


@pytest.mark.parametrize("args,fragment", [
    (["--from-time", "yesterday"], "ISO 8601"),
    (["--from-time", "2024-13-01T00:00:00"], "ISO 8601"),
    (["--from-time", "2024-01-02T00:00:00Z", "--until", "2024-01-01T00:00:00Z"], "--until must be later"),
    (["--from-time", "2024-01-01T00:00:00Z", "--until", "soon"], "ISO 8601"),
    ([], "--from-topic needs --from-time"),
])
def test_bad_times(broker, args, fragment):
    done = run_cli("replay", "--from-topic", "src", *args, "--bootstrap", broker, "--topic", "dst")
    assert_one_line_error(done, fragment)


def test_missing_source_topic(broker):
    done = run_cli("replay", "--from-topic", "no-such-topic", "--from-time", "2024-01-01T00:00:00Z",
                   "--bootstrap", broker, "--topic", "dst")
    assert_one_line_error(done, "topic 'no-such-topic' does not exist")


@pytest.mark.parametrize("args,fragment", [
    (["--dataset", "ml-100k", "--from-topic", "a"], "exactly one source"),
    ([], "exactly one source"),
    (["--dataset", "ml-100k", "--speed", "-1"], "--speed must be >= 0"),
    (["--dataset", "ml-100k", "--limit", "-5"], "--limit"),
    (["--dataset", "ml-100k", "--speed", "fast"], "--speed"),
    (["--dataset", "ml-100k", "--partitions", "0"], "--partitions"),
    (["--dataset", "ml-100k", "--from-time", "2024-01-01"], "--from-time/--until only apply"),
    (["--dataset", "ml-100k", "--kafka-option", "novalue"], "KEY=VALUE"),
])
def test_bad_replay_flags(args, fragment):
    done = run_cli("replay", *args, "--bootstrap", "127.0.0.1:9", "--topic", "x")
    assert_one_line_error(done, fragment)


def test_bad_env_var_is_one_line():
    done = subprocess.run([sys.executable, "-m", "stream", "replay", "--dataset", "ml-100k", "--bootstrap",
                           "127.0.0.1:9", "--topic", "x"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "METAREC_SPEED": "warp"})
    assert_one_line_error(done, "METAREC_SPEED")


@pytest.mark.parametrize("args,fragment", [(["--port", "70000"], "--port"), (["--port", "x"], "--port")])
def test_bad_broker_flags(args, fragment):
    assert_one_line_error(run_cli("broker", *args), fragment)


def test_broker_port_taken(broker):
    port = broker.split(":")[1]
    assert_one_line_error(run_cli("broker", "--port", port), f"cannot listen on 127.0.0.1:{port}")
