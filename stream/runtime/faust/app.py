"""The faust application of the worker: topics, the per-user table, the micro-batch agent, timers.

State layout
------------
One changelog-backed table ``users`` (changelog topic ``<group>-users-changelog``, compacted), key = the user id
(UTF-8 bytes), value = :meth:`adapters.online.records.UserRecord.to_bytes`. The changelog has exactly as many partitions
as the input topic, and every record is written to the changelog partition **of its user's input events** (the
partition of the user's newest event in the batch is made the *current event* of the agent's task while its record
is read and written). So the worker that owns input partition *p* owns changelog partition *p*: after a rebalance
(another worker stopped, or scale-out) the new owner restores exactly the users of the partitions it took over.

Micro-batches
-------------
``stream.take_events(batch_size, batch_ms)`` → parse all (bad → DLQ) → read the records of the touched users →
ONE :meth:`~adapters.online.learner.OnlineLearner.process` call (in a worker thread, so the event loop keeps heartbeating
to the group and serving HTTP) → write the records → produce one list per touched user and the dead letters in
bulk and wait for their delivery → only then does ``take_events`` ack the batch (offsets are committed after the
producer is flushed, at-least-once). A redelivered offset never enters a window twice (the record stores the newest
applied offset), and its user's list is published again.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from adapters.online.records import UserRecord
from stream.worker.core import BatchCore, Outgoing, RawMessage
from stream.worker.expiry import StateExpiry, expire_users, rebuild_index
from stream.runtime.faust.fetchloop import deliver_directly
from stream.runtime.faust.gapfill import OffsetTracker, fill_gaps
from stream.runtime.faust.progress import END_MARKER, commit_processed, read_mark, recover_unprocessed, write_marks
from stream.worker.http import WorkerHealth
from stream.worker.metrics import WorkerMetrics
from stream.worker.versions import CheckpointWatcher
from stream.runtime.faust.watch import update_lag, watch_commits

MAX_DLQ_BYTES = 16 * 1024 * 1024  #: = stream.worker.config.MAX_DLQ_BYTES

if TYPE_CHECKING:  # pragma: no cover
    from adapters.online.learner import OnlineLearner
    from stream.worker.config import WorkerConfig

log = logging.getLogger(__name__)

TABLE = "users"


def changelog_topic(group: str) -> str:
    """Name of the state table's changelog topic for consumer group ``group``."""
    return f"{group}-{TABLE}-changelog"


@dataclass
class WorkerRuntime:
    """Everything the agent and the timers share."""

    config: WorkerConfig
    learner: OnlineLearner
    core: BatchCore
    metrics: WorkerMetrics
    health: WorkerHealth
    watcher: CheckpointWatcher
    partitions: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "metarec-adapt"))
    next_offset: dict[int, int] = field(default_factory=dict)  #: input partition → next offset to process
    commit_watch: dict[int, tuple[int | None, float, bool]] = field(default_factory=dict)  #: _watch_commits
    processed_commit_at: float = 0.0  #: monotonic time of the last stream.runtime.faust.progress.commit_processed
    worker: Any = None  #: the faust.Worker running the app (its shutdown is triggered after the drain)
    draining: bool = False
    offsets: OffsetTracker = field(default_factory=OffsetTracker)  #: contiguity check (stream.runtime.faust.gapfill)
    expiry: StateExpiry = field(default_factory=lambda: StateExpiry(None))  #: --state-ttl index (stream.worker.expiry)
    expiry_stale: bool = False  #: rebuild the expiry index from the table before the next batch
    changelog_sent: list = field(default_factory=list)  #: this batch's changelog FutureMessages (delivery awaited)

    def set_model_metrics(self) -> None:
        ck = self.learner.checkpoint
        self.metrics.set_model(ck.version, getattr(ck, "model", ""), getattr(ck, "meta", ""))
        self.health.model_loaded = True
        self.health.model_version = ck.version


def _set_current(event: Any) -> Any:
    """Make ``event`` the current event of THIS task only (the table's partition for reads and writes)."""
    from faust.streams import _current_event

    return _current_event.set(weakref.ref(event) if event is not None else None)


