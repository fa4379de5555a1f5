"""End-to-end measurements of real ``metarec worker`` processes on the embedded broker.

Throughput (:func:`measure_throughput`)
    One or more workers in one fresh consumer group read ``events`` events from the pre-loaded input topic and
    publish one refreshed list per touched user per micro-batch to a fresh output topic. The clock starts at the
    first ``/metrics`` poll (every 50 ms) at which every worker owns its partitions and at least one micro-batch has
    been counted (``metarec_events_consumed_total`` > 0); the events already counted then are subtracted. It stops
    at the ``generated_at`` of the last list on the output topic, read once every event has been published (the
    workers' ``metarec_event_to_publish_seconds_count`` reached ``events``).
    ``events_per_s = (events − counted at start) / (last generated_at − start)``. With two workers this is the
    rate once both own their partitions (the rebalance at start-up is not timed).

Latency (:func:`measure_latency`)
    A fresh input topic; one worker, ready and assigned; then a paced producer sends dataset events at a fixed
    rate for a fixed time, each message stamped with its send time (record timestamp = wall clock at ``produce``).
    A consumer tails the output topic. For every event sent, its list is the first list of its user with
    ``as_of`` (same partition) at or after its offset. Reported per event (events of the first ``warmup_s``
    seconds excluded):

    The run sends ``rate × seconds`` events (fewer when the dataset is shorter; the warm-up is then at most the first
    quarter of the sending time).

    * ``latency_*_s``: list received by a downstream consumer − event send time (the figure in the JSON);
    * ``latency_generated_*_s``: the list's ``generated_at`` (worker hands it to its producer) − event send time.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.errors import MetarecError
from stream.bench.topics import delete_topics, latest_value_sizes, list_stats
from stream.bench.workers import WorkerProcess, WorkerSettings, histogram_buckets
from stream.kafka.schema import dlq_topic
from stream.worker.state_layout import changelog_topic

Progress = Callable[[int, int], None]

_CONSUMED = "metarec_events_consumed_total"
_PUBLISHED_EVENTS = "metarec_event_to_publish_seconds_count"
_INVALID = "metarec_events_invalid_total"


@dataclass
class ThroughputResult:
    workers: int
    events: int
    events_timed: int
    seconds: float
    events_per_s: float
    lists: int
    batches: int
    adapt_seconds: float  #: sum over workers of the batched adaptation calls (metarec_adaptation_seconds_sum)
    peak_rss_bytes: list[int]
    state_bytes_per_user: float | None = None
    users_in_state: int | None = None
    changelog: str = ""
    group: str = ""

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("changelog", "group")}


def _worker_sum(metrics: list[dict[str, float]], name: str) -> float:
    return sum(m.get(name, 0.0) for m in metrics)


def measure_throughput(bootstrap: str, settings: WorkerSettings, input_topic: str, events: int, n_workers: int = 1,
                       *, progress: Progress | None = None, state_size: bool = False, timeout: float = 3600.0,
                       cleanup: bool = True) -> ThroughputResult:
    """Drain ``events`` pre-loaded events through ``n_workers`` worker processes (see the module docstring)."""
    tag = uuid.uuid4().hex[:8]
    group, output = f"bench-e2e-{n_workers}p-{tag}", f"bench-out-{n_workers}p-{tag}"
    workers = [WorkerProcess(bootstrap, settings, input_topic, output, group) for _ in range(n_workers)]
    t_start: float | None = None
    base = 0.0
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise MetarecError(f"{n_workers} worker(s) did not process {events} events in {timeout:g} s")
            now = time.time()
            metrics = [w.metrics() if w.url or _try_url(w) else {} for w in workers]
            done = _worker_sum(metrics, _PUBLISHED_EVENTS) + _worker_sum(metrics, _INVALID)
            consumed = _worker_sum(metrics, _CONSUMED)
            if t_start is None:
                owned = [m.get("metarec_assigned_partitions", 0.0) for m in metrics]
                if consumed > 0 and (all(o > 0 for o in owned) or done >= events):
                    t_start, base = now, consumed
            if progress is not None:
                progress(int(min(done, events)), events)
            for w in workers:
                w.sample_rss()
            if done >= events:
                break
            time.sleep(0.05 if t_start is None else 0.5)
        final = [w.metrics() for w in workers]
        for w in workers:
            w.sample_rss()
        stats = list_stats(bootstrap, output, tail=5_000)
        assert t_start is not None
        seconds = max(stats.last_generated_at - t_start, 1e-9)
        timed = max(events - int(base), 1)
        result = ThroughputResult(
            workers=n_workers, events=events, events_timed=timed, seconds=seconds, events_per_s=timed / seconds,
            lists=int(_worker_sum(final, "metarec_recommendations_published_total")),
            batches=int(_worker_sum(final, "metarec_batches_total")),
            adapt_seconds=_worker_sum(final, "metarec_adaptation_seconds_sum"),
            peak_rss_bytes=[w.peak_rss_bytes for w in workers], changelog=changelog_topic(group), group=group)
    finally:
        for w in workers:
            w.stop()
    if state_size:
        sizes = latest_value_sizes(bootstrap, result.changelog)
        if sizes:
            result.state_bytes_per_user = float(np.mean(list(sizes.values())))
            result.users_in_state = len(sizes)
    if cleanup:
        delete_topics(bootstrap, [output, result.changelog])
    return result


def _try_url(w: WorkerProcess) -> bool:
    """True once the worker printed its metrics address (non-blocking)."""
    try:
        w.wait_url(timeout=0.0)
    except MetarecError:
        if w.proc is not None and w.proc.poll() is not None:
            raise
        return False
    return True


# ---- latency at a fixed offered rate ----------------------------------------------------------------------

@dataclass
class LatencyResult:
    offered_rate: float
    sent: int
    send_seconds: float
    measured: int  #: events after the warm-up with a list found
    latency_p50_s: float
    latency_p99_s: float
    latency_generated_p50_s: float
    latency_generated_p99_s: float
    latency_max_s: float
    worker_histogram_p99_le_s: float | None
    missing: int  #: events (after warm-up) whose list never arrived
    peak_rss_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _ListReader(threading.Thread):
    """Tails an output topic, keeps (user → sorted [(partition, as_of offset, generated_at, received_at)])."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="bench-list-reader")
        from confluent_kafka import Consumer

        from stream.kafka.client import consumer_config

        self.consumer = Consumer(consumer_config(bootstrap, fetch_wait_max_ms=5, fetch_min_bytes=1))
        self.topic = topic
        self.lists: dict[str, list[tuple[int, int, float, float]]] = {}
        self.count = 0
        self.stop_flag = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        from confluent_kafka import TopicPartition

        try:
            meta = self.consumer.list_topics(self.topic, timeout=10)
            parts = sorted(meta.topics[self.topic].partitions)
            self.consumer.assign([TopicPartition(self.topic, p, 0) for p in parts])
            while not self.stop_flag.is_set():
                msgs = self.consumer.consume(1000, timeout=0.02)
                received = time.time()
                for m in msgs:
                    if m.error() is not None:
                        continue
                    v = json.loads(m.value())
                    a = v["as_of"]
                    self.lists.setdefault(v["user_id"], []).append(
                        (int(a["partition"]), int(a["offset"]), float(v["generated_at"]), received))
                    self.count += 1
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.error = str(exc)
        finally:
            self.consumer.close()


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def measure_latency(bootstrap: str, settings: WorkerSettings, dataset: Any, rate: float, seconds: float, *,
                    warmup_s: float = 2.0, progress: Progress | None = None, cleanup: bool = True) -> LatencyResult:
    """Event → list latency at an offered rate of ``rate`` events/s for ``seconds`` (see the module docstring)."""
    from stream.kafka.client import ensure_topics

    if not rate > 0:
        raise MetarecError(f"offered rate must be > 0, got {rate}")
    tag = uuid.uuid4().hex[:8]
    topic, output, group = f"bench-lat-in-{tag}", f"bench-lat-out-{tag}", f"bench-lat-{tag}"
    ensure_topics(bootstrap, {topic: (settings.partitions, None)})
    n = min(len(dataset), max(1, int(rate * seconds)))
    worker = WorkerProcess(bootstrap, settings, topic, output, group).start()
    reader: _ListReader | None = None
    try:
        worker.wait_ready()
        _wait_assigned(worker, settings.partitions)
        reader = _ListReader(bootstrap, output)
        reader.start()
        paced = _send_paced(bootstrap, topic, dataset, n, rate, progress)
        _wait_published(worker, len(paced.sent))
        time.sleep(1.0)  # the reader's last fetch
        worker.sample_rss()
        hist = histogram_buckets(worker.metrics_text(), "metarec_event_to_publish_seconds")
    finally:
        if reader is not None:
            reader.stop_flag.set()
            reader.join(timeout=10)
        worker.stop()
    if reader.error:
        raise MetarecError(f"reading the output topic failed: {reader.error}")
    if progress is not None:
        progress(n, n)
    warmup = min(warmup_s, 0.25 * paced.seconds)  # a short run (small dataset) keeps 3/4 of its events
    r, g, missing = _match_lists(paced, reader.lists, warmup)
    if cleanup:
        delete_topics(bootstrap, [topic, output, changelog_topic(group), dlq_topic(topic)])
    return LatencyResult(
        offered_rate=rate, sent=len(paced.sent), send_seconds=paced.seconds, measured=len(r),
        latency_p50_s=_percentile(r, 50), latency_p99_s=_percentile(r, 99),
        latency_generated_p50_s=_percentile(g, 50), latency_generated_p99_s=_percentile(g, 99),
        latency_max_s=float(r.max()) if len(r) else float("nan"), worker_histogram_p99_le_s=_hist_quantile(hist, 0.99),
        missing=missing, peak_rss_bytes=worker.peak_rss_bytes)


