"""``metarec replay``: a dataset, or a time range of a topic, into a topic."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from stream.cli.argtypes import iso_time
from typing import Any

DESCRIPTION = """\
Replay interactions into a Kafka topic.

From a dataset: every event becomes one message, in timestamp order, keyed by user_id, with the event time as
the message timestamp, value {"user_id", "item_id", "rating"?, "timestamp"} (rating omitted for implicit
events). The topic is created with --partitions partitions when missing. --speed 0 (default) sends as fast as
possible; --speed 60 replays one hour of event time per minute.

From a topic: copies the messages of --from-topic whose timestamp is in [--from-time, --until) to --topic,
key, value, headers and timestamp unchanged, to the same partition number when both topics have the same
number of partitions. It reads with its own partition assignment and commits to no consumer group, so live
consumers are unaffected. It stops at the end the source topic had when the replay started.
Times are ISO 8601; without an offset they are UTC (2024-05-01T12:00:00, 2024-05-01T14:00:00+02:00, ...Z).

Kafka security settings: METAREC_KAFKA_SECURITY_PROTOCOL, METAREC_KAFKA_SASL_MECHANISM,
METAREC_KAFKA_SASL_USERNAME, METAREC_KAFKA_SASL_PASSWORD, METAREC_KAFKA_SSL_CA_LOCATION, ... (any librdkafka
security.*, ssl.*, sasl.* property, dots as underscores), or --kafka-option KEY=VALUE.

examples:
  metarec replay --dataset ml-100k --bootstrap 127.0.0.1:9092 --topic interactions
  metarec replay --dataset events.csv --bootstrap 127.0.0.1:9092 --topic interactions --speed 3600 --limit 5000
  metarec replay --from-topic interactions --from-time 1998-03-01T00:00:00Z --until 1998-04-01T00:00:00Z \\
                 --bootstrap 127.0.0.1:9092 --topic interactions.backfill
"""


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.kafka.client import add_kafka_arguments

    src = parser.add_argument_group("source (one of)")
    src.add_argument("--dataset", help="ml-100k, ml-1m, or a CSV/TSV file with user_id,item_id,rating,timestamp")
    src.add_argument("--from-topic", help="topic to copy a time range from")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--topic", required=True, help="destination topic")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="dataset replay pace: 0 = as fast as possible (default), X = X times real time")
    parser.add_argument("--stamp", choices=["now", "event"], default="now",
                        help="Kafka message timestamp of a dataset replay: the time of sending (default, like a live "
                             "producer; Kafka's time-based retention keeps the messages) or the event time (a "
                             "backfill selectable later with --from-topic/--from-time). The JSON value always "
                             "carries the event time.")
    parser.add_argument("--limit", type=_non_negative_int, default=None, help="send only the first N events")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions when the destination topic is created (default 4; a topic copy uses the "
                             "source's count)")
    parser.add_argument("--from-time", type=iso_time, help="start of the range (inclusive), ISO 8601")
    parser.add_argument("--until", type=iso_time, help="end of the range (exclusive), ISO 8601; default: the end")
    parser.add_argument("--data-dir", default=None, help="dataset cache (default $METAREC_DATA_DIR or ~/.cache/metarec)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_kafka_arguments(parser)


class _Bar:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int | None, label: str) -> None:
        self._progress: Any = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
            self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> "_Bar":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


def run(args: argparse.Namespace) -> int:
    from adapters.errors import MetarecError
    from stream.kafka.client import kafka_overrides, validate_bootstrap
    from stream.kafka.replay import replay_dataset, replay_topic

    if (args.dataset is None) == (args.from_topic is None):
        raise MetarecError("give exactly one source: --dataset D or --from-topic SRC --from-time T")
    bootstrap = validate_bootstrap(args.bootstrap)
    overrides = kafka_overrides(args)
    if args.from_topic is not None:
        if args.from_time is None:
            raise MetarecError("--from-topic needs --from-time (ISO 8601, e.g. 2024-05-01T12:00:00Z)")
        if args.until is not None and args.until <= args.from_time:
            raise MetarecError("--until must be later than --from-time")
    elif args.from_time is not None or args.until is not None:
        raise MetarecError("--from-time/--until only apply with --from-topic")
    if args.speed < 0:
        raise MetarecError(f"--speed must be >= 0 (0 = as fast as possible), got {args.speed:g}")
    if args.partitions < 1:
        raise MetarecError(f"--partitions must be >= 1, got {args.partitions}")

    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    show = sys.stdout.isatty() and not args.quiet
    try:
        if args.dataset is not None:
            from adapters.data.datasets import load_dataset

            dataset = load_dataset(args.dataset, data_dir=args.data_dir, progress=show)
            total = len(dataset) if args.limit is None else min(args.limit, len(dataset))
            with _Bar(show, total, f"replay {dataset.name} → {args.topic}") as bar:
                stats = replay_dataset(dataset, bootstrap, args.topic, speed=args.speed, limit=args.limit,
                                       partitions=args.partitions, progress=bar.advance, stop=stop,
                                       overrides=overrides, stamp=args.stamp)
        else:
            start_ms = int(args.from_time.timestamp() * 1000)
            until_ms = int(args.until.timestamp() * 1000) if args.until is not None else None
            with _Bar(show, None, f"copy {args.from_topic} → {args.topic}") as bar:
                stats = replay_topic(bootstrap, args.from_topic, args.topic, start_ms, until_ms,
                                     progress=bar.advance, stop=stop, overrides=overrides)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    sys.stdout.write(stats.summary() + "\n")
    sys.stdout.flush()
    return 130 if stats.interrupted else 0
