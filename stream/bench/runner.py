"""``metarec bench`` end to end: every measurement in one run, the contract JSON, a table.

Order: load the dataset (``--limit`` → its first N events) → the worker checkpoint (cached) → the broker (embedded
unless ``bootstrap`` is given) → pre-load the input topic once (murmur2 partitioner) → the pass-throughs of both
runtimes (faust, confluent-kafka) → one worker on each runtime (end-to-end throughput; durable state size) → the
restore of that state into a fresh worker → one worker with the shared item state → latency at half each runtime's
rate → two workers → adaptation alone (seq, mf, melu) → River full ranking, naive loop, batched learner. Each Kafka
measurement uses a fresh consumer group (and fresh output topics, deleted afterwards). The default runtime
(:data:`stream.worker.config.WorkerConfig.runtime`) gives ``end_to_end`` and ``scale_out``.
"""
from __future__ import annotations

import logging
import math
import os
import platform
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import MetarecError

from stream.bench.onkafka import RUNTIMES, KafkaRuns, measure_on_kafka

if TYPE_CHECKING:
    from stream.bench.adaptation import AdaptationResult
    from stream.bench.references import RateResult

log = logging.getLogger(__name__)

QUICK_EVENTS = 100_000


@dataclass
class BenchConfig:
    """Settings of one benchmark run (every field is a ``metarec bench`` flag)."""

    dataset: str = "ml-1m"
    limit: int | None = None  #: first N events (default: all; 100,000 with ``quick``)
    partitions: int = 4
    quick: bool = False
    checkpoint: Path | None = None  #: worker checkpoint; default: train a quick one (cached)
    bootstrap: str | None = None  #: use this broker instead of starting the embedded one
    store: str = "rocksdb"
    batch_size: int = 500
    batch_seconds: float = 0.03
    latency_seconds: float | None = None  #: paced run length (default 30 s; 10 s with ``quick``)
    reference_events: int | None = None  #: River / naive-loop subset (default 2,000; 500 with ``quick``)
    data_dir: str | None = None
    skip_scale_out: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 100:
            raise MetarecError(f"--limit must be at least 100 events, got {self.limit}")
        if self.partitions < 2:
            raise MetarecError(f"--partitions must be >= 2 (two workers need a partition each), got {self.partitions}")
        if self.batch_size < 1 or not self.batch_seconds > 0:
            raise MetarecError("--batch-size must be >= 1 and --batch-seconds > 0")
        if self.store not in ("rocksdb", "memory"):
            raise MetarecError(f"--store must be rocksdb or memory, got {self.store!r}")
        if self.latency_seconds is not None and not self.latency_seconds > 0:
            raise MetarecError("--latency-seconds must be > 0")
        if self.checkpoint is not None:
            self.checkpoint = Path(self.checkpoint)

    @property
    def events_limit(self) -> int | None:
        return self.limit if self.limit is not None else (QUICK_EVENTS if self.quick else None)

    @property
    def paced_seconds(self) -> float:
        return self.latency_seconds or (10.0 if self.quick else 30.0)

    @property
    def subset(self) -> int:
        return self.reference_events or (500 if self.quick else 2_000)


Stage = Callable[[str, int | None], Callable[[int, int], None]]


def _null_stage(_name: str, _total: int | None) -> Callable[[int, int], None]:
    return lambda _done, _total: None


class _StageTimer:
    """Wraps a :data:`Stage` callback and records each stage's wall time (until the next stage starts)."""

    def __init__(self, outer: Stage) -> None:
        self.outer = outer
        self.seconds: dict[str, float] = {}
        self.current: str | None = None
        self.since = time.perf_counter()

    def __call__(self, name: str, total: int | None) -> Callable[[int, int], None]:
        now = time.perf_counter()
        if self.current is not None:
            self.seconds[self.current] = now - self.since
        self.current, self.since = name, now
        return self.outer(name, total)

    def finish(self) -> dict[str, float]:
        """Close the last stage; every stage's seconds."""
        self.seconds[str(self.current)] = time.perf_counter() - self.since
        return self.seconds