def build_app(rt: WorkerRuntime, broker_credentials: Any = None) -> Any:
    """The faust app of one worker process."""
    import faust

    cfg = rt.config
    app = faust.App(
        cfg.group,
        broker=[f"kafka://{h}" for h in cfg.bootstrap.split(",")],
        broker_credentials=broker_credentials,
        store="rocksdb://" if cfg.store == "rocksdb" else "memory://",
        datadir=str(cfg.data_dir),
        topic_partitions=rt.partitions,
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
    table = app.Table(TABLE, partitions=rt.partitions, key_type=bytes, value_type=bytes,
                      help="metarec per-user records")
    # faust derives a table's codecs from its types (json for bytes): keys and values are raw bytes here. Set
    # before first use: the store and the changelog topic are created lazily with these.
    table.key_serializer = table.value_serializer = "raw"
    _track_changelog_sends(table, rt)

    async def handle(events: list[Any]) -> None:
        part_event: dict[int, Any] = {}  # partition → a faust event of it (makes the table use that partition)
        msgs = []
        received = time.time()
        for e in events:
            m = e.message
            part_event.setdefault(m.partition, e)
            msgs.append(RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp, received))
        async with rt.lock:
            msgs = await fill_gaps(app.consumer, rt.offsets, msgs, cfg, rt.metrics,
                                   lambda p: read_mark(table, cfg.input, p, current_event))
            await run_batch(msgs, part_event)

    async def run_batch(msgs: list[RawMessage], part_event: dict[int, Any]) -> None:
        """Process one micro-batch (``rt.lock`` held): learn, store, publish, then mark the progress durable."""
        if rt.expiry_stale:
            assigned = [tp.partition for tp in app.consumer.assignment() if tp.topic == cfg.input]
            rebuild_index(rt.expiry, table, assigned, rt.metrics)
            rt.expiry_stale = False
        t0 = time.perf_counter()
        good, dead = rt.core.parse(msgs)
        newest: dict[str, Any] = {}  # user → a faust event of its partition (its changelog partition)
        for ev, msg in good:
            newest[ev.user_id] = part_event[msg.partition]
        records: dict[str, UserRecord | None] = {}
        for user, fev in newest.items():
            with current_event(fev):
                raw = table.get(user.encode("utf-8"))
            records[user] = _decode(user, raw)
        t1 = time.perf_counter()
        out = await asyncio.get_running_loop().run_in_executor(rt.executor, rt.core.run, good, records)
        t2 = time.perf_counter()
        for user, rec in out.records.items():
            with current_event(newest[user]):
                table[user.encode("utf-8")] = rec.to_bytes()
            rt.expiry.touch(rec_partition(newest[user]), user, rec.last_timestamp)
        swept = expire_users(rt.expiry, table, good, part_event, current_event, rt.metrics)
        marks = {p: n for p in part_event if (n := rt.offsets.processed(p)) is not None}
        write_marks(table, cfg.input, marks, current_event)
        t3 = time.perf_counter()
        rt.health.stall("delivery of a micro-batch's output")
        await _publish(app, rt, out.lists + dead + out.dead)
        t4 = time.perf_counter()
        sent, rt.changelog_sent = rt.changelog_sent, []
        await _end_markers(app, rt, table, {rec_partition(newest[u]) for u in out.records} | swept | set(marks),
                           sent)
        rt.health.stall(None)
        t5 = time.perf_counter()
        log.debug("batch of %d: parse+read %.1f ms, learn %.1f ms, write %.1f ms, publish %d %.1f ms, "
                  "markers %.1f ms; learner %s", len(msgs), (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                  len(out.lists), (t4 - t3) * 1e3, (t5 - t4) * 1e3,
                  {k: round(v * 1e3, 1) for k, v in out.result.timings.items()})
        rt.core.observe_published(good, len(out.lists))
        for m in msgs:
            if m.offset + 1 > rt.next_offset.get(m.partition, -1):
                rt.next_offset[m.partition] = m.offset + 1

    @app.agent(source, name="metarec-worker")
    async def process(stream: Any) -> None:
        rt.health.agent_alive = True
        try:
            async for events in stream.take_events(cfg.batch_size, cfg.batch_ms / 1000.0):
                try:
                    await handle(list(events))
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - agents die silently in faust: never let one escape
                    log.exception("micro-batch of %d messages failed", len(events))
                rt.health.beat()
        finally:
            log.info("processing agent stopped")
            rt.health.agent_alive = False

    @app.timer(1.0)
    async def tick() -> None:
        """Heartbeat (proves the loop runs), consumer lag, active users."""
        try:
            if rt.health.agent_alive:
                rt.health.beat()
            rt.metrics.users_active.set(rt.core.active.count())
            await update_lag(app, rt)
            await commit_processed(rt, app.consumer)
            await watch_commits(app, rt)
            if rt.health.assigned and not rt.draining:
                await recover_unprocessed(rt, app.consumer, table, current_event, run_batch)
        except Exception:  # noqa: BLE001
            log.exception("metrics tick failed")

    @app.timer(cfg.model_poll)
    async def watch_model() -> None:
        try:
            ckpt = await asyncio.get_running_loop().run_in_executor(None, rt.watcher.poll)
            if ckpt is not None:
                await _switch(rt, ckpt)
        except Exception:  # noqa: BLE001
            log.exception("model watch failed")

    @app.task
    async def install_drain() -> None:
        """Replace faust's SIGTERM/SIGINT handling by: drain, commit, then faust's own shutdown."""
        if cfg.delivery == "direct":
            deliver_directly(app.consumer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(_drain_then_stop(app, rt, s)))

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        rt.health.assigned = False

    @app.on_partitions_assigned.connect
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == cfg.input)
        rt.health.partitions = len(mine)
        rt.metrics.assigned_partitions.set(len(mine))
        for p in list(rt.next_offset):
            if p not in mine:
                del rt.next_offset[p]
        # faust seeks every assigned partition (kept ones too) back to its committed offset after a rebalance:
        # the contiguity check restarts there (stream.runtime.faust.gapfill), else a range faust skips right after the seek
        # would go unnoticed and its commits would stall in front of it
        rt.offsets.drop(set())
        rt.expiry_stale = rt.expiry.enabled
        log.info("assigned input partitions %s", mine)

    @app.on_rebalance_complete.connect
    async def on_rebalanced(app_: Any, **kwargs: Any) -> None:
        rt.health.assigned = True

    app.metarec_table = table  # for introspection in tests/debugging
    return app


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Within the block, ``event`` is the current event of this task (table reads/writes use its partition)."""
    token = _set_current(event)
    try:
        yield
    finally:
        _current_reset(token)


def _current_reset(token: Any) -> None:
    from faust.streams import _current_event

    _current_event.reset(token)


def _decode(user: str, raw: bytes | None) -> UserRecord | None:
    if raw is None:
        return None
    try:
        return UserRecord.from_bytes(raw)
    except Exception as exc:  # noqa: BLE001 - a corrupt record must not stop the stream: start the user afresh
        log.warning("user %r: unreadable stored record (%s); starting from θ0", user, exc)
        return None


async def _publish(app: Any, rt: WorkerRuntime, messages: list[Outgoing]) -> None:
    """Produce ``messages`` in bulk and wait until the broker has them (before the batch is acked)."""
    producer = app.producer
    futures = []
    for o in messages:
        try:
            futures.append(await producer.send(o.topic, o.key, o.value, None, None, o.headers or None))
        except Exception as exc:  # noqa: BLE001
            rt.metrics.publish_errors.inc()
            log.error("cannot produce to %s: %s", o.topic, exc)
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(result, BaseException):
            rt.metrics.publish_errors.inc()
            log.error("delivery failed: %s", result)


async def _drain_then_stop(app: Any, rt: WorkerRuntime, sig: int, limit_s: float = 5.0) -> None:
    """Graceful stop: no new fetches, process everything already fetched, commit, then stop faust.

    faust's own shutdown suspends its flow control first, and a stream *skips and acks* the messages it reads
    while suspended: their offsets would be committed without being processed (lost). Draining before that
    leaves faust nothing to skip.
    """
    if rt.draining:
        return
    rt.draining = True
    loop = asyncio.get_running_loop()
    log.warning("signal %s: draining (finish the micro-batch in flight, publish, commit), then stopping", sig)
    try:
        consumer = app.consumer
        consumer.stop_flow()  # the fetch loop delivers nothing more (pausing every partition would not do)
        quiet = max(0.3, 3 * rt.config.batch_ms / 1000.0)
        deadline = loop.time() + limit_s
        last, since = -1.0, loop.time()
        while loop.time() < deadline:
            seen = rt.metrics.registry.get_sample_value("metarec_events_consumed_total") or 0.0
            now = loop.time()
            if seen != last:
                last, since = seen, now
            elif not consumer._unacked_messages and now - since >= quiet:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("drain: still busy after %.0f s; stopping anyway (the rest is consumed again later)", limit_s)
        await consumer.commit()
        await commit_processed(rt, consumer, force=True)
    except Exception:  # noqa: BLE001 - never block the shutdown
        log.exception("drain failed; stopping anyway")
    finally:
        worker = rt.worker
        if worker is not None:
            (worker._on_sigint if sig == signal.SIGINT else worker._on_sigterm)()
        else:  # pragma: no cover - an app run without faust.Worker
            await app.stop()


def rec_partition(event: Any) -> int:
    return int(event.message.partition)


def _track_changelog_sends(table: Any, rt: WorkerRuntime) -> None:
    """Collect the future of every changelog record the table sends (see :func:`_end_markers`)."""
    send = table.send_changelog

    def send_changelog(*args: Any, **kwargs: Any) -> Any:
        fut = send(*args, **kwargs)
        rt.changelog_sent.append(fut)
        return fut

    table.send_changelog = send_changelog  # faust's _send_changelog calls self.send_changelog


async def _end_markers(app: Any, rt: WorkerRuntime, table: Any, partitions: set[int], sent: list) -> None:
    """Close this batch's changelog writes with a one-record batch (a tombstone of :data:`END_MARKER`) per partition.

    Brokers that report the high watermark as the base offset of the last record batch + 1 (Tansu) would make a
    restore stop short of the last batch, and make faust refuse a local store that is "ahead" of the changelog
    (ConsistencyError). After the marker, the last batch of each written partition holds one record, so the
    watermark is exact. On Apache Kafka it is a harmless tombstone (compacted away).
    """
    await app.producer.flush()
    # faust's flush is not a delivery barrier: its buffer flush gives up after 100 ms without progress, and the
    # record its background sender holds is in neither the buffer nor aiokafka's accumulator. Offsets must not be
    # committed before the state they produced is durable (a kill -9 would leave the user's record stale for
    # good), so wait for the delivery of every changelog record of this batch.
    for result in await asyncio.gather(*sent, return_exceptions=True):
        if isinstance(result, BaseException):
            rt.metrics.publish_errors.inc()
            log.error("changelog write failed: %s", result)
    if not partitions:
        return
    topic = table.changelog_topic.get_topic_name()
    futures = []
    for p in sorted(partitions):
        futures.append(await app.producer.send(topic, END_MARKER, None, p, None, None))
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(result, BaseException):
            rt.metrics.publish_errors.inc()
            log.error("changelog end marker failed: %s", result)


async def _switch(rt: WorkerRuntime, ckpt: Any) -> None:
    """Serve ``ckpt`` from the next micro-batch on (never in the middle of one)."""
    async with rt.lock:
        old = rt.learner.checkpoint
        try:
            rt.learner.switch(ckpt)
        except Exception as exc:  # noqa: BLE001 - keep serving the current version
            log.error("cannot switch to model %s (%s); still serving %s", getattr(ckpt, "version", "?"), exc,
                      old.version)
            rt.learner.switch(old)
            return
        rt.metrics.model_switches.inc()
        rt.set_model_metrics()
        log.warning("switched model %s → %s", old.version, ckpt.version)
