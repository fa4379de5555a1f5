"""Hostile input through a real worker: ≥ 10,000 property-generated bad messages (hypothesis) mixed with good ones.

Every bad message reaches the DLQ with the schema reason in its ``error`` header and its original bytes, every
good one is processed (its user's newest list is as of it or later), and the worker never restarts.
Each generator knows the reason its message must be rejected for (independently of :mod:`stream.kafka.schema`).
"""
from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from worker_support import latest_lists, make_checkpoint, produce, read_topic, start_worker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ITEMS = [f"i{n}" for n in range(200)]
NOW = time.time()
N_EXAMPLES = 3_400  # hypothesis examples, 3–5 hostile messages each: ≥ 10,200 messages
ONE_MB = 1024 * 1024

ok_id = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
keys = st.one_of(st.none(), st.just(b""), st.binary(max_size=40), ok_id.map(str.encode))
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
extras = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in ("user_id", "item_id", "rating",
                                                                          "timestamp")), junk, max_size=3)


def _obj(**fields: object) -> dict:
    base: dict = {"user_id": "hostile-user", "item_id": "i1", "rating": 4.0, "timestamp": NOW - 1000.0}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN / Infinity literals on purpose


def _bad_field(name: str) -> st.SearchStrategy:
    """Messages whose only defect is the id field ``name``."""
    return st.one_of(
        extras.map(lambda x: (_dumps({**_obj(**{name: _DROP}), **x}), f"missing_{name}")),
        st.just((_dumps(_obj(**{name: None})), f"missing_{name}")),
        st.sampled_from(["", " ", "\t\n ", "   "]).map(lambda v: (_dumps(_obj(**{name: v})), f"empty_{name}")),
        st.one_of(st.floats(), st.booleans(), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)).map(
            lambda v: (_dumps(_obj(**{name: v})), f"bad_{name}_type")),
        st.integers(257, 600).map(lambda n: (_dumps(_obj(**{name: "x" * n})), f"{name}_too_long")),
    )


def _bad_number(name: str) -> st.SearchStrategy:
    wrong = st.one_of(st.text(max_size=10), st.booleans(), st.lists(st.floats(allow_nan=False), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
    non_finite = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
    out = [
        wrong.map(lambda v: (_dumps(_obj(**{name: v})), f"bad_{name}_type")),
        non_finite.map(lambda lit: (_dumps(_obj(**{name: 0})).replace(f'"{name}": 0'.encode(),
                                                                       f'"{name}": '.encode() + lit),
                                    f"non_finite_{name}")),
    ]
    if name == "rating":
        out.append(st.one_of(st.floats(1.0001e6, 1e308), st.floats(-1e308, -1.0001e6),
                             st.integers(10 ** 6 + 1, 10 ** 30)).map(
            lambda v: (_dumps(_obj(rating=v)), "rating_out_of_range")))
        out.append(st.just((_dumps(_obj(rating=0)).replace(b'"rating": 0', b'"rating": 1' + b"0" * 400),
                            "rating_out_of_range")))
    else:
        out.append(st.one_of(st.floats(-1e15, -1e-3), st.floats(NOW + 3 * 86_400, 1e18),
                             st.integers(-10 ** 12, -1)).map(
            lambda v: (_dumps(_obj(timestamp=v)), "timestamp_out_of_range")))
    return st.one_of(*out)


hostile = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="}"), max_size=60).map(
        lambda t: (b"{" + t.encode(), "invalid_json")),
    st.text(min_size=1, max_size=40).filter(lambda t: not t.strip().startswith(("{", "[", '"')) and
                                            _not_json(t)).map(lambda t: (t.encode(), "invalid_json")),
    st.one_of(st.lists(junk, max_size=3), st.integers(), st.text(max_size=20), st.booleans(), st.none(),
              st.floats(allow_nan=False, allow_infinity=False)).map(lambda v: (_dumps(v), "not_an_object")),
    st.binary(max_size=60).map(lambda b: (b"\xff" + b, "invalid_utf8")),
    st.binary(max_size=60).map(lambda b: (b'{"user_id": "\xc3\x28' + b, "invalid_utf8")),
    st.sampled_from([b"", None]).map(lambda v: (v, "empty_value")),
    st.integers(64 * 1024 + 1, 70 * 1024).map(lambda n: (_dumps({**_obj(), "pad": "x" * n}), "oversized")),
    _bad_field("user_id"), _bad_field("item_id"), _bad_number("rating"), _bad_number("timestamp"),
)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def _collect() -> list[tuple[bytes | None, bytes | None, str]]:
    out: list[tuple[bytes | None, bytes | None, str]] = []

    @settings(max_examples=N_EXAMPLES, phases=[Phase.generate], database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(keys, hostile), min_size=3, max_size=5))
    def gen(batch: list) -> None:
        for key, (value, reason) in batch:
            out.append((key, value, reason))

    gen()
    return out


