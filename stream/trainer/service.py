"""``metarec trainer``: continual meta-training of θ0 from the topic the workers serve.

The trainer reads ``--topic`` with a plain assigned consumer (no consumer group, no commits: it never disturbs the
workers' group), from ``--since`` (a time, through ``offsets_for_times``) or the topic's beginning. It keeps the
last ``--retrain-window`` events; every ``--retrain-every`` new events it re-meta-trains θ0 on that window, warm-started from
the version it published last (or from the newest version already in ``--out`` at start), and publishes the result
as a new version directory under ``--out`` with an atomic ``LATEST``
(:func:`stream.worker.versions.publish_version`). Workers polling ``--out`` switch to it between micro-batches,
without restart; item rows they learned online for items the new version does not know are kept.

HTTP on ``--metrics-host:--metrics-port``: ``/metrics`` (Prometheus: versions trained, last training time and
loss, window size, events read), ``/healthz`` (200 while the loop runs), ``/readyz`` (200 once the topic is
assigned). SIGTERM/Ctrl-C stops after the training in progress, if any.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.errors import MetarecError
from adapters.meta.config import TrainConfig
from stream.trainer.events import events_dataset
from stream.trainer.metrics import TrainerHealth, TrainerMetrics

if TYPE_CHECKING:
    from adapters.meta.checkpoint import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Settings of ``metarec trainer`` (every field is a flag of the same name)."""

    bootstrap: str
    topic: str
    out: Path
    retrain_every: int = 10_000  #: retrain after this many new events
    retrain_window: int = 100_000  #: train on the last this many events
    since: float | None = None  #: epoch seconds to start reading from (None: the topic's beginning)
    model: str = TrainConfig.model  #: used when --out holds no version yet
    meta: str = TrainConfig.meta
    epochs: int = 1  #: meta-training epochs per version
    pretrain_epochs: int = 1  #: item-side pre-training epochs of a cold (first) version
    seed: int = TrainConfig.seed
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9401
    kafka_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.retrain_every < 1 or self.retrain_window < 2:
            raise MetarecError(f"--retrain-every must be ≥ 1 and --retrain-window ≥ 2, got {self.retrain_every}, "
                               f"{self.retrain_window}")
        if self.epochs < 1 or self.pretrain_epochs < 0:
            raise MetarecError("--epochs must be ≥ 1 and --pretrain-epochs ≥ 0")
        if not 0 <= self.metrics_port < 65536:
            raise MetarecError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        self.out = Path(self.out)


class Trainer:
    """The window of recent events and the retraining it triggers (no Kafka: fed by :func:`run_trainer`)."""

    def __init__(self, cfg: TrainerConfig, metrics: TrainerMetrics, current: Checkpoint | None = None) -> None:
        self.cfg, self.metrics, self.current = cfg, metrics, current
        self.window: collections.deque[tuple[bytes | None, float]] = collections.deque(maxlen=cfg.retrain_window)
        self.new = 0

    def add(self, value: bytes | None, record_ts: float) -> None:
        self.window.append((value, record_ts))
        self.new += 1
        self.metrics.events.inc()
        self.metrics.window_events.set(len(self.window))

    def due(self) -> bool:
        return self.new >= self.cfg.retrain_every

    def retrain(self) -> Path | None:
        """Meta-train on the window (warm start from :attr:`current`) and publish a version; its directory."""
        from adapters.meta.training import train
        from stream.worker.versions import publish_version

        self.new = 0
        ds, invalid = events_dataset(list(self.window), f"{self.cfg.topic}-window")
        if len(ds) < 2:
            log.warning("trainer: only %d valid events in the window (%d invalid); not training", len(ds), invalid)
            return None
        cfg = self.cfg
        base = self.current
        tc = TrainConfig(model=base.model if base is not None else cfg.model,
                         meta=base.meta if base is not None else cfg.meta, epochs=cfg.epochs, seed=cfg.seed,
                         pretrain_epochs=cfg.pretrain_epochs, dataset_spec=f"topic:{cfg.topic}")
        t0 = time.perf_counter()
        ck = train(ds, tc, init=base)
        seconds = time.perf_counter() - t0
        path = publish_version(cfg.out, ck)
        self.current = ck
        loss = ck.metrics["epochs"][-1]["meta_loss"] if ck.metrics.get("epochs") else math.nan
        self.metrics.trained(ck.version, seconds, loss)
        log.warning("trainer: published %s (%d events, %d invalid, %.1f s, meta-loss %.4f%s)", path.name, len(ds),
                    invalid, seconds, loss, f", warm from {base.version}" if base is not None else ", cold")
        return path


def _current_version(out: Path) -> Checkpoint | None:
    """The newest version already published under ``out`` (None: none yet)."""
    from adapters.meta.checkpoint import Checkpoint
    from stream.worker.versions import resolve_checkpoint

    if not out.exists():
        return None
    try:
        return Checkpoint.load(resolve_checkpoint(out))
    except MetarecError:
        return None


def _start_positions(cfg: TrainerConfig, consumer: Any, partitions: list[int]) -> list[Any]:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    if cfg.since is None:
        return [TopicPartition(cfg.topic, p, OFFSET_BEGINNING) for p in partitions]
    found = consumer.offsets_for_times([TopicPartition(cfg.topic, p, int(cfg.since * 1000)) for p in partitions],
                                       timeout=10)
    # -1: nothing at or after --since yet: start at the end (what comes next)
    return [TopicPartition(cfg.topic, tp.partition, tp.offset if tp.offset >= 0 else -1) for tp in found]


def run_trainer(cfg: TrainerConfig, stop: threading.Event | None = None) -> int:
    """Run until ``stop`` is set (SIGTERM/SIGINT in the CLI); the exit code."""
    from confluent_kafka import Consumer

    from stream.kafka.client import consumer_config
    from stream.kafka.topic_range import topic_partitions
    from stream.worker.http import HealthServer

    stop = stop or threading.Event()
    partitions = topic_partitions(cfg.bootstrap, cfg.topic, cfg.kafka_options)
    metrics, health = TrainerMetrics(), TrainerHealth()
    server = HealthServer(metrics, health, cfg.metrics_host, cfg.metrics_port).start()
    trainer = Trainer(cfg, metrics, _current_version(cfg.out))
    if trainer.current is not None:
        metrics.serving(trainer.current.version)
    consumer = Consumer(consumer_config(cfg.bootstrap, overrides=cfg.kafka_options))
    print(f"metarec trainer: {cfg.topic} ({len(partitions)} partitions) → {cfg.out}; every {cfg.retrain_every} events on the "
          f"last {cfg.retrain_window}; metrics http://{cfg.metrics_host}:{server.port}/metrics", flush=True)
    try:
        consumer.assign(_start_positions(cfg, consumer, partitions))
        health.assigned = True
        while not stop.is_set():
            health.beat()
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is None:
                    _, ts = m.timestamp()
                    trainer.add(m.value(), ts / 1000.0 if ts > 0 else time.time())
            if trainer.due():
                health.training = True
                try:
                    trainer.retrain()
                except Exception:  # noqa: BLE001 - keep serving /healthz; the next window tries again
                    metrics.failures.inc()
                    log.exception("trainer: training failed; the current version stays")
                finally:
                    health.training = False
        return 0
    finally:
        consumer.close()
        server.close()
