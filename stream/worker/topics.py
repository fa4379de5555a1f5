"""The topics a worker needs: created when missing, with the partition counts the state layout requires.

The control topic ``<group>-control`` (:mod:`stream.kafka.control`) must have the input topic's partition count: a
forget request keyed by a user then reaches the worker that owns the user's input partition.
"""
from __future__ import annotations

from adapters.errors import MetarecError
from stream.kafka.client import ensure_topics
from stream.kafka.control import control_topic
from stream.kafka.schema import dlq_topic
from stream.worker.config import MAX_DLQ_BYTES, WorkerConfig
from stream.worker.state_layout import changelog_topic, item_updates_topic, items_topic


def prepare_topics(cfg: WorkerConfig) -> int:
    """Create the missing topics; return the input topic's partition count (the state table gets the same)."""
    counts = ensure_topics(cfg.bootstrap, {cfg.input: (cfg.partitions, None)}, overrides=cfg.kafka_options,
                           replication_factor=cfg.replication_factor)
    n = counts[cfg.input]
    if n < 1:
        raise MetarecError(f"input topic {cfg.input!r} has no partitions")
    counts = ensure_topics(cfg.bootstrap, {cfg.output: (n, None),
                                           dlq_topic(cfg.input): (n, {"max.message.bytes": str(MAX_DLQ_BYTES)}),
                                           changelog_topic(cfg.group): (n, {"cleanup.policy": "compact"}),
                                           control_topic(cfg.group): (n, None)},
                           overrides=cfg.kafka_options, replication_factor=cfg.replication_factor)
    if counts[control_topic(cfg.group)] != n:  # forget requests would reach the wrong worker
        raise MetarecError(f"topic {control_topic(cfg.group)!r} has {counts[control_topic(cfg.group)]} partitions, "
                           f"the input topic {cfg.input!r} {n}: they must match (recreate the control topic)")
    if cfg.item_state == "shared":  # partitioned like the input: faust gives each worker matching partitions
        ensure_topics(cfg.bootstrap, {item_updates_topic(cfg.group): (n, None),
                                      items_topic(cfg.group): (n, {"cleanup.policy": "compact"})},
                      overrides=cfg.kafka_options, replication_factor=cfg.replication_factor)
    return n


