"""Helpers for the worker tests: checkpoints, a worker subprocess, reading topics, scraping /metrics.

Workers run as real subprocesses (``python -m stream worker``) against the session's embedded broker.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def make_checkpoint(directory: Path, item_ids: list[str], seed: int, dim: int = 16) -> str:
    """A real (randomly initialised, untrained) MF checkpoint over ``item_ids``; returns its version."""
    import torch

    from adapters.meta.checkpoint import Checkpoint
    from adapters.models import FeatureTables, build_model

    torch.manual_seed(seed)
    n = len(item_ids) + 1
    model = build_model("mf", n_items=n, tables=FeatureTables.empty(n), config={"dim": dim, "rating_dim": 4})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ck = Checkpoint.from_adapter(model, item_ids=["<unk>", *item_ids], meta="fomaml")
    ck.save(directory)
    return ck.version


def ml100k(limit: int) -> Any:
    from adapters.data.datasets import load_dataset

    ds = load_dataset("ml-100k")
    return ds, [(str(ds.user_ids[i]), str(ds.item_ids[i]), float(ds.ratings[i]), float(ds.timestamps[i]))
                for i in range(limit)]


def free_port() -> int:
    from stream.kafka.broker import free_port as _free

    return _free()


@dataclass
class Worker:
    """A ``metarec worker`` subprocess."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics")[1])

    def value(self, name: str, default: float = 0.0) -> float:
        return self.metrics().get(name, default)

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited early ({self.proc.returncode}):\n{self.tail()}"
            try:
                code, body = self.get("/readyz")
                if code == 200:
                    return json.loads(body)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def wait_for(self, predicate: Callable[[dict[str, float]], bool], timeout: float = 60.0,
                 what: str = "condition") -> dict[str, float]:
        deadline = time.monotonic() + timeout
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited ({self.proc.returncode}):\n{self.tail()}"
            m = self.metrics()
            if predicate(m):
                return m
            time.sleep(0.2)
        raise AssertionError(f"timeout waiting for {what}; last metrics {relevant(m)}\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; the exit code and seconds to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str], step: float = 0.5,
               alive: Iterable[Worker] = ()) -> Any:
    """Poll ``predicate`` every ``step`` seconds until it returns a true value (returned); fail when one of the
    ``alive`` workers exits or after ``timeout`` seconds (with ``what``, called if callable to describe the state
    at the timeout, and the tail of their logs)."""
    alive = list(alive)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in alive:
            assert w.proc.poll() is None, f"worker exited ({w.proc.returncode}):\n{w.tail()}"
        value = predicate()
        if value:
            return value
        time.sleep(step)
    said = what() if callable(what) else what
    raise AssertionError(f"timeout waiting for {said}\n" + "\n".join(w.tail(15) for w in alive))


def start_worker(bootstrap: str, checkpoint: Path, workdir: Path, *, group: str, input_topic: str,
                 output_topic: str, extra: Iterable[str] = (), name: str = "w", state: str | None = None,
                 runtime: str | None = None) -> Worker:
    """A ``metarec worker`` subprocess (``runtime``: ``--runtime``, default the worker's own default)."""
    port = free_port()
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "stream", os.environ.get("METAREC_TEST_WORKER_VERBOSITY", "-v"), "worker", "--bootstrap", bootstrap, "--checkpoint", str(checkpoint),
           "--group", group, "--input", input_topic, "--output", output_topic, "--metrics-port", str(port),
           "--data-dir", str(workdir / f"{state or name}-data"), "--session-timeout", "2", "--partitions", "4",
           "--batch-seconds", "0.05", *(["--runtime", runtime] if runtime else []), *extra]
    return spawn(cmd, port, log)


def spawn(cmd: list[str], port: int, log: Path) -> Worker:
    """Start ``cmd`` (a ``metarec`` process serving HTTP on ``port``) with this checkout's code, output to ``log``."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    return Worker(proc, port, log)


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of a Prometheus text exposition (labels as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def relevant(m: dict[str, float]) -> dict[str, float]:
    keys = ("metarec_events_consumed_total", "metarec_recommendations_published_total", "metarec_batches_total")
    return {k: v for k, v in m.items() if k in keys}


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]],
            timestamp_ms: int | None = None, overrides: dict[str, Any] | None = None) -> int:
    """Produce ``(key, value)`` pairs (murmur2 partitioning, like faust); returns how many."""
    from confluent_kafka import Producer

    from stream.kafka.client import producer_config
    from stream.kafka.client import produce as kafka_produce

    p = Producer(producer_config(bootstrap, overrides))
    n = 0
    for key, value in messages:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        kafka_produce(p, topic, **kwargs)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return n


def event_bytes(user: str, item: str, rating: float | None = None, ts: float | None = None) -> bytes:
    d: dict[str, Any] = {"user_id": user, "item_id": item}
    if rating is not None and rating == rating:
        d["rating"] = rating
    if ts is not None:
        d["timestamp"] = ts
    return json.dumps(d).encode()


def read_topic(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 20.0,
               idle: float = 1.5) -> list[Any]:
    """Every message of ``topic`` (from the start); stops at ``expect`` messages or after ``idle`` s of silence."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from stream.kafka.client import consumer_config

    c = Consumer(consumer_config(bootstrap))
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])  # no group: fast
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                if out and time.monotonic() - last > idle and expect is None:
                    break
                continue
            if msg.error():
                continue
            out.append(msg)
            last = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
    finally:
        c.close()
    return out


def latest_lists(messages: list[Any]) -> dict[str, dict]:
    """Per user, the list with the highest ``as_of`` offset (then the latest generated)."""
    best: dict[str, dict] = {}
    for m in messages:
        v = json.loads(m.value())
        assert m.key().decode() == v["user_id"]
        cur = best.get(v["user_id"])
        if cur is None or (v["as_of"]["offset"], v["generated_at"]) >= (cur["as_of"]["offset"], cur["generated_at"]):
            best[v["user_id"]] = v
    return best


def input_positions(messages: list[Any]) -> dict[str, list[tuple[int, int, str]]]:
    """Per user (from valid input messages), ``(partition, offset, item)`` in offset order."""
    from stream.kafka.schema import InvalidEvent, parse_event

    out: dict[str, list[tuple[int, int, str]]] = {}
    for m in messages:
        try:
            ev = parse_event(m.value())
        except InvalidEvent:  # malformed messages are not events
            continue
        out.setdefault(ev.user_id, []).append((m.partition(), m.offset(), ev.item_id))
    for v in out.values():
        v.sort()
    return out


def read_to_end(bootstrap: str, topic: str, timeout: float = 90.0) -> list[Any]:
    """Every message of ``topic`` up to each partition's end at the time of the call (end-of-partition events: exact
    on the embedded broker, whose high watermark undercounts multi-record batches; no idle cut-off, so a slow broker
    cannot truncate the read)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from stream.kafka.client import consumer_config

    c = Consumer(consumer_config(bootstrap, enable_partition_eof=True))
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        todo = set(parts)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(msg.partition())
                continue
            out.append(msg)
        assert not todo, f"{topic}: partitions {sorted(todo)} not read to their end within {timeout} s"
        return out
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset of every partition of ``topic`` (0 where nothing is committed)."""
    from confluent_kafka import Consumer, TopicPartition

    from stream.kafka.client import consumer_config

    c = Consumer(consumer_config(bootstrap, group_id=group))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    finally:
        c.close()
    return {t.partition: max(0, t.offset) for t in got}
