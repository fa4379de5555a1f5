"""``metarec forget``: remove a user from a worker group (request on ``<group>-control``, see
:mod:`stream.kafka.control` and :mod:`stream.runtime.faust.control_agent`)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 30.0

DESCRIPTION = """\
Forget a user: the worker that owns the user's partition deletes their record (window, seen items, adapted
vector; a tombstone in the changelog, so a restart or a rebalance does not bring it back) and acknowledges with a
tombstone (null value) for the user's key on its output topic. Idempotent: an unknown or already forgotten user
is acknowledged too. The user's past contribution to the item statistics stays, as an aggregate. Events of the user
that the worker has not processed yet when the request arrives start a new record.

The request goes to the topic <group>-control, keyed by the user (created with the input topic's partition count
when missing). With --wait S (default 30) the command waits up to S seconds for the acknowledgement and exits 1
without it (run it again: the request is idempotent); --wait 0 sends and returns.

examples:
  metarec forget --bootstrap 127.0.0.1:9092 --user 196
  metarec forget --bootstrap kafka:9092 --user 196 --group metarec --output recommendations --wait 60
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.cli.argtypes import non_negative_float
    from stream.kafka.client import add_kafka_arguments

    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--user", required=True, help="the user id to forget (the key of their input events)")
    parser.add_argument("--group", default="metarec", help="the workers' consumer group (default metarec)")
    parser.add_argument("--input", default="interactions",
                        help="the workers' input topic: the control topic gets its partition count (default "
                             "interactions)")
    parser.add_argument("--output", default="recommendations",
                        help="the workers' output topic, where the acknowledgement arrives (default recommendations)")
    parser.add_argument("--wait", type=non_negative_float, default=DEFAULT_WAIT_S,
                        help=f"seconds to wait for the acknowledgement (default {DEFAULT_WAIT_S:g}; 0: do not wait)")
    add_kafka_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from stream.kafka.client import kafka_overrides, validate_bootstrap
    from stream.kafka.control import check_user_id, control_topic, forget_request

    bootstrap = validate_bootstrap(args.bootstrap)
    user = check_user_id(args.user)
    overrides = kafka_overrides(args)
    topic = control_topic(args.group)
    partitions = control_partitions(bootstrap, topic, args.input, overrides)
    key, value = forget_request(user)
    request_id = value_request_id(value)
    ack = AckWatch(bootstrap, args.output, overrides) if args.wait > 0 else None
    try:
        t0 = time.monotonic()
        partition = send(bootstrap, topic, key, value, overrides)
        if ack is None:
            print(f"metarec forget: request to forget user {user!r} sent to {topic} partition {partition} "
                  f"(not waiting for the acknowledgement)", flush=True)
            return 0
        if not ack.wait(key, request_id, args.wait):
            sys.stderr.write(f"metarec forget: no acknowledgement for user {user!r} on {args.output} within "
                             f"{args.wait:g} s (is a worker of group {args.group!r} running?); the request stays on "
                             f"{topic}: run the command again to know (idempotent)\n")
            return 1
        print(f"metarec forget: user {user!r} forgotten (acknowledged on {args.output} after "
              f"{time.monotonic() - t0:.2f} s)", flush=True)
        return 0
    finally:
        if ack is not None:
            ack.close()


def value_request_id(value: bytes) -> str:
    import json

    return str(json.loads(value)["request_id"])


def control_partitions(bootstrap: str, topic: str, input_topic: str, overrides: Mapping[str, Any]) -> int:
    """The control topic's partition count, creating it with the input topic's when missing; a mismatch is an error."""
    from stream.kafka.client import check_reachable, ensure_topics

    topics = check_reachable(bootstrap, overrides=overrides).topics
    n_input = len(topics[input_topic].partitions) if input_topic in topics else 0
    if topic not in topics:
        if n_input < 1:
            raise MetarecError(f"neither {topic!r} nor the input topic {input_topic!r} exists at {bootstrap}: start "
                               f"a worker of the group first (it creates them), or check --group/--input")
        ensure_topics(bootstrap, {topic: (n_input, None)}, overrides=overrides)
        return n_input
    n = len(topics[topic].partitions)
    if n_input and n != n_input:
        raise MetarecError(f"topic {topic!r} has {n} partitions, the input topic {input_topic!r} {n_input}: a request "
                           f"would not reach the worker that owns the user")
    return n


def send(bootstrap: str, topic: str, key: bytes, value: bytes, overrides: Mapping[str, Any]) -> int:
    """Produce one request (murmur2 on the key, like the input's producers) and wait for it; its partition."""
    from confluent_kafka import Producer

    from stream.kafka.client import producer_config

    delivered: list[Any] = []
    producer = Producer(producer_config(bootstrap, overrides))
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, msg: delivered.append((err, msg)))
    if producer.flush(30) or not delivered:
        raise MetarecError(f"the request could not be delivered to {topic} at {bootstrap} within 30 s")
    err, msg = delivered[0]
    if err is not None:
        raise MetarecError(f"the request could not be delivered to {topic}: {err.str()}")
    return int(msg.partition())


class AckWatch:
    """Reads ``topic`` from its current end (taken at construction, before the request is sent) for an
    acknowledgement: a tombstone of the user's key carrying the request's id."""

    def __init__(self, bootstrap: str, topic: str, overrides: Mapping[str, Any]) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from stream.kafka.client import consumer_config

        self.topic = topic
        self.consumer = Consumer(consumer_config(bootstrap, overrides=overrides))
        meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            self.consumer.close()
            raise MetarecError(f"output topic {topic!r} does not exist at {bootstrap} (see --output)")
        starts = []
        for p in sorted(meta.partitions):
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            starts.append(TopicPartition(topic, p, max(0, int(high))))
        self.consumer.assign(starts)

    def wait(self, key: bytes, request_id: str, timeout_s: float) -> bool:
        """True once the acknowledgement arrived within ``timeout_s`` seconds."""
        from stream.kafka.control import ACK_HEADER

        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.consumer.poll(min(0.5, left))
            if msg is None or msg.error() or msg.key() != key or msg.value() is not None:
                continue
            headers = dict(msg.headers() or [])
            if headers.get(ACK_HEADER, b"").decode("utf-8", "replace") == request_id:
                return True
        return False

    def close(self) -> None:
        self.consumer.close()
