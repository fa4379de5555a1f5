"""A micro-batch's events applied to copies of their users' records: what the learner then adapts and learns from.

:func:`apply_events` appends each new event to its user's window (a redelivered ``(partition, offset)`` is skipped:
idempotent), gives every item first seen a row of the item table (the batch's known items are never evicted to
make room for its new ones), and collects what the item rule needs of the new events (their rows, users, ratings,
times, and each event's user's previous items).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from adapters.online.config import AppliedBatch, Interaction
from adapters.online.items.table import ItemTable
from adapters.online.records import UserRecord


def apply_events(items: ItemTable, current: Callable[[UserRecord | None], UserRecord], events: Sequence[Interaction],
                 records: Mapping[str, UserRecord | None]) -> AppliedBatch:
    """The batch applied (see the module docstring); ``current`` gives a record in the learner's vocabulary."""
    known_rows = [items.row(ev.item_id) for ev in events]
    known = [r > 0 for r in known_rows]
    items.vocab.pending += [r for r in known_rows if r > 0]  # the batch's items are not evicted for its new ones
    rows_of = [items.add(ev.item_id) for ev in events]  # new items get rows first: records sized once
    batch = AppliedBatch()
    grow: dict[str, tuple[list, list, list, list]] = {}  # user → this batch's window rows (appended at once)
    for ev, row, was_known in zip(events, rows_of, known):
        rec = batch.touched.get(ev.user_id)
        if rec is None:
            rec = batch.touched[ev.user_id] = current(records.get(ev.user_id))
        if rec.is_duplicate(ev.partition, ev.offset):
            batch.duplicates += 1
            continue
        batch.unknown += not was_known
        rating = math.nan if ev.rating is None else float(ev.rating)
        g = grow.get(ev.user_id)
        if g is None:
            g = grow[ev.user_id] = ([], [], [], [])
        batch.fresh.setdefault(ev.user_id, []).append(len(rec.items) + len(g[0]))
        batch.new_windows.append(rec.items[-items.config.cooc_window:].tolist() + g[0])
        batch.new_rows.append(row)
        batch.new_users.append(ev.user_id)
        batch.new_ratings.append(rating)
        batch.new_times.append(ev.timestamp)
        rec.mark_applied(row, ev.timestamp, ev.partition, ev.offset)
        g[0].append(row)
        g[1].append(rating)
        g[2].append(ev.timestamp)
        g[3].append(ev.offset)
        prev = batch.newest.get(ev.user_id)
        if prev is None or ev.offset >= prev.offset or ev.offset < 0:
            batch.newest[ev.user_id] = ev
    for user, (rows, ratings, stamps, offsets) in grow.items():
        batch.touched[user].extend_window(rows, ratings, stamps, offsets)
    return batch
