"""The worker process: load the model, create the topics, serve HTTP, run the faust app until SIGTERM.

``metarec worker`` (:mod:`stream.cli.commands.worker`) builds a :class:`~stream.worker.config.WorkerConfig` and
calls :func:`run_worker`.

Shutdown (SIGTERM or Ctrl-C): the worker stops fetching, lets the agent finish the micro-batch in flight (its lists
are published and delivered), flushes the producer, commits the offsets of everything processed and exits 0, in
well under 10 s. Offsets are only committed for batches whose output was delivered: after a crash the un-committed
events are consumed again (their windows ignore them, their users' lists are re-published).
"""
from __future__ import annotations

import logging
from typing import Any

from stream.runtime.faust.runner import FaustRunner
from stream.worker.config import WorkerConfig
from stream.worker.http import WorkerHealth
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def build_runner(cfg: WorkerConfig, partitions: int, metrics: WorkerMetrics | None = None,
                 health: WorkerHealth | None = None) -> FaustRunner:
    """Load the model and assemble the worker core and its runner (no Kafka I/O)."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import OnlineConfig, OnlineLearner
    from stream.worker.core import WorkerCore
    from stream.worker.expiry import StateExpiry
    from stream.worker.versions import CheckpointWatcher
    from adapters.online.itemshare import ShareConfig
    from stream.worker.state_layout import item_updates_topic

    metrics = metrics or WorkerMetrics()
    health = health or WorkerHealth(items_restored=cfg.item_state != "shared")
    watcher = CheckpointWatcher(cfg.checkpoint, Checkpoint.load, rollout=metrics.rollout)
    ckpt = watcher.load_initial()
    shared = cfg.item_state == "shared"
    online = OnlineConfig(window=cfg.window, max_age_s=cfg.max_age, steps=cfg.steps, prox=cfg.prox, top_k=cfg.top_k,
                          max_catalog=cfg.max_catalog, retrieval_m=cfg.retrieval_m, max_items=cfg.max_items,
                          task_learner=cfg.task_learner, explore=cfg.explore, explore_scale=cfg.explore_scale,
                          persistence=cfg.persistence,
                          shared_items=ShareConfig(half_life_s=cfg.item_half_life) if shared else None)
    learner = OnlineLearner(ckpt, online)
    core = WorkerCore(learner, metrics, cfg.input, cfg.output, max_event_bytes=cfg.max_event_bytes,
                      expiry=StateExpiry(cfg.state_ttl or None),
                      item_updates_topic=item_updates_topic(cfg.group) if shared else None,
                      item_partitions=partitions)
    runner = FaustRunner(cfg, core, watcher, metrics, health, partitions)
    log.info("serving model %s (%s/%s) from %s", ckpt.version, ckpt.model, ckpt.meta, cfg.checkpoint)
    return runner


def summary_line(metrics: WorkerMetrics, code: int) -> str:
    """The line printed at exit: what this process did (parsed by the tests and handy in logs)."""
    def get(name: str) -> int:
        return int(metrics.registry.get_sample_value(name) or 0)

    invalid = sum(int(s.value) for f in metrics.events_invalid.collect() for s in f.samples
                  if s.name.endswith("_total"))
    return (f"metarec worker: stopped (exit {code}): consumed={get('metarec_events_consumed_total')} "
            f"invalid={invalid} published={get('metarec_recommendations_published_total')} "
            f"batches={get('metarec_batches_total')}")


def worker_credentials(cfg: WorkerConfig, environ: Any = None) -> Any:
    """faust ``broker_credentials`` from ``METAREC_KAFKA_*`` and ``--kafka-option`` (None for PLAINTEXT)."""
    from stream.kafka.client import client_config
    from stream.runtime.faust.credentials import faust_credentials

    return faust_credentials(client_config(cfg.bootstrap, cfg.kafka_options, environ=environ))


def run_worker(cfg: WorkerConfig) -> int:
    """Run one worker until SIGTERM/SIGINT; the exit code."""
    import faust
    import torch

    from stream.kafka.client import check_reachable, validate_bootstrap
    from stream.runtime.faust.app import build_app
    from stream.runtime.faust.fetch_max_wait import set_fetch_max_wait
    from stream.worker.http import HealthServer
    from stream.worker.localstate import DirLock, claim_local_state, release_local_state
    from stream.worker.probe import BrokerProbe
    from stream.worker.topics import prepare_topics
    from stream.kafka.topic_feed import TopicFeed
    from stream.worker.state_layout import is_internal_key, items_topic
    from stream.worker.versions import resolve_checkpoint

    cfg.bootstrap = validate_bootstrap(cfg.bootstrap)
    torch.set_num_threads(cfg.torch_threads)
    set_fetch_max_wait(cfg.fetch_max_wait_ms)
    resolve_checkpoint(cfg.checkpoint)  # a bad --checkpoint fails before anything touches Kafka
    credentials = worker_credentials(cfg)
    check_reachable(cfg.bootstrap, overrides=cfg.kafka_options)
    assert cfg.data_dir is not None
    lock = DirLock(cfg.data_dir)
    claim_local_state(cfg.data_dir, cfg.store)
    server = probe = feed = None
    try:
        metrics = WorkerMetrics()
        health = WorkerHealth(stall_after_s=cfg.stall_after, items_restored=cfg.item_state != "shared")
        server = HealthServer(metrics, health, cfg.metrics_host, cfg.metrics_port).start()
        probe = BrokerProbe(cfg.bootstrap, health, metrics, interval_s=cfg.probe_interval,
                            timeout_s=min(cfg.probe_interval, 2.0), overrides=cfg.kafka_options).start()
        partitions = prepare_topics(cfg)
        runner = build_runner(cfg, partitions, metrics, health)
        server.items = runner.core.item_row
        if cfg.item_state == "shared":
            feed = runner.feed = TopicFeed(cfg.bootstrap, items_topic(cfg.group), cfg.kafka_options,
                                           skip=is_internal_key).start()
        app = build_app(runner, credentials)
        worker = faust.Worker(app, loglevel=cfg.loglevel.upper(), quiet=True, redirect_stdouts=False,
                              override_logging=False)
        runner.worker = worker
        print(f"metarec worker: group {cfg.group}, {cfg.input} ({partitions} partitions) → {cfg.output}; "
              f"model {runner.core.learner.model_version}; metrics http://{cfg.metrics_host}:{server.port}/metrics",
              flush=True)
        code = 0
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            runner.executor.shutdown(wait=True)
        if code == 0:
            release_local_state(cfg.data_dir)
        print(summary_line(metrics, code), flush=True)
        return code
    finally:
        if feed is not None:
            feed.close()
        if probe is not None:
            probe.close()
        if server is not None:
            server.close()
        lock.release()
