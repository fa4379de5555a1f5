"""A dataset as the online learner's events, and micro-batches of them through a learner (tests of adapters/online)."""
from __future__ import annotations

import math
from typing import Any


def interactions(dataset: Any, n: int | None = None, partition: int = 0) -> list[Any]:
    """The first ``n`` events of ``dataset`` (all: None) as :class:`Interaction` values at offsets 0, 1, …"""
    from adapters.online.learner import Interaction

    n = len(dataset) if n is None else n
    return [Interaction(str(u), str(i), None if math.isnan(r) else float(r), float(t), partition, k)
            for k, (u, i, r, t) in enumerate(zip(dataset.user_ids[:n], dataset.item_ids[:n], dataset.ratings[:n],
                                                  dataset.timestamps[:n]))]


def run_batches(learner: Any, events: list[Any], batch: int = 16, records: dict | None = None
                ) -> tuple[dict, dict]:
    """``events`` through ``learner`` in micro-batches of ``batch``: the records (``records`` updated in place when
    given) and each user's newest list."""
    records = {} if records is None else records
    lists = {}
    for s in range(0, len(events), batch):
        out = learner.process(events[s:s + batch], records)
        records.update(out.records)
        lists.update({r.user_id: r for r in out.recommendations})
    return records, lists
