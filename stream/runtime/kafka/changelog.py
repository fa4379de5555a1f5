"""The changelog of the user records: what each record reflects (a header), and restoring a partition from it.

Every changelog record the worker writes for input partition *p* goes to changelog partition *p* and carries the
header :data:`PROCESSED_HEADER`: the newest input offset of *p* the record reflects. Restoring partition *p* reads
its changelog to the end (end-of-partition events, exact on brokers whose high watermark undercounts) and skips a
record whose processed offset is at or past the group's committed offset of *p*: that record came from a micro-batch
whose offsets were never committed, which the new owner processes again from the committed offset. The restored
state is therefore exactly the state as of the committed offsets, the mechanism of Quix Streams
(``quixstreams/state/recovery.py``): no barrier, no processed marks, no end markers. A record without the header
(a ``metarec forget`` tombstone, written after the input offsets it follows were committed) is always applied.

A store kept on disk after a clean stop records the next changelog offset it has not read
(:attr:`~stream.runtime.kafka.store.PartitionStore.changelog_offset`) and is brought up to date from there; if that
offset is not in the changelog any more (the topic was recreated) the store is emptied and restored from the start.

Example
-------
>>> processed_offset(processed_header(41))
41
>>> processed_offset([("other", b"x")]) is None
True
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream.runtime.kafka.store import PartitionStore
from stream.worker.state_layout import is_internal_key

log = logging.getLogger(__name__)

PROCESSED_HEADER = "metarec-processed"  #: newest input offset (of the record's partition) a changelog record reflects
PROBE_S = 10.0  #: a stored changelog offset that yields neither a record nor the end in this long is not valid


def processed_header(offset: int) -> list[tuple[str, bytes]]:
    return [(PROCESSED_HEADER, str(int(offset)).encode("ascii"))]


def processed_offset(headers: Sequence[tuple[str, bytes | None]] | None) -> int | None:
    """The :data:`PROCESSED_HEADER` of a record's headers (None: absent or unreadable)."""
    for name, value in headers or ():
        if name == PROCESSED_HEADER and value:
            try:
                return int(value.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return None
    return None


@dataclass
class RestoreResult:
    """What one partition's restore did."""

    partition: int
    records: int = 0  #: changelog records read
    applied: int = 0
    skipped: int = 0  #: records past the committed offset (processed again from there)
    start: int = 0  #: first changelog offset read
    end: int = 0  #: next changelog offset after the restore
    seconds: float = 0.0
    from_scratch: bool = False  #: the local store was emptied first (its changelog offset was not valid)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")


class RestoreCancelled(Exception):
    """The partition was revoked while it was being restored."""


def restore(consumer_config: Mapping[str, Any], topic: str, stores: Mapping[int, PartitionStore],
            committed: Mapping[int, int], cancel: threading.Event | None = None,
            probe_s: float = PROBE_S) -> list[RestoreResult]:
    """Bring each ``stores[p]`` up to the end of changelog ``topic`` partition ``p``, skipping records at or past
    ``committed[p]``; one consumer reads every partition at once.

    ``consumer_config`` is a librdkafka configuration (no group use: the partitions are assigned, nothing is
    committed). Raises :class:`RestoreCancelled` when ``cancel`` is set meanwhile. A stored start offset that yields
    neither a record nor the partition's end within ``probe_s`` seconds is taken for one the changelog does not have.
    """
    t0 = time.perf_counter()
    results = _read(consumer_config, topic, stores, committed, {p: s.changelog_offset for p, s in stores.items()},
                    cancel, probe_s)
    invalid = [p for p, r in results.items() if r is None]
    if invalid:  # a stored offset is not in the changelog: empty those stores and read them from the start
        log.warning("changelog %s does not reach the offsets the local stores of partitions %s recorded: restoring "
                    "them from the start", topic, invalid)
        for p in invalid:
            store = stores[p]
            for key, _ in list(store.items()):
                store.put(key, None)
        again = _read(consumer_config, topic, {p: stores[p] for p in invalid}, committed, dict.fromkeys(invalid, 0),
                      cancel, probe_s)
        for p in invalid:
            results[p] = again[p]
            results[p].from_scratch = True  # type: ignore[union-attr]
    seconds = time.perf_counter() - t0
    out = []
    for p in sorted(results):
        r = results[p]
        assert r is not None
        r.seconds = seconds
        out.append(r)
    return out


def _read(config: Mapping[str, Any], topic: str, stores: Mapping[int, PartitionStore], committed: Mapping[int, int],
          starts: Mapping[int, int], cancel: threading.Event | None, probe_s: float
          ) -> dict[int, RestoreResult | None]:
    """Read partitions ``starts`` of ``topic`` from those offsets to their ends; None for a partition whose start
    offset is not in the changelog (out of range, or neither a record nor the end within ``probe_s``)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    results: dict[int, RestoreResult | None] = {p: RestoreResult(p, start=o, end=o) for p, o in starts.items()}
    if not starts:
        return results
    consumer = Consumer({**config, "enable.partition.eof": True, "auto.offset.reset": "error",
                         "enable.auto.commit": False, "enable.auto.offset.store": False})
    todo = set(starts)
    seen: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        probe_deadline = time.monotonic() + probe_s
        while todo:
            if cancel is not None and cancel.is_set():
                raise RestoreCancelled(topic)
            msgs = consumer.consume(10_000, 0.2)
            if not msgs:
                stuck = [p for p in todo if starts[p] > 0 and p not in seen]
                if stuck and time.monotonic() > probe_deadline:
                    for p in stuck:
                        results[p] = None
                        todo.discard(p)
                    consumer.incremental_unassign([TopicPartition(topic, p) for p in stuck])
                continue
            for m in msgs:
                p = m.partition()
                r = results.get(p)
                if r is None:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if p in todo:
                            r.end = m.offset()
                            stores[p].changelog_offset = r.end
                            todo.discard(p)
                    elif err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
                        results[p] = None
                        todo.discard(p)
                    else:
                        log.warning("restoring %s/%d: %s", topic, p, err.str())
                    continue
                seen.add(p)
                r.records += 1
                r.end = m.offset() + 1
                key = m.key()
                if key is None or is_internal_key(key):
                    continue
                done = processed_offset(m.headers())
                if done is not None and done >= committed.get(p, 0):
                    r.skipped += 1
                    continue
                stores[p].put(key, m.value())
                r.applied += 1
    finally:
        consumer.close()
    return results
