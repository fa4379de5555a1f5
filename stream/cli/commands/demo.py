"""``metarec demo``: the whole system on MovieLens-100K, end to end (what ``make demo`` runs)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Run everything on one machine and watch it work: start the embedded Kafka-protocol broker, meta-train θ0 on
the first half of MovieLens-100K (cached: the second run starts at once), start a real `metarec worker`,
and replay the 100,000 ratings in two phases: a backfill of all but the last --live-events at full speed
(throughput), then those last events live at a steady --live-rate. In the live phase the view compares, on the
same events, the hit rate@10 of the worker's lists, of θ0 alone (no per-user steps, run in the demo process) and
of popularity, and shows the event→list latency. At the end it prints a few users' lists with movie titles (and
`because` items when the worker sends them), writes reports/demo/demo.json, demo.md and hit_rates.png, and stops
everything it started (Ctrl-C too). About a minute on a laptop.

examples:
  metarec demo
  metarec demo --retrain --epochs 3          # train θ0 again instead of reusing the cached checkpoint
  metarec demo --limit 20000 --no-live       # a shorter run, no live view (logs, CI)
  metarec demo --live-events 4000 --live-rate 500
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adapters.meta.config import META_NAMES
    from stream.cli.argtypes import removed_flags

    parser.add_argument("--dataset", default="ml-100k", help="dataset to replay (default ml-100k)")
    parser.add_argument("--data-dir", default=None, help="dataset and checkpoint cache (default $METAREC_DATA_DIR "
                                                         "or ~/.cache/metarec)")
    parser.add_argument("--report", default="reports/demo", help="where to write demo.json and demo.md")
    removed_flags(parser, {"--report-dir": "use --report"})
    parser.add_argument("--model", choices=("seq", "mf", "melu"), default="seq",
                        help="model (default seq: attention over the user's window on top of mf)")
    parser.add_argument("--meta", choices=META_NAMES, default="maml",
                        help="meta-learner (default maml)")
    parser.add_argument("--epochs", type=_positive_int, default=2, help="meta-training epochs (default 2: quick)")
    parser.add_argument("--retrain", action="store_true", help="train even if a cached checkpoint exists")
    parser.add_argument("--limit", type=_positive_int, default=None, help="replay only the first N events")
    parser.add_argument("--partitions", type=_positive_int, default=4, help="input partitions (default 4)")
    parser.add_argument("--batch-size", type=_positive_int, default=1000, help="worker micro-batch size (default 1000)")
    parser.add_argument("--users", type=_positive_int, default=3, help="users whose lists are shown (default 3)")
    parser.add_argument("--no-live", action="store_true", help="no live view, only the final table")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds of replay")
    parser.add_argument("--live-events", type=_positive_int, default=8000,
                        help="the last N events are the live phase, sent at --live-rate (default 8000)")
    parser.add_argument("--live-rate", type=_positive_float, default=400.0,
                        help="events/s in the live phase (default 400: a pace the worker keeps up with)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream.cli.demo import DemoConfig, run_demo

    cfg = DemoConfig(dataset=args.dataset, data_dir=Path(args.data_dir) if args.data_dir else None,
                     report_dir=Path(args.report), model=args.model, meta=args.meta, epochs=args.epochs,
                     retrain=args.retrain, limit=args.limit, partitions=args.partitions, batch_size=args.batch_size,
                     users_shown=args.users, live=not args.no_live, timeout=args.timeout,
                     live_events=args.live_events, live_rate=args.live_rate)
    return run_demo(cfg)
