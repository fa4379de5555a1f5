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
from stream.worker.assemble import summary_line
from stream.worker.config import WorkerConfig
from stream.worker.http import WorkerHealth
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def build_runner(cfg: WorkerConfig, partitions: int, metrics: WorkerMetrics | None = None,
                 health: WorkerHealth | None = None) -> FaustRunner:
    """Load the model and assemble the worker core and its runner (no Kafka I/O)."""
    from stream.worker.assemble import build_core

    metrics = metrics or WorkerMetrics()
    health = health or WorkerHealth(items_restored=cfg.item_state != "shared")
    core, watcher = build_core(cfg, metrics)
    return FaustRunner(cfg, core, watcher, metrics, health, partitions)


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
