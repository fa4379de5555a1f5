"""The confluent-kafka pass-through: the ceiling of a worker on this client, with none of the worker's learning.

A bare loop with the runtime's consumer settings (:class:`~stream.runtime.kafka.runner.KafkaRunner`: a group with
cooperative-sticky assignment, the same fetch wait, ``--batch-size`` / ``--batch-seconds`` micro-batches taken the same
way) that per micro-batch decodes every value as JSON, produces one small message per touched user to an output
topic (``<topic>-passthrough-out``), waits for their delivery, and commits the batch's offsets. No state, no model.

Run as a child process by :func:`stream.bench.passthrough.run_passthrough` (``python -m
stream.runtime.kafka.passthrough ...``; protocol in :mod:`stream.runtime.passthrough`). It runs until SIGTERM.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from stream.runtime.passthrough import PassthroughConfig, parse_args, write_result

PROG = "python -m stream.runtime.kafka.passthrough"


def run(cfg: PassthroughConfig) -> int:  # pragma: no cover - runs in the child process
    from confluent_kafka import Consumer, Producer, TopicPartition

    from stream.kafka.client import consumer_config, ensure_topics, producer_config

    out_topic = f"{cfg.topic}-passthrough-out"
    ensure_topics(cfg.bootstrap, {out_topic: (cfg.partitions, None)})
    session_ms = int(cfg.session_timeout * 1000)
    consumer = Consumer(consumer_config(cfg.bootstrap, cfg.group, partition_assignment_strategy="cooperative-sticky",
                                        session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 4),
                                        fetch_wait_max_ms=30))
    producer = Producer(producer_config(cfg.bootstrap, linger_ms=1))
    stopping = [False]
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__(0, True))
    consumer.subscribe([cfg.topic])
    n, first, reported, done = 0, None, 0.0, False
    try:
        while not stopping[0]:
            msgs = consumer.consume(cfg.batch_size, 0) or consumer.consume(1, 0.1)
            if not msgs:
                continue
            deadline = time.monotonic() + cfg.batch_seconds
            while len(msgs) < cfg.batch_size and (left := deadline - time.monotonic()) > 0:
                msgs += consumer.consume(cfg.batch_size - len(msgs), left)
            now = time.time()
            first = first or now
            users: dict[bytes, bytes] = {}
            last: dict[int, int] = {}
            for m in msgs:
                if m.error() is not None:
                    continue
                event = json.loads(m.value())
                users[m.key() or b""] = json.dumps({"user_id": event["user_id"], "n": 1}).encode()
                last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
            for key, value in users.items():
                producer.produce(out_topic, value, key)
            producer.flush()
            consumer.commit(offsets=[TopicPartition(cfg.topic, p, o + 1) for p, o in last.items()], asynchronous=True)
            n += len(msgs)
            now = time.time()
            if now - reported > 0.5:
                reported = now
                Path(cfg.out + ".progress").write_text(str(n))
            if n >= cfg.expect and not done:
                write_result(cfg.out, n, first, now)
                done = True
    finally:
        consumer.close()
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the child process
    return run(parse_args(argv, prog=PROG, doc=__doc__))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
