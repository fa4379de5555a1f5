"""Control messages to the workers of a group: the topic ``<group>-control`` and its one request, *forget a user*.

A request is keyed by the user id (UTF-8), so that it lands, by murmur2 like every keyed record of the project
(:mod:`stream.kafka.partitioner`), in the same partition number as the user's input events. The control topic has
as many partitions as the input topic, so faust's co-partitioned assignment gives that partition to the worker that
owns the user's record. Value (JSON, UTF-8)::

    {"action": "forget", "user_id": str, "request_id": str, "requested_at": number}

The key is authoritative (it decides the partition); a value whose ``user_id`` differs from the key is refused.
The worker acknowledges a carried-out request with a tombstone (null value) for the user's key on its output
topic, with the header ``forget-request`` = ``request_id`` (:data:`ACK_HEADER`).

Example
-------
>>> key, value = forget_request("u1", request_id="r-1", now=1.0)
>>> key, value
(b'u1', b'{"action":"forget","user_id":"u1","request_id":"r-1","requested_at":1.0}')
>>> parse_request(key, value)
ControlRequest(action='forget', user_id='u1', request_id='r-1')
>>> parse_request(b"u2", value)
Traceback (most recent call last):
...
stream.kafka.control.InvalidRequest: key 'u2' does not match user_id 'u1'
>>> control_topic("metarec")
'metarec-control'
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from adapters.errors import MetarecError

ACTIONS = ("forget",)
ACK_HEADER = "forget-request"  #: header of the acknowledgement tombstone: the request's ``request_id``
MAX_USER_ID_BYTES = 1024


class InvalidRequest(MetarecError):
    """A control message that breaks its format (the worker logs and skips it)."""


@dataclass(frozen=True)
class ControlRequest:
    """One parsed control message."""

    action: str
    user_id: str
    request_id: str


def control_topic(group: str) -> str:
    """The control topic of consumer group ``group`` (partitioned like the input topic)."""
    return f"{group}-control"


def check_user_id(user_id: str) -> str:
    """``user_id`` if it can key a request (non-empty, at most :data:`MAX_USER_ID_BYTES` bytes of UTF-8)."""
    if not isinstance(user_id, str) or not user_id:
        raise InvalidRequest("user id must be a non-empty string")
    if len(user_id.encode("utf-8")) > MAX_USER_ID_BYTES:
        raise InvalidRequest(f"user id longer than {MAX_USER_ID_BYTES} bytes")
    return user_id


def forget_request(user_id: str, request_id: str | None = None, now: float | None = None) -> tuple[bytes, bytes]:
    """The ``(key, value)`` of a request to forget ``user_id``."""
    check_user_id(user_id)
    value = {"action": "forget", "user_id": user_id, "request_id": request_id or uuid.uuid4().hex,
             "requested_at": time.time() if now is None else float(now)}
    return user_id.encode("utf-8"), json.dumps(value, separators=(",", ":")).encode("utf-8")


def parse_request(key: bytes | None, value: bytes | None) -> ControlRequest:
    """The request in a control message; :class:`InvalidRequest` when it breaks the format."""
    if not key:
        raise InvalidRequest("control message without a key (the user id)")
    try:
        user = key.decode("utf-8")
        body = json.loads(value or b"")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("control message is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("control message value is not a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        raise InvalidRequest(f"unknown action {action!r}")
    if body.get("user_id") != user:
        raise InvalidRequest(f"key {user!r} does not match user_id {body.get('user_id')!r}")
    check_user_id(user)
    request_id = body.get("request_id")
    return ControlRequest(str(action), user, str(request_id) if request_id is not None else "")
