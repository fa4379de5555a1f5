"""The settings of one worker process (:class:`WorkerConfig`) and the worker's limits, each defined once here.

``metarec worker`` (:mod:`stream.cli.commands.worker`) builds a :class:`WorkerConfig` from its flags, whose defaults
are read from this dataclass, and runs the runtime it names (:func:`stream.runtime.kafka.process.run_worker` or
:func:`stream.runtime.faust.process.run_worker`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import MetarecError
from adapters.online.config import OnlineConfig
from stream.kafka.schema import MAX_EVENT_BYTES

log = logging.getLogger(__name__)

DEFAULT_STATE_TTL_S = 90 * 86_400.0  #: 90 days of event time
RUNTIMES = ("kafka", "faust")  #: the Kafka runtimes a worker can run on
MAX_DLQ_BYTES = 16 * 1024 * 1024  #: largest message the worker's producer sends (dead letters keep the original)


def default_data_dir(group: str) -> Path:
    base = Path(os.environ.get("METAREC_DATA_DIR") or Path.home() / ".cache" / "metarec")
    return base / "worker" / group


@dataclass
class WorkerConfig:
    """Settings of one worker process (every field is a ``metarec worker`` flag)."""

    bootstrap: str
    checkpoint: Path
    #: the Kafka runtime under the worker core: "kafka" (confluent-kafka, stream.runtime.kafka) or "faust"
    #: (faust-streaming, stream.runtime.faust)
    runtime: str = "kafka"
    #: the online learner's settings (window, top-k, inner steps, task learner, item state, ...): one home for them
    online: OnlineConfig = field(default_factory=OnlineConfig)
    input: str = "interactions"
    output: str = "recommendations"
    group: str = "metarec"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    store: str = "rocksdb"  #: "rocksdb" (durable local cache, restored from the changelog) or "memory"
    data_dir: Path | None = None  #: table files; default $METAREC_DATA_DIR/worker/<group>
    batch_size: int = 500
    batch_seconds: float = 0.03
    partitions: int = 4  #: partitions of topics created by the worker (existing topics are left as they are)
    replication_factor: int = 1
    session_timeout: float = 10.0
    commit_interval: float = 1.0
    model_poll: float = 5.0
    kafka_options: dict[str, str] = field(default_factory=dict)
    loglevel: str = "warning"
    torch_threads: int = 1  #: torch intra-op threads; more contend with the event loop on a small machine
    fetch_max_wait_ms: int = 30  #: consumer long-poll wait (librdkafka's default is 500 ms, faust's 1500 ms)
    state_ttl: float = DEFAULT_STATE_TTL_S  #: forget users inactive this long in event time (0: never)
    max_event_bytes: int = MAX_EVENT_BYTES  #: larger input values are dead-lettered as "oversized"
    stall_after: float = 5.0  #: /readyz turns 503 after the broker was unreachable (or a batch stalled) this long
    probe_interval: float = 2.0  #: seconds between broker probes (metadata requests)
    #: runtime faust: how its fetch loop hands each message to the stream: "direct" (a plain await,
    #: stream.runtime.faust.wait_first_per_message) or "faust" (its own per-message wait_first, four tasks per message)
    delivery: str = "direct"
    #: "local": each process learns its own items (the evaluated default); "shared": one item state for the group
    #: (stream.runtime.faust.item_agent)
    item_state: str = "local"
    item_ttl: float = 0.0  #: shared: delete items idle this long in event time (0: never)
    item_table_max: int = 100_000  #: shared: item rows at most in the group's table

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MetarecError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if not self.batch_seconds > 0:
            raise MetarecError(f"--batch-seconds must be > 0, got {self.batch_seconds}")
        if self.runtime not in RUNTIMES:
            raise MetarecError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.delivery not in ("direct", "faust"):
            raise MetarecError(f"--delivery must be direct or faust, got {self.delivery!r}")
        if self.store not in ("rocksdb", "memory"):
            raise MetarecError(f"--store must be rocksdb or memory, got {self.store!r}")
        if self.partitions < 1:
            raise MetarecError(f"--partitions must be ≥ 1, got {self.partitions}")
        if not self.session_timeout > 0 or not self.model_poll > 0:
            raise MetarecError("--session-timeout and --model-poll must be > 0")
        if self.torch_threads < 1:
            raise MetarecError(f"--torch-threads must be ≥ 1, got {self.torch_threads}")
        if not 0 <= self.fetch_max_wait_ms <= 60_000:
            raise MetarecError(f"--fetch-max-wait-ms must be in [0, 60000], got {self.fetch_max_wait_ms}")
        if not 0 <= self.metrics_port < 65536:
            raise MetarecError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        if not 0 <= self.state_ttl < float("inf"):
            raise MetarecError(f"--state-ttl must be ≥ 0 seconds (0 = never expire), got {self.state_ttl}")
        if not 1 <= self.max_event_bytes <= MAX_DLQ_BYTES:
            raise MetarecError(f"--max-event-bytes must be in [1, {MAX_DLQ_BYTES}], got {self.max_event_bytes}")
        if not self.stall_after > 0 or not self.probe_interval > 0:
            raise MetarecError("--stall-after and --probe-interval must be > 0")
        if self.item_state not in ("shared", "local"):
            raise MetarecError(f"--item-state must be shared or local, got {self.item_state!r}")
        if not 0 <= self.item_ttl < float("inf") or self.item_table_max < 1:
            raise MetarecError("--item-ttl must be ≥ 0 and --item-table-max ≥ 1")
        if self.input == self.output:
            raise MetarecError("--input and --output must be different topics")
        self.checkpoint = Path(self.checkpoint)
        self.data_dir = Path(self.data_dir) if self.data_dir else default_data_dir(self.group)
