"""The pass-through references: how fast each runtime's stream machinery alone reads the pre-loaded topic.

:func:`run_passthrough` runs a runtime's pass-through in a child process with a fresh consumer group, until
``expect`` events were read: faust's (:mod:`stream.runtime.faust.passthrough`: the worker's consumer settings and
micro-batches; it only counts and acks) or confluent-kafka's (:mod:`stream.runtime.kafka.passthrough`: it reads,
decodes, produces one message per touched user, waits for delivery and commits: the ceiling of the kafka runtime). It reports the agent's rate (clock: first micro-batch handed to the agent → the batch that completes
``expect`` events) and the child's peak resident set size (``VmHWM``, read once the result is written, before the
child is stopped). :func:`stop_process` and :func:`_vm_hwm` serve the worker processes of the benchmark too.

Example
-------
>>> run_passthrough("127.0.0.1:9092", "bench-input", expect=100_000, partitions=4)   # doctest: +SKIP
PassthroughResult(events=100000, seconds=12.1, events_per_s=8264.5, peak_rss_bytes=...)
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import MetarecError

#: the child process of each runtime (faust is imported under stream/runtime/faust only)
AGENT_MODULES = {"faust": "stream.runtime.faust.passthrough", "kafka": "stream.runtime.kafka.passthrough"}


@dataclass
class PassthroughResult:
    """The pass-through agent's rate over ``expect`` events and its process's peak RSS."""

    events: int
    seconds: float
    events_per_s: float
    peak_rss_bytes: int = 0


def _vm_hwm(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of process ``pid`` in bytes (0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_passthrough(bootstrap: str, topic: str, expect: int, *, partitions: int = 4, batch_size: int = 500,
                    batch_seconds: float = 0.03, session_timeout: float = 3.0, commit_interval: float = 1.0,
                    timeout: float = 1800.0, progress: Callable[[int, int], None] | None = None,
                    runtime: str = "faust") -> PassthroughResult:
    """Run ``runtime``'s pass-through in a child process (fresh consumer group) until ``expect`` events were read."""
    with tempfile.TemporaryDirectory(prefix="metarec-bench-pt-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", AGENT_MODULES[runtime], "--bootstrap", bootstrap, "--topic", topic,
               "--group", f"bench-passthrough-{uuid.uuid4().hex[:8]}", "--expect", str(expect), "--out", str(out),
               "--partitions", str(partitions), "--batch-size", str(batch_size), "--batch-seconds", str(batch_seconds),
               "--session-timeout", str(session_timeout), "--commit-interval", str(commit_interval),
               "--datadir", str(Path(tmp) / "data")]
        log_path = Path(tmp) / "child.log"
        with open(log_path, "wb") as log_fh:
            proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
            try:
                _wait_for_result(proc, out, log_path, expect, timeout, progress)
                peak_rss = _vm_hwm(proc.pid)  # the child is still running: its high-water mark so far
            finally:
                stop_process(proc)
        data = json.loads(out.read_text())
        if progress is not None:
            progress(expect, expect)
        return PassthroughResult(int(data["events"]), float(data["seconds"]), float(data["events_per_s"]), peak_rss)


def _wait_for_result(proc: subprocess.Popen, out: Path, log_path: Path, expect: int, timeout: float,
                     progress: Callable[[int, int], None] | None) -> None:
    """Poll (every 0.1 s) until the agent wrote ``out``; report its progress file; fail if it exits or times out."""
    deadline = time.monotonic() + timeout
    progress_file = Path(str(out) + ".progress")
    while not out.exists():
        if progress is not None and progress_file.exists():
            try:
                progress(int(progress_file.read_text() or 0), expect)
            except ValueError:
                pass
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise MetarecError(f"the pass-through child exited with code {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise MetarecError(f"the pass-through child did not read {expect} events in {timeout:g} s")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM ``proc`` (by its pid), SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
