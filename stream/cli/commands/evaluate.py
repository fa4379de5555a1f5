"""``metarec evaluate``: offline evaluation with the baselines in the same run."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Offline evaluation of meta-learned adaptation against baselines, on the same splits in the same run.

--protocol coldstart (MeLU, KDD 2019): users with 13-100 ratings; 20% of them (seeded) are new users; for each,
  10 random rated items are the query and the rest the support. θ0 is trained on the other users (or taken
  from --checkpoint if it was trained on exactly that part, see `metarec train --coldstart-part`). Models:
  metarec (θ0 + inner loop), no_adaptation (θ0 only), erm_finetune (plain ERM + the same inner loop),
  global_mean. Metrics: mae, rmse, ndcg@1, ndcg@3 over the query items.
--protocol prequential: every event after the first --history fraction is scored before it is learned from.

examples:
  metarec evaluate --dataset ml-100k --protocol coldstart --model melu --meta maml --json reports/cold.json
  metarec evaluate --dataset ml-100k --protocol prequential --history 0.5 --checkpoint ck/mf-h50 --json preq.json
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="ml-100k, ml-1m or a CSV/TSV path")
    parser.add_argument("--protocol", choices=("coldstart", "prequential"), required=True, help="evaluation protocol")
    parser.add_argument("--model", choices=("seq", "mf", "melu"), default=None,
                        help="model (default: melu for coldstart, seq for prequential)")
    parser.add_argument("--meta", choices=("maml", "fomaml", "reptile", "metasgd"), default=None,
                        help="meta-learner (default maml)")
    parser.add_argument("--history", type=float, default=0.5, help="prequential: history fraction (default 0.5)")
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint for θ0 instead of training one")
    parser.add_argument("--json", required=True, help="write the JSON report here")
    parser.add_argument("--report", default=None, help="also write a report directory")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs when θ0 is trained here")
    parser.add_argument("--steps", type=int, default=None, help="inner-loop steps (default: the model's)")
    parser.add_argument("--max-items", type=int, default=None,
                        help="prequential: item rows the learner keeps, items first seen online included; the coldest "
                             "are evicted beyond it (default 8,192)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and of training (default 0)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="prequential: max events per micro-batch (default 256, the worker's order of size)")
    parser.add_argument("--batch-seconds", type=float, default=1.0,
                        help="prequential: max event-time span of a micro-batch, seconds (default 1: a worker "
                             "batching 100 ms of a live stream never groups events further apart; MovieLens "
                             "timestamps are whole seconds); 0 = cut by --batch-size only, like a replay at full speed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a small machine more threads contend and run slower)")
    parser.add_argument("--data-dir", default=None, help="dataset cache (default $METAREC_DATA_DIR or ~/.cache/metarec)")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")


def _write_json(path: str, report: dict[str, Any]) -> None:
    from adapters.errors import MetarecError
    try:
        p = Path(path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=2))
    except OSError as exc:
        raise MetarecError(f"cannot write {path}: {exc}") from None


def _table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    models = report.get("models", {})
    metrics = sorted({m for v in models.values() for m in v})
    table = Table(title=f"{report['protocol']} · {report['dataset']} · {report['events']:,} events")
    table.add_column("model")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, vals in models.items():
        table.add_row(name, *[f"{vals[m]:.4f}" if m in vals else "" for m in metrics])
    Console().print(table)


def _coldstart(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.evaluation.coldstart import ColdStartConfig, run_coldstart
    from adapters.data.datasets import load_dataset
    ds = load_dataset(args.dataset, data_dir=args.data_dir, progress=not args.no_progress)
    cfg = ColdStartConfig(model=args.model or "melu", meta=args.meta or "maml", seed=args.seed, steps=args.steps,
                          dataset_spec=args.dataset)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    checkpoint = None
    if args.checkpoint:
        from adapters.meta.checkpoint import Checkpoint
        checkpoint = Checkpoint.load(args.checkpoint)
    return run_coldstart(ds, cfg, checkpoint=checkpoint, progress=not args.no_progress)


def _prequential(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.errors import MetarecError
    try:
        from adapters.evaluation.prequential import run_prequential
    except ImportError:
        raise MetarecError("prequential evaluation is not available in this build") from None
    return run_prequential(args)


PROTOCOLS = {"coldstart": _coldstart, "prequential": _prequential}


def run(args: argparse.Namespace) -> int:
    from adapters.errors import MetarecError
    if args.epochs is not None and args.epochs < 0:
        raise MetarecError(f"--epochs must not be negative, got {args.epochs}")
    if args.steps is not None and args.steps < 0:
        raise MetarecError(f"--steps must not be negative, got {args.steps}")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    report = PROTOCOLS[args.protocol](args)
    _write_json(args.json, report)
    _table(report)
    return 0
