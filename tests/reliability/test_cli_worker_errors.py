"""Bad `metarec worker` arguments and configuration: one line on stderr, exit 2, never a traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from worker_support import make_checkpoint

from stream.kafka.broker import free_port

REPO = Path(__file__).resolve().parents[2]


def run_worker_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", "worker", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=90, env={**os.environ, **(env or {})})


def in_process(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``metarec worker ARGS`` through `stream.cli.main.main` (the console script's entry point), in this process."""
    from stream.cli.main import main

    try:
        code = main(["worker", *args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["metarec", "worker", *args], code, out.out, out.err)


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("metarec worker: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli-ck") / "ck"
    make_checkpoint(d, ["a", "b", "c"], seed=1)
    return d


@pytest.mark.parametrize("args,fragment", [
    (["--metrics-port", "70000"], "--metrics-port"),
    (["--metrics-port", "x"], "--metrics-port"),
    (["--state-ttl", "-1"], "--state-ttl"),
    (["--state-ttl", "forever"], "--state-ttl"),
    (["--max-event-bytes", "0"], "--max-event-bytes"),
    (["--batch-size", "0"], "--batch-size"),
    (["--stall-after", "0"], "--stall-after"),
    (["--fetch-max-wait-ms", "-3"], "--fetch-max-wait-ms"),
    (["--store", "leveldb"], "--store"),
    (["--runtime", "spark"], "--runtime"),
    (["--kafka-option", "novalue"], "KEY=VALUE"),
    (["--kafka-option", "security.protocol=CARRIER_PIGEON"], "security.protocol"),
])
def test_bad_worker_flags(checkpoint, args, fragment, capsys):
    assert_one_line_error(in_process(capsys, "--bootstrap", "127.0.0.1:9", "--checkpoint", str(checkpoint), *args),
                          fragment)


def test_bad_bootstrap_and_missing_checkpoint(tmp_path, checkpoint, capsys):
    run = lambda *a: in_process(capsys, *a)  # noqa: E731
    assert_one_line_error(run("--bootstrap", "nohost", "--checkpoint", str(checkpoint)), "bootstrap")
    assert_one_line_error(run("--bootstrap", "127.0.0.1:9", "--checkpoint", str(tmp_path / "nope")),
                          "does not exist")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04 not a checkpoint")
    assert_one_line_error(run("--bootstrap", "127.0.0.1:9", "--checkpoint", str(tmp_path / "model.pt")),
                          "not a directory")
    assert_one_line_error(run("--bootstrap", "127.0.0.1:9", "--checkpoint", str(tmp_path)),
                          "checkpoint")


def test_bad_env_var(checkpoint):
    done = run_worker_cli("--bootstrap", "127.0.0.1:9", "--checkpoint", str(checkpoint),
                          env={"METAREC_STATE_TTL": "forever"})
    assert_one_line_error(done, "METAREC_STATE_TTL")


def test_unreachable_broker(checkpoint):
    port = free_port()
    assert_one_line_error(run_worker_cli("--bootstrap", f"127.0.0.1:{port}", "--checkpoint", str(checkpoint)),
                          f"no Kafka broker answered at 127.0.0.1:{port}")


@pytest.mark.broker
def test_bad_configuration_with_a_live_broker(broker, tmp_path, checkpoint):
    """Errors found after the broker answered: corrupt weights, metrics port taken, unusable data directory."""
    common = ["--bootstrap", broker, "--group", "g-cli-errors", "--input", "cli-err-in", "--output", "cli-err-out"]
    corrupt = tmp_path / "corrupt"
    make_checkpoint(corrupt, ["a", "b"], seed=1)
    (corrupt / "weights.safetensors").write_bytes(b"garbage, not safetensors")
    assert_one_line_error(run_worker_cli(*common, "--checkpoint", str(corrupt), "--metrics-port", "0",
                                         "--data-dir", str(tmp_path / "d1")), "weights")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_one_line_error(run_worker_cli(*common, "--checkpoint", str(checkpoint), "--metrics-port", str(port),
                                             "--data-dir", str(tmp_path / "d2")), f"127.0.0.1:{port}")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_one_line_error(run_worker_cli(*common, "--checkpoint", str(checkpoint), "--metrics-port", "0",
                                         "--data-dir", str(blocker / "sub")), "data directory")
