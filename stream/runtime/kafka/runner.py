"""The worker on confluent-kafka: one thread consumes micro-batches, runs the core, delivers, then commits.

The path of a micro-batch (:meth:`KafkaRunner.run`):

1. :meth:`~KafkaRunner.next_batch` takes up to ``--batch-size`` messages, waiting at most ``--batch-seconds`` after the
   first one (librdkafka prefetches in its own threads meanwhile);
2. :meth:`stream.worker.core.WorkerCore.process` turns the input messages into state writes, lists, dead letters
   and item contributions (no Kafka);
3. the writes go to the partitions' local stores (:mod:`stream.runtime.kafka.store`) and, as changelog records that
   carry the processed input offset (:mod:`stream.runtime.kafka.changelog`), to ``<group>-users-changelog``;
4. everything is produced and delivered (:mod:`stream.runtime.kafka.delivery`), and only then are the batch's
   offsets committed: at-least-once, and a redelivered event never enters a window twice (records are idempotent).

Between micro-batches: restored partitions are resumed (:mod:`stream.runtime.kafka.ownership`), a new model version
is switched to, the shared item rows that arrived are applied, the item owner's contributions are merged and its
bounds enforced, forget requests are carried out, and once a second the lag and activity metrics are refreshed.
Rebalance callbacks run inside ``consume``, hence between micro-batches too.

Shared item state (:mod:`stream.worker.item_owner`): the micro-batches' item contributions are added up and sent
when the input offsets are committed, before them; the rows the owner merged are published when the item-update
offsets are committed, before them. A kill -9 loses neither: what was not committed is processed again.

Stop (SIGTERM/SIGINT → :meth:`KafkaRunner.stop`): the micro-batch in flight is finished, delivered and committed, the
consumer leaves the group (its partitions' stores are closed), and :meth:`run` returns 0.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from stream.kafka.client import consumer_config, producer_config
from stream.kafka.control import control_topic
from stream.kafka.messages import Outgoing, RawMessage
from stream.kafka.topic_feed import TopicFeed
from stream.runtime.kafka.changelog import processed_header
from stream.runtime.kafka.delivery import Delivery, DeliveryAbandoned
from stream.runtime.kafka.ownership import Ownership, Tables
from stream.runtime.kafka.store import STATE_DIR, UserState
from stream.worker.config import MAX_DLQ_BYTES, WorkerConfig
from stream.worker.core import StateWrite, WorkerCore
from stream.worker.forget import forget_users
from stream.worker.http import WorkerHealth
from stream.worker.item_owner import ContributionBuffer, ItemBounds, ItemOwner
from stream.worker.metrics import WorkerMetrics
from stream.worker.state_layout import changelog_topic, item_updates_topic, items_topic
from stream.worker.versions import CheckpointWatcher

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.1  #: longest wait for a first message (timers and the stop flag are checked this often)


class KafkaRunner:
    """One worker process on confluent-kafka (see the module docstring)."""

    def __init__(self, config: WorkerConfig, core: WorkerCore, watcher: CheckpointWatcher, metrics: WorkerMetrics,
                 health: WorkerHealth, partitions: int, feed: TopicFeed | None = None) -> None:
        from confluent_kafka import Consumer, Producer

        cfg = self.config = config
        self.core, self.watcher, self.metrics, self.health = core, watcher, metrics, health
        self.partitions, self.feed = partitions, feed
        self.stopping = False
        self.changelog = changelog_topic(cfg.group)
        self.control = control_topic(cfg.group)
        self.shared = cfg.item_state == "shared"
        self.updates = item_updates_topic(cfg.group) if self.shared else None
        self.items_topic = items_topic(cfg.group) if self.shared else None
        session_ms = int(cfg.session_timeout * 1000)
        self.consumer = Consumer(consumer_config(
            cfg.bootstrap, cfg.group, cfg.kafka_options, partition_assignment_strategy="cooperative-sticky",
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 4),
            fetch_wait_max_ms=cfg.fetch_max_wait_ms, max_partition_fetch_bytes=1024 ** 2,
            queued_max_messages_kbytes=16_384))
        self.producer = Producer(producer_config(cfg.bootstrap, cfg.kafka_options, linger_ms=1,
                                                 message_max_bytes=MAX_DLQ_BYTES))
        self.delivery = Delivery(self.producer, metrics, health)
        self.delivery.track(self.changelog)
        assert cfg.data_dir is not None
        self.users = UserState(cfg.data_dir / STATE_DIR if cfg.store == "rocksdb" else None)
        tables = [Tables(self.users, self.changelog, skip_uncommitted=True)]
        self.owner: ItemOwner | None = None
        self.buffer: ContributionBuffer | None = None
        if self.shared:
            assert core.learner is not None and self.updates is not None and feed is not None
            self.owner = ItemOwner(core.learner.items, partitions,
                                   ItemBounds(max_items=cfg.item_table_max, ttl_s=cfg.item_ttl), metrics)
            self.buffer = ContributionBuffer(self.updates, partitions)
        self.ownership = Ownership(
            self.consumer, cfg.group, cfg.input, [self.control] + ([self.updates] if self.updates else []), tables,
            consumer_config(cfg.bootstrap, None, cfg.kafka_options), metrics, health, self._positions_of,
            self._partitions_changed, gate=feed.caught_up if self.shared and feed is not None else None,
            before_revoke=lambda _partitions: self._flush_items(), on_owner_change=self._owner_change)
        self.positions: dict[tuple[str, int], int] = {}  #: (topic, partition) → next offset processed, to commit
        self._models: queue.Queue[Any] = queue.Queue()
        self._next_tick = self._next_sweep = 0.0
        self._errors_logged: dict[str, float] = {}
        self._last_commit = -math.inf
        self._committed: dict[tuple[str, int], int] = {}  #: the positions last committed
        self._model_thread = threading.Thread(target=self._watch_models, name="metarec-model-watch", daemon=True)

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Process until :meth:`stop`; the exit code."""
        self.consumer.subscribe([self.config.input], on_assign=self.ownership.on_assign,
                                on_revoke=self.ownership.on_revoke, on_lost=self.ownership.on_lost)
        self._model_thread.start()
        code = 0
        try:
            while not self.stopping:
                self.health.beat()
                self.between_batches()
                msgs = self.next_batch()
                if msgs:
                    self.handle(msgs)
        except DeliveryAbandoned as exc:
            log.error("stopping without committing the last micro-batch: %s", exc)
            code = 1
        finally:
            code = self._close(code)
        return code

    def stop(self, *_: Any) -> None:
        """Finish the micro-batch in flight, deliver, commit, leave the group (safe from a signal handler)."""
        if not self.stopping:
            log.warning("stopping: finishing the micro-batch in flight, then committing and leaving the group")
        self.stopping = True

    def next_batch(self) -> list[Any]:
        """Up to ``--batch-size`` messages: waits for a first one (at most :data:`IDLE_POLL_S`), then at most
        ``--batch-seconds`` for the rest."""
        cfg = self.config
        consume = self.consumer.consume
        msgs = consume(cfg.batch_size, 0)
        if not msgs:
            msgs = consume(1, IDLE_POLL_S)
            if not msgs:
                return []
        deadline = time.monotonic() + cfg.batch_seconds
        while len(msgs) < cfg.batch_size and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msgs += consume(cfg.batch_size - len(msgs), left)
        revoked = self.ownership.revoked_now
        if revoked:  # partitions revoked while this batch was being taken: their new owner processes them
            msgs = [m for m in msgs if m.error() is not None or m.partition() not in revoked or
                    m.partition() in self.ownership.owned]
            revoked.clear()
        return msgs

    def handle(self, msgs: Sequence[Any]) -> None:
        """One micro-batch: input events, then item contributions, then forget requests."""
        received = time.time()
        inputs: list[RawMessage] = []
        updates: list[RawMessage] = []
        controls: list[RawMessage] = []
        input_topic, owned = self.config.input, self.ownership.owned
        for m in msgs:
            if m.error() is not None:
                self._consumer_error(m.error())
                continue
            topic, partition = m.topic(), m.partition()
            if partition not in owned:
                continue
            raw = RawMessage(topic, partition, m.offset(), m.key(), m.value(), m.timestamp()[1] / 1000.0, received)
            (inputs if topic == input_topic else controls if topic == self.control else updates).append(raw)
        if inputs:
            self.process(inputs)
        if updates:
            self.merge_items(updates)
        if controls:
            self.forget(controls)

    def process(self, msgs: list[RawMessage]) -> None:
        """The input micro-batch: core → local stores + changelog → deliver everything → commit."""
        t0 = time.perf_counter()
        out = self.core.process(msgs, self.users)
        t1 = time.perf_counter()
        last = _last_offsets(msgs)
        self._store(self.users, out.writes)
        self.delivery.send(out.publish)
        self.delivery.send(self._changelog(self.changelog, out.writes, last))
        if self.buffer is not None:
            self.buffer.add(out.item_updates)
        self.delivery.wait(lambda: self.stopping)
        t2 = time.perf_counter()
        self.core.observe_published(out.good, len(out.lists))
        self._done(self.config.input, last)
        log.debug("batch of %d: core %.1f ms, deliver %d lists %.1f ms; learner %s", len(msgs), (t1 - t0) * 1e3,
                  len(out.lists), (t2 - t1) * 1e3,
                  {k: round(v * 1e3, 1) for k, v in out.result.timings.items()} if out.result else {})

    def merge_items(self, msgs: list[RawMessage]) -> None:
        """Contributions to the items this worker owns: merged now, their rows published at the next commit."""
        assert self.owner is not None
        self.owner.on_contributions(msgs)
        self._done(msgs[0].topic, _last_offsets(msgs))

    def _flush_items(self) -> None:
        """Deliver the contributions buffered and the rows merged since the last commit (before committing)."""
        if self.owner is None or self.buffer is None or self.items_topic is None:
            return
        out = self.buffer.drain()
        out += [Outgoing(self.items_topic, key, value, partition=self.owner.partition_of(key.decode("utf-8")))
                for key, value in self.owner.publish()]
        if out:
            self.delivery.send(out)
            self.delivery.wait(lambda: self.stopping)

    def _owner_change(self, gained: list[int], lost: list[int]) -> None:
        if self.owner is not None:
            self.owner.assigned(gained)
            self.owner.revoked(lost)

    def forget(self, msgs: list[RawMessage]) -> None:
        """Forget requests: commit the input processed so far, tombstone the records, then acknowledge, commit."""
        self._commit(sync=True)  # events already applied are not delivered again: they cannot bring a user back
        out = forget_users(self.core, msgs, self.users)
        self._store(self.users, out.writes)
        self.delivery.send(self._changelog(self.changelog, out.writes, {}))
        self.delivery.wait(lambda: self.stopping)
        self.delivery.send(out.lists)  # the acknowledgements, once the tombstones are delivered
        self.delivery.wait(lambda: self.stopping)
        self._done(msgs[0].topic, _last_offsets(msgs))
        self._commit(sync=True)  # a request carried out again would delete a record the user started after it

    def _consumer_error(self, err: Any) -> None:
        """Log a consumer error, each distinct one at most every 30 s (an outage repeats them many times a second)."""
        text, now = err.str(), time.monotonic()
        if now - self._errors_logged.get(text, -math.inf) >= 30.0:
            self._errors_logged[text] = now
            log.warning("consumer: %s", text)

    # -- between micro-batches ---------------------------------------------------------------------------------
    def between_batches(self) -> None:
        self.ownership.poll()
        try:
            ckpt = self._models.get_nowait()
        except queue.Empty:
            pass
        else:
            if self.core.switch(ckpt):
                self.health.model_version = self.core.learner.model_version  # type: ignore[union-attr]
                if self.owner is not None:
                    self.owner.switch(self.core.learner.items)  # type: ignore[union-attr]
        if self.feed is not None:
            self._apply_items()
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + 1.0
            self._tick()
        if self.owner is not None and now >= self._next_sweep:
            self._next_sweep = now + self.owner.bounds.sweep_s
            self.owner.sweep()  # the tombstones go out with the next commit

    def _apply_items(self) -> None:
        feed = self.feed
        assert feed is not None
        restored = feed.restored.is_set()  # read first: every record queued before it was set is applied below
        updates = feed.take()
        if updates:
            self.core.apply_items(updates)
            self._item_state_age()
        if restored and not self.health.items_restored:
            self.health.items_restored = True
            log.info("shared item state restored: %d item rows", self.core.learner.items.n_active)  # type: ignore[union-attr]

    def _item_state_age(self) -> None:
        newest = self.core.learner.shared_newest_update()  # type: ignore[union-attr]
        self.metrics.item_state_lag.set(max(0.0, time.time() - newest) if newest == newest else math.nan)

    def _tick(self) -> None:
        """Once a second: a commit that is due, lag, active users, item-state age."""
        from confluent_kafka import TopicPartition
        self._maybe_commit()
        m = self.metrics
        m.users_active.set(self.core.active.count())
        m.items.set(self.core.learner.items.n_active)  # type: ignore[union-attr]  (the owner's sweep drops items)
        if self.feed is not None:
            self._item_state_age()
        lags: dict[tuple[str, int], int] = {}
        for p in self.ownership.ready():
            tp = TopicPartition(self.config.input, p)
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high is None or high < 0:  # no fetch response cached yet for it: ask the broker
                    _low, high = self.consumer.get_watermark_offsets(tp, timeout=0.5, cached=False)
            except Exception:  # noqa: BLE001 - the broker did not answer in time: next tick
                continue
            pos = self.positions.get((self.config.input, p))
            if pos is None:  # nothing processed here yet: the consumer's position, else where it starts (earliest)
                got = self.consumer.position([tp])
                pos = got[0].offset if got and got[0].offset >= 0 else _low
            if high is not None and high >= 0 and pos is not None and pos >= 0:
                lags[(self.config.input, p)] = max(0, int(high) - int(pos))
        m.set_lag(lags)

    def _watch_models(self) -> None:
        """A thread: load a new model version when ``--checkpoint`` designates one; switched to between batches."""
        while not self.stopping:
            time.sleep(self.config.model_poll)
            try:
                ckpt = self.watcher.poll()
            except Exception:  # noqa: BLE001
                log.exception("model watch failed")
                continue
            if ckpt is not None:
                self._models.put(ckpt)

    def _partitions_changed(self) -> None:
        """After a rebalance or a restore: positions and the expiry index cover exactly the owned partitions."""
        owned = self.ownership.owned
        self.positions = {tp: o for tp, o in self.positions.items() if tp[1] in owned}
        if self.core.expiry.enabled and not self.ownership.restoring:
            ready = self.ownership.ready()
            t0 = time.perf_counter()
            n = self.core.expiry.rebuild(self.users.items(), ready)
            self.metrics.state_users.set(self.core.expiry.size())
            log.info("state expiry: indexed %d user records of partitions %s in %.2f s", n, ready,
                     time.perf_counter() - t0)

    # -- state, changelog, offsets ----------------------------------------------------------------------------
    @staticmethod
    def _store(state: UserState, writes: Sequence[StateWrite]) -> None:
        for w in writes:
            store = state.stores.get(w.partition)
            if store is not None:
                store.put(w.key, w.value)

    @staticmethod
    def _changelog(topic: str, writes: Sequence[StateWrite], last: dict[int, int]) -> list[Outgoing]:
        headers = {p: processed_header(o) for p, o in last.items()}
        return [Outgoing(topic, w.key, w.value, headers.get(w.partition, []), partition=w.partition) for w in writes]

    def _done(self, topic: str, last: dict[int, int]) -> None:
        """The batch of ``topic`` is delivered up to ``last`` (partition → offset): commit it."""
        for p, o in last.items():
            self.positions[(topic, p)] = o + 1
        for (t, p), nxt in self.delivery.changelog_next.items():
            store = self.users.stores.get(p) if t == self.changelog else None
            if store is not None:
                store.changelog_offset = nxt
        self.delivery.changelog_next.clear()
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        """Commit what is delivered, at most every ``--commit-interval`` seconds (asynchronously: the order of
        commits is kept, and each covers only delivered output)."""
        now = time.monotonic()
        pending = (self.buffer is not None and len(self.buffer) > 0) or (self.owner is not None and self.owner.pending())
        if now - self._last_commit >= self.config.commit_interval and (self.positions != self._committed or pending):
            self._commit(sync=False)

    def _positions_of(self, partitions: list[int]) -> list[Any]:
        from confluent_kafka import TopicPartition
        keep = set(partitions)
        return [TopicPartition(t, p, o) for (t, p), o in self.positions.items() if p in keep]

    def _commit(self, sync: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition
        self._flush_items()  # the contributions and rows of what is committed are delivered first
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items() if p in self.ownership.owned]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=not sync)
            self._last_commit, self._committed = time.monotonic(), dict(self.positions)
        except KafkaException as exc:
            log.warning("commit failed (retried with the next batch): %s", exc.args[0].str() if exc.args else exc)

    def _close(self, code: int) -> int:
        self.stopping = True
        try:
            if code == 0:
                self._commit(sync=True)
            self.consumer.close()  # revokes every partition: commits them and closes their stores
        except Exception:  # noqa: BLE001
            log.exception("closing the consumer failed")
            code = code or 1
        self.ownership.close()
        left = self.producer.flush(5.0)
        if left:
            log.error("%d messages undelivered at exit", left)
        self.users.close_all()
        return code


def _last_offsets(msgs: Sequence[RawMessage]) -> dict[int, int]:
    last: dict[int, int] = {}
    for m in msgs:
        if m.offset > last.get(m.partition, -1):
            last[m.partition] = m.offset
    return last
