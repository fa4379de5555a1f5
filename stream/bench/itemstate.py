"""The cost of the shared item state per event, without Kafka: what the owner and the workers add.

:func:`measure_item_state` feeds the dataset's first ``n`` events in micro-batches of ``batch_size`` to a learner in
shared mode (``OnlineConfig(owner_delay=None)``: its contributions go out instead of into its own table) and times,
per input event, each step the shared item state adds to a worker's path (:mod:`stream.worker.item_owner`):

* ``learner``: the learner's whole micro-batch (adaptation, ranking, and the item rule that computes its
  contributions): the scale the others compare to;
* ``encode``: adding the contributions up and, every ``flush_every`` micro-batches (a worker flushes when it
  commits), encoding them into one message per partition of ``<group>-item-updates``;
* ``owner``: the owner's work: decode the messages, merge them into the item table, encode the changed rows (one
  flush of rows per flush of contributions);
* ``apply``: another worker applying the published rows (decode, set into its item table).

It also reports the messages per event on ``<group>-item-updates``, the rows written to ``<group>-items`` per event,
their mean sizes, and the bytes per event on both topics. The end-to-end cost, the broker included, is the bench's
one-worker run with and without ``--item-state shared``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[int, int], None]


@dataclass
class ItemStateResult:
    events: int
    batches: int
    flush_every: int  #: micro-batches per flush of contributions (and of the owner's rows)
    messages_per_event: float  #: messages on <group>-item-updates per input event
    rows_per_event: float  #: item rows published on <group>-items per input event
    contribution_bytes: float  #: mean size of a message of contributions
    row_bytes: float  #: mean size of a published row
    bytes_per_event: float  #: both topics, per input event
    us_per_event: dict[str, float] = field(default_factory=dict)  #: step → microseconds per input event

    @property
    def owner_us_per_event(self) -> float:
        return self.us_per_event.get("owner", float("nan"))


def measure_item_state(dataset: Any, checkpoint_dir: str | Path, n: int = 20_000, batch_size: int = 500,
                       partitions: int = 4, flush_every: int = 10, progress: Progress | None = None) -> ItemStateResult:
    """Time the shared item state's steps over the first ``n`` events (module docstring)."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import OnlineConfig, OnlineLearner
    from stream.bench.references import _interactions
    from stream.kafka.messages import RawMessage
    from stream.worker.item_owner import ContributionBuffer, ItemBounds, ItemOwner
    from stream.worker.metrics import WorkerMetrics

    ck = Checkpoint.load(checkpoint_dir)
    worker = OnlineLearner(ck, OnlineConfig(owner_delay=None))
    other = OnlineLearner(ck, OnlineConfig(owner_delay=None))  # applies what the owner publishes
    owner = ItemOwner(worker.items, partitions, ItemBounds(), WorkerMetrics())
    owner.assigned(range(partitions))  # one process owns every item: its own table is the owner's
    buffer = ContributionBuffer("item-updates", partitions)
    events = _interactions(dataset, n)
    records: dict[str, Any] = {}
    spent = {"learner": 0.0, "encode": 0.0, "owner": 0.0, "apply": 0.0}
    messages = rows = contribution_bytes = row_bytes = batches = offset = 0
    for s in range(0, len(events), batch_size):
        batch = events[s:s + batch_size]
        t0 = time.perf_counter()
        out = worker.process(batch, records)
        t1 = time.perf_counter()
        buffer.add(out.item_updates)
        batches += 1
        last = s + batch_size >= len(events)
        wire = buffer.drain() if batches % flush_every == 0 or last else []
        t2 = time.perf_counter()
        published: list[tuple[str, bytes | None, float]] = []
        if wire:
            msgs = []
            for m in wire:
                offset += 1
                msgs.append(RawMessage(m.topic, int(m.partition or 0), offset, None, m.value, 0.0))
            owner.on_contributions(msgs)
            published = [(key.decode("utf-8"), value, time.time()) for key, value in owner.publish()]
        t3 = time.perf_counter()
        other.apply_items(published)
        t4 = time.perf_counter()
        records.update(out.records)
        spent["learner"] += t1 - t0
        spent["encode"] += t2 - t1
        spent["owner"] += t3 - t2
        spent["apply"] += t4 - t3
        messages += len(wire)
        rows += len(published)
        contribution_bytes += sum(len(m.value or b"") for m in wire)
        row_bytes += sum(len(v or b"") for _, v, _ in published)
        if progress is not None:
            progress(min(len(events), s + batch_size), len(events))
    k = max(1, len(events))
    return ItemStateResult(len(events), batches, flush_every, messages / k, rows / k,
                           contribution_bytes / max(1, messages), row_bytes / max(1, rows),
                           (contribution_bytes + row_bytes) / k, {name: 1e6 * v / k for name, v in spent.items()})
