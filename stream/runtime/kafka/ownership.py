"""Which partitions this worker owns, and their state: the consumer group's rebalance callbacks.

The group (cooperative-sticky assignment) hands out partitions of the input topic only. The worker that owns input
partition *p* also owns partition *p* of the topics partitioned like it: the control topic ``<group>-control``
(``metarec forget``) and, with the shared item state, ``<group>-item-updates``; it assigns them to itself in the
same callback (:meth:`Ownership.on_assign`) and its state is changelog partition *p*.

* **assigned**: the partitions are paused, their stores are opened and restored from their changelogs in a
  background thread (:func:`stream.runtime.kafka.changelog.restore`), the ``gate`` waited for (shared item state:
  the items' published rows applied), and resumed once restored (:meth:`Ownership.poll`); other partitions keep
  flowing meanwhile. ``/readyz`` is 200 while nothing is restoring.
* **revoked** (a rebalance or the stop): what was processed is committed (everything processed has been delivered
  already: callbacks run between micro-batches), then the stores are closed (kept on disk: a store whose partition
  comes back is brought up to date from its changelog offset).
* **lost** (the group moved on without us, e.g. after a long stall): the partitions are dropped without committing
  and their stores deleted: another worker may have processed past them.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stream.runtime.kafka.changelog import RestoreCancelled, RestoreResult, restore
from stream.runtime.kafka.store import UserState
from stream.worker.http import WorkerHealth
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

NEVER = 1 << 62  #: "committed offset" of a changelog whose records carry no processed offset: apply every record


@dataclass
class Tables:
    """The local tables restored from a changelog topic on assignment: one store per owned partition."""

    state: UserState
    changelog: str  #: the compacted topic the stores are restored from
    skip_uncommitted: bool  #: skip records past the input's committed offset (user records) or apply all (item rows)


@dataclass
class _Restore:
    partitions: list[int]
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None


class Ownership:
    """Partition ownership of one worker: assignment callbacks, restores, pause and resume, commits on revoke."""

    def __init__(self, consumer: Any, group: str, input_topic: str, co_partitioned: list[str], tables: list[Tables],
                 restore_config: dict[str, Any], metrics: WorkerMetrics, health: WorkerHealth,
                 positions: Callable[[list[int]], list[Any]], on_change: Callable[[], None],
                 gate: Callable[[list[int], threading.Event], bool] | None = None,
                 before_revoke: Callable[[list[int]], None] | None = None,
                 on_owner_change: Callable[[list[int], list[int]], None] | None = None) -> None:
        self.consumer, self.group, self.input = consumer, group, input_topic
        self.co_partitioned = list(co_partitioned)  #: topics whose partition p goes with input partition p
        self.tables = tables
        self.restore_config = dict(restore_config)
        self.metrics, self.health = metrics, health
        self.positions = positions  #: partitions → the TopicPartitions (with next offsets) to commit for them
        self.on_change = on_change  #: called once the set of restored partitions changed (expiry index, metrics)
        self.gate = gate  #: in the restore thread, after the tables: True once the partitions may resume
        self.before_revoke = before_revoke  #: deliver what the revoked partitions still owe, before their commit
        self.on_owner_change = on_owner_change  #: (partitions gained, partitions lost)
        self.owned: set[int] = set()  #: input partitions assigned (restored or restoring)
        self.restoring: dict[int, _Restore] = {}  #: partition → the restore job that holds it
        self.revoked_now: set[int] = set()  #: partitions revoked since the caller last looked (drop their messages)
        self._executor = ThreadPoolExecutor(1, "metarec-restore")
        self._first = threading.Event()  #: an assignment (possibly empty) was received

    # -- the callbacks (run inside consumer.consume on the processing thread) -------------------------------
    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition
        try:
            mine = sorted(tp.partition for tp in partitions if tp.topic == self.input)
            extra = [TopicPartition(t, p) for t in self.co_partitioned for p in mine]
            consumer.incremental_assign(list(partitions) + extra)
            if mine:
                consumer.pause(list(partitions) + extra)
            if mine:
                self.owned.update(mine)
                if self.on_owner_change is not None:
                    self.on_owner_change(mine, [])
                self._submit(mine)
            log.info("assigned input partitions %s (new: %s, paused until their state is restored)", sorted(self.owned),
                     mine)
        except Exception:  # noqa: BLE001 - an exception escaping a rebalance callback leaves the consumer stuck
            log.exception("partition assignment failed")
        finally:
            self._first.set()
            self._update_health()

    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.input)
        try:
            done = [p for p in mine if p not in self.restoring]
            if self.before_revoke is not None:
                self.before_revoke(done)
            offsets = self.positions(done)
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
        except Exception:  # noqa: BLE001 - the new owner starts from the previous commit: at least once
            log.exception("commit on revoke of partitions %s failed", mine)
        self._release(consumer, partitions, [TopicPartition(t, p) for t in self.co_partitioned for p in mine],
                      mine, destroy=False)
        log.info("revoked input partitions %s (committed, stores closed); assigned input partitions %s", mine,
                 sorted(self.owned))

    def on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.input)
        log.warning("input partitions %s lost (the group moved on): dropped without committing", mine)
        self._release(consumer, partitions, [TopicPartition(t, p) for t in self.co_partitioned for p in mine],
                      mine, destroy=True)

    def _release(self, consumer: Any, partitions: list[Any], extra: list[Any], mine: list[int], destroy: bool) -> None:
        try:
            jobs = {id(r): r for p in mine if (r := self.restoring.get(p)) is not None}
            for r in jobs.values():  # cancel, wait, and restore again the job's partitions that stay
                r.cancel.set()
                if r.future is not None:
                    try:
                        r.future.result(timeout=30)
                    except Exception:  # noqa: BLE001 - cancelled or failed: the stores are closed below
                        pass
                for p in r.partitions:
                    self.restoring.pop(p, None)
                stay = [p for p in r.partitions if p not in mine]
                if stay:
                    self._submit(stay)
            for p in mine:
                for t in self.tables:
                    t.state.close(p, destroy=destroy)
                self.owned.discard(p)
            self.revoked_now.update(mine)
            if self.on_owner_change is not None:
                self.on_owner_change([], mine)
            consumer.incremental_unassign(list(partitions) + extra)
        except Exception:  # noqa: BLE001
            log.exception("releasing partitions %s failed", mine)
        finally:
            self.on_change()
            self._update_health()

    # -- restores ----------------------------------------------------------------------------------------------
    def _submit(self, partitions: list[int]) -> None:
        r = _Restore(sorted(partitions))
        for p in r.partitions:
            self.restoring[p] = r
        r.future = self._executor.submit(self._restore, r)

    def _restore(self, r: _Restore) -> list[RestoreResult]:
        """In the restore thread: every table of ``r.partitions``, up to their changelogs' ends."""
        committed = dict.fromkeys(r.partitions, NEVER)
        if any(t.skip_uncommitted for t in self.tables):
            committed = self._committed(r.partitions)
        results = []
        for t in self.tables:
            stores = {p: t.state.open(p) for p in r.partitions}
            got = restore(self.restore_config, t.changelog, stores,
                          committed if t.skip_uncommitted else dict.fromkeys(r.partitions, NEVER), r.cancel)
            results += got
            for res in got:
                self.metrics.state_restored_records.inc(res.records)
                log.info("restored %s/%d: %d records (%d applied, %d past the committed offset %s skipped)%s",
                         t.changelog, res.partition, res.records, res.applied, res.skipped,
                         committed[res.partition] if t.skip_uncommitted else "-",
                         "; the local store was rebuilt from the start" if res.from_scratch else "")
            seconds = got[0].seconds if got else 0.0
            self.metrics.state_restore_seconds.inc(seconds)
            n = sum(res.records for res in got)
            log.info("restored %s partitions %s: %d records in %.2f s (%.0f records/s)", t.changelog, r.partitions,
                     n, seconds, n / seconds if seconds > 0 else float("nan"))
        if self.gate is not None and not self.gate(r.partitions, r.cancel):
            raise RestoreCancelled(str(r.partitions))
        return results

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets of input ``partitions`` (0: none), read by a consumer of its own that joins
        nothing (the group member's own ``committed`` blocks while its assignment is being taken up)."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition
        probe = Consumer({**self.restore_config, "group.id": self.group, "enable.auto.commit": False})
        try:
            for attempt in range(10):
                try:
                    got = probe.committed([TopicPartition(self.input, p) for p in partitions], timeout=10)
                    return {tp.partition: max(0, tp.offset) for tp in got}
                except KafkaException as exc:
                    log.warning("reading the committed offsets of %s %s failed (%s); retrying", self.input,
                                partitions, exc.args[0].str() if exc.args else exc)
                    time.sleep(min(5.0, 0.5 * (attempt + 1)))
            raise RuntimeError(f"cannot read the committed offsets of {self.input} {partitions}")
        finally:
            probe.close()

    def poll(self) -> list[int]:
        """Resume the partitions whose restore finished (call between micro-batches); the partitions resumed."""
        from confluent_kafka import TopicPartition
        jobs = {id(r): r for r in self.restoring.values() if r.future is not None and r.future.done()}
        resumed: list[int] = []
        for r in jobs.values():
            for p in r.partitions:
                self.restoring.pop(p, None)
            try:
                r.future.result()  # type: ignore[union-attr]
            except RestoreCancelled:
                continue
            except Exception:  # noqa: BLE001 - a restore that failed is retried: the partitions stay paused
                log.exception("restoring partitions %s failed; retrying", r.partitions)
                self._submit(r.partitions)
                continue
            self.consumer.resume([TopicPartition(t, p) for t in [self.input, *self.co_partitioned]
                                  for p in r.partitions])
            resumed += r.partitions
        if resumed:
            log.info("input partitions %s restored and resumed", sorted(resumed))
            self.on_change()
            self._update_health()
        return resumed

    def ready(self) -> list[int]:
        """The owned partitions whose state is restored (their messages are processed)."""
        return sorted(p for p in self.owned if p not in self.restoring)

    def _update_health(self) -> None:
        self.health.partitions = len(self.owned)
        self.metrics.assigned_partitions.set(len(self.owned))
        self.health.assigned = self._first.is_set() and not self.restoring

    def close(self) -> None:
        for r in self.restoring.values():
            r.cancel.set()
        self._executor.shutdown(wait=True)