@dataclass
class _LearnerRuns:
    """The measurements without Kafka (see :func:`_measure_learning`)."""

    adaptation: dict[str, AdaptationResult]  #: model → its adaptation result
    river: RateResult
    naive: RateResult
    batched: RateResult


def run_bench(cfg: BenchConfig, stage: Stage = _null_stage) -> dict[str, Any]:
    """Run every measurement; return the contract JSON (plus ``config``, ``machine``, ``details``, ``targets``).

    ``stage(name, total)`` is called when a stage starts and returns its ``progress(done, total)`` callback.
    """
    from adapters.data.datasets import load_dataset
    from stream.bench.inputs import bench_checkpoint, cached_checkpoint
    from stream.bench.report import check_targets
    from stream.bench.workers import WorkerSettings

    load_before = list(os.getloadavg())
    started = time.time()
    timer = _StageTimer(stage)
    p = timer("load dataset", None)
    full = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    ds = full.head(min(cfg.events_limit, len(full))) if cfg.events_limit is not None else full
    p(1, 1)
    ck_dir = cfg.checkpoint or cached_checkpoint(full, cfg.data_dir)
    if ck_dir is None:
        p = timer("train the worker's checkpoint (once, cached)", None)
        ck_dir = bench_checkpoint(ds, cfg.data_dir, on_step=lambda e, s, total, _l: p(s + 1, total))
    settings = WorkerSettings(checkpoint=ck_dir, partitions=cfg.partitions, batch_size=cfg.batch_size,
                              batch_seconds=cfg.batch_seconds, store=cfg.store)
    details: dict[str, Any] = {}
    kafka = measure_on_kafka(cfg, ds, settings, timer, details)
    learning = _measure_learning(cfg, ds, ck_dir, timer, details)
    details["stage_seconds"] = timer.finish()
    result = _contract(cfg, len(ds), ck_dir, kafka, learning)
    items = details["item_state"]
    result["item_state"] = {  # the shared item state's cost: end to end, and per event without Kafka
        **kafka.item_state_figures(),
        "owner_us_per_event": items["owner_us_per_event"], "us_per_event": items["us_per_event"],
        "bytes_per_event": items["bytes_per_event"],
        "messages_per_event": items["messages_per_event"], "rows_per_event": items["rows_per_event"]}
    result.update(machine=_machine(load_before), seconds=time.time() - started, details=details)
    result["targets"] = check_targets(result)
    return result


def _measure_learning(cfg: BenchConfig, ds: Any, ck_dir: Path, stage: Stage,
                      details: dict[str, Any]) -> _LearnerRuns:
    """Without Kafka: adaptation alone (seq, mf, melu), River full ranking, the naive loop, the batched learner."""
    from stream.bench.adaptation import measure_adaptation
    from stream.bench.itemstate import measure_item_state
    from stream.bench.references import batched_learner, naive_loop, river_full_ranking

    adapt = {}
    for model in ("seq", "mf", "melu"):
        a, details[f"adaptation_{model}"] = best_of_threads(lambda m=model: measure_adaptation(
            ds, m, max_seconds=5.0 if cfg.quick else 20.0, max_users=4_096 if cfg.quick else 20_000,
            progress=stage(f"adaptation {m}", None)), "users_per_s")
        adapt[model] = a
    adapt["seq_bayes"], details["adaptation_seq_bayes"] = best_of_threads(lambda: measure_adaptation(
        ds, "seq", max_seconds=5.0 if cfg.quick else 20.0, max_users=4_096 if cfg.quick else 20_000,
        progress=stage("adaptation seq, bayes task learner", None), task_learner="bayes"), "users_per_s")
    river = river_full_ranking(ds, cfg.subset, progress=stage("River full ranking", cfg.subset))
    naive, details["naive_loop"] = best_of_threads(
        lambda: naive_loop(ds, ck_dir, cfg.subset, progress=stage("naive loop", cfg.subset)), "events_per_s")
    n_batched = min(len(ds), 10 * cfg.subset)
    batched, details["batched_learner"] = best_of_threads(
        lambda: batched_learner(ds, ck_dir, n_batched, cfg.batch_size,
                                progress=stage("learner alone, batched", n_batched)), "events_per_s")
    details["river"] = asdict(river)
    items = measure_item_state(ds, ck_dir, n_batched, cfg.batch_size, cfg.partitions,
                               progress=stage("shared item state, per event", n_batched))
    details["item_state"] = {**asdict(items), "owner_us_per_event": items.owner_us_per_event}
    return _LearnerRuns(adapt, river, naive, batched)


