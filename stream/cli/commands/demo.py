"""``metarec demo``: the whole system on MovieLens-100K, end to end (what ``make demo`` runs)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Run everything on one machine and watch it work: start the embedded Kafka-protocol broker, meta-train θ0 on
the first half of MovieLens-100K (cached: the second run starts at once), start a real `metarec worker`,
replay the 100,000 ratings at full speed, and watch the worker live (events/s, lists/s, lag, online hit rate).
At the end it prints a few users' lists with movie titles and the final figures, writes reports/demo/demo.json
and demo.md, and stops everything it started (Ctrl-C too). A few minutes on a laptop.

examples:
  metarec demo
  metarec demo --retrain --epochs 3          # train θ0 again instead of reusing the cached checkpoint
  metarec demo --limit 20000 --no-live       # a shorter run, no live view (logs, CI)
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-100k", help="dataset to replay (default ml-100k)")
    parser.add_argument("--data-dir", default=None, help="dataset and checkpoint cache (default $METAREC_DATA_DIR "
                                                         "or ~/.cache/metarec)")
    parser.add_argument("--report-dir", default="reports/demo", help="where to write demo.json and demo.md")
    parser.add_argument("--model", choices=("seq", "mf", "melu"), default="seq",
                        help="model (default seq: attention over the user's window on top of mf)")
    parser.add_argument("--meta", choices=("maml", "fomaml", "reptile", "metasgd"), default="maml",
                        help="meta-learner (default maml)")
    parser.add_argument("--epochs", type=_positive_int, default=2, help="meta-training epochs (default 2: quick)")
    parser.add_argument("--retrain", action="store_true", help="train even if a cached checkpoint exists")
    parser.add_argument("--limit", type=_positive_int, default=None, help="replay only the first N events")
    parser.add_argument("--partitions", type=_positive_int, default=4, help="input partitions (default 4)")
    parser.add_argument("--batch-size", type=_positive_int, default=1000, help="worker micro-batch size (default 1000)")
    parser.add_argument("--users", type=_positive_int, default=3, help="users whose lists are shown (default 3)")
    parser.add_argument("--no-live", action="store_true", help="no live view, only the final table")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds of replay")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream.cli.demo import DemoConfig, run_demo

    cfg = DemoConfig(dataset=args.dataset, data_dir=Path(args.data_dir) if args.data_dir else None,
                     report_dir=Path(args.report_dir), model=args.model, meta=args.meta, epochs=args.epochs,
                     retrain=args.retrain, limit=args.limit, partitions=args.partitions, batch_size=args.batch_size,
                     users_shown=args.users, live=not args.no_live, timeout=args.timeout)
    return run_demo(cfg)
