"""``metarec worker``: the stream processor (interactions in, per-user top-K lists out)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the stream processor: a faust worker that consumes interaction events, keeps each user's last W events
(none older than --max-age) in a changelog-backed state table, adapts every touched user's model in one batched
call per micro-batch (up to --batch-size events or --batch-ms milliseconds), and publishes one refreshed top-K
list per touched user to the output topic. Bad messages go to <input>.dlq with an `error` header; they never
stop the worker. Several workers with the same --group split the input partitions; when one stops, the others
take over its users with their state restored from the changelog.

--checkpoint is a checkpoint directory, or a directory of versioned checkpoint directories (the one named by
its LATEST file, else the newest): it is polled every --model-poll seconds and a new version is served from
the next micro-batch on, without restart. Users keep their windows across a switch; their adapted vectors are
re-adapted from the new model at their next event.

HTTP on --metrics-host:--metrics-port (127.0.0.1 unless configured): /metrics (Prometheus), /healthz (200
while the processing loop runs, even during a broker outage), /readyz (503 with a reason before assignment and
while the broker is unreachable for more than --stall-after seconds).

State of users inactive for --state-ttl seconds of event time is deleted (changelog tombstones).
SIGTERM/Ctrl-C: finishes the micro-batch in flight, publishes, commits, exits 0.

examples:
  metarec worker --bootstrap 127.0.0.1:9092 --checkpoint checkpoints/ml-100k
  metarec worker --bootstrap kafka:9092 --checkpoint /models --group metarec --metrics-host 0.0.0.0
  METAREC_BOOTSTRAP=kafka:9092 METAREC_CHECKPOINT=/models metarec worker --store memory
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.kafka.client import add_kafka_arguments

    k = parser.add_argument_group("Kafka")
    k.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    k.add_argument("--input", default="interactions", help="input topic (default interactions)")
    k.add_argument("--output", default="recommendations", help="output topic (default recommendations)")
    k.add_argument("--group", default="metarec",
                   help="consumer group, also the app id: state changelog <group>-users-changelog (default metarec)")
    k.add_argument("--partitions", type=int, default=4,
                   help="partitions of the topics the worker creates when missing (default 4; existing topics "
                        "keep theirs, the state changelog always gets the input's)")
    k.add_argument("--replication-factor", type=int, default=1, help="for topics the worker creates (default 1)")
    k.add_argument("--session-timeout", type=_positive_float, default=10.0,
                   help="consumer group session timeout in seconds (default 10; a stopped worker's partitions move "
                        "after about this long)")
    k.add_argument("--commit-interval", type=_positive_float, default=1.0,
                   help="seconds between offset commits (default 1)")
    add_kafka_arguments(parser)

    m = parser.add_argument_group("model")
    m.add_argument("--checkpoint", required=True,
                   help="checkpoint directory, or directory of versioned checkpoints (LATEST file or newest)")
    m.add_argument("--model-poll", type=_positive_float, default=5.0,
                   help="seconds between checks for a new model version (default 5)")
    m.add_argument("--window", type=int, default=32, help="events kept per user as the support set (default 32)")
    m.add_argument("--max-age", type=_positive_float, default=None,
                   help="drop window events older than this many seconds before the user's newest (default: none)")
    m.add_argument("--steps", type=int, default=3, help="inner-loop gradient steps per micro-batch (default 3)")
    m.add_argument("--prox", type=float, default=None, help="pull toward θ0 (default: the checkpoint's)")
    m.add_argument("--top-k", type=int, default=10, help="list length (default 10)")
    m.add_argument("--max-items", type=int, default=None,
                   help="item rows kept: the model's items plus those first seen online, which get their own row at "
                        "their first event; beyond it the coldest rows are evicted (default 8,192)")
    m.add_argument("--max-catalog", type=int, default=50_000,
                   help="rank the whole catalog up to this many items (default 50000) ...")
    m.add_argument("--retrieval-m", type=int, default=2_000,
                   help="... above it, re-rank only the top M items of θ0 (default 2000)")

    k.add_argument("--fetch-max-wait-ms", type=int, default=30,
                   help="consumer long-poll wait (default 30; faust's own is 1500, a latency floor on the "
                        "embedded broker, which answers a waiting fetch only when the wait expires)")
    k.add_argument("--delivery", choices=("direct", "faust"), default="direct",
                   help="how faust's fetch loop hands each message to the stream: direct (default: a plain await) "
                        "or faust (its own per-message wait_first, which costs four asyncio tasks per message)")
    b = parser.add_argument_group("micro-batches and state")
    b.add_argument("--batch-size", type=int, default=500, help="max events per micro-batch (default 500)")
    b.add_argument("--batch-ms", type=_positive_float, default=30.0,
                   help="max milliseconds to wait to fill a micro-batch (default 30; under load batches fill to "
                        "--batch-size first, so this mostly bounds the latency of a quiet stream)")
    b.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb",
                   help="local state store (default rocksdb; both are restored from the changelog)")
    b.add_argument("--data-dir", default=None,
                   help="state directory, one per worker on a host (default $METAREC_DATA_DIR/worker/<group>)")

    b.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads for adaptation (default 1: on a small machine more threads contend with "
                        "the event loop and run slower; scale out with processes instead)")
    b.add_argument("--state-ttl", type=_non_negative_float, default=90 * 86_400.0, metavar="SECONDS",
                   help="forget a user whose newest event is this many seconds (event time) older than their "
                        "partition's stream time: their record is deleted and tombstoned in the changelog "
                        "(default 7776000 = 90 days; 0 = never)")
    b.add_argument("--max-event-bytes", type=int, default=64 * 1024,
                   help="input values larger than this go to the DLQ with reason oversized (default 65536)")
    h = parser.add_argument_group("HTTP")
    h.add_argument("--metrics-host", default="127.0.0.1", help="interface for /metrics /healthz /readyz (default "
                   "127.0.0.1; 0.0.0.0 in a container)")
    h.add_argument("--metrics-port", type=int, default=9400, help="port (default 9400; 0 = pick a free one)")
    h.add_argument("--stall-after", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="/readyz answers 503 (with the reason) once the broker has been unreachable, or a "
                        "micro-batch's delivery has waited, this long (default 5); /healthz stays 200")
    h.add_argument("--probe-interval", type=_positive_float, default=2.0, metavar="SECONDS",
                   help="seconds between the broker probes behind /readyz (default 2)")


def run(args: argparse.Namespace) -> int:
    from stream.kafka.client import kafka_overrides
    from stream.worker.config import WorkerConfig, run_worker

    loglevel = {0: "warning", 1: "info"}.get(getattr(args, "verbose", 0), "debug")
    cfg = WorkerConfig(
        bootstrap=args.bootstrap, checkpoint=args.checkpoint, input=args.input, output=args.output, group=args.group,
        metrics_host=args.metrics_host, metrics_port=args.metrics_port, store=args.store, data_dir=args.data_dir,
        window=args.window, max_age=args.max_age, steps=args.steps, prox=args.prox, top_k=args.top_k,
        batch_size=args.batch_size, batch_ms=args.batch_ms, max_catalog=args.max_catalog,
        max_items=args.max_items,
        retrieval_m=args.retrieval_m, partitions=args.partitions, replication_factor=args.replication_factor,
        session_timeout=args.session_timeout, commit_interval=args.commit_interval, model_poll=args.model_poll,
        kafka_options=kafka_overrides(args), loglevel=loglevel, torch_threads=args.torch_threads,
        fetch_max_wait_ms=args.fetch_max_wait_ms, state_ttl=args.state_ttl, max_event_bytes=args.max_event_bytes,
        stall_after=args.stall_after, probe_interval=args.probe_interval, delivery=args.delivery)
    return run_worker(cfg)