def _contract(cfg: BenchConfig, n: int, ck_dir: Path, kafka: KafkaRuns, learning: _LearnerRuns) -> dict[str, Any]:
    """The contract JSON's figures and the run's ``config``."""
    one, lat, two = kafka.one, kafka.latency, kafka.two
    rss = kafka.peak_rss()
    return {
        "end_to_end": {"events": n, "events_per_s": one.events_per_s, "latency_p50_s": lat.latency_p50_s,
                       "latency_p99_s": lat.latency_p99_s, "runtime": kafka.default},
        "adaptation": {m: {"users_per_s": a.users_per_s} for m, a in learning.adaptation.items()},
        "scale_out": {"one_process_events_per_s": one.events_per_s,
                      "two_processes_events_per_s": two.events_per_s if two else float("nan")},
        "runtimes": {rt: {"events_per_s": kafka.runs[rt].events_per_s,
                          "latency_p50_s": kafka.latencies[rt].latency_p50_s,
                          "latency_p99_s": kafka.latencies[rt].latency_p99_s} for rt in RUNTIMES},
        "restore": {"records": kafka.restore.records, "records_per_s": kafka.restore.records_per_s},
        "references": {"faust_passthrough_events_per_s": kafka.passthrough["faust"].events_per_s,
                       "kafka_passthrough_events_per_s": kafka.passthrough["kafka"].events_per_s,
                       "river_full_ranking_events_per_s": learning.river.events_per_s,
                       "naive_loop_events_per_s": learning.naive.events_per_s,
                       "batched_learner_events_per_s": learning.batched.events_per_s},
        "peak_rss_bytes": int(max(rss)) if rss else 0,
        "state_bytes_per_user": float(one.state_bytes_per_user) if one.state_bytes_per_user else float("nan"),
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                   "events": n, "checkpoint": str(ck_dir), "paced_seconds": cfg.paced_seconds,
                   "reference_events": cfg.subset},
    }


def _machine(load_before: list[float]) -> dict[str, Any]:
    """CPUs, load average before and now, Python and torch versions, torch threads, platform."""
    import torch

    return {"cpus": os.cpu_count(), "load_before": load_before, "load_after": list(os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def best_of_threads(measure: Callable[[], Any], rate: str) -> tuple[Any, dict[str, Any]]:
    """Run ``measure`` with torch's default intra-op thread count and with one thread; keep the faster.

    On this 2-core machine two intra-op threads lose badly to one as soon as anything else runs (OpenMP
    threads spin for a core that is busy), so both are measured and reported (``by_threads``).
    """
    import torch

    default = torch.get_num_threads()
    runs: dict[int, Any] = {}
    try:
        for threads in dict.fromkeys((default, 1)):
            torch.set_num_threads(threads)
            runs[threads] = measure()
    finally:
        torch.set_num_threads(default)
    best_threads = max(runs, key=lambda t: getattr(runs[t], rate))
    best = runs[best_threads]
    return best, {**asdict(best), "torch_threads": best_threads,
                  "by_threads": {str(t): getattr(r, rate) for t, r in runs.items()}}


def finite_json(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
