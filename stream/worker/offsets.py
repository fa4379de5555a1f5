"""Which input offsets the worker has processed: a contiguity check per input partition.

The worker's only map of input positions. :meth:`OffsetTracker.observe` records each offset as it is processed and
reveals a *gap* when an offset arrives beyond the next expected one (a range the consumer never delivered, see
:mod:`stream.runtime.faust.skipped_ranges`); :meth:`OffsetTracker.processed` is the offset below which everything
was processed (what the worker commits and stores as its processed mark); :meth:`OffsetTracker.position` is the
next offset to process (consumer lag is measured from it).

Example
-------
>>> t = OffsetTracker()
>>> t.expect(0, 10)
>>> t.observe(0, 10), t.observe(0, 11), t.observe(0, 14)
(None, None, (12, 14))
>>> t.processed(0), t.position(0)
(15, 15)
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OffsetTracker:
    """Next expected offset per input partition (unknown until :meth:`expect` or a first message)."""

    next: dict[int, int] = field(default_factory=dict)
    #: partition → first offset of a skipped range that could not be fetched (processing is contiguous below it)
    holes: dict[int, int] = field(default_factory=dict)

    def expect(self, partition: int, offset: int) -> None:
        self.next[partition] = int(offset)

    def known(self, partition: int) -> bool:
        return partition in self.next

    def observe(self, partition: int, offset: int) -> tuple[int, int] | None:
        """Record a delivered offset; the missing range ``[start, end)`` before it, if any."""
        expected = self.next.get(partition)
        gap = (expected, offset) if expected is not None and offset > expected else None
        if expected is None or offset + 1 > expected:
            self.next[partition] = offset + 1
        return gap

    def hole(self, partition: int, offset: int) -> None:
        """Offset ``offset`` of ``partition`` could not be processed (everything below it was)."""
        self.holes[partition] = min(int(offset), self.holes.get(partition, int(offset)))

    def position(self, partition: int) -> int | None:
        """The next offset to process (None: partition unknown)."""
        return self.next.get(partition)

    def processed(self, partition: int) -> int | None:
        """Every offset below this one was processed contiguously (None: partition unknown)."""
        n = self.next.get(partition)
        return None if n is None else min(n, self.holes.get(partition, n))

    def drop(self, keep: set[int]) -> None:
        for p in list(self.next):
            if p not in keep:
                del self.next[p]
        for p in list(self.holes):
            if p not in keep:
                del self.holes[p]
