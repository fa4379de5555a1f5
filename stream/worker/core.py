"""The worker core: one micro-batch of raw Kafka messages in, what to store, publish and dead-letter out. No Kafka.

:meth:`WorkerCore.process` is the whole per-batch logic of the worker, synchronous and free of any client:

1. parse and validate every message (:func:`stream.kafka.schema.parse_event`); a message that breaks the contract
   becomes a dead letter with its reason;
2. read the stored records of the touched users through a :class:`StateReader` (a user's record lives in the
   changelog partition of their newest event of the batch);
3. adapt every touched user in ONE :meth:`~adapters.online.learner.OnlineLearner.process` call (a user whose events
   make the learner fail is isolated: the batch is retried user by user and that user's events are dead-lettered
   with reason ``processing_error``, so one bad message never stops or stalls the stream);
4. return a :class:`BatchOutput`: the :class:`StateWrite` of every record (and a deletion per user expired by
   ``--state-ttl``, :mod:`stream.worker.expiry`), one top-K list per touched user, and the dead letters.

A runtime (:mod:`stream.runtime.faust`) feeds it batches, writes the state, publishes the output, waits for its
delivery and only then commits the batch's offsets (at-least-once). A redelivered offset never enters a window twice
(the record stores the newest applied offset); its user's list is published again.

Example
-------
>>> core = WorkerCore(learner=None, metrics=WorkerMetrics())
>>> out = core.process([RawMessage("interactions", 0, 7, b"u1", b"not json", 1.0e9)], MemoryState())
>>> out.lists, out.dead[0].headers
([], [('error', b'invalid_json'), ('source', b'interactions/0/7')])
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from adapters.meta.checkpoint import Checkpoint
from adapters.online.learner import BatchResult, Interaction, OnlineLearner, Recommendation
from adapters.online.items.contributions import Contributions
from adapters.online.records import UserRecord
from stream.kafka.messages import Outgoing, RawMessage
from stream.kafka.schema import MAX_EVENT_BYTES, REASONS, InvalidEvent, parse_event
from stream.kafka.schema import dlq_topic as dlq_topic_of
from stream.worker.expiry import StateExpiry
from stream.worker.hitrate import OnlineHitRate
from stream.worker.liststats import ListStats
from stream.worker.metrics import ActiveUsers, WorkerMetrics
from stream.worker.rollout import INCOMPATIBLE
from stream.worker.state_layout import user_key

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"
LIVE_SKEW_S = 3600.0  #: record timestamps further than this from the wall clock are event times, not produce times

__all__ = ["BatchOutput", "MemoryState", "Outgoing", "RawMessage", "StateReader", "StateWrite", "WorkerCore",
           "dead_letter"]


@dataclass(frozen=True)
class StateWrite:
    """A write to the state table, in changelog partition ``partition`` (``value`` None: delete, a tombstone)."""

    partition: int
    key: bytes
    value: bytes | None


class StateReader(Protocol):
    """Where the core reads the stored records from."""

    def read(self, keys: Mapping[bytes, int]) -> dict[bytes, bytes | None]:
        """The stored value of each key (None: absent); ``keys`` maps a key to the partition it is stored in."""
        ...


class MemoryState:
    """A :class:`StateReader` over a dict, which :meth:`apply` updates: the state of tests and tools.

    >>> s = MemoryState(); s.apply([StateWrite(0, b"u1", b"r"), StateWrite(1, b"u2", None)])
    >>> s.read({b"u1": 0, b"u2": 1})
    {b'u1': b'r', b'u2': None}
    """

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[int, bytes]] = {}

    def read(self, keys: Mapping[bytes, int]) -> dict[bytes, bytes | None]:
        return {k: (v[1] if (v := self.data.get(k)) is not None else None) for k in keys}

    def apply(self, writes: Sequence[StateWrite]) -> None:
        for w in writes:
            if w.value is None:
                self.data.pop(w.key, None)
            else:
                self.data[w.key] = (w.partition, w.value)


@dataclass
class BatchOutput:
    """What one micro-batch produced (see :meth:`WorkerCore.process`)."""

    writes: list[StateWrite]
    lists: list[Outgoing]
    dead: list[Outgoing]
    good: list[tuple[Interaction, RawMessage]] = field(default_factory=list)  #: the valid events, in order
    records: dict[str, UserRecord] = field(default_factory=dict)  #: the touched users' new records
    result: BatchResult | None = None  #: the learner's result (None: no valid event)
    expired: int = 0  #: users deleted by the TTL
    #: shared item state: the batch's item contributions (the runtime buffers them, stream.worker.item_owner)
    item_updates: Contributions = field(default_factory=Contributions.empty)

    @property
    def publish(self) -> list[Outgoing]:
        """Every message to produce now: the lists and the dead letters."""
        return self.lists + self.dead

    @property
    def partitions_written(self) -> set[int]:
        return {w.partition for w in self.writes}


def dead_letter(msg: RawMessage, reason: str, dlq_topic: str) -> Outgoing:
    """The dead letter of ``msg``: its original key and bytes, headers ``error`` and ``source``.

    A message with neither key nor value (a null tombstone on the input) is dead-lettered with an empty key.
    """
    source = f"{msg.topic}/{msg.partition}/{msg.offset}".encode()
    # a Kafka client cannot produce a record with neither key nor value: such a dead letter gets an empty key
    key = msg.key if msg.key is not None or msg.value is not None else b""
    return Outgoing(dlq_topic, key, msg.value, [("error", reason.encode()), ("source", source)])


class WorkerCore:
    """The per-batch logic of the worker (metrics included), independent of Kafka clients and of faust."""

    def __init__(self, learner: OnlineLearner | None, metrics: WorkerMetrics, input_topic: str = "interactions",
                 output_topic: str = "recommendations", dlq_topic: str | None = None,
                 hitrate: OnlineHitRate | None = None, active: ActiveUsers | None = None,
                 max_event_bytes: int = MAX_EVENT_BYTES, expiry: StateExpiry | None = None,
                 liststats: ListStats | None = None) -> None:
        self.learner = learner
        self.expiry = expiry or StateExpiry(None)
        self.max_event_bytes = int(max_event_bytes)
        self.metrics = metrics
        self.input_topic, self.output_topic = input_topic, output_topic
        self.dlq_topic = dlq_topic or dlq_topic_of(input_topic)
        self.hitrate = hitrate or OnlineHitRate()
        self.liststats = liststats or ListStats()  #: coverage and diversity of the published lists
        self.active = active or ActiveUsers()
        for reason in sorted(REASONS | {PROCESSING_ERROR}):  # every series exists from the start (value 0)
            metrics.events_invalid.labels(reason)

    # -- the micro-batch -------------------------------------------------------------------------------
    def process(self, messages: Sequence[RawMessage], store: StateReader) -> BatchOutput:
        """Parse, read, adapt, expire: everything to store, publish and dead-letter for ``messages``."""
        good, dead = self.parse(messages)
        if not good:
            self.metrics.batches.inc()
            return BatchOutput([], [], dead)
        home: dict[str, int] = {}  # user → partition of their newest event (where their record is stored)
        for ev, msg in good:
            home[ev.user_id] = msg.partition
        stored = store.read({user_key(u): p for u, p in home.items()})
        records = {u: _decode(u, stored.get(user_key(u))) for u in home}
        out = self.run(good, records)
        writes = [StateWrite(home[u], user_key(u), rec.to_bytes()) for u, rec in out.records.items()]
        for u, rec in out.records.items():
            self.expiry.touch(home[u], u, rec.last_timestamp)
        expired = self.expire(good)
        writes += expired
        out.writes, out.dead, out.expired = writes, dead + out.dead, len(expired)
        return out

    def expire(self, good: Sequence[tuple[Interaction, RawMessage]]) -> list[StateWrite]:
        """Advance the event-time watermarks with this batch's events; a deletion per user past the TTL."""
        if not self.expiry.enabled:
            return []
        times: dict[int, list[float]] = {}
        for ev, msg in good:
            times.setdefault(msg.partition, []).append(ev.timestamp)
        gone: list[StateWrite] = []
        m = self.metrics
        for partition, ts in times.items():
            m.state_watermark.labels(str(partition)).set(self.expiry.advance(partition, ts))
            users = self.expiry.due(partition)
            gone += [StateWrite(partition, user_key(u), None) for u in users]
            if users:
                log.info("partition %d: expired %d inactive users (event-time watermark %.0f, TTL %.0f s)",
                         partition, len(users), self.expiry.watermark(partition) or 0.0, self.expiry.ttl_s or 0.0)
        m.state_expired.inc(len(gone))
        m.state_users.set(self.expiry.size())
        return gone

    def apply_items(self, updates: Sequence[tuple[bytes, bytes | None, float]]) -> int:
        """Apply published rows of the group's item state ``(item id, row or None: deleted, record time)``, between
        two micro-batches; how many were applied."""
        assert self.learner is not None
        n = self.learner.apply_items([(k.decode("utf-8", "replace"), v, ts) for k, v, ts in updates])
        self.metrics.item_updates_applied.inc(n)
        self.metrics.items.set(self.learner.items.n_active)
        return n

    def item_row(self, item_id: str) -> dict | None:
        """The learner's current row of ``item_id`` (None: it holds none): what ``GET /items?id=`` shows."""
        return None if self.learner is None else self.learner.item_state(item_id)

    def switch(self, checkpoint: Checkpoint) -> bool:
        """Serve ``checkpoint`` from the next batch on; False (still serving the current one) if it cannot be."""
        assert self.learner is not None
        old = self.learner.checkpoint
        try:
            self.learner.switch(checkpoint)
        except Exception as exc:  # noqa: BLE001 - keep serving the current version
            self.metrics.rollout.failed(str(checkpoint.version), INCOMPATIBLE,
                                        f"the learner refused it: {type(exc).__name__}: {exc}")
            if self.learner.checkpoint is not old:  # refused after it began: serve the old version again
                self.learner.switch(old)
            return False
        self.metrics.model_switches.inc()
        self.set_model_metrics()
        log.warning("switched model %s → %s", old.version, checkpoint.version)
        return True

    def set_model_metrics(self) -> None:
        assert self.learner is not None
        ck = self.learner.checkpoint
        self.metrics.set_model(ck.version, ck.model, ck.meta)
        self.metrics.items.set(self.learner.items.n_active)

    # -- parsing ---------------------------------------------------------------------------------------
    def parse(self, messages: Sequence[RawMessage]) -> tuple[list[tuple[Interaction, RawMessage]], list[Outgoing]]:
        """Valid interactions (with their message) and the dead letters of the invalid messages."""
        good: list[tuple[Interaction, RawMessage]] = []
        dead: list[Outgoing] = []
        self.metrics.events_consumed.inc(len(messages))
        self.metrics.batch_events.observe(len(messages))
        for msg in messages:
            try:
                ev = parse_event(msg.value, self.max_event_bytes)
            except InvalidEvent as exc:
                reason = exc.reason
            except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the stream
                log.exception("unexpected error parsing %s/%d/%d", msg.topic, msg.partition, msg.offset)
                reason = f"{PROCESSING_ERROR}: {type(exc).__name__}"
            else:
                ts = ev.timestamp if ev.timestamp is not None else msg.timestamp
                good.append((Interaction(ev.user_id, ev.item_id, ev.rating, float(ts), msg.partition, msg.offset),
                             msg))
                continue
            self.metrics.events_invalid.labels(reason.split(":")[0]).inc()
            dead.append(dead_letter(msg, reason, self.dlq_topic))
        return good, dead

    # -- adaptation -------------------------------------------------------------------------------------
    def run(self, good: Sequence[tuple[Interaction, RawMessage]], records: Mapping[str, UserRecord | None]
            ) -> BatchOutput:
        """ONE learner call for the batch (user-by-user only after a failure), metrics, the lists."""
        assert self.learner is not None
        events = [ev for ev, _ in good]
        for ev in events:  # the lists published so far versus these next events
            self.hitrate.on_event(ev.user_id, ev.item_id, ev.rating)
        dead: list[Outgoing] = []
        try:
            result = self.learner.process(events, records)
        except Exception:  # noqa: BLE001 - isolate the user(s) that make the learner fail
            log.exception("micro-batch of %d events failed; retrying user by user", len(events))
            result, dead = self._isolate(good, records)
        now = time.time()
        lists = [self._list_message(rec, now) for rec in result.recommendations]
        for rec in result.recommendations:
            self.hitrate.on_published(rec.user_id, rec.items)
        self.liststats.on_published([rec.items for rec in result.recommendations], self.learner.item_vectors)
        m = self.metrics
        m.batches.inc()
        if events:
            m.adaptation_seconds.observe(result.adapt_seconds)
        if not math.isnan(result.support_loss):
            m.adaptation_loss.set(result.support_loss)
        m.unknown_items.inc(result.unknown_items)
        m.items.set(self.learner.items.n_active)
        m.duplicates.inc(result.duplicates)
        m.online_hit_rate.set(self.hitrate.rate)
        m.list_coverage.set(self.liststats.coverage(self.learner.items.n_active))
        m.list_diversity.set(self.liststats.diversity)
        self.active.touch({ev.user_id for ev in events})
        m.users_active.set(self.active.count())
        return BatchOutput([], lists, dead, list(good), result.records, result, item_updates=result.item_updates)

    def _isolate(self, good: Sequence[tuple[Interaction, RawMessage]], records: Mapping[str, UserRecord | None]
                 ) -> tuple[BatchResult, list[Outgoing]]:
        by_user: dict[str, list[tuple[Interaction, RawMessage]]] = {}
        for pair in good:
            by_user.setdefault(pair[0].user_id, []).append(pair)
        merged = BatchResult({}, [], math.nan, 0, 0, 0.0)
        losses: list[float] = []
        dead: list[Outgoing] = []
        for user, pairs in by_user.items():
            try:
                r = self.learner.process([ev for ev, _ in pairs], {user: records.get(user)})  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001
                log.error("user %r: processing failed (%s: %s); %d events dead-lettered",
                          user, type(exc).__name__, exc, len(pairs))
                self.metrics.processing_errors.inc(len(pairs))
                self.metrics.events_invalid.labels(PROCESSING_ERROR).inc(len(pairs))
                dead.extend(dead_letter(msg, f"{PROCESSING_ERROR}: {type(exc).__name__}: {exc}"[:500],
                                        self.dlq_topic) for _, msg in pairs)
                continue
            merged.records.update(r.records)
            merged.recommendations.extend(r.recommendations)
            merged.duplicates += r.duplicates
            merged.unknown_items += r.unknown_items
            merged.adapt_seconds += r.adapt_seconds
            merged.item_updates = merged.item_updates.combine(r.item_updates)
            if not math.isnan(r.support_loss):
                losses.append(r.support_loss)
        merged.support_loss = sum(losses) / len(losses) if losses else math.nan
        return merged, dead

    def _list_message(self, rec: Recommendation, now: float) -> Outgoing:
        assert self.learner is not None
        value = {"user_id": rec.user_id, "items": list(rec.items), "scores": [float(s) for s in rec.scores],
                 "model_version": self.learner.model_version,
                 "as_of": {"topic": self.input_topic, "partition": int(rec.partition), "offset": int(rec.offset)},
                 "event_timestamp": float(rec.event_timestamp), "generated_at": now}
        if rec.because is not None:  # optional (contract): the window item that supports each listed item most
            value["because"] = list(rec.because)
        if rec.uncertainty is not None:  # --task-learner bayes: the posterior std of each score
            value["uncertainty"] = [float(u) for u in rec.uncertainty]
        return Outgoing(self.output_topic, rec.user_id.encode("utf-8"),
                        json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def observe_published(self, good: Sequence[tuple[Interaction, RawMessage]], n_lists: int,
                          published_at: float | None = None) -> None:
        """Count the lists and observe each event's latency until its user's list was delivered.

        The latency starts at the Kafka record timestamp (producer CreateTime: a live stream). A record timestamp
        more than :data:`LIVE_SKEW_S` away from now is an event time (a replay of history keeps them): then it
        starts when the worker took the message from its consumer instead.
        """
        now = time.time() if published_at is None else published_at
        self.metrics.recommendations_published.inc(n_lists)
        hist = self.metrics.event_to_publish_seconds
        for _, msg in good:
            start = msg.timestamp
            if abs(now - start) > LIVE_SKEW_S and msg.received is not None:
                start = msg.received
            hist.observe(max(0.0, now - start))


def _decode(user: str, raw: bytes | None) -> UserRecord | None:
    if raw is None:
        return None
    try:
        return UserRecord.from_bytes(raw)
    except Exception as exc:  # noqa: BLE001 - a corrupt record must not stop the stream: start the user afresh
        log.warning("user %r: unreadable stored record (%s); starting from θ0", user, exc)
        return None
