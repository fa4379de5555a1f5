"""The interactions message contract: every valid shape accepted, every bad shape rejected with its reason."""
from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.kafka.schema import (MAX_ID_CHARS, REASONS, Event, InvalidEvent, encode_event, parse_event, parse_events)

NOW = time.time()
ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "" and len(s.strip()) <= MAX_ID_CHARS)
int_ids = st.integers(min_value=-(10**30), max_value=10**30)
ratings = st.one_of(st.integers(-1_000_000, 1_000_000),
                    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
timestamps = st.one_of(st.integers(0, int(NOW)), st.floats(0, NOW, allow_nan=False, allow_infinity=False))
extra_keys = st.text(max_size=10).filter(lambda k: k not in ("user_id", "item_id", "rating", "timestamp"))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                         st.floats(allow_nan=False, allow_infinity=False))


def _reason(value: bytes | None, **kw: object) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_event(value, **kw)  # type: ignore[arg-type]
    assert info.value.reason in REASONS
    return info.value.reason


def _dump(obj: object) -> bytes:
    return json.dumps(obj).encode()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(user=st.one_of(ids, int_ids), item=st.one_of(ids, int_ids), rating=st.one_of(st.none(), ratings),
       ts=st.one_of(st.none(), timestamps), omit_rating=st.booleans(), omit_ts=st.booleans(),
       extra=st.dictionaries(extra_keys, json_scalars, max_size=4))
def test_every_valid_shape_is_accepted(user, item, rating, ts, omit_rating, omit_ts, extra):
    obj = dict(extra, user_id=user, item_id=item)
    if not omit_rating:
        obj["rating"] = rating
    if not omit_ts:
        obj["timestamp"] = ts
    event = parse_event(_dump(obj))
    assert event.user_id == (str(user) if isinstance(user, int) else user.strip())
    assert event.item_id == (str(item) if isinstance(item, int) else item.strip())
    assert event.rating == (None if omit_rating or rating is None else float(rating))
    assert event.timestamp == (None if omit_ts or ts is None else float(ts))
    assert type(event.rating) in (float, type(None)) and type(event.timestamp) in (float, type(None))


@settings(max_examples=300)
@given(user=ids, item=ids, rating=st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
       ts=st.one_of(st.none(), st.floats(0, NOW, allow_nan=False)))
def test_encode_parse_round_trip(user, item, rating, ts):
    event = Event(user.strip(), item.strip(), rating, ts)
    assert parse_event(encode_event(event)) == event


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(value):
    try:
        event = parse_event(value)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
    else:
        assert isinstance(event, Event)


@settings(max_examples=300)
@given(st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), c, max_size=3)),
                    max_leaves=10))
def test_arbitrary_json_never_raises_anything_else(obj):
    try:
        parse_event(_dump(obj))
    except InvalidEvent as exc:
        assert exc.reason in REASONS


BAD_ID_VALUES = [(True, "bad_{f}_type"), (1.5, "bad_{f}_type"), (3.0, "bad_{f}_type"), ([], "bad_{f}_type"),
                 ({}, "bad_{f}_type"), ("", "empty_{f}"), ("  \t", "empty_{f}"),
                 ("x" * (MAX_ID_CHARS + 1), "{f}_too_long"), (10 ** 300, "{f}_too_long")]


@pytest.mark.parametrize("field", ["user_id", "item_id"])
@pytest.mark.parametrize("bad,reason", BAD_ID_VALUES)
def test_bad_ids(field, bad, reason):
    obj = {"user_id": "u", "item_id": "i", field: bad}
    assert _reason(_dump(obj)) == reason.format(f=field)


@pytest.mark.parametrize("field", ["user_id", "item_id"])
def test_missing_ids(field):
    obj = {"user_id": "u", "item_id": "i"}
    del obj[field]
    assert _reason(_dump(obj)) == f"missing_{field}"
    obj[field] = None
    assert _reason(_dump(obj)) == f"missing_{field}"


def test_lone_surrogate_in_id_is_invalid_utf8():
    assert _reason(b'{"user_id": "\\ud800", "item_id": "i"}') == "invalid_utf8"


