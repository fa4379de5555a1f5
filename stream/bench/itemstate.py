"""The cost of the shared item state per event, without Kafka: what the item agent and the workers add.

:func:`measure_item_state` feeds the dataset's first ``n`` events in micro-batches of ``batch_size`` to a learner in
shared mode (:mod:`adapters.online.sharedside`) and times, per input event, each step the shared item state adds to
the worker's path:

* ``learner``: the learner's whole micro-batch in shared mode (adaptation, ranking, and its item step, which
  computes one contribution per item of the batch instead of learning them): the scale the others compare to;
* ``encode``: the contributions to bytes, bundled per partition of ``<group>-item-updates`` (the worker, before
  producing them: one message per partition and micro-batch);
* ``agent``: the item agent's work: unbundle, decode each contribution, merge it into the item's row, encode the
  row (the faust table write and the changelog produce are not included: faust's per-message cost is in the
  end-to-end figure);
* ``apply``: one worker applying the published rows (decode and set into its item side).

It also reports the messages per event on ``<group>-item-updates``, the rows written to ``<group>-items`` per
event, and their mean sizes. The end-to-end cost, faust and the broker included, is the bench's one-worker run with and without
``--item-state shared``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[int, int], None]


@dataclass
class ItemStateResult:
    events: int
    batches: int
    messages_per_event: float  #: bundles of contributions on <group>-item-updates per input event
    rows_per_event: float  #: item rows merged and written to <group>-items per input event
    contribution_bytes: float  #: mean size of a contribution
    row_bytes: float  #: mean size of a published row
    us_per_event: dict[str, float] = field(default_factory=dict)  #: step → microseconds per input event

    @property
    def agent_us_per_event(self) -> float:
        return self.us_per_event.get("agent", float("nan"))


def measure_item_state(dataset: Any, checkpoint_dir: Any, n: int = 20_000, batch_size: int = 500,
                       partitions: int = 4, progress: Progress | None = None) -> ItemStateResult:
    """Time the shared item state's steps over the first ``n`` events (module docstring)."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.itemshare import ItemContribution, ItemRow, ShareConfig, merge, pack_bundle, unpack_bundle
    from stream.kafka.partitioner import partition_for
    from adapters.online.learner import OnlineConfig, OnlineLearner
    from stream.bench.references import _interactions

    share = ShareConfig()
    learner = OnlineLearner(Checkpoint.load(checkpoint_dir), OnlineConfig(shared_items=share))
    events = _interactions(dataset, n)
    rows: dict[str, ItemRow] = {}
    records: dict[str, Any] = {}
    spent = {"learner": 0.0, "encode": 0.0, "agent": 0.0, "apply": 0.0}
    messages = rows_written = contribution_bytes = row_bytes = batches = 0
    offset = 0
    for s in range(0, len(events), batch_size):
        batch = events[s:s + batch_size]
        t0 = time.perf_counter()
        out = learner.process(batch, records)
        t1 = time.perf_counter()
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for item, c in out.item_updates:
            key = item.encode()
            by_partition.setdefault(partition_for(key, partitions), []).append((key, c.to_bytes()))
        wire = [pack_bundle(parts) for parts in by_partition.values()]
        t2 = time.perf_counter()
        published = []
        for data in wire:
            offset += 1
            for key, value in unpack_bundle(data):
                item = key.decode()
                row = merge(rows.get(item), ItemContribution.from_bytes(value), offset, share)
                rows[item] = row
                published.append((item, row.to_bytes(), time.time()))
        t3 = time.perf_counter()
        learner.apply_items(published)
        t4 = time.perf_counter()
        records.update(out.records)
        spent["learner"] += t1 - t0
        spent["encode"] += t2 - t1
        spent["agent"] += t3 - t2
        spent["apply"] += t4 - t3
        messages += len(wire)
        rows_written += len(published)
        contribution_bytes += sum(len(d) for d in wire)
        row_bytes += sum(len(d) for _, d, _ in published)
        batches += 1
        if progress is not None:
            progress(min(len(events), s + batch_size), len(events))
    k = max(1, len(events))
    return ItemStateResult(len(events), batches, messages / k, rows_written / k, contribution_bytes / max(1, rows_written),
                           row_bytes / max(1, rows_written), {name: 1e6 * v / k for name, v in spent.items()})
