"""The stream worker process: load the model, create the topics, serve HTTP, run the faust app until SIGTERM.

``metarec worker`` (:mod:`stream.cli.commands.worker`) builds a :class:`WorkerConfig` and calls :func:`run_worker`.
The processing itself is in :mod:`stream.runtime.faust.app` (faust wiring) and :mod:`stream.worker.core` (one micro-batch).

Shutdown (SIGTERM or Ctrl-C): the faust worker stops fetching, lets the agent finish the micro-batch in flight
(its lists are published and delivered), flushes the producer, commits the offsets of everything processed and
exits 0 — in well under 10 s. Offsets are only committed for batches whose output was delivered: after a crash
the un-committed events are consumed again (their windows ignore them, their users' lists are re-published).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

DEFAULT_STATE_TTL_S = 90 * 86_400.0  #: 90 days of event time
MAX_EVENT_BYTES = 64 * 1024  #: same default as stream.kafka.schema.MAX_EVENT_BYTES
MAX_DLQ_BYTES = 16 * 1024 * 1024  #: largest message the worker's producer sends (dead letters keep the original)


def default_data_dir(group: str) -> Path:
    base = Path(os.environ.get("METAREC_DATA_DIR") or Path.home() / ".cache" / "metarec")
    return base / "worker" / group


@dataclass
class WorkerConfig:
    """Settings of one worker process (every field is a ``metarec worker`` flag)."""

    bootstrap: str
    checkpoint: Path
    input: str = "interactions"
    output: str = "recommendations"
    group: str = "metarec"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    store: str = "rocksdb"  #: "rocksdb" (durable local cache, restored from the changelog) or "memory"
    data_dir: Path | None = None  #: table files; default $METAREC_DATA_DIR/worker/<group>
    window: int = 32
    max_age: float | None = None
    steps: int = 3
    prox: float | None = None
    top_k: int = 10
    batch_size: int = 500
    batch_ms: float = 30.0
    max_catalog: int = 50_000
    max_items: int | None = None  #: item rows, online items included (None = the checkpoint's)
    retrieval_m: int = 2_000
    partitions: int = 4  #: partitions of topics created by the worker (existing topics are left as they are)
    replication_factor: int = 1
    session_timeout: float = 10.0
    commit_interval: float = 1.0
    model_poll: float = 5.0
    kafka_options: dict[str, str] = field(default_factory=dict)
    loglevel: str = "warning"
    torch_threads: int = 1  #: torch intra-op threads; more contend with the event loop on a small machine
    fetch_max_wait_ms: int = 30  #: consumer long-poll wait (faust hard-codes 1500 ms)
    state_ttl: float = DEFAULT_STATE_TTL_S  #: forget users inactive this long in event time (0: never)
    max_event_bytes: int = MAX_EVENT_BYTES  #: larger input values are dead-lettered as "oversized"
    stall_after: float = 5.0  #: /readyz turns 503 after the broker was unreachable (or a batch stalled) this long
    probe_interval: float = 2.0  #: seconds between broker probes (metadata requests)
    #: how faust's fetch loop hands each message to the stream: "direct" (a plain await, stream.runtime.faust.fetchloop) or
    #: "faust" (its own per-message wait_first, four tasks per message)
    delivery: str = "direct"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MetarecError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if not self.batch_ms > 0:
            raise MetarecError(f"--batch-ms must be > 0, got {self.batch_ms}")
        if self.delivery not in ("direct", "faust"):
            raise MetarecError(f"--delivery must be direct or faust, got {self.delivery!r}")
        if self.store not in ("rocksdb", "memory"):
            raise MetarecError(f"--store must be rocksdb or memory, got {self.store!r}")
        if self.partitions < 1:
            raise MetarecError(f"--partitions must be ≥ 1, got {self.partitions}")
        if not self.session_timeout > 0 or not self.model_poll > 0:
            raise MetarecError("--session-timeout and --model-poll must be > 0")
        if self.torch_threads < 1:
            raise MetarecError(f"--torch-threads must be ≥ 1, got {self.torch_threads}")
        if not 0 <= self.fetch_max_wait_ms <= 60_000:
            raise MetarecError(f"--fetch-max-wait-ms must be in [0, 60000], got {self.fetch_max_wait_ms}")
        if not 0 <= self.metrics_port < 65536:
            raise MetarecError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        if not 0 <= self.state_ttl < float("inf"):
            raise MetarecError(f"--state-ttl must be ≥ 0 seconds (0 = never expire), got {self.state_ttl}")
        if not 1 <= self.max_event_bytes <= MAX_DLQ_BYTES:
            raise MetarecError(f"--max-event-bytes must be in [1, {MAX_DLQ_BYTES}], got {self.max_event_bytes}")
        if not self.stall_after > 0 or not self.probe_interval > 0:
            raise MetarecError("--stall-after and --probe-interval must be > 0")
        if self.input == self.output:
            raise MetarecError("--input and --output must be different topics")
        self.checkpoint = Path(self.checkpoint)
        self.data_dir = Path(self.data_dir) if self.data_dir else default_data_dir(self.group)


class _DirLock:
    """An exclusive lock on the data directory: two workers must not share one (RocksDB would refuse later)."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fh = open(directory / ".metarec-worker.lock", "w")  # noqa: SIM115 - held for the process lifetime
        except OSError as exc:
            raise MetarecError(f"cannot use data directory {directory}: {exc.strerror or exc} "
                               f"(pick another --data-dir)") from None
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise MetarecError(f"data directory {directory} is used by another worker on this host "
                               f"(give each worker its own --data-dir)") from None
        self._fh.write(f"{socket.gethostname()} {os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        try:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        finally:
            self._fh.close()


CLEAN_STOP = ".metarec-clean-stop"  #: in --data-dir: the local state cache was closed by a clean stop


def claim_local_state(data_dir: Path, store: str) -> bool:
    """Trust the local RocksDB cache only after a clean stop; otherwise discard it (True if discarded).

    The local store is written before the changelog has the records (faust), and a kill -9 can leave it holding
    state the changelog never received: restoring on top of it would keep that state locally while the
    changelog — what any other worker restores — misses it for good (and on brokers whose high watermark
    undercounts, faust refuses such a store outright). After an unclean stop the cache is deleted and the state is
    restored from the changelog, the source of truth (as Kafka Streams does with its checkpoint file). The
    clean-stop marker is removed while the worker runs and written back by :func:`release_local_state`.
    """
    import shutil

    marker = data_dir / CLEAN_STOP
    clean = marker.exists()
    tables = [d for d in data_dir.glob("v*/tables") if d.is_dir()]
    discarded = False
    if store == "rocksdb" and tables and not clean:
        log.warning("the previous worker on %s did not stop cleanly: discarding its local state cache, the state "
                    "is restored from the changelog", data_dir)
        for d in tables:
            shutil.rmtree(d)
        discarded = True
    marker.unlink(missing_ok=True)
    return discarded


def release_local_state(data_dir: Path) -> None:
    """Mark the local state cache as closed cleanly (call after the app stopped)."""
    (data_dir / CLEAN_STOP).write_text("clean stop\n")


def prepare_topics(cfg: WorkerConfig) -> int:
    """Create the missing topics; return the input topic's partition count (the state table gets the same)."""
    from stream.runtime.faust.app import changelog_topic
    from stream.kafka.client import ensure_topics

    counts = ensure_topics(cfg.bootstrap, {cfg.input: (cfg.partitions, None)}, overrides=cfg.kafka_options,
                           replication_factor=cfg.replication_factor)
    n = counts[cfg.input]
    if n < 1:
        raise MetarecError(f"input topic {cfg.input!r} has no partitions")
    ensure_topics(cfg.bootstrap, {cfg.output: (n, None), f"{cfg.input}.dlq": (n, {"max.message.bytes": str(MAX_DLQ_BYTES)}),
                                  changelog_topic(cfg.group): (n, {"cleanup.policy": "compact"})},
                  overrides=cfg.kafka_options, replication_factor=cfg.replication_factor)
    return n


def build_runtime(cfg: WorkerConfig, partitions: int, metrics: Any = None, health: Any = None) -> Any:
    """Load the model and assemble the shared runtime (no Kafka I/O)."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import OnlineConfig, OnlineLearner
    from stream.runtime.faust.app import WorkerRuntime
    from stream.worker.core import BatchCore
    from stream.worker.expiry import StateExpiry
    from stream.worker.http import WorkerHealth
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.versions import CheckpointWatcher

    metrics = metrics or WorkerMetrics()
    health = health or WorkerHealth()
    watcher = CheckpointWatcher(cfg.checkpoint, Checkpoint.load)
    ckpt = watcher.load_initial()
    online = OnlineConfig(window=cfg.window, max_age_s=cfg.max_age, steps=cfg.steps, prox=cfg.prox, top_k=cfg.top_k,
                          max_catalog=cfg.max_catalog, retrieval_m=cfg.retrieval_m, max_items=cfg.max_items)
    learner = OnlineLearner(ckpt, online)
    core = BatchCore(learner, metrics, cfg.input, cfg.output, max_event_bytes=cfg.max_event_bytes)
    rt = WorkerRuntime(config=cfg, learner=learner, core=core, metrics=metrics, health=health, watcher=watcher,
                       partitions=partitions, expiry=StateExpiry(cfg.state_ttl or None))
    rt.set_model_metrics()
    log.info("serving model %s (%s/%s) from %s", ckpt.version, ckpt.model, ckpt.meta, cfg.checkpoint)
    return rt


def summary_line(metrics: Any, code: int) -> str:
    """The line printed at exit: what this process did (parsed by the tests and handy in logs)."""
    def get(name: str) -> int:
        return int(metrics.registry.get_sample_value(name) or 0)

    invalid = sum(int(s.value) for f in metrics.events_invalid.collect() for s in f.samples
                  if s.name.endswith("_total"))
    return (f"metarec worker: stopped (exit {code}): consumed={get('metarec_events_consumed_total')} "
            f"invalid={invalid} published={get('metarec_recommendations_published_total')} "
            f"batches={get('metarec_batches_total')}")


def set_fetch_max_wait(ms: int) -> None:
    """Make faust's worker consumer long-poll at most ``ms`` (faust passes a fixed 1,500 ms to aiokafka).

    Tansu answers a waiting fetch only when the wait expires, so the wait is a latency floor there; on Apache
    Kafka a fetch returns as soon as data arrives and the setting only bounds idle polling.
    """
    from faust.transport.drivers import aiokafka as driver

    create = getattr(driver.AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                     driver.AIOKafkaConsumerThread._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by aiokafka when the consumer starts its fetcher
        return consumer

    create_worker_consumer.__wrapped__ = create  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def run_worker(cfg: WorkerConfig) -> int:
    """Run one worker until SIGTERM/SIGINT; the exit code."""
    import faust
    import torch

    from stream.runtime.faust.app import build_app
    from stream.worker.http import HealthServer, WorkerHealth
    from stream.kafka.client import check_reachable, validate_bootstrap
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.probe import BrokerProbe

    from stream.worker.versions import resolve_checkpoint

    cfg.bootstrap = validate_bootstrap(cfg.bootstrap)
    torch.set_num_threads(cfg.torch_threads)
    set_fetch_max_wait(cfg.fetch_max_wait_ms)
    resolve_checkpoint(cfg.checkpoint)  # a bad --checkpoint fails before anything touches Kafka
    credentials = worker_credentials(cfg)
    check_reachable(cfg.bootstrap, overrides=cfg.kafka_options)
    assert cfg.data_dir is not None
    lock = _DirLock(cfg.data_dir)
    claim_local_state(cfg.data_dir, cfg.store)
    server = probe = None
    try:
        metrics, health = WorkerMetrics(), WorkerHealth(stall_after_s=cfg.stall_after)
        server = HealthServer(metrics, health, cfg.metrics_host, cfg.metrics_port).start()
        probe = BrokerProbe(cfg.bootstrap, health, metrics, interval_s=cfg.probe_interval,
                            timeout_s=min(cfg.probe_interval, 2.0), overrides=cfg.kafka_options).start()
        partitions = prepare_topics(cfg)
        rt = build_runtime(cfg, partitions, metrics, health)
        app = build_app(rt, credentials)
        level = cfg.loglevel.upper()
        worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False, override_logging=False)
        rt.worker = worker
        print(f"metarec worker: group {cfg.group}, {cfg.input} ({partitions} partitions) → {cfg.output}; "
              f"model {rt.learner.model_version}; metrics http://{cfg.metrics_host}:{server.port}/metrics",
              flush=True)
        code = 0
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            rt.executor.shutdown(wait=True)
        if code == 0:
            release_local_state(cfg.data_dir)
        print(summary_line(metrics, code), flush=True)
        return code
    finally:
        if probe is not None:
            probe.close()
        if server is not None:
            server.close()
        lock.release()


def worker_credentials(cfg: WorkerConfig, environ: Any = None) -> Any:
    """faust ``broker_credentials`` from ``METAREC_KAFKA_*`` and ``--kafka-option`` (None for PLAINTEXT)."""
    from stream.kafka.client import client_config, faust_credentials

    return faust_credentials(client_config(cfg.bootstrap, cfg.kafka_options, environ=environ))
