"""Interaction messages of a topic as a training :class:`~adapters.data.datasets.Dataset`.

Each message value is parsed by the event schema (:func:`stream.kafka.schema.parse_event`); invalid messages are
counted and left out, as the worker dead-letters them. An event without its own ``timestamp`` takes the Kafka record
timestamp, as in the worker.

Example
-------
>>> ds, bad = events_dataset([(b'{"user_id": "u", "item_id": "i", "rating": 4, "timestamp": 10}', 0.0),
...                           (b"not json", 0.0), (b'{"user_id": "v", "item_id": "i"}', 5.0)], "t")
>>> len(ds), bad, ds.timestamps.tolist(), ds.user_ids.tolist()
(2, 1, [5.0, 10.0], ['v', 'u'])
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from adapters.data.datasets import Dataset
from stream.kafka.schema import InvalidEvent, parse_event


def events_dataset(messages: Iterable[tuple[bytes | None, float]], name: str) -> tuple[Dataset, int]:
    """``(value, record timestamp in seconds)`` pairs → (a Dataset sorted by event time, number of invalid ones)."""
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[float] = []
    invalid = 0
    for value, record_ts in messages:
        try:
            ev = parse_event(value)
        except InvalidEvent:
            invalid += 1
            continue
        users.append(ev.user_id)
        items.append(ev.item_id)
        ratings.append(float("nan") if ev.rating is None else float(ev.rating))
        times.append(float(ev.timestamp if ev.timestamp is not None else record_ts))
    ts = np.asarray(times, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    u = np.asarray(users, dtype=object)[order]
    i = np.asarray(items, dtype=object)[order]
    r = np.asarray(ratings, dtype=np.float32)[order]
    h = hashlib.blake2b(digest_size=8)
    for part in (u, i):
        h.update("\x1f".join(map(str, part)).encode("utf-8"))
    h.update(r.tobytes())
    h.update(ts[order].tobytes())
    return Dataset(name=name, fingerprint=h.hexdigest(), user_ids=u, item_ids=i, ratings=r,
                   timestamps=ts[order]), invalid
