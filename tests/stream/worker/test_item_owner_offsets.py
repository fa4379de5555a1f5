"""The owner of a worker's item partitions without Kafka (stream/worker/item_owner.py): what its rows prove merged."""
from __future__ import annotations

from adapters.online.items.config import ItemConfig
from adapters.online.items.contributions import Contributions
from adapters.online.items.table import ItemTable
from stream.kafka.messages import RawMessage
from stream.worker.item_owner import ItemBounds, ItemOwner, partition_for
from stream.worker.metrics import WorkerMetrics


def _owner() -> ItemOwner:
    table = ItemTable(["<unk>"] + [f"i{k}" for k in range(40)], ItemConfig())
    owner = ItemOwner(table, partitions=4, bounds=ItemBounds(), metrics=WorkerMetrics())
    owner.assigned(range(4))
    return owner


def _msg(partition: int, offset: int, items: list[str]) -> RawMessage:
    c = Contributions.of(items, t=[100.0] * len(items), events=[1] * len(items))
    return RawMessage("g-item-updates", partition, offset, None, c.to_bytes(), 0.0)


def test_merged_until_is_the_offset_after_the_newest_contribution_merged_in_the_partition() -> None:
    owner = _owner()
    by_part: dict[int, list[str]] = {}
    for k in range(40):
        by_part.setdefault(partition_for(f"i{k}".encode(), 4), []).append(f"i{k}")
    p, q = sorted(by_part)[:2]
    assert owner.merged_until(p) == 0  # nothing merged yet: everything committed is to be checked
    owner.on_contributions([_msg(p, 0, by_part[p][:2]), _msg(p, 1, by_part[p][2:3]), _msg(q, 7, by_part[q][:1])])
    assert owner.merged_until(p) == 2 and owner.merged_until(q) == 8
    owner.on_contributions([_msg(p, 1, by_part[p][2:3])])  # redelivered: skipped, the mark does not move
    assert owner.merged_until(p) == 2 and owner.table.total[owner.table.row(by_part[p][2])] == 1.0
