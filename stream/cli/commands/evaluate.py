"""``metarec evaluate``: offline evaluation with the baselines in the same run."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.cli.argtypes import positive_float, removed_flags

if TYPE_CHECKING:
    from adapters.evaluation.config import EvaluationConfig

DESCRIPTION = """\
Offline evaluation of meta-learned adaptation against baselines, on the same splits in the same run.

--protocol coldstart (MeLU, KDD 2019): users with 13-100 ratings; 20% of them (seeded) are new users; for each,
  10 random rated items are the query and the rest the support. θ0 is trained on the other users (or taken
  from --checkpoint if it was trained on exactly that part, see `metarec train --coldstart-part`). Models:
  metarec (θ0 + inner loop), no_adaptation (θ0 only), erm_finetune (plain ERM + the same inner loop),
  global_mean. Metrics: mae, rmse, ndcg@1, ndcg@3 over the query items.
--protocol prequential: every event after the first --history fraction is scored before it is learned from.
  --retrain-every N simulates continual training from past events only: every N scored events θ0 is
  re-meta-trained, warm-started from the version served, on the events before the next micro-batch (all of them,
  or the last --retrain-window M), and the metarec learner switches to it; users keep their records.

examples:
  metarec evaluate --dataset ml-100k --protocol coldstart --model melu --meta maml --json reports/cold.json
  metarec evaluate --dataset ml-100k --protocol prequential --history 0.5 --checkpoint ck/mf-h50 --json preq.json
  metarec evaluate --dataset ml-100k --protocol prequential --retrain-every 10000 --json retrain.json
"""

log = logging.getLogger(__name__)

#: torch threads of an evaluation: on a small machine more threads contend and run slower
THREADS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``metarec evaluate``; their defaults are those of the evaluation configs."""
    from adapters.evaluation.config import ColdStartConfig, EvaluationConfig
    from adapters.meta.config import META_NAMES, TrainConfig

    cold, preq = ColdStartConfig, EvaluationConfig
    parser.add_argument("--dataset", required=True, help="ml-100k, ml-1m or a CSV/TSV path")
    parser.add_argument("--protocol", choices=("coldstart", "prequential"), required=True, help="evaluation protocol")
    parser.add_argument("--model", choices=("seq", "mf", "melu"), default=None,
                        help=f"model (default: {cold.model} for coldstart; for prequential the checkpoint's, else "
                             f"{TrainConfig.model})")
    parser.add_argument("--meta", choices=META_NAMES, default=None,
                        help=f"meta-learner (default {preq.meta})" if cold.meta == preq.meta else
                        f"meta-learner (default: {cold.meta} for coldstart, {preq.meta} for prequential)")
    parser.add_argument("--history", type=float, default=preq.history,
                        help=f"prequential: history fraction (default {preq.history:g})")
    parser.add_argument("--checkpoint", default=preq.checkpoint, help="use this checkpoint for θ0 instead of training one")
    parser.add_argument("--json", required=True, help="write the JSON report here")
    parser.add_argument("--report", default=preq.report, help="also write a report directory")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs when θ0 is trained here (default: {cold.epochs} for coldstart, "
                             f"{TrainConfig.epochs} for prequential)")
    parser.add_argument("--steps", type=int, default=preq.steps,
                        help=f"inner-loop steps of the adapting models (default: θ0's, the checkpoint's or "
                             f"{TrainConfig.steps} when trained here); prequential: a θ0 trained here is trained with "
                             "them too")
    parser.add_argument("--max-items", type=int, default=preq.max_items,
                        help="prequential: item rows the learner keeps, items first seen online included; the coldest "
                             "are evicted beyond it (default: the checkpoint's, 8,192 unless trained otherwise)")
    parser.add_argument("--seed", type=int, default=preq.seed,
                        help=f"seed of the splits and of training (default {preq.seed})")
    parser.add_argument("--batch-size", type=int, default=preq.batch_size,
                        help=f"prequential: max events per micro-batch (default {preq.batch_size}, the worker's order "
                             "of size)")
    parser.add_argument("--batch-seconds", type=float, default=preq.batch_seconds,
                        help=f"prequential: max event-time span of a micro-batch, seconds (default {preq.batch_seconds:g}: "
                             "a worker batching 100 ms of a live stream never groups events further apart; MovieLens "
                             "timestamps are whole seconds); 0 = cut by --batch-size only, like a replay at full speed")
    parser.add_argument("--retrain-every", type=int, default=preq.retrain_every, metavar="N",
                        help="prequential: every N scored events, re-meta-train θ0 on past events only (the history "
                             "and the events scored so far, never one still to be scored), warm-started from the "
                             "version served, and switch the metarec learner to it between two micro-batches; "
                             "users keep their records, items learned online keep their rows; each retraining costs "
                             "about one θ0 training (the JSON's retrain section counts and times them) "
                             f"(default {preq.retrain_every}: never)")
    parser.add_argument("--item-state", choices=("local", "shared"), default=preq.item_state,
                        help=f"prequential (default {preq.item_state}): shared = what docker-compose and Kubernetes "
                             "deploy: a micro-batch's item contributions reach the learner's item rows one micro-batch "
                             "later (the round trip through the items' owner); local = at once (one worker alone)")
    parser.add_argument("--item-half-life", type=positive_float, default=preq.item_half_life, metavar="SECONDS",
                        help="prequential: half-life of item popularity in event time (default: θ0's, which training "
                             "sets to the time its last 5,000 events span)")
    _learner_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="prequential: processes the models run in, each model in its own (the same figures as "
                             "one process; default: one per CPU)")
    parser.add_argument("--torch-threads", type=int, default=THREADS,
                        help=f"torch threads (default {THREADS}: on a small machine more threads contend and run slower)")
    removed_flags(parser, {"--threads": "use --torch-threads"})
    parser.add_argument("--data-dir", default=preq.data_dir,
                        help="dataset cache (default $METAREC_DATA_DIR or ~/.cache/metarec)")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")


