"""The worker inside a faust app: what the agent, the timers and the rebalance callbacks do.

The path of a micro-batch: the agent (:mod:`stream.runtime.faust.app`) hands faust events to
:meth:`FaustRunner.on_events` → ranges faust skipped are added (:mod:`stream.runtime.faust.skipped_ranges`) →
:meth:`FaustRunner.run_batch` runs the pure core (:meth:`stream.worker.core.WorkerCore.process`) in a worker thread
(the event loop keeps heartbeating to the group and fetching) → the state writes and the processed marks go to the
table (:class:`~stream.runtime.faust.table.TableStore`) → the lists and dead letters are produced and delivered
(:mod:`stream.runtime.faust.delivery`) → the changelog writes are delivered and sealed
(:mod:`stream.runtime.faust.changelog_barrier`) → only then does ``take_events`` ack the batch, and faust (and
:mod:`stream.runtime.faust.lost_acks`) commit its offsets: at-least-once.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream.kafka.messages import RawMessage
from stream.kafka.topic_feed import TopicFeed
from stream.runtime.faust.acked_unprocessed import recover_unprocessed
from stream.runtime.faust.changelog_barrier import ChangelogBarrier
from stream.runtime.faust.delivery import publish
from stream.runtime.faust.drain_before_stop import drain
from stream.runtime.faust.lost_acks import ProcessedCommits
from stream.runtime.faust.skipped_ranges import fill_gaps
from stream.runtime.faust.table import TableStore
from stream.worker.config import WorkerConfig
from stream.worker.core import WorkerCore
from stream.worker.http import WorkerHealth
from stream.worker.item_owner import ContributionBuffer, ItemOwner
from stream.worker.metrics import WorkerMetrics
from stream.worker.offsets import OffsetTracker
from stream.worker.versions import CheckpointWatcher

log = logging.getLogger(__name__)


class FaustRunner:
    """One worker process's state around the core: the lock between batches and timers, offsets, commits, stop."""

    def __init__(self, config: WorkerConfig, core: WorkerCore, watcher: CheckpointWatcher, metrics: WorkerMetrics,
                 health: WorkerHealth, partitions: int) -> None:
        self.config, self.core, self.watcher = config, core, watcher
        self.metrics, self.health, self.partitions = metrics, health, partitions
        self.lock = asyncio.Lock()  #: held by a micro-batch, a model switch, and the reads of the timers
        self.executor = ThreadPoolExecutor(1, "metarec-adapt")
        self.offsets = OffsetTracker()
        self.commits = ProcessedCommits(config.input, self.offsets, self.lock, config.commit_interval, metrics)
        self.draining = False
        self.expiry_stale = False  #: rebuild the expiry index from the table before the next batch
        self.worker: Any = None  #: the faust.Worker running the app (its shutdown is triggered after the drain)
        self.app: Any = None
        self.store: TableStore | None = None
        self.barrier: ChangelogBarrier | None = None
        self.feed: TopicFeed | None = None  #: shared item state: <group>-items, applied between micro-batches
        #: shared item state: the owner of the items of this worker's item partitions, and the contributions out
        self.owner: ItemOwner | None = None
        self.buffer: ContributionBuffer | None = None
        self.set_model_metrics()

    def attach(self, app: Any, table: Any) -> None:
        """The faust ``app`` and its state ``table`` (before the app starts)."""
        self.app = app
        self.store = TableStore(table, self.config.input)
        self.barrier = ChangelogBarrier(table, self.metrics)

    def set_model_metrics(self) -> None:
        self.core.set_model_metrics()
        self.health.model_loaded = True
        self.health.model_version = self.core.learner.model_version  # type: ignore[union-attr]

    # -- the micro-batch -----------------------------------------------------------------------------------
    async def on_events(self, events: list[Any]) -> None:
        """One batch of faust events from the agent."""
        received = time.time()
        msgs = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp, received)
                for m in (e.message for e in events)]
        assert self.store is not None
        async with self.lock:
            cfg = self.config
            msgs = await fill_gaps(self.app.consumer, self.offsets, msgs, cfg.bootstrap, cfg.kafka_options,
                                   self.metrics, self.store.read_mark)
            await self.run_batch(msgs)
            await self.apply_items()  # after the batch's lists are out: off their event→list path

    async def apply_items(self) -> None:
        """Apply what ``<group>-items`` brought since the last call (the lock held); ready once restored."""
        feed = self.feed
        if feed is None:
            return
        restored = feed.restored.is_set()  # read first: every record queued before it was set is applied below
        updates = feed.take()
        if updates:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.core.apply_items, updates)
        if restored and not self.health.items_restored:
            self.health.items_restored = True
            log.info("shared item state restored: %d item rows", self.core.learner.items.n_active)  # type: ignore[union-attr]

    async def run_batch(self, msgs: list[RawMessage]) -> None:
        """Process one micro-batch (the lock held): learn, store, publish, then make the progress durable."""
        store, barrier = self.store, self.barrier
        assert store is not None and barrier is not None
        if self.expiry_stale:
            self._rebuild_expiry()
        store.bind_loop()  # the core's reads, from the adaptation thread, hop back to this loop
        t0 = time.perf_counter()
        out = await asyncio.get_running_loop().run_in_executor(self.executor, self.core.process, msgs, store)
        t1 = time.perf_counter()
        self.health.stall("delivery of a micro-batch's output")
        contributions: list[Any] = []
        if self.buffer is not None:  # faust commits by itself: a batch's contributions go out with its lists
            self.buffer.add(out.item_updates)
            contributions = self.buffer.drain()
        # Delivered before the user records that mark the batch's events applied are written: a restore reads the
        # whole changelog (faust has no committed-offset skip), so a redelivered event whose record survived a kill
        # is a duplicate, and its contributions must already be out.
        await publish(self.app.producer, out.publish + contributions, self.metrics)
        store.apply(out.writes)
        marks = {p: n for p in {m.partition for m in msgs} if (n := self.offsets.processed(p)) is not None}
        store.write_marks(marks)
        t2 = time.perf_counter()
        await barrier.seal(self.app.producer, out.partitions_written | set(marks))
        self.health.stall(None)
        t3 = time.perf_counter()
        log.debug("batch of %d: core %.1f ms, publish %d %.1f ms, changelog %.1f ms; learner %s", len(msgs),
                  (t1 - t0) * 1e3, len(out.lists), (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                  {k: round(v * 1e3, 1) for k, v in out.result.timings.items()} if out.result else {})
        self.core.observe_published(out.good, len(out.lists))

    def _rebuild_expiry(self) -> None:
        assert self.store is not None
        assigned = [tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.config.input]
        t0 = time.perf_counter()
        n = self.core.expiry.rebuild(self.store.items(), assigned)
        self.metrics.state_users.set(self.core.expiry.size())
        log.info("state expiry: indexed %d user records of partitions %s in %.2f s", n, sorted(assigned),
                 time.perf_counter() - t0)
        self.expiry_stale = False

    # -- timers --------------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Every second: heartbeat (proves the loop runs), lag, active users, commits, unprocessed ranges."""
        if self.health.agent_alive:
            self.health.beat()
        self.metrics.users_active.set(self.core.active.count())
        self.metrics.items.set(self.core.learner.items.n_active)  # type: ignore[union-attr]  (the owner's sweep)
        if self.feed is not None and not self.draining:
            async with self.lock:
                await self.apply_items()
            newest = self.core.learner.shared_newest_update()  # type: ignore[union-attr]
            self.metrics.item_state_lag.set(max(0.0, time.time() - newest) if newest == newest else float("nan"))
        consumer = self.app.consumer
        await self._update_lag(consumer)
        await self.commits.commit(consumer)
        if self.draining or not self.health.assigned:
            return
        self.commits.watch(consumer)
        assert self.store is not None
        cfg = self.config
        await recover_unprocessed(consumer, self.store, self.offsets, self.lock, cfg.bootstrap, cfg.kafka_options,
                                  self.metrics, lambda: self.draining, self.run_batch)

    async def _update_lag(self, consumer: Any) -> None:
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            if tp.topic != self.config.input:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch yet for this partition
                continue
            if high is None:
                continue
            pos = self.offsets.position(tp.partition)
            if pos is None:
                pos = await consumer.position(tp)
            if pos is None:
                continue
            lags[(tp.topic, tp.partition)] = max(0, int(high) - int(pos))
        self.metrics.set_lag(lags)

    async def watch_model(self) -> None:
        """Serve a new model version from the next micro-batch on (never in the middle of one)."""
        ckpt = await asyncio.get_running_loop().run_in_executor(None, self.watcher.poll)
        if ckpt is None:
            return
        async with self.lock:
            if self.core.switch(ckpt):
                self.set_model_metrics()
                if self.owner is not None:
                    self.owner.switch(self.core.learner.items)  # type: ignore[union-attr]

    # -- group membership and stop -------------------------------------------------------------------------
    def on_assigned(self, partitions: list[int]) -> None:
        mine = sorted(partitions)
        self.health.partitions = len(mine)
        self.metrics.assigned_partitions.set(len(mine))
        # faust seeks every assigned partition (kept ones too) back to its committed offset after a rebalance:
        # the contiguity check restarts there (skipped_ranges), else a range faust skips right after the seek
        # would go unnoticed and its commits would stall in front of it
        self.offsets.drop(set())
        self.expiry_stale = self.core.expiry.enabled
        log.info("assigned input partitions %s", mine)

    async def stop(self, sig: int) -> None:
        """Graceful stop: drain (:mod:`stream.runtime.faust.drain_before_stop`), then faust's own shutdown."""
        if self.draining:
            return
        self.draining = True
        log.warning("signal %s: draining (finish the micro-batch in flight, publish, commit), then stopping", sig)
        try:
            await drain(self.app.consumer, self.metrics, self.commits, max(0.3, 3 * self.config.batch_seconds))
        finally:
            worker = self.worker
            if worker is not None:
                (worker._on_sigint if sig == signal.SIGINT else worker._on_sigterm)()
            else:  # pragma: no cover - an app run without faust.Worker
                await self.app.stop()
