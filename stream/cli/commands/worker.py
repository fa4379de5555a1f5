"""``metarec worker``: the stream processor (interactions in, per-user top-K lists out)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stream.cli.argtypes import non_negative_float, positive_float, removed_flags

if TYPE_CHECKING:  # pragma: no cover
    from stream.worker.config import WorkerConfig

DESCRIPTION = """\
Run the stream processor: it consumes interaction events, keeps each user's last W events (none older than
--max-age) in a changelog-backed state store, adapts every touched user's model in one batched call per
micro-batch (up to --batch-size events, taken within --batch-seconds of the first), and publishes one refreshed top-K
list per touched user to the output topic. --runtime picks the Kafka client under the same worker core:
confluent-kafka (default) or faust-streaming. Bad messages go to <input>.dlq with an `error` header; they never
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.kafka.client import add_kafka_arguments
    from stream.worker.config import RUNTIMES
    from stream.worker.config import WorkerConfig as W

    k = parser.add_argument_group("Kafka")
    k.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    k.add_argument("--runtime", choices=RUNTIMES, default=W.runtime,
                   help=f"the Kafka runtime under the worker core (default {W.runtime}): kafka = confluent-kafka, one "
                        "consuming thread, per-partition RocksDB state restored from the changelog as of the committed "
                        "offsets; faust = faust-streaming. Same topics, state layout, metrics and HTTP endpoints")
    k.add_argument("--input", default=W.input, help=f"input topic (default {W.input})")
    k.add_argument("--output", default=W.output, help=f"output topic (default {W.output})")
    k.add_argument("--group", default=W.group,
                   help=f"consumer group, also the app id: state changelog <group>-users-changelog (default {W.group})")
    k.add_argument("--partitions", type=int, default=W.partitions,
                   help=f"partitions of the topics the worker creates when missing (default {W.partitions}; existing "
                        "topics keep theirs, the state changelog always gets the input's)")
    k.add_argument("--replication-factor", type=int, default=W.replication_factor,
                   help=f"for topics the worker creates (default {W.replication_factor})")
    k.add_argument("--session-timeout", type=positive_float, default=W.session_timeout,
                   help=f"consumer group session timeout in seconds (default {W.session_timeout:g}; a stopped "
                        "worker's partitions move after about this long)")
    k.add_argument("--commit-interval", type=positive_float, default=W.commit_interval,
                   help=f"seconds between offset commits (default {W.commit_interval:g})")
    add_kafka_arguments(parser)
    _model_arguments(parser.add_argument_group("model"))
    _batch_arguments(k, parser.add_argument_group("micro-batches and state"))
    _http_arguments(parser.add_argument_group("HTTP"))


def _model_arguments(m: argparse._ArgumentGroup) -> None:
    from adapters.online.config import OnlineConfig as O
    from stream.worker.config import WorkerConfig as W

    m.add_argument("--checkpoint", required=True,
                   help="checkpoint directory, or directory of versioned checkpoints (LATEST file or newest)")
    m.add_argument("--model-poll", type=positive_float, default=W.model_poll,
                   help=f"seconds between checks for a new model version (default {W.model_poll:g})")
    m.add_argument("--window", type=int, default=O.window,
                   help=f"events kept per user as the support set (default {O.window})")
    m.add_argument("--max-age", type=positive_float, default=O.max_age,
                   help="drop window events older than this many seconds before the user's newest (default: none)")
    m.add_argument("--steps", type=int, default=O.steps,
                   help="inner-loop gradient steps per micro-batch (default: the checkpoint's)")
    m.add_argument("--prox", type=float, default=O.prox, help="pull toward θ0 (default: the checkpoint's)")
    m.add_argument("--task-learner", choices=("gradient", "bayes"), default=O.task_learner,
                   help="how a user's state adapts: gradient steps, or bayes: a Gaussian posterior around θ0 (one "
                        "Newton step per micro-batch; lists carry an \"uncertainty\" per item) (default: the "
                        "checkpoint's, what it was trained with; a gradient checkpoint under bayes uses its prox and "
                        "ridge λ as the prior precision)")
    m.add_argument("--explore", choices=("none", "thompson", "ucb"), default=O.explore,
                   help="with --task-learner bayes: thompson = rank with a state drawn from the posterior, ucb = mean "
                        f"score + scale × its std (default {O.explore})")
    m.add_argument("--persistence", type=non_negative_float, default=O.persistence, metavar="RHO",
                   help="with --task-learner bayes: share of a user's deviation from θ0 kept from one micro-batch to "
                        "the next, in [0, 1) (default: the checkpoint's, 0.5)")
    m.add_argument("--explore-scale", type=non_negative_float, default=O.explore_scale, metavar="X",
                   help=f"posterior standard deviations per unit of exploration (default {O.explore_scale:g})")
    m.add_argument("--top-k", type=int, default=O.top_k, help=f"list length (default {O.top_k})")
    m.add_argument("--max-items", type=int, default=O.max_items,
                   help="item rows kept: the model's items plus those first seen online, which get their own row at "
                        "their first event; beyond it the coldest rows are evicted (default: the checkpoint's, "
                        "8,192 for models trained by this version)")
    m.add_argument("--max-catalog", type=int, default=O.max_catalog,
                   help=f"rank the whole catalog up to this many items (default {O.max_catalog}) ...")
    m.add_argument("--retrieval-m", type=int, default=O.retrieval_m,
                   help=f"... above it, re-rank only the top M items of θ0 (default {O.retrieval_m})")


