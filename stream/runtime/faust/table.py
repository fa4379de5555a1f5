"""The worker's state table in faust: the core's :class:`~stream.worker.core.StateReader`, and its writes.

faust routes a table read or write to the store and changelog partition of the *current event* of the task (a
context variable), not to a partition the caller names. The worker needs each user's record in the changelog
partition of the user's input events, so that the owner of input partition *p* owns changelog partition *p* and a
rebalance moves exactly the users of the partitions that moved. :class:`TableStore` therefore makes a stand-in event
of the wanted partition current (:class:`PartitionEvent`; faust's table and stores only look at
``event.message.topic`` / ``.partition``) around every read and write.

The core runs in a worker thread (so that the event loop keeps heartbeating to the group and serving the
consumer); its reads hop back to the event loop (:meth:`TableStore.read`), where faust's context lives.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stream.worker.core import StateWrite
from stream.worker.state_layout import decode_mark, encode_mark, mark_key


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


class PartitionEvent:
    """A stand-in for a faust event of input ``partition``: made current, it routes table reads and writes to that
    partition."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, int(partition))


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Within the block, ``event`` is the current event of this task (table reads/writes use its partition)."""
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event) if event is not None else None)
    try:
        yield
    finally:
        _current_event.reset(token)


READ_TIMEOUT_S = 60.0  #: longest wait of a worker thread's read for the event loop


class TableStore:
    """The faust ``table`` of the worker, addressed by partition (``topic``: the input topic)."""

    def __init__(self, table: Any, topic: str) -> None:
        self.table = table
        self.topic = topic
        self._events: dict[int, PartitionEvent] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind_loop(self) -> None:
        """Remember the running event loop (call from it, before a worker thread reads): reads hop to it."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _event(self, partition: int) -> PartitionEvent:
        ev = self._events.get(partition)
        if ev is None:
            ev = self._events[partition] = PartitionEvent(self.topic, partition)
        return ev

    def read_now(self, keys: Mapping[bytes, int]) -> dict[bytes, bytes | None]:
        """Read on the event loop's thread."""
        out: dict[bytes, bytes | None] = {}
        for key, partition in keys.items():
            with current_event(self._event(partition)):
                out[key] = self.table.get(key)
        return out

    def read(self, keys: Mapping[bytes, int]) -> dict[bytes, bytes | None]:
        """:class:`~stream.worker.core.StateReader`: from the event loop's thread, or from a worker thread."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            return self.read_now(keys)

        async def on_loop() -> dict[bytes, bytes | None]:
            return self.read_now(keys)

        # bounded: a loop that stopped under a batch (shutdown) must not leave the adaptation thread waiting forever
        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(timeout=READ_TIMEOUT_S)

    def apply(self, writes: Iterable[StateWrite]) -> None:
        """Write (or delete) on the event loop: faust sends each change to the changelog partition named."""
        for w in writes:
            with current_event(self._event(w.partition)):
                if w.value is None:
                    try:
                        del self.table[w.key]
                    except KeyError:
                        pass
                else:
                    self.table[w.key] = w.value

    def read_mark(self, partition: int) -> int | None:
        """The processed mark of input ``partition`` (None: it never got one)."""
        return decode_mark(self.read_now({mark_key(partition): partition})[mark_key(partition)])

    def write_marks(self, marks: Mapping[int, int]) -> None:
        """Store ``{partition: next processed offset}``, each in its own changelog partition."""
        self.apply([StateWrite(p, mark_key(p), encode_mark(n)) for p, n in marks.items()])

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """Every stored ``(key, value)`` of the assigned partitions (the expiry index is rebuilt from them)."""
        return self.table.data.items()
