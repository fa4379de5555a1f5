"""The interaction event on the ``interactions`` topic: parsing, validation and encoding.

Message value (JSON, UTF-8)::

    {"user_id": str, "item_id": str, "rating": number?, "timestamp": number?}

Rules (what a bad message is rejected for — the reason becomes the DLQ ``error`` header and the
``reason`` label of ``metarec_events_invalid_total``; the set is fixed, see :data:`REASONS`):

* the value must be at most ``max_bytes`` (default 64 KiB) → ``oversized``; a null or empty value → ``empty_value``;
  it must be UTF-8 → ``invalid_utf8``; JSON → ``invalid_json``; a JSON object → ``not_an_object``.
* ``user_id`` / ``item_id``: a string, non-empty after stripping surrounding white space (the stripped form is
  kept), at most 256 characters. JSON *integers* are accepted too and turned into their decimal string
  (``42`` → ``"42"``), because many producers emit numeric ids; floats, booleans, null, lists and objects are
  refused. Reasons: ``missing_user_id``, ``empty_user_id``, ``bad_user_id_type``, ``user_id_too_long``
  (same with ``item``).
* ``rating``: absent or null = implicit event (``None``). Otherwise a JSON number (not a boolean, not a string),
  finite, with ``|rating| <= 1e6``. Reasons: ``bad_rating_type``, ``non_finite_rating``, ``rating_out_of_range``.
* ``timestamp``: absent or null = ``None`` (the consumer uses the Kafka message timestamp). Otherwise a JSON
  number of epoch *seconds* in ``[0, now + 1 day]`` (milliseconds are therefore refused as out of range).
  Reasons: ``bad_timestamp_type``, ``non_finite_timestamp``, ``timestamp_out_of_range``.
* unknown fields are ignored.

Example
-------
>>> parse_event(b'{"user_id": "u1", "item_id": 7, "rating": 4, "extra": true}')
Event(user_id='u1', item_id='7', rating=4.0, timestamp=None)
>>> try:
...     parse_event(b'{"user_id": "u1"}')
... except InvalidEvent as exc:
...     print(exc.reason)
missing_item_id
>>> encode_event(Event("u1", "i9", None, 880000000.0))
b'{"user_id":"u1","item_id":"i9","timestamp":880000000.0}'
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

MAX_EVENT_BYTES = 64 * 1024
MAX_ID_CHARS = 256
MAX_ABS_RATING = 1e6
MAX_FUTURE_SECONDS = 86_400.0


def dlq_topic(input_topic: str) -> str:
    """The dead-letter topic of ``input_topic``: invalid messages go there with an ``error`` header."""
    return f"{input_topic}.dlq"

REASONS: frozenset[str] = frozenset({
    "oversized", "empty_value", "invalid_utf8", "invalid_json", "not_an_object",
    "missing_user_id", "empty_user_id", "bad_user_id_type", "user_id_too_long",
    "missing_item_id", "empty_item_id", "bad_item_id_type", "item_id_too_long",
    "bad_rating_type", "non_finite_rating", "rating_out_of_range",
    "bad_timestamp_type", "non_finite_timestamp", "timestamp_out_of_range",
})


@dataclass(slots=True)
class Event:
    """One valid interaction. ``rating`` None = implicit; ``timestamp`` None = use the Kafka timestamp."""

    user_id: str
    item_id: str
    rating: float | None = None
    timestamp: float | None = None


class InvalidEvent(ValueError):
    """A message that breaks the contract; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ident(obj: dict, field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise InvalidEvent(f"missing_{field}")
    if type(value) is int:  # not bool (bool is a subclass of int, `type(...) is int` excludes it)
        if abs(value) >= 10 ** MAX_ID_CHARS:
            raise InvalidEvent(f"{field}_too_long")
        return str(value)
    if type(value) is not str:
        raise InvalidEvent(f"bad_{field}_type")
    value = value.strip()
    if not value:
        raise InvalidEvent(f"empty_{field}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"{field}_too_long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written as a \\ud800 escape
        raise InvalidEvent("invalid_utf8") from None
    return value


def _number(obj: dict, field: str) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:
        raise InvalidEvent(f"bad_{field}_type")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise InvalidEvent(f"{field}_out_of_range") from None
    if not math.isfinite(number):
        raise InvalidEvent(f"non_finite_{field}")
    return number


def _validate(value: bytes | bytearray | memoryview | None, max_bytes: int, now: float) -> Event:
    if value is None or len(value) == 0:
        raise InvalidEvent("empty_value")
    if len(value) > max_bytes:
        raise InvalidEvent("oversized")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("invalid_utf8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, huge integers, deep nesting
        raise InvalidEvent("invalid_json") from None
    if type(obj) is not dict:
        raise InvalidEvent("not_an_object")
    user_id = _ident(obj, "user_id")
    item_id = _ident(obj, "item_id")
    rating = _number(obj, "rating")
    if rating is not None and abs(rating) > MAX_ABS_RATING:
        raise InvalidEvent("rating_out_of_range")
    timestamp = _number(obj, "timestamp")
    if timestamp is not None and not 0.0 <= timestamp <= now + MAX_FUTURE_SECONDS:
        raise InvalidEvent("timestamp_out_of_range")
    return Event(user_id, item_id, rating, timestamp)


def parse_event(value: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse and validate one message value; raise :class:`InvalidEvent` (and nothing else) when it is bad."""
    return _validate(value, max_bytes, time.time())


def parse_events(values: Iterable[bytes | None], max_bytes: int = MAX_EVENT_BYTES) -> list[Event | InvalidEvent]:
    """Bulk :func:`parse_event`: one result per value, in order; bad values give their :class:`InvalidEvent`."""
    now = time.time()
    out: list[Event | InvalidEvent] = []
    append = out.append
    for value in values:
        try:
            append(_validate(value, max_bytes, now))
        except InvalidEvent as exc:
            append(exc)
    return out


def encode_event(event: Event) -> bytes:
    """The contract JSON of ``event`` (``rating`` omitted when None/NaN, ``timestamp`` when None)."""
    obj: dict[str, object] = {"user_id": event.user_id, "item_id": event.item_id}
    if event.rating is not None and not math.isnan(event.rating):
        obj["rating"] = event.rating
    if event.timestamp is not None:
        obj["timestamp"] = event.timestamp
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
