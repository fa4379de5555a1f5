"""What the pass-through references of every runtime share: their settings, command line and result file.

A pass-through is the ceiling of a runtime's stream machinery on this machine: the runtime's consumer settings and
micro-batches with none of the worker's work. Each runtime has its own (:mod:`stream.runtime.faust.passthrough`,
:mod:`stream.runtime.kafka.passthrough`), run as a child process by :func:`stream.bench.passthrough.run_passthrough`:
it counts events until ``--expect`` have arrived and writes ``{"events", "seconds", "events_per_s",
"first_batch_at", "last_at"}`` to ``--out`` (through a temporary file, so the file appears complete), and every
0.5 s the count so far to ``--out`` + ``.progress``. The clock starts when the first micro-batch arrives.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PassthroughConfig:
    """Settings of the pass-through agent (one command-line flag each)."""

    bootstrap: str  #: comma-separated ``host:port`` list
    topic: str  #: the pre-loaded input topic
    group: str  #: a fresh consumer group
    expect: int  #: events to count before writing the result
    out: str  #: result file
    partitions: int = 4
    batch_size: int = 500
    batch_seconds: float = 0.03
    session_timeout: float = 3.0
    commit_interval: float = 1.0
    datadir: str = ""  #: faust's data directory (default: a fresh temporary directory)


def parse_args(argv: list[str] | None, prog: str, doc: str | None) -> PassthroughConfig:
    """The command line of the child process → :class:`PassthroughConfig`."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-seconds", type=float, default=0.03)
    p.add_argument("--session-timeout", type=float, default=3.0)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--datadir", default=None)
    args = p.parse_args(argv)
    return PassthroughConfig(
        bootstrap=args.bootstrap, topic=args.topic, group=args.group, expect=args.expect, out=args.out,
        partitions=args.partitions, batch_size=args.batch_size, batch_seconds=args.batch_seconds,
        session_timeout=args.session_timeout, commit_interval=args.commit_interval,
        datadir=args.datadir or tempfile.mkdtemp(prefix="metarec-passthrough-"))


def write_result(out: str, events: int, first: float, now: float) -> None:
    """Write the result JSON to ``out`` atomically (a temporary file, then a rename)."""
    seconds = max(now - first, 1e-9)
    result = {"events": events, "seconds": seconds, "events_per_s": events / seconds, "first_batch_at": first,
              "last_at": now}
    tmp = out + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, out)


