"""Kafka messages as plain values: one read from a topic (:class:`RawMessage`) and one to produce (:class:`Outgoing`).

The worker core takes and returns these; only a runtime turns them into client calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RawMessage:
    """An input message as read from Kafka (``timestamp``: the record timestamp, epoch seconds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    received: float | None = None  #: wall time the worker took it from the consumer (None: unknown)


@dataclass(frozen=True)
class Outgoing:
    """A message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None  #: None: the producer's partitioner (by key)
