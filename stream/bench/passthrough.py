"""The faust pass-through reference: a bare agent with the worker's settings that only reads and acks.

It is the ceiling of the stream machinery on this machine: the same faust app settings as :func:`stream.runtime.faust.app.build_app`
(raw serializers, ``producer_linger=0``, ``stream_wait_empty``, session timeout, commit interval, same input topic
and partitions, the same ``stream.take_events(batch_size, batch_ms)`` micro-batches), but no parsing, no state table,
no learner and no output: each micro-batch is counted and acked (``take_events`` acks a batch when the next one is
requested), nothing else.

Run as a child process by :func:`run_passthrough` (``python -m stream.bench.passthrough ...``): it counts events
until ``--expect`` have arrived and writes ``{"events", "seconds", "events_per_s", "first_batch_at", "last_at"}`` to
``--out``; the clock starts when the first micro-batch is handed to the agent (the worker's end-to-end clock starts at
the same point: its first batch counted in ``metarec_events_consumed_total``).

Example
-------
>>> run_passthrough("127.0.0.1:9092", "bench-input", expect=100_000, partitions=4)   # doctest: +SKIP
PassthroughResult(events=100000, seconds=12.1, events_per_s=8264.5)
"""
from __future__ import annotations

import argparse
import json
import os
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


@dataclass
class PassthroughResult:
    events: int
    seconds: float
    events_per_s: float
    peak_rss_bytes: int = 0


def _app(args: argparse.Namespace):  # pragma: no cover - runs in the child process
    import faust

    app = faust.App(
        args.group, broker=[f"kafka://{h}" for h in args.bootstrap.split(",")], store="memory://",
        datadir=args.datadir, topic_partitions=args.partitions, producer_linger=0.0,
        broker_session_timeout=args.session_timeout, broker_heartbeat_interval=max(0.1, args.session_timeout / 4),
        broker_commit_interval=args.commit_interval, consumer_auto_offset_reset="earliest", stream_wait_empty=True,
        web_enabled=False, autodiscover=False, key_serializer="raw", value_serializer="raw",
        table_standby_replicas=0)
    source = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state = {"n": 0, "first": None}

    @app.agent(source, name="bench-passthrough")
    async def passthrough(stream):  # noqa: ANN001, ANN202
        async for events in stream.take_events(args.batch_size, args.batch_ms / 1000.0):
            now = time.time()
            if state["first"] is None:
                state["first"] = now
            state["n"] += len(events)
            if now - state.get("reported", 0.0) > 0.5:
                state["reported"] = now
                Path(args.out + ".progress").write_text(str(state["n"]))
            if state["n"] >= args.expect:
                seconds = max(now - state["first"], 1e-9)
                result = {"events": state["n"], "seconds": seconds, "events_per_s": state["n"] / seconds,
                          "first_batch_at": state["first"], "last_at": now, "peak_rss_bytes": _vm_hwm(os.getpid())}
                tmp = args.out + ".tmp"
                Path(tmp).write_text(json.dumps(result))
                os.replace(tmp, args.out)
                state["first"] = float("inf")  # report once
    return app


def _vm_hwm(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of process ``pid`` in bytes (0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the child process
    import faust

    p = argparse.ArgumentParser(prog="python -m stream.bench.passthrough")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-ms", type=float, default=30.0)
    p.add_argument("--session-timeout", type=float, default=3.0)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--datadir", default=tempfile.mkdtemp(prefix="metarec-passthrough-"))
    args = p.parse_args(argv)
    app = _app(args)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def run_passthrough(bootstrap: str, topic: str, expect: int, *, partitions: int = 4, batch_size: int = 500,
                    batch_ms: float = 30.0, session_timeout: float = 3.0, commit_interval: float = 1.0,
                    timeout: float = 1800.0, progress: Callable[[int, int], None] | None = None
                    ) -> PassthroughResult:
    """Run the pass-through agent in a child process (fresh consumer group) until ``expect`` events were read."""
    with tempfile.TemporaryDirectory(prefix="metarec-bench-pt-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "stream.bench.passthrough", "--bootstrap", bootstrap, "--topic", topic,
               "--group", f"bench-passthrough-{uuid.uuid4().hex[:8]}", "--expect", str(expect), "--out", str(out),
               "--partitions", str(partitions), "--batch-size", str(batch_size), "--batch-ms", str(batch_ms),
               "--session-timeout", str(session_timeout), "--commit-interval", str(commit_interval),
               "--datadir", str(Path(tmp) / "data")]
        log_path = Path(tmp) / "child.log"
        with open(log_path, "wb") as log_fh:
            proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
            try:
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
                        raise MetarecError(f"the faust pass-through agent exited with code {proc.returncode}: {tail}")
                    if time.monotonic() > deadline:
                        raise MetarecError(f"the faust pass-through agent did not read {expect} events in {timeout:g} s")
                    time.sleep(0.1)
            finally:
                stop_process(proc)
        data = json.loads(out.read_text())
        if progress is not None:
            progress(expect, expect)
        return PassthroughResult(int(data["events"]), float(data["seconds"]), float(data["events_per_s"]),
                                 int(data.get("peak_rss_bytes", 0)))


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