@dataclass
class _PacedRun:
    """What the paced producer sent: ``(user, partition, offset, send time)`` per delivered event."""

    sent: list[tuple[str, int, int, float]]
    t0: float  #: wall clock when sending started
    seconds: float  #: until every event was delivered (flush included)


def _send_paced(bootstrap: str, topic: str, dataset: Any, n: int, rate: float,
                progress: Progress | None) -> _PacedRun:
    """Send the first ``n`` events of ``dataset`` to ``topic`` at ``rate`` events/s, each stamped with its send time."""
    from confluent_kafka import Producer

    from stream.kafka.client import producer_config

    users, items, ratings = dataset.user_ids[:n], dataset.item_ids[:n], dataset.ratings[:n]
    stamps = dataset.timestamps[:n]
    sent: list[tuple[str, int, int, float]] = []  # user, partition, offset, send time
    failures: list[str] = []
    # librdkafka's default linger (5 ms), inside the measured latency (send time is taken before produce): with
    # linger 0 every paced event was its own produce request, and the broker spent more CPU on them than the worker
    producer = Producer(producer_config(bootstrap, linger_ms=5, batch_num_messages=1000))
    t0 = time.time()
    for i in range(n):
        due = t0 + i / rate
        now = time.time()
        if due > now:
            producer.poll(0)
            time.sleep(due - now)
        user = str(users[i])
        value = {"user_id": user, "item_id": str(items[i]), "timestamp": float(stamps[i])}
        if ratings[i] == ratings[i]:
            value["rating"] = float(ratings[i])
        send = time.time()

        def delivered(err: Any, msg: Any, user: str = user, send: float = send) -> None:
            if err is not None:
                failures.append(err.str())
            else:
                sent.append((user, msg.partition(), msg.offset(), send))

        producer.produce(topic, key=user.encode(), value=json.dumps(value).encode(), timestamp=int(send * 1000),
                         on_delivery=delivered)
        if progress is not None and i % 200 == 0:
            progress(i, n)
    producer.flush(30)
    seconds = time.time() - t0
    if failures:
        raise MetarecError(f"{len(failures)} paced events were not delivered: {failures[0]}")
    return _PacedRun(sent, t0, seconds)