def _learner_arguments(parser: argparse.ArgumentParser) -> None:
    """The task learner's and the retraining's flags (prequential)."""
    from adapters.evaluation.config import EvaluationConfig as preq

    parser.add_argument("--task-learner", choices=("gradient", "bayes"), default=preq.task_learner,
                        help="prequential: " + "how a user's state adapts: gradient = the inner-loop gradient steps; bayes = a Gaussian posterior "
                             "around θ0 with a meta-learned prior precision (one Newton step per micro-batch; scores get an "
                             "uncertainty; mf and seq; see the README)" + f" (default {preq.task_learner}; θ0 trained here is trained through it)")
    parser.add_argument("--models", type=_model_list, default=preq.models, metavar="NAME,…",
                        help="prequential: only these models (comma-separated, e.g. metarec,popularity; default: all of "
                             "them: metarec, no_adaptation, erm_finetune, popularity, popularity_decayed, "
                             "river_biasedmf, cooccurrence); leaving erm_finetune out skips its training")
    parser.add_argument("--explore", choices=("none", "thompson", "ucb"), default=preq.explore,
                        help="prequential, --task-learner bayes: rank metarec's lists with exploration from the posterior: "
                             "thompson = a state drawn from it, ucb = mean score + scale × its std "
                             f"(default {preq.explore})")
    parser.add_argument("--persistence", type=float, default=preq.persistence, metavar="RHO",
                        help="prequential, --task-learner bayes: share of a user's deviation from θ0 kept from one "
                             "micro-batch to the next, in [0, 1) (default: the checkpoint's, 0.5)")
    parser.add_argument("--explore-scale", type=float, default=preq.explore_scale, metavar="X",
                        help=f"posterior standard deviations per unit of exploration (default {preq.explore_scale:g})")
    parser.add_argument("--retrain-window", type=int, default=preq.retrain_window, metavar="M",
                        help="prequential, with --retrain-every: train each retraining on the last M past events only "
                             "(bounds its cost; the warm start keeps what older events taught) "
                             f"(default {preq.retrain_window}: all past events)")

def _model_list(text: str) -> tuple[str, ...]:
    """``--models``: comma-separated names (checked against the report's models when the run starts)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected at least one model name")
    return names


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
    cfg = ColdStartConfig(model=args.model or ColdStartConfig.model, meta=args.meta or ColdStartConfig.meta,
                          seed=args.seed, steps=args.steps, dataset_spec=args.dataset)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    checkpoint = None
    if args.checkpoint:
        from adapters.meta.checkpoint import Checkpoint
        checkpoint = Checkpoint.load(args.checkpoint)
    return run_coldstart(ds, cfg, checkpoint=checkpoint, progress=not args.no_progress)


def command_line() -> str:
    """The command line of this process, as the user would type it (recorded in the report directory)."""
    return "metarec " + shlex.join(sys.argv[1:])


def evaluation_config(args: argparse.Namespace) -> EvaluationConfig:
    """The :class:`~adapters.evaluation.config.EvaluationConfig` of the parsed ``metarec evaluate`` flags."""
    from adapters.evaluation.config import EvaluationConfig

    return EvaluationConfig(dataset=args.dataset, model=args.model, meta=args.meta or EvaluationConfig.meta,
                            history=args.history, checkpoint=args.checkpoint, report=args.report,
                            epochs=args.epochs, steps=args.steps, max_items=args.max_items, seed=args.seed,
                            batch_size=args.batch_size, batch_seconds=args.batch_seconds or None,
                            retrain_every=args.retrain_every, retrain_window=args.retrain_window,
                            item_state=args.item_state, item_half_life=args.item_half_life,
                            task_learner=args.task_learner, models=args.models, explore=args.explore, explore_scale=args.explore_scale,
                            persistence=args.persistence,
                            data_dir=args.data_dir, progress=not args.no_progress, command=command_line(),
                            workers=args.workers)


def _prequential(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.errors import MetarecError
    try:
        from adapters.evaluation.prequential_run import run_prequential
    except ImportError:
        raise MetarecError("prequential evaluation is not available in this build") from None
    return run_prequential(evaluation_config(args))


PROTOCOLS = {"coldstart": _coldstart, "prequential": _prequential}


def run(args: argparse.Namespace) -> int:
    from adapters.errors import MetarecError
    if args.epochs is not None and args.epochs < 0:
        raise MetarecError(f"--epochs must not be negative, got {args.epochs}")
    if args.steps is not None and args.steps < 0:
        raise MetarecError(f"--steps must not be negative, got {args.steps}")
    if args.protocol != "prequential" and (args.retrain_every or args.retrain_window):
        raise MetarecError("--retrain-every and --retrain-window belong to --protocol prequential")
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    report = PROTOCOLS[args.protocol](args)
    _write_json(args.json, report)
    _table(report)
    return 0
