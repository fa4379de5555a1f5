"""One micro-batch of the worker, without Kafka: parse, dead-letter, adapt, build the output messages.

The faust agent (:mod:`stream.runtime.faust.app`) hands a list of :class:`RawMessage` to :meth:`BatchCore.parse`, reads the
records of the touched users from its table, calls :meth:`BatchCore.run` (ONE
:meth:`~adapters.online.learner.OnlineLearner.process` call for the whole batch), writes the returned records back and
produces the :class:`Outgoing` messages. Everything here is synchronous and never raises for bad input: a message
that breaks the contract becomes a dead letter, and a user whose events make the learner fail is isolated (the
batch is retried user by user) and dead-lettered with reason ``processing_error``, so one bad message never stops
or stalls the stream.

Example
-------
>>> core = BatchCore(learner=None, metrics=WorkerMetrics(), input_topic="interactions")
>>> ok, dead = core.parse([RawMessage("interactions", 0, 7, b"u1", b"not json", 1.0e9)])
>>> ok, dead[0].headers
([], [('error', b'invalid_json'), ('source', b'interactions/0/7')])
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.online.learner import BatchResult, Interaction, OnlineLearner
from adapters.online.records import UserRecord
from stream.worker.hitrate import OnlineHitRate
from stream.worker.metrics import ActiveUsers, WorkerMetrics
from stream.kafka.schema import MAX_EVENT_BYTES, REASONS, InvalidEvent, parse_event

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"
LIVE_SKEW_S = 3600.0  #: record timestamps further than this from the wall clock are event times, not produce times


@dataclass(frozen=True)
class RawMessage:
    """An input message as read from Kafka (``timestamp``: the record timestamp, epoch seconds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    received: float | None = None  #: wall time the worker took it from the consumer (None: unknown)


@dataclass(frozen=True)
class Outgoing:
    """A message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class BatchOutput:
    """What one micro-batch produced (see :meth:`BatchCore.run`)."""

    records: dict[str, UserRecord]
    lists: list[Outgoing]
    dead: list[Outgoing]
    result: BatchResult


def dead_letter(msg: RawMessage, reason: str, dlq_topic: str) -> Outgoing:
    """The dead letter of ``msg``: its original key and bytes, headers ``error`` and ``source``.

    A message with neither key nor value (a null tombstone on the input) is dead-lettered with an empty key.
    """
    source = f"{msg.topic}/{msg.partition}/{msg.offset}".encode()
    # a Kafka client cannot produce a record with neither key nor value: such a dead letter gets an empty key
    key = msg.key if msg.key is not None or msg.value is not None else b""
    return Outgoing(dlq_topic, key, msg.value, [("error", reason.encode()), ("source", source)])


class BatchCore:
    """The per-batch logic of the worker (metrics included), independent of faust."""

    def __init__(self, learner: OnlineLearner | None, metrics: WorkerMetrics, input_topic: str = "interactions",
                 output_topic: str = "recommendations", dlq_topic: str | None = None,
                 hitrate: OnlineHitRate | None = None, active: ActiveUsers | None = None,
                 max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.learner = learner
        self.max_event_bytes = int(max_event_bytes)
        self.metrics = metrics
        self.input_topic, self.output_topic = input_topic, output_topic
        self.dlq_topic = dlq_topic or f"{input_topic}.dlq"
        self.hitrate = hitrate or OnlineHitRate()
        self.active = active or ActiveUsers()
        for reason in sorted(REASONS | {PROCESSING_ERROR}):  # every series exists from the start (value 0)
            metrics.events_invalid.labels(reason)

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

    # -- the batch -------------------------------------------------------------------------------------
    def run(self, good: Sequence[tuple[Interaction, RawMessage]], records: Mapping[str, UserRecord | None]
            ) -> BatchOutput:
        """ONE learner call for the batch (user-by-user only after a failure), metrics, output messages."""
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
        m = self.metrics
        m.batches.inc()
        if events:
            m.adaptation_seconds.observe(result.adapt_seconds)
        if not math.isnan(result.support_loss):
            m.adaptation_loss.set(result.support_loss)
        m.unknown_items.inc(result.unknown_items)
        m.duplicates.inc(result.duplicates)
        m.online_hit_rate.set(self.hitrate.rate)
        self.active.touch({ev.user_id for ev in events})
        m.users_active.set(self.active.count())
        return BatchOutput(result.records, lists, dead, result)

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
            if not math.isnan(r.support_loss):
                losses.append(r.support_loss)
        merged.support_loss = sum(losses) / len(losses) if losses else math.nan
        return merged, dead

    def _list_message(self, rec: Any, now: float) -> Outgoing:
        assert self.learner is not None
        value = {"user_id": rec.user_id, "items": list(rec.items), "scores": [float(s) for s in rec.scores],
                 "model_version": self.learner.model_version,
                 "as_of": {"topic": self.input_topic, "partition": int(rec.partition), "offset": int(rec.offset)},
                 "event_timestamp": float(rec.event_timestamp), "generated_at": now}
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
