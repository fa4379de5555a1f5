"""``metarec bench``: the performance benchmark (every measurement in one run)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.cli.argtypes import positive_float, removed_flags

DESCRIPTION = """\
Measure the performance of the whole system in one run and write the figures as JSON (--json OUT):

  runtimes     one real `metarec worker` process per runtime (kafka: confluent-kafka, the default; faust) reading the
               pre-loaded input topic: events/s with a refreshed top-10 list for every touched user per micro-batch,
               and the event→list latency p50/p99 at a fixed offered rate of half that maximum (a paced producer
               stamps every event with its send time; latency = list received by a consumer − send time);
               the default runtime's figures are also `end_to_end`
  restore      a fresh kafka worker restoring that worker's state from its changelog: records/s
  scale_out    events/s with one worker, and with two workers in one consumer group
  item_state   two workers and the latency run again with `--item-state shared` (what compose and Kubernetes
               deploy): events/s, p99 and peak RSS against the same without it
  adaptation   the model alone (no Kafka): users/s for seq, mf and melu (3 steps, support 32, full-catalog top-10)
  references   each runtime's pass-through (read, decode, produce, commit; nothing else: the stream machinery's
               ceiling; `kafka_passthrough_events_per_s` is the bare confluent-kafka loop); the batched learner
               alone; River BiasedMF full-catalog ranking with predict_one; the learner fed one event per call
  peak_rss_bytes, state_bytes_per_user   worker peak memory (VmHWM), mean durable record size (changelog)

The input topic is pre-loaded once (murmur2 partitioner) and every measurement uses a fresh consumer group.
It starts its own embedded broker unless --bootstrap is given. Full ML-1M takes about 15 minutes on 2 cores
(plus ~20 minutes the first time, to train the worker's checkpoint); --quick uses the first 100,000 events and
shorter runs. The targets (kafka ≥ 3× faust, end to end ≥ 50 % of the learner alone, p99 ≤ 50 ms, two workers
≥ 1.7× one, restore ≥ 40,000 records/s, shared item state ≥ 0.9× and p99 ≤ 1.2× without it, +≤ 50 MiB RSS, mf
≥ 30,000 users/s, melu ≥ 2,000 users/s, ≥ 10× River, state ≤ 2 KB per user) are checked and shown in the table;
the benchmark reports, it does not fail on a missed target.
Run it on an otherwise idle machine: the load average before and after is recorded in the JSON.

examples:
  metarec bench --json reports/bench.json
  metarec bench --quick --json /tmp/bench-quick.json
  metarec bench --dataset ml-100k --limit 20000 --partitions 4 --json /tmp/bench.json
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="OUT", help="write the figures here (JSON)")
    parser.add_argument("--dataset", default="ml-1m", help="ml-100k, ml-1m (default) or a CSV/TSV file")
    parser.add_argument("--limit", type=_positive_int, default=None,
                        help="use only the first N events (default: all; 100,000 with --quick)")
    parser.add_argument("--partitions", type=int, default=4, help="input topic partitions (default 4, at least 2)")
    parser.add_argument("--quick", action="store_true",
                        help="fast run: 100,000 events unless --limit, 10 s paced run, 500-event references")
    parser.add_argument("--checkpoint", default=None,
                        help="worker checkpoint directory (default: train a quick seq one on the dataset, cached in "
                             "$METAREC_DATA_DIR/bench)")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka broker instead of an embedded one")
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb",
                        help="worker state store (default rocksdb, the worker's default)")
    parser.add_argument("--batch-size", type=_positive_int, default=500, help="worker micro-batch size (default 500)")
    parser.add_argument("--batch-seconds", type=positive_float, default=0.03,
                        help="worker micro-batch wait in seconds (default 0.03, the worker's default)")
    removed_flags(parser, {"--batch-ms": "use --batch-seconds (seconds: 30 ms is 0.03)"})
    parser.add_argument("--latency-seconds", type=positive_float, default=None,
                        help="length of the paced latency run (default 30 s, 10 s with --quick)")
    parser.add_argument("--reference-events", type=_positive_int, default=None,
                        help="events for the River and naive-loop references (default 2,000; 500 with --quick)")
    parser.add_argument("--data-dir", default=None, help="dataset cache (default $METAREC_DATA_DIR or ~/.cache/metarec)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no table")


def run(args: argparse.Namespace) -> int:
    from adapters.errors import MetarecError
    from stream.bench.report import render_table
    from stream.bench.runner import BenchConfig, finite_json, run_bench

    out = Path(args.json)
    if out.exists() and out.is_dir():
        raise MetarecError(f"--json {out} is a directory")
    if not out.parent.exists():
        raise MetarecError(f"--json: directory {out.parent} does not exist")
    if args.bootstrap is not None:
        from stream.kafka.client import validate_bootstrap

        validate_bootstrap(args.bootstrap)
    cfg = BenchConfig(dataset=args.dataset, limit=args.limit, partitions=args.partitions, quick=args.quick,
                      checkpoint=Path(args.checkpoint) if args.checkpoint else None, bootstrap=args.bootstrap,
                      store=args.store, batch_size=args.batch_size, batch_seconds=args.batch_seconds,
                      latency_seconds=args.latency_seconds, reference_events=args.reference_events,
                      data_dir=args.data_dir)
    if cfg.checkpoint is not None and not (cfg.checkpoint / "config.json").is_file():
        raise MetarecError(f"--checkpoint {cfg.checkpoint} is not a checkpoint directory")
    show = not args.quiet and sys.stderr.isatty()
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bars:
            current: list = []

            def stage(name: str, total: int | None):
                for task in current:
                    t = bars.tasks[task]
                    bars.update(task, completed=t.total if t.total else 1, total=t.total or 1)
                current.clear()
                current.append(bars.add_task(name, total=total))
                task = current[0]
                return lambda done, tot: bars.update(task, completed=done, total=tot)

            result = run_bench(cfg, stage)
            for task in current:
                t = bars.tasks[task]
                bars.update(task, completed=t.total if t.total else 1, total=t.total or 1)
    else:
        result = run_bench(cfg)
    out.write_text(json.dumps(finite_json(result), indent=2, allow_nan=False) + "\n")
    if not args.quiet:
        from rich.console import Console

        render_table(result, Console())
        print(f"wrote {out}")
    return 0
