"""The faust pass-through agent: the worker's consumer settings, and nothing but reading and acking.

A bare faust app built with the consumer-side settings of :func:`stream.runtime.faust.app.build_app` (raw key and
value serializers, ``producer_linger=0``, ``stream_wait_empty``, the session timeout and its heartbeat interval,
the commit interval, ``consumer_auto_offset_reset="earliest"``, the same input topic and partition count) and
one agent reading the worker's micro-batches (``stream.take_events(batch_size, batch_seconds)``). It does no parsing,
keeps no state table (``memory://`` store), runs no learner and produces nothing: each micro-batch is counted
and acked (``take_events`` acks a batch when the next one is requested). It is the ceiling of the stream machinery
on this machine.

What the worker has and this agent does not: the worker's delivery (``--delivery direct``,
:mod:`stream.runtime.faust.wait_first_per_message`; here faust's own per-message delivery), its fetch wait
(``--fetch-max-wait-ms``; here faust's 1,500 ms), its prefetch bound (``stream_buffer_maxsize``), its fetch-size
and request-size limits, and Kafka credentials.

Run as a child process by :func:`stream.bench.passthrough.run_passthrough`
(``python -m stream.runtime.faust.passthrough ...``): it counts events until ``--expect`` have arrived and writes
``{"events", "seconds", "events_per_s", "first_batch_at", "last_at"}`` to ``--out`` (through a temporary file, so
the file appears complete), and every 0.5 s the count so far to ``--out`` + ``.progress``. The clock starts when
the first micro-batch is handed to the agent (the worker's end-to-end clock starts at the same point: its first
batch counted in ``metarec_events_consumed_total``). It runs until stopped (SIGTERM).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from stream.runtime.passthrough import PassthroughConfig, parse_args, write_result


def build_app(cfg: PassthroughConfig) -> Any:  # pragma: no cover - runs in the child process
    """The faust app with its one pass-through agent (see the module docstring)."""
    import faust

    app = faust.App(
        cfg.group, broker=[f"kafka://{h}" for h in cfg.bootstrap.split(",")], store="memory://",
        datadir=cfg.datadir, topic_partitions=cfg.partitions, producer_linger=0.0,
        broker_session_timeout=cfg.session_timeout, broker_heartbeat_interval=max(0.1, cfg.session_timeout / 4),
        broker_commit_interval=cfg.commit_interval, consumer_auto_offset_reset="earliest", stream_wait_empty=True,
        web_enabled=False, autodiscover=False, key_serializer="raw", value_serializer="raw",
        table_standby_replicas=0)
    source = app.topic(cfg.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"n": 0, "first": None, "reported": 0.0, "done": False}

    @app.agent(source, name="bench-passthrough")
    async def passthrough(stream):  # noqa: ANN001, ANN202
        async for events in stream.take_events(cfg.batch_size, cfg.batch_seconds):
            now = time.time()
            if state["first"] is None:
                state["first"] = now
            state["n"] += len(events)
            if now - state["reported"] > 0.5:
                state["reported"] = now
                Path(cfg.out + ".progress").write_text(str(state["n"]))
            if state["n"] >= cfg.expect and not state["done"]:
                write_result(cfg.out, state["n"], state["first"], now)
                state["done"] = True  # report once: later events (a longer topic) do not overwrite the result
    return app


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the child process
    """Run the pass-through agent until SIGTERM; the exit code."""
    import faust

    app = build_app(parse_args(argv, prog="python -m stream.runtime.faust.passthrough", doc=__doc__))
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
