"""The faust application of the worker: the input topic, the state table, the micro-batch agent, the timers.

Everything here only wires faust to :class:`~stream.runtime.faust.runner.FaustRunner`, which does the work. State
layout: :mod:`stream.worker.state_layout`; the table has as many partitions as the input topic, and every record is
written to the changelog partition of its user's input events (:mod:`stream.runtime.faust.table`), so the worker
that owns input partition *p* owns changelog partition *p*: after a rebalance the new owner restores exactly the
users of the partitions it took over. With the shared item state (``--item-state shared``) the app also runs the
item agent (:mod:`stream.runtime.faust.item_agent`). Every worker runs the control agent
(:mod:`stream.runtime.faust.control_agent`: ``metarec forget``).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from stream.runtime.faust.control_agent import ControlAgent
from stream.runtime.faust.item_agent import ItemAgent
from stream.worker.item_owner import ContributionBuffer, ItemBounds, ItemOwner
from stream.worker.state_layout import item_updates_topic
from stream.runtime.faust.runner import FaustRunner
from stream.runtime.faust.wait_first_per_message import deliver_directly
from stream.worker.config import MAX_DLQ_BYTES
from stream.worker.state_layout import TABLE

log = logging.getLogger(__name__)


def build_app(runner: FaustRunner, broker_credentials: Any = None) -> Any:
    """The faust app of one worker process."""
    import faust

    cfg = runner.config
    app = faust.App(
        cfg.group,
        broker=[f"kafka://{h}" for h in cfg.bootstrap.split(",")],
        broker_credentials=broker_credentials,
        store="rocksdb://" if cfg.store == "rocksdb" else "memory://",
        datadir=str(cfg.data_dir),
        topic_partitions=runner.partitions,
        topic_replication_factor=cfg.replication_factor,
        producer_linger=0.0,  # Tansu: changelog restore came up short with batched changelog writes
        producer_max_request_size=MAX_DLQ_BYTES,  # a dead letter carries the original value, up to this size
        consumer_max_fetch_size=1024 ** 2,  # per partition and fetch (the broker still returns a larger record)
        broker_session_timeout=cfg.session_timeout,
        broker_heartbeat_interval=max(0.1, cfg.session_timeout / 4),
        broker_commit_interval=cfg.commit_interval,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        # prefetch at most two micro-batches: bounds memory, and what a graceful stop drains (SIGTERM < 10 s)
        stream_buffer_maxsize=max(2 * cfg.batch_size, 200),
        web_enabled=False,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        table_standby_replicas=0,
    )
    source = app.topic(cfg.input, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table(TABLE, partitions=runner.partitions, key_type=bytes, value_type=bytes,
                      help="metarec per-user records")
    # faust derives a table's codecs from its types (json for bytes): keys and values are raw bytes here. Set
    # before first use: the store and the changelog topic are created lazily with these.
    table.key_serializer = table.value_serializer = "raw"
    runner.attach(app, table)
    _register(app, runner, source)
    ControlAgent(app, runner).register()  # forget requests of <group>-control
    if cfg.item_state == "shared":
        learner = runner.core.learner
        assert learner is not None and runner.feed is not None
        runner.owner = ItemOwner(learner.items, runner.partitions,
                                 ItemBounds(max_items=cfg.item_table_max, ttl_s=cfg.item_ttl), runner.metrics)
        runner.buffer = ContributionBuffer(item_updates_topic(cfg.group), runner.partitions)
        ItemAgent(app, runner, runner.owner, runner.feed).register()
    return app


def _register(app: Any, runner: FaustRunner, source: Any) -> None:
    """The agent, the timers, the start-up task and the rebalance callbacks of ``app``."""
    cfg, health = runner.config, runner.health

    @app.agent(source, name="metarec-worker")
    async def process(stream: Any) -> None:
        health.agent_alive = True
        try:
            async for events in stream.take_events(cfg.batch_size, cfg.batch_seconds):
                try:
                    await runner.on_events(list(events))
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - agents die silently in faust: never let one escape
                    log.exception("micro-batch of %d messages failed", len(events))
                health.beat()
        finally:
            log.info("processing agent stopped")
            health.agent_alive = False

    @app.timer(1.0)
    async def tick() -> None:
        try:
            await runner.tick()
        except Exception:  # noqa: BLE001
            log.exception("metrics tick failed")

    @app.timer(cfg.model_poll)
    async def watch_model() -> None:
        try:
            await runner.watch_model()
        except Exception:  # noqa: BLE001
            log.exception("model watch failed")

    @app.task
    async def install_drain() -> None:
        """Replace faust's SIGTERM/SIGINT handling by: drain, commit, then faust's own shutdown."""
        if cfg.delivery == "direct":
            deliver_directly(app.consumer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(runner.stop(s)))

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        health.assigned = False

    @app.on_partitions_assigned.connect
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        runner.on_assigned([tp.partition for tp in assigned if tp.topic == cfg.input])

    @app.on_rebalance_complete.connect
    async def on_rebalanced(app_: Any, **kwargs: Any) -> None:
        health.assigned = True
