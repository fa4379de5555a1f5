"""The worker process on confluent-kafka: load the model, create the topics, serve HTTP, run until SIGTERM.

``metarec worker --runtime kafka`` (:mod:`stream.cli.commands.worker`) calls :func:`run_worker`. The loop itself is
:class:`~stream.runtime.kafka.runner.KafkaRunner`; everything else here is shared with the faust runtime (model and
core: :mod:`stream.worker.assemble`; HTTP, broker probe, local state directory: :mod:`stream.worker`).

Shutdown (SIGTERM or Ctrl-C): the micro-batch in flight is finished, delivered and committed, the consumer leaves the
group and the process exits 0, in well under 10 s. After a crash, the uncommitted events are consumed again (their
windows ignore them, their users' lists are published again) and the state is restored as of the committed offsets.
"""
from __future__ import annotations

import logging
import signal

from stream.worker.assemble import build_core, summary_line
from stream.worker.config import WorkerConfig

log = logging.getLogger(__name__)


def run_worker(cfg: WorkerConfig) -> int:
    """Run one worker until SIGTERM/SIGINT; the exit code."""
    import torch

    from stream.kafka.client import check_reachable, validate_bootstrap
    from stream.kafka.topic_feed import TopicFeed
    from stream.runtime.kafka.runner import KafkaRunner
    from stream.runtime.kafka.store import STATE_DIR
    from stream.worker.http import HealthServer, WorkerHealth
    from stream.worker.localstate import DirLock, claim_local_state, release_local_state
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.probe import BrokerProbe
    from stream.worker.state_layout import is_internal_key, items_topic
    from stream.worker.topics import prepare_topics
    from stream.worker.versions import resolve_checkpoint

    cfg.bootstrap = validate_bootstrap(cfg.bootstrap)
    torch.set_num_threads(cfg.torch_threads)
    resolve_checkpoint(cfg.checkpoint)  # a bad --checkpoint fails before anything touches Kafka
    check_reachable(cfg.bootstrap, overrides=cfg.kafka_options)
    assert cfg.data_dir is not None
    lock = DirLock(cfg.data_dir)
    claim_local_state(cfg.data_dir, cfg.store, [cfg.data_dir / STATE_DIR])
    server = probe = feed = None
    try:
        metrics = WorkerMetrics()
        health = WorkerHealth(stall_after_s=cfg.stall_after, items_restored=cfg.item_state != "shared")
        server = HealthServer(metrics, health, cfg.metrics_host, cfg.metrics_port).start()
        probe = BrokerProbe(cfg.bootstrap, health, metrics, interval_s=cfg.probe_interval,
                            timeout_s=min(cfg.probe_interval, 2.0), overrides=cfg.kafka_options).start()
        partitions = prepare_topics(cfg)
        core, watcher = build_core(cfg, metrics)
        core.set_model_metrics()
        health.model_loaded = True
        health.model_version = core.learner.model_version  # type: ignore[union-attr]
        server.items = core.item_row
        if cfg.item_state == "shared":
            feed = TopicFeed(cfg.bootstrap, items_topic(cfg.group), cfg.kafka_options, skip=is_internal_key).start()
        runner = KafkaRunner(cfg, core, watcher, metrics, health, partitions, feed)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, runner.stop)
        print(f"metarec worker: group {cfg.group}, {cfg.input} ({partitions} partitions) → {cfg.output}; "
              f"model {core.learner.model_version}; runtime kafka; "  # type: ignore[union-attr]
              f"metrics http://{cfg.metrics_host}:{server.port}/metrics", flush=True)
        code = runner.run()
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
