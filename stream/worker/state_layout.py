"""The layout of the worker's state: its table, the table's changelog topic, and the keys stored in it.

One changelog-backed table ``users`` (changelog topic ``<group>-users-changelog``, compacted). Its keys are

* a user's id, UTF-8 encoded: the value is :meth:`adapters.online.records.UserRecord.to_bytes` (its header is read
  without decoding the rest by :func:`adapters.online.records.record_position`);
* internal keys, which start with the byte ``0xFF`` (never valid UTF-8, so never a user id):

  - :func:`mark_key` of an input partition: the next offset of that partition processed *contiguously*
    (:mod:`stream.runtime.faust.acked_unprocessed`), stored with the state it covers;
  - :data:`END_MARKER`: a tombstone that closes each micro-batch's changelog writes
    (:mod:`stream.runtime.faust.changelog_barrier`).

Readers of the table or of its changelog skip internal keys (:func:`is_internal_key`).

The group's shared item state (:mod:`stream.worker.item_owner`): contributions travel on ``<group>-item-updates``
(one value per partition, each item in the partition its id hashes to) to the items' owners, which publish each
item's row on the compacted topic ``<group>-items`` (keyed by item id; internal keys as above), which every worker
reads.

Example
-------
>>> mark_key(3)
b'\\xffmetarec/processed/3'
>>> is_internal_key(mark_key(3)), is_internal_key(END_MARKER), is_internal_key("u1".encode())
(True, True, False)
>>> decode_mark(encode_mark(1234))
1234
>>> changelog_topic("metarec"), items_topic("metarec"), item_updates_topic("metarec")
('metarec-users-changelog', 'metarec-items', 'metarec-item-updates')
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

TABLE = "users"  #: name of the state table (faust names its changelog ``<app id>-<table>-changelog``)
INTERNAL = b"\xff"  #: first byte of every internal table/changelog key (never valid UTF-8)
END_MARKER = INTERNAL + b"metarec/batch-end"  #: changelog key closing each micro-batch's writes (a tombstone)
_MARK = INTERNAL + b"metarec/processed/"


def items_topic(group: str) -> str:
    """The compacted topic of the group's item rows: the item agent's changelog, every worker's global table."""
    return f"{group}-items"


def item_updates_topic(group: str) -> str:
    """The repartition topic of the workers' item contributions, keyed by item id."""
    return f"{group}-item-updates"


def changelog_topic(group: str) -> str:
    """Name of the state table's changelog topic for consumer group ``group``."""
    return f"{group}-{TABLE}-changelog"


def user_key(user_id: str) -> bytes:
    """Table key of a user's record."""
    return user_id.encode("utf-8")


def mark_key(partition: int) -> bytes:
    """Table key of input partition ``partition``'s processed mark."""
    return _MARK + str(int(partition)).encode()


def is_internal_key(key: bytes | None) -> bool:
    """True for the worker's own keys (marks, batch ends); False for a user's key."""
    return bool(key) and key[:1] == INTERNAL


def encode_mark(offset: int) -> bytes:
    return str(int(offset)).encode()


def decode_mark(raw: bytes | None) -> int | None:
    if not raw:
        return None
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        log.warning("unreadable processed mark %r; ignored", raw[:40])
        return None