@pytest.mark.parametrize("text,reason", [
    ('true', "bad_rating_type"), ('"4"', "bad_rating_type"), ('[4]', "bad_rating_type"),
    ('NaN', "non_finite_rating"), ('Infinity', "non_finite_rating"), ('-Infinity', "non_finite_rating"),
    ('1e400', "non_finite_rating"), ('1000000.5', "rating_out_of_range"), ('-2e6', "rating_out_of_range"),
    ('1' + '0' * 400, "rating_out_of_range"),
])
def test_bad_ratings(text, reason):
    assert _reason(f'{{"user_id": "u", "item_id": "i", "rating": {text}}}'.encode()) == reason


@pytest.mark.parametrize("text,reason", [
    ('false', "bad_timestamp_type"), ('"1998-01-01"', "bad_timestamp_type"), ('NaN', "non_finite_timestamp"),
    ('Infinity', "non_finite_timestamp"), ('-1', "timestamp_out_of_range"), ('-0.001', "timestamp_out_of_range"),
    (str(int(NOW * 1000)), "timestamp_out_of_range"), (str(int(NOW + 2 * 86400)), "timestamp_out_of_range"),
])
def test_bad_timestamps(text, reason):
    assert _reason(f'{{"user_id": "u", "item_id": "i", "timestamp": {text}}}'.encode()) == reason


def test_timestamp_bounds_are_inclusive_of_zero_and_near_future():
    assert parse_event(b'{"user_id": "u", "item_id": "i", "timestamp": 0}').timestamp == 0.0
    soon = time.time() + 3600
    assert parse_event(_dump({"user_id": "u", "item_id": "i", "timestamp": soon})).timestamp == soon


@pytest.mark.parametrize("value,reason", [
    (None, "empty_value"), (b"", "empty_value"), (b"\xff\xfe{}", "invalid_utf8"), (b"{\"user_id\": \"\xc3\x28\"}",
                                                                                 "invalid_utf8"),
    (b"{", "invalid_json"), (b"not json", "invalid_json"), (b"[" * 100_000 + b"]" * 100_000, "oversized"),
    (b"[" * 30_000 + b"]" * 30_000, "invalid_json"), (b"[1, 2]", "not_an_object"), (b'"s"', "not_an_object"),
    (b"null", "not_an_object"), (b"42", "not_an_object"),
])
def test_bad_envelopes(value, reason):
    assert _reason(value) == reason


def test_size_limit_is_configurable_and_counts_bytes():
    value = _dump({"user_id": "u", "item_id": "i", "pad": "x" * 200})
    assert _reason(value, max_bytes=len(value) - 1) == "oversized"
    assert parse_event(value, max_bytes=len(value)).user_id == "u"


def test_ids_are_stripped_and_unknown_fields_ignored():
    event = parse_event(b'{"user_id": " 42 ", "item_id": 7, "rating": 4, "extra": {"a": [1]}, "t": null}')
    assert event == Event("42", "7", 4.0, None)


def test_parse_events_keeps_order_and_reasons():
    values = [b'{"user_id": "a", "item_id": "b"}', b"{", None, b'{"user_id": "a", "item_id": "b", "rating": 5}']
    out = parse_events(values)
    assert isinstance(out[0], Event) and out[0].rating is None
    assert [o.reason for o in out[1:3]] == ["invalid_json", "empty_value"]
    assert isinstance(out[3], Event) and out[3].rating == 5.0


def test_encode_omits_implicit_rating_and_missing_timestamp():
    assert json.loads(encode_event(Event("u", "i", math.nan, None))) == {"user_id": "u", "item_id": "i"}
    assert json.loads(encode_event(Event("u", "i", 3.5, 1.0))) == {"user_id": "u", "item_id": "i", "rating": 3.5,
                                                                   "timestamp": 1.0}


def test_reasons_are_a_small_fixed_set():
    assert len(REASONS) == 19
    assert all(r.replace("_", "").isalnum() and r.islower() for r in REASONS)
