"""The benchmark's measurements on the broker (:func:`measure_on_kafka`), in order, each with a fresh consumer group:

1. pre-load the input topic once (murmur2 partitioner);
2. the pass-through of each runtime (:mod:`stream.bench.passthrough`): the ceiling of its stream machinery;
3. one worker on each runtime, end to end (:func:`stream.bench.endtoend.measure_throughput`), the durable state size;
4. the restore of the kafka worker's state into a fresh worker (:mod:`stream.bench.restore`);
5. the event → list latency at half each runtime's rate, and on the default runtime with the shared item state at
   the same rate as without it;
6. two workers on the default runtime, without and with the shared item state (``--item-state shared``, what
   docker-compose and Kubernetes deploy).

The default runtime (:data:`stream.worker.config.WorkerConfig.runtime`) with the worker's default flags gives the
contract's ``end_to_end`` and ``scale_out``.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Any

from stream.bench.endtoend import LatencyResult, ThroughputResult, measure_latency, measure_throughput
from stream.bench.passthrough import PassthroughResult, run_passthrough
from stream.bench.restore import RestoreResult, measure_restore
from stream.bench.workers import WorkerSettings
from stream.worker.config import WorkerConfig

RUNTIMES = ("kafka", "faust")  #: both measured in every run
DEFAULT_RUNTIME = WorkerConfig.runtime
SHARED = ("--item-state", "shared")

Stage = Callable[[str, int | None], Callable[[int, int], None]]


@dataclass
class KafkaRuns:
    """The measurements on the broker (see the module docstring)."""

    passthrough: dict[str, PassthroughResult]  #: runtime → its pass-through
    runs: dict[str, ThroughputResult]  #: runtime → end to end, one worker
    latencies: dict[str, LatencyResult]  #: runtime → latency at half its rate; "shared": default runtime, shared items
    two: ThroughputResult | None  #: two workers, default runtime (None with ``skip_scale_out``)
    two_shared: ThroughputResult | None  #: the same with the shared item state
    restore: RestoreResult
    default: str = DEFAULT_RUNTIME

    @property
    def one(self) -> ThroughputResult:
        return self.runs[self.default]

    @property
    def latency(self) -> LatencyResult:
        return self.latencies[self.default]

    def peak_rss(self) -> list[int]:
        runs = [*self.runs.values(), *(x for x in (self.two, self.two_shared) if x is not None)]
        return [x for x in [*(b for r in runs for b in r.peak_rss_bytes),
                            *(x.peak_rss_bytes for x in self.latencies.values())] if x]

    def item_state_figures(self) -> dict[str, float]:
        """The shared item state against the same without it (two workers, and latency at the same rate)."""
        nan = float("nan")
        two, shared = self.two, self.two_shared
        lat, lat_shared = self.latencies[self.default], self.latencies.get("shared")
        return {
            "two_workers_events_per_s": two.events_per_s if two else nan,
            "two_workers_shared_events_per_s": shared.events_per_s if shared else nan,
            "latency_p99_s": lat.latency_p99_s,
            "latency_p99_shared_s": lat_shared.latency_p99_s if lat_shared else nan,
            "peak_rss_bytes": float(max(two.peak_rss_bytes)) if two else nan,
            "peak_rss_shared_bytes": float(max(shared.peak_rss_bytes)) if shared else nan}


def measure_on_kafka(cfg: Any, ds: Any, settings: WorkerSettings, stage: Stage, details: dict[str, Any]) -> KafkaRuns:
    """Every measurement on the broker (embedded unless ``cfg.bootstrap``); each adds its entry to ``details``."""
    from stream.bench.inputs import preload
    from stream.bench.topics import delete_topics

    n = len(ds)
    with ExitStack() as stack:
        bootstrap = cfg.bootstrap
        if bootstrap is None:
            from stream.kafka.broker import EmbeddedBroker

            bootstrap = stack.enter_context(EmbeddedBroker(host="127.0.0.1")).bootstrap
        topic = f"bench-input-{uuid.uuid4().hex[:8]}"
        p = stage(f"pre-load {n:,} events into {topic}", n)
        sent = [0]

        def advance(k: int) -> None:
            sent[0] += k
            p(sent[0], n)

        t = time.perf_counter()
        preload(ds, bootstrap, topic, cfg.partitions, progress=advance)
        details["preload_seconds"] = time.perf_counter() - t
        passthrough = {rt: run_passthrough(bootstrap, topic, n, partitions=cfg.partitions, batch_size=cfg.batch_size,
                                           batch_seconds=cfg.batch_seconds, progress=stage(f"{rt} pass-through", n), runtime=rt)
                       for rt in RUNTIMES}
        details.update({f"passthrough_{rt}": asdict(r) for rt, r in passthrough.items()})
        delete_topics(bootstrap, [f"{topic}-passthrough-out"])
        runs, restore = _one_worker_each(bootstrap, settings, topic, n, stage, details)
        latencies = _latencies(bootstrap, settings, ds, runs, cfg.paced_seconds, stage, details)
        two = two_shared = None
        if not cfg.skip_scale_out:
            default = replace(settings, runtime=DEFAULT_RUNTIME)
            two = measure_throughput(bootstrap, default, topic, n, 2,
                                     progress=stage(f"end-to-end, 2 workers, runtime {DEFAULT_RUNTIME}", n))
            details["two_workers"] = two.summary()
            two_shared = measure_throughput(bootstrap, replace(default, extra=[*default.extra, *SHARED]), topic, n, 2,
                                            progress=stage("end-to-end, 2 workers, --item-state shared", n))
            details["two_workers_shared_items"] = two_shared.summary()
    return KafkaRuns(passthrough, runs, latencies, two, two_shared, restore)


def _one_worker_each(bootstrap: str, settings: WorkerSettings, topic: str, n: int, stage: Stage,
                     details: dict[str, Any]) -> tuple[dict[str, ThroughputResult], RestoreResult]:
    """One worker per runtime; the kafka worker's state restored into a fresh worker."""
    from stream.bench.topics import delete_topics

    runs = {}
    for rt in RUNTIMES:
        runs[rt] = measure_throughput(bootstrap, replace(settings, runtime=rt), topic, n, 1,
                                      progress=stage(f"end-to-end, 1 worker, runtime {rt}", n),
                                      state_size=rt == DEFAULT_RUNTIME, cleanup=rt != "kafka")
        details[f"one_worker_{rt}"] = runs[rt].summary()
    kept = runs["kafka"]
    stage(f"restore {kept.changelog} into a fresh worker", None)
    restore = measure_restore(bootstrap, settings, topic, f"bench-restore-out-{uuid.uuid4().hex[:8]}", kept.group)
    details["restore"] = asdict(restore)
    delete_topics(bootstrap, [kept.changelog])
    return runs, restore


def _latencies(bootstrap: str, settings: WorkerSettings, ds: Any, runs: dict[str, ThroughputResult], seconds: float,
               stage: Stage, details: dict[str, Any]) -> dict[str, LatencyResult]:
    """Latency at half each runtime's rate; and on the default runtime with the shared item state, same rate."""
    out: dict[str, LatencyResult] = {}
    for rt in RUNTIMES:
        rate = 0.5 * runs[rt].events_per_s
        out[rt] = measure_latency(bootstrap, replace(settings, runtime=rt), ds, rate, seconds,
                                  progress=stage(f"latency at {rate:,.0f} events/s, runtime {rt}", None))
        details[f"latency_{rt}"] = asdict(out[rt])
    rate = 0.5 * runs[DEFAULT_RUNTIME].events_per_s
    shared = replace(settings, runtime=DEFAULT_RUNTIME, extra=[*settings.extra, *SHARED])
    out["shared"] = measure_latency(bootstrap, shared, ds, rate, seconds,
                                    progress=stage(f"latency at {rate:,.0f} events/s, --item-state shared", None))
    details["latency_shared_items"] = asdict(out["shared"])
    return out