def _wait_published(worker: WorkerProcess, events: int, timeout: float = 120.0) -> None:
    """Wait until the worker has published the lists of ``events`` events."""
    deadline = time.monotonic() + timeout
    while worker.metrics().get(_PUBLISHED_EVENTS, 0.0) < events:
        if time.monotonic() > deadline:
            raise MetarecError(f"the worker did not publish the lists of every paced event within {timeout:g} s")
        time.sleep(0.2)


def _match_lists(paced: _PacedRun, lists: dict[str, list[tuple[int, int, float, float]]],
                 warmup: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Latencies (received − sent, generated − sent) of the events sent after ``warmup`` s, and how many of them
    have no list: an event's list is the first list of its user whose ``as_of`` (same partition) is ≥ its offset."""
    recv, gen, missing = [], [], 0
    index = {u: sorted(v, key=lambda x: (x[0], x[1])) for u, v in lists.items()}
    keys = {u: [(x[0], x[1]) for x in v] for u, v in index.items()}
    for user, part, off, send in paced.sent:
        if send - paced.t0 < warmup:
            continue
        found = index.get(user)
        j = bisect_left(keys[user], (part, off)) if found else 0
        if not found or j >= len(found) or found[j][0] != part:
            missing += 1
            continue
        gen.append(found[j][2] - send)
        recv.append(found[j][3] - send)
    return np.asarray(recv), np.asarray(gen), missing


def _hist_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile ``q`` (None for an empty histogram)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return None


def _wait_assigned(worker: WorkerProcess, partitions: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while worker.metrics().get("metarec_assigned_partitions", 0.0) < partitions:
        if time.monotonic() > deadline:
            raise MetarecError(f"worker did not own its {partitions} partitions within {timeout:g} s")
        time.sleep(0.1)
