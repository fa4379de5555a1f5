"""What every runtime assembles the same way: the worker core around the loaded model, and the exit summary line.

A runtime (:mod:`stream.runtime.kafka`, :mod:`stream.runtime.faust`) calls :func:`build_core` once at start, then
feeds the core micro-batches; nothing here talks to Kafka.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from stream.worker.config import WorkerConfig
from stream.worker.core import WorkerCore
from stream.worker.metrics import WorkerMetrics
from stream.worker.versions import CheckpointWatcher

log = logging.getLogger(__name__)


def build_core(cfg: WorkerConfig, metrics: WorkerMetrics) -> tuple[WorkerCore, CheckpointWatcher]:
    """Load the model named by ``cfg.checkpoint`` and build the worker core around it (no Kafka I/O)."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import OnlineLearner
    from stream.worker.expiry import StateExpiry

    watcher = CheckpointWatcher(cfg.checkpoint, Checkpoint.load, rollout=metrics.rollout)
    ckpt = watcher.load_initial()
    shared = cfg.item_state == "shared"
    online = replace(cfg.online, owner_delay=None if shared else 0)
    learner = OnlineLearner(ckpt, online)
    core = WorkerCore(learner, metrics, cfg.input, cfg.output, max_event_bytes=cfg.max_event_bytes,
                      expiry=StateExpiry(cfg.state_ttl or None))
    log.info("serving model %s (%s/%s) from %s", ckpt.version, ckpt.model, ckpt.meta, cfg.checkpoint)
    return core, watcher


def summary_line(metrics: WorkerMetrics, code: int) -> str:
    """The line printed at exit: what this process did (parsed by the tests and handy in logs)."""
    def get(name: str) -> int:
        return int(metrics.registry.get_sample_value(name) or 0)

    invalid = sum(int(s.value) for f in metrics.events_invalid.collect() for s in f.samples
                  if s.name.endswith("_total"))
    return (f"metarec worker: stopped (exit {code}): consumed={get('metarec_events_consumed_total')} "
            f"invalid={invalid} published={get('metarec_recommendations_published_total')} "
            f"batches={get('metarec_batches_total')}")
