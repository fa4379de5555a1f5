"""The owner of every item, in the learner's own process: one worker alone, and the evaluation.

A learner hands each micro-batch's :class:`~adapters.online.items.contributions.Contributions` to its owner. In a
group of workers the owner is the worker that owns the item's partition: it merges contributions into its item
table and publishes the rows (:mod:`stream.worker.item_owner`). In one process, :class:`InProcessOwner` is that
owner: it merges the contributions into the learner's own table (:meth:`~adapters.online.items.table.ItemTable.merge`,
the same rule), ``delay`` micro-batches later. ``delay`` 0 is a worker with its own item state (``--item-state
local``): a batch's contributions shape the next batch. ``delay`` 1 simulates the group's round trip
(``--item-state shared``): a worker's contributions reach its own rows only after the next micro-batch, as they do
when they travel to the owner and back. What it does not simulate: a published row carries its ``max_neighbours``
largest in-links, so a worker that does not own an item ranks with the truncated in-links of its row.

Example
-------
>>> from adapters.online.items.config import ItemConfig
>>> from adapters.online.items.table import ItemTable
>>> table, owner = ItemTable(["<unk>", "a"], ItemConfig()), InProcessOwner(delay=1)
>>> owner.settle(table, Contributions.of(["a"], t=[1.0], events=[1]))
>>> float(table.total[1])    # not yet: one micro-batch later
0.0
>>> owner.settle(table, Contributions.of(["a"], t=[2.0], events=[1])); float(table.total[1])
1.0
"""
from __future__ import annotations

from collections import deque

from adapters.errors import MetarecError
from adapters.online.items.contributions import Contributions
from adapters.online.items.table import ItemTable


class InProcessOwner:
    """Merges a learner's contributions into its own item table, ``delay`` micro-batches later."""

    def __init__(self, delay: int = 0) -> None:
        if delay < 0:
            raise MetarecError(f"the owner's delay must be ≥ 0 micro-batches, got {delay}")
        self.delay = int(delay)
        self.queue: deque[Contributions] = deque()

    def settle(self, table: ItemTable, contributions: Contributions) -> None:
        """This micro-batch's contributions in; what is due merged into ``table``."""
        self.queue.append(contributions)
        while len(self.queue) > self.delay:
            table.merge(self.queue.popleft())

    def flush(self, table: ItemTable) -> None:
        """Merge everything still waiting (the end of a stream)."""
        while self.queue:
            table.merge(self.queue.popleft())