@pytest.fixture(scope="module")
def hostile_run(broker, tmp_path_factory, runtime):
    work = tmp_path_factory.mktemp("hostile")
    make_checkpoint(work / "ck", ITEMS, seed=4)
    tag = uuid.uuid4().hex[:8]
    topics = {"input_topic": f"hin-{tag}", "output_topic": f"hout-{tag}"}
    t0 = time.monotonic()
    bad = _collect()
    gen_s = time.monotonic() - t0
    big = [(b"big", _dumps({**_obj(), "pad": "x" * ONE_MB}), "oversized"),
           (None, b"\xff" * ONE_MB, "oversized"), (b"", b"{" * ONE_MB, "oversized")]
    good: list[tuple[bytes | None, bytes | None, None]] = []
    for n in range(2_000):
        user = f"good-{n % 400}"
        obj = {"user_id": user, "item_id": ITEMS[n % len(ITEMS)], "timestamp": NOW - 10_000 + n}
        if n % 3:
            obj["rating"] = float(1 + n % 5)
        if n % 7 == 0:
            obj["unknown_field"] = {"nested": [1, 2, None]}
        good.append((user.encode(), json.dumps(obj).encode(), None))
    for n in range(100):  # no key at all: still valid events (a user per message: partition is random)
        good.append((None, json.dumps({"user_id": f"keyless-{n}", "item_id": ITEMS[n]}).encode(), None))
    messages: list = []
    gi = iter(good)
    for i, m in enumerate(bad + big):
        messages.append(m)
        if i % 5 == 0:
            messages.append(next(gi, None) or m)
    messages.extend(gi)
    worker = start_worker(broker, work / "ck", work, group=f"g-{tag}", runtime=runtime, **topics)
    try:
        worker.wait_ready()
        pid = worker.proc.pid
        t1 = time.monotonic()
        total = produce(broker, topics["input_topic"], [(k, v) for k, v, _ in messages],
                        timestamp_ms=int(time.time() * 1000), overrides={"message.max.bytes": 4 * ONE_MB})
        worker.wait_for(lambda m: m.get("metarec_events_consumed_total", 0) >= total, timeout=120,
                        what=f"{total} messages consumed")
        settled = -1.0
        while True:
            time.sleep(1.0)
            now = worker.value("metarec_recommendations_published_total")
            if now == settled:
                break
            settled = now
        seconds = time.monotonic() - t1
        expected = {}
        for _, v, reason in messages:
            key = v if v is not None else b""
            assert expected.setdefault(key, reason) == reason, f"generator inconsistency for {v[:80]!r}"
        n_bad = sum(1 for *_, r in messages if r is not None)
        inputs = read_topic(broker, topics["input_topic"], expect=total, timeout=60)
        dlq = read_topic(broker, topics["input_topic"] + ".dlq", expect=n_bad, timeout=60)
        out = read_topic(broker, topics["output_topic"], expect=int(settled), timeout=60)
        yield {"worker": worker, "pid": pid, "messages": messages, "expected": expected, "inputs": inputs,
               "dlq": dlq, "out": out, "total": total, "n_bad": n_bad, "gen_s": gen_s, "seconds": seconds}
    finally:
        worker.kill()


def test_every_hostile_message_is_dead_lettered_with_its_reason(hostile_run, figures):
    r = hostile_run
    assert r["n_bad"] >= 10_000
    by_pos = {(m.partition(), m.offset()): m for m in r["inputs"]}
    assert len(by_pos) == r["total"]
    want = {pos: r["expected"][m.value() or b""] for pos, m in by_pos.items()}
    want_bad = {pos: reason for pos, reason in want.items() if reason is not None}
    got: dict[tuple[int, int], str] = {}
    for m in r["dlq"]:
        headers = dict(m.headers() or [])
        _, p, o = headers["source"].decode().rsplit("/", 2)
        pos = (int(p), int(o))
        assert (m.value() or b"") == (by_pos[pos].value() or b""), "a dead letter must keep the original bytes"
        got[pos] = headers["error"].decode()
    missing = sorted({(want_bad[pos], len(by_pos[pos].value() or b"")) for pos in set(want_bad) - set(got)})
    assert not missing, f"{len(set(want_bad) - set(got))} bad messages missing from the DLQ: {missing[:20]}"
    assert len(r["dlq"]) == len(want_bad) == r["n_bad"]
    wrong = {pos: (got.get(pos), reason) for pos, reason in want_bad.items() if got.get(pos) != reason}
    assert not wrong, list(wrong.items())[:10]
    reasons = sorted(set(want_bad.values()))
    figures(messages_fuzzed=r["n_bad"], distinct_reasons=len(reasons), one_mb_values=3,
            good_messages=r["total"] - r["n_bad"], generation_s=round(r["gen_s"], 1),
            worker_s=round(r["seconds"], 1))


def test_every_good_message_is_processed_and_the_worker_never_restarted(hostile_run, figures):
    r = hostile_run
    latest = latest_lists(r["out"])
    checked = 0
    for m in r["inputs"]:
        if r["expected"][m.value() or b""] is not None:
            continue
        user = json.loads(m.value())["user_id"]
        assert user in latest, user
        as_of = latest[user]["as_of"]
        assert as_of["partition"] == m.partition() and as_of["offset"] >= m.offset(), (user, as_of, m.offset())
        checked += 1
    w = r["worker"]
    assert w.proc.poll() is None and w.proc.pid == r["pid"], "the worker restarted or died"
    assert w.get("/healthz")[0] == 200 and w.get("/readyz")[0] == 200
    metrics = w.metrics()
    assert metrics["metarec_events_consumed_total"] == r["total"]
    assert sum(v for k, v in metrics.items() if k.startswith("metarec_events_invalid_total")) == r["n_bad"]
    assert metrics.get("metarec_publish_errors_total", 0) == 0
    # the worker's HTTP endpoint is on loopback only
    from test_security import _non_loopback_ipv4

    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, w.port), timeout=2).close()
    figures(good_events_checked=checked, users=len(latest), same_pid=True)
