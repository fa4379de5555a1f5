"""The control agent: carries out the requests of ``<group>-control`` (forget a user) in the worker that owns them.

The control topic has as many partitions as the input topic and its requests are keyed by user
(:mod:`stream.kafka.control`), so faust's co-partitioned assignment gives control partition *p* to the worker that
owns input partition *p*, hence changelog partition *p*, where the user's record lives. Per batch of requests, with
the runner's lock held (no micro-batch runs meanwhile):

1. the input offsets processed so far are committed (:meth:`~stream.runtime.faust.lost_acks.ProcessedCommits.commit_held`):
   after a crash, the events already applied to the deleted record are not delivered again, so they cannot bring
   the user back;
2. the users' records are deleted (:func:`stream.worker.forget.forget_users`): a tombstone each in their changelog
   partition, delivered and sealed (:mod:`stream.runtime.faust.changelog_barrier`) before
3. the acknowledgements are produced: a tombstone of each user's key on the output topic;
4. the control offsets are committed (faust's own commits of them could be lost around a restart, and a request
   carried out again would delete a record the user started after it).

Ordering: a request takes effect between two micro-batches. Events of the user already processed are forgotten;
events not processed yet at that moment (still on the input topic or in faust's buffer, even if they were
produced before the request) start a new record afterwards.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from stream.kafka.control import control_topic
from stream.kafka.messages import RawMessage
from stream.runtime.faust.delivery import publish
from stream.runtime.faust.runner import FaustRunner
from stream.worker.forget import forget_users

log = logging.getLogger(__name__)


class ControlAgent:
    """The control agent of one worker process (register it on the app with :meth:`register`)."""

    def __init__(self, app: Any, runner: FaustRunner) -> None:
        self.app, self.runner = app, runner
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.topic = app.topic(control_topic(runner.config.group), partitions=runner.partitions, **raw)

    def register(self) -> None:
        @self.app.agent(self.topic, name="metarec-control")
        async def control(stream: Any) -> None:
            async for events in stream.take_events(100, 0.05):
                try:
                    await self.on_requests([e.message for e in events])
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - agents die silently in faust: never let one escape
                    log.exception("control agent: batch of %d requests failed", len(events))

    async def on_requests(self, messages: list[Any]) -> int:
        """Carry out a batch of control messages (faust messages); returns how many users were forgotten."""
        runner, app = self.runner, self.app
        store, barrier = runner.store, runner.barrier
        assert store is not None and barrier is not None
        msgs = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp) for m in messages]
        async with runner.lock:
            await runner.commits.commit_held(app.consumer)
            store.bind_loop()
            out = forget_users(runner.core, msgs, store)
            store.apply(out.writes)
            await barrier.seal(app.producer, out.partitions_written)
            await publish(app.producer, out.lists, runner.metrics)
        await self.commit(msgs)
        return len(out.lists)

    async def commit(self, msgs: list[RawMessage]) -> None:
        """Commit the control offsets of ``msgs`` (through faust's commit path, as the input's processed offsets)."""
        from faust.types import TP

        ends: dict[Any, int] = {}
        for m in msgs:
            tp = TP(m.topic, m.partition)
            ends[tp] = max(ends.get(tp, 0), m.offset + 1)
        consumer = self.app.consumer
        committed = consumer._committed_offset
        behind = {tp: n for tp, n in ends.items() if (c := committed.get(tp)) is None or n > c}
        if not behind:
            return
        try:
            await consumer._commit_offsets(behind)
        except Exception:  # noqa: BLE001 - faust's own commits of the acked requests follow
            log.exception("control agent: commit of %s failed", {tp.partition: n for tp, n in behind.items()})