def _batch_arguments(k: argparse._ArgumentGroup, b: argparse._ArgumentGroup) -> None:
    from stream.worker.config import WorkerConfig as W

    k.add_argument("--fetch-max-wait-ms", type=int, default=W.fetch_max_wait_ms,
                   help=f"consumer long-poll wait (default {W.fetch_max_wait_ms}; librdkafka's own is 500 and faust's "
                        "1500, a latency floor on the embedded broker, which answers a waiting fetch only when the "
                        "wait expires)")
    k.add_argument("--delivery", choices=("direct", "faust"), default=W.delivery,
                   help=f"runtime faust only: how faust's fetch loop hands each message to the stream (default "
                        f"{W.delivery}): direct "
                        "(a plain await) or faust (its own per-message wait_first, four asyncio tasks per message)")
    b.add_argument("--batch-size", type=int, default=W.batch_size,
                   help=f"max events per micro-batch (default {W.batch_size})")
    b.add_argument("--batch-seconds", type=positive_float, default=W.batch_seconds,
                   help=f"max seconds to wait, after its first event, to fill a micro-batch (default {W.batch_seconds:g}; under load batches "
                        "fill to --batch-size first, so this mostly bounds the latency of a quiet stream)")
    removed_flags(b, {"--batch-ms": "use --batch-seconds (seconds: 30 ms is 0.03)"})
    b.add_argument("--store", choices=("rocksdb", "memory"), default=W.store,
                   help=f"local state store (default {W.store}; both are restored from the changelog)")
    b.add_argument("--data-dir", default=W.data_dir,
                   help="state directory, one per worker on a host (default $METAREC_DATA_DIR/worker/<group>)")

    b.add_argument("--torch-threads", type=int, default=W.torch_threads,
                   help=f"torch threads for adaptation (default {W.torch_threads}: on a small machine more threads "
                        "contend with the event loop and run slower; scale out with processes instead)")
    b.add_argument("--state-ttl", type=non_negative_float, default=W.state_ttl, metavar="SECONDS",
                   help="forget a user whose newest event is this many seconds (event time) older than their "
                        "partition's stream time: their record is deleted and tombstoned in the changelog "
                        f"(default {W.state_ttl:.0f} = {W.state_ttl / 86_400:.0f} days; 0 = never)")
    b.add_argument("--item-state", choices=("shared", "local"), default=W.item_state,
                   help=f"local (default): one process alone, its own item state (not shared, not durable); shared: one "
                        "item state for the whole group: each worker sends its item contributions (topic "
                        "<group>-item-updates) to the worker that owns the item's partition, which merges them and "
                        "publishes the item's row on the compacted topic <group>-items that every worker applies and "
                        "restores before it is ready (what docker-compose and Kubernetes run, and what metarec "
                        "evaluate measures by default; docs/OPERATIONS.md)")
    b.add_argument("--item-ttl", type=non_negative_float, default=W.item_ttl, metavar="SECONDS",
                   help="shared item state: delete an item whose newest event is this many seconds (event time) older "
                        "than the group's newest event; it leaves every worker's table (default 0 = never)")
    b.add_argument("--item-half-life", type=positive_float, default=None, metavar="SECONDS",
                   help="half-life of item popularity in event time (default: the checkpoint's, which training sets "
                        "to the time its last 5,000 events span)")
    b.add_argument("--item-table-max", type=int, default=W.item_table_max,
                   help=f"shared item state: rows at most in the group's item table; beyond it the least popular are "
                        f"deleted (default {W.item_table_max}); each worker still keeps at most --max-items rows")
    b.add_argument("--max-event-bytes", type=int, default=W.max_event_bytes,
                   help=f"input values larger than this go to the DLQ with reason oversized (default "
                        f"{W.max_event_bytes})")


def _http_arguments(h: argparse._ArgumentGroup) -> None:
    from stream.worker.config import WorkerConfig as W

    h.add_argument("--metrics-host", default=W.metrics_host,
                   help=f"interface for /metrics /healthz /readyz (default {W.metrics_host}; 0.0.0.0 in a container)")
    h.add_argument("--metrics-port", type=int, default=W.metrics_port,
                   help=f"port (default {W.metrics_port}; 0 = pick a free one)")
    h.add_argument("--stall-after", type=positive_float, default=W.stall_after, metavar="SECONDS",
                   help="/readyz answers 503 (with the reason) once the broker has been unreachable, or a "
                        f"micro-batch's delivery has waited, this long (default {W.stall_after:g}); /healthz stays 200")
    h.add_argument("--probe-interval", type=positive_float, default=W.probe_interval, metavar="SECONDS",
                   help=f"seconds between the broker probes behind /readyz (default {W.probe_interval:g})")


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The :class:`~stream.worker.config.WorkerConfig` of parsed ``args``: every field of it and of its nested
    :class:`~adapters.online.config.OnlineConfig` is a flag of the same name."""
    from dataclasses import fields

    from adapters.online.config import OnlineConfig
    from stream.kafka.client import kafka_overrides
    from stream.worker.config import WorkerConfig

    loglevel = {0: "warning", 1: "info"}.get(getattr(args, "verbose", 0), "debug")
    given = vars(args)
    online = OnlineConfig(**{f.name: given[f.name] for f in fields(OnlineConfig) if f.name in given})
    values = {f.name: given[f.name] for f in fields(WorkerConfig) if f.name in given and f.name != "online"}
    return WorkerConfig(**values, online=online, kafka_options=kafka_overrides(args), loglevel=loglevel)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.runtime == "kafka":
        from stream.runtime.kafka.process import run_worker
    else:
        from stream.runtime.faust.process import run_worker
    return run_worker(cfg)
