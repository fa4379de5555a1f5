"""``metarec train``: meta-train θ0 on a dataset and write a checkpoint directory."""
from __future__ import annotations

import argparse
import json
import logging
import time

DESCRIPTION = """\
Meta-train an initialization θ0 (plus the shared item side) so that a few gradient steps on a user's
recent events personalize the model, and write a checkpoint directory (safetensors weights + JSON).

Tasks are users: with --split time (default, what the stream worker faces) each user's history is cut at
several points, support = up to --window events before the cut, query = the next --query-size events.
--split random is the MeLU cold-start protocol. --history F trains on the first fraction F of the events
in time order (the prequential evaluation uses 0.5).
--meta mamlpp is MAML++ (Antoniou et al. 2019): learned inner rates per step and per state entry (saved in the
checkpoint; the worker uses rate k at step k, the last trained rate for any further step), the query loss after
every inner step with weights annealed toward the last one, first-order meta-gradients for the first 20% of training.

examples:
  metarec train --dataset ml-100k --model mf --meta maml --out checkpoints/mf
  metarec train --dataset ml-100k --model mf --meta maml --history 0.5 --epochs 5 --out ck/mf-h50
  metarec train --dataset ml-1m --model melu --meta metasgd --split random --out ck/melu
  metarec train --dataset ml-100k --meta mamlpp --out ck/seq-mamlpp
  metarec train --from-topic interactions --bootstrap kafka:9092 --since 2024-05-01T00:00:00Z --out ck/may
"""

log = logging.getLogger(__name__)


TASK_LEARNER_HELP = ("how a user's state adapts, in training and when served: gradient = the inner-loop gradient steps; "
                     "bayes = a Gaussian posterior around θ0 with a meta-learned prior precision (one Newton step per "
                     "micro-batch; scores get an uncertainty; mf and seq; see the README)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``metarec train``; their defaults are :class:`~adapters.meta.config.TrainConfig`'s and the model
    defaults of :mod:`adapters.meta.config`."""
    from adapters.meta import config as defaults
    from adapters.meta.config import DEFAULT_META, META_NAMES, TrainConfig as T
    from stream.cli.argtypes import iso_time, removed_flags

    def per_model(table: dict[str, object]) -> str:
        return f"mf {table['mf']:g}, melu {table['melu']:g}"

    source = parser.add_argument_group("training data: --dataset, or a time range of a topic")
    source.add_argument("--dataset", help="ml-100k, ml-1m or a CSV/TSV path (user_id,item_id,rating,timestamp)")
    source.add_argument("--from-topic", metavar="TOPIC",
                        help="meta-train on the interaction events of this topic instead (read with a plain consumer: "
                             "joins no consumer group, commits nothing); needs --bootstrap")
    source.add_argument("--bootstrap", help="Kafka bootstrap servers for --from-topic")
    source.add_argument("--since", type=iso_time, default=None,
                        help="--from-topic: first record time, ISO 8601, inclusive (default: the beginning)")
    source.add_argument("--until", type=iso_time, default=None,
                        help="--from-topic: end record time, ISO 8601, exclusive (default: the end now)")
    parser.add_argument("--model", choices=("seq", "mf", "melu"), default=T.model,
                        help=f"model (default {T.model}: attention over the user's window on top of mf)")
    parser.add_argument("--meta", choices=META_NAMES, default=DEFAULT_META,
                        help=f"meta-learner (default {DEFAULT_META}: second order, cheap for mf thanks to its closed-form "
                             "gradient; beat fomaml on a validation split of ML-100K's history, HR@10 0.176 vs 0.165)")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--epochs", type=int, default=T.epochs, help=f"meta-training epochs (default {T.epochs})")
    parser.add_argument("--seed", type=int, default=T.seed, help="random seed (same seed, same checkpoint weights)")
    parser.add_argument("--history", type=float, default=T.history,
                        help=f"train on the first fraction of events in time order (default {T.history:.1f})")
    parser.add_argument("--steps", type=int, default=T.steps,
                        help=f"inner-loop gradient steps K (default {T.steps}; also what the worker and the "
                             "evaluation adapt with unless told otherwise)")
    parser.add_argument("--inner-lr", type=float, default=T.inner_lr,
                        help=f"inner learning rate (default: {per_model(defaults.DEFAULT_INNER_LR)})")
    parser.add_argument("--inner-lr-rating", type=float, default=T.inner_lr_rating,
                        help=f"inner learning rate of mf's rating block [v|b_u] "
                             f"(default {defaults.DEFAULT_INNER_LR_RATING['mf']:g})")
    parser.add_argument("--prox", type=float, default=T.prox,
                        help="proximal weight λ of λ‖θ−θ0‖², in training and (by default) in the worker "
                             f"(default: {per_model(defaults.DEFAULT_PROX)})")
    parser.add_argument("--task-learner", choices=("gradient", "bayes"), default=T.task_learner,
                        help=TASK_LEARNER_HELP + f" (default {T.task_learner})")
    parser.add_argument("--rating-solver", choices=("gd", "ridge"), default=T.rating_solver,
                        help="how mf's rating block [v|b_u] adapts: gd = the inner gradient steps, ridge = its exact "
                             "closed-form minimiser, also inside meta-training (default: "
                             f"mf {defaults.DEFAULT_RATING_SOLVER['mf']}, melu {defaults.DEFAULT_RATING_SOLVER['melu']})")
    parser.add_argument("--ridge-lambda", type=float, default=T.ridge_lambda,
                        help=f"ridge solver: weight λ of the pull λ‖[v|b_u]−θ0‖² (default: mf "
                             f"{defaults.DEFAULT_RIDGE_LAMBDA['mf']:g}, with the squared errors "
                             f"{'averaged' if defaults.DEFAULT_RIDGE_MEAN['mf'] else 'summed'})")
    _item_arguments(parser.add_argument_group("online item state (what the worker serves the model with)"))
    parser.add_argument("--batch-users", type=int, default=T.batch_users,
                        help=f"tasks per meta-step (default {T.batch_users})")
    parser.add_argument("--split", choices=("time", "random"), default=T.split, help=f"task split (default {T.split})")
    parser.add_argument("--window", type=int, default=T.window, help=f"max support events per task (default {T.window})")
    parser.add_argument("--query-size", type=int, default=T.query_size,
                        help=f"query events per task (default {T.query_size})")
    parser.add_argument("--outer-lr", type=float, default=T.outer_lr,
                        help=f"meta (Adam) learning rate (default {T.outer_lr:g})")
    parser.add_argument("--pretrain-epochs", type=int, default=T.pretrain_epochs,
                        help=f"mf item-side pre-training epochs (default {T.pretrain_epochs})")
    parser.add_argument("--dim", type=int, default=None, help="embedding size (mf default 64)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads (default: torch's choice)")
    removed_flags(parser, {"--threads": "use --torch-threads"})
    parser.add_argument("--data-dir", default=None, help="dataset cache (default $METAREC_DATA_DIR or ~/.cache/metarec)")
    parser.add_argument("--coldstart-part", action="store_true",
                        help="train only on the users that `evaluate --protocol coldstart --seed S` does not hold out "
                             "(MeLU protocol, random split); the checkpoint is then accepted by that evaluation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from stream.kafka.client import add_kafka_arguments

    add_kafka_arguments(parser)


def _item_arguments(group: argparse._ArgumentGroup) -> None:
    from adapters.meta import config as defaults
    from adapters.meta.config import TrainConfig as T
    from stream.cli.argtypes import removed_flags

    mf_items = defaults.DEFAULT_ITEMS["mf"]
    group.add_argument("--popularity-weight", type=float, default=T.popularity_weight,
                        help="weight β of the online item-popularity bonus β·log(1 + decayed count) "
                             f"(default {mf_items['popularity_weight']:g}; melu 0)")
    group.add_argument("--item-half-life", type=float, default=T.item_half_life, metavar="SECONDS",
                        help="half-life of item popularity, seconds of event time (default: the time the training "
                             f"data's last {defaults.HALF_LIFE_EVENTS:,} events span)")
    group.add_argument("--bias-lr", type=float, default=T.bias_lr,
                        help="online learning rate of the items' rating-bias corrections "
                             f"(default {mf_items['bias_lr']:g}; melu 0)")
    removed_flags(group, {"--freshness": "use --popularity-weight",
                           "--freshness-half-life": "use --item-half-life (seconds of event time, not events)",
                           "--item-rating-lr": "use --bias-lr"})

def _check(args: argparse.Namespace) -> None:
    from adapters.errors import MetarecError
    if (args.dataset is None) == (args.from_topic is None):
        raise MetarecError("give either --dataset or --from-topic (with --bootstrap)")
    if args.from_topic is not None and not args.bootstrap:
        raise MetarecError("--from-topic needs --bootstrap")
    if args.from_topic is None and (args.since is not None or args.until is not None or args.bootstrap):
        raise MetarecError("--bootstrap/--since/--until only apply with --from-topic")
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise MetarecError("--until must be later than --since")
    for name in ("epochs", "steps", "batch_users", "window", "query_size"):
        value = getattr(args, name)
        if value < (0 if name in ("epochs", "steps") else 1):
            raise MetarecError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 < args.history <= 1:
        raise MetarecError(f"--history must be in (0, 1], got {args.history}")
    if args.pretrain_epochs < 0:
        raise MetarecError("--pretrain-epochs must not be negative")
    for name in ("prox", "popularity_weight", "bias_lr"):
        if getattr(args, name, None) is not None and getattr(args, name) < 0:
            raise MetarecError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("inner_lr_rating", "item_half_life"):
        if getattr(args, name, None) is not None and not getattr(args, name) > 0:
            raise MetarecError(f"--{name.replace('_', '-')} must be > 0")
    from adapters.meta.config import check_learners
    check_learners(args.meta, args.task_learner, args.model)


def run(args: argparse.Namespace) -> int:
    _check(args)
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from adapters.data.datasets import load_dataset
    from adapters.meta.training import TrainConfig, train

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    console = Console(stderr=True)
    ds = _topic_dataset(args, console) if args.from_topic else load_dataset(args.dataset, data_dir=args.data_dir,
                                                                           progress=not args.no_progress)
    model_config = {"dim": args.dim} if args.dim else {}
    cfg = TrainConfig(model=args.model, meta=args.meta, epochs=args.epochs, seed=args.seed, history=args.history,
                      steps=args.steps, inner_lr=args.inner_lr, inner_lr_rating=getattr(args, "inner_lr_rating", None),
                      prox=args.prox, rating_solver=getattr(args, "rating_solver", None),
                      task_learner=args.task_learner,
                      ridge_lambda=getattr(args, "ridge_lambda", None),
                      popularity_weight=getattr(args, "popularity_weight", None),
                      item_half_life=getattr(args, "item_half_life", None),
                      bias_lr=getattr(args, "bias_lr", None), batch_users=args.batch_users,
                      split=args.split, window=args.window, query_size=args.query_size, outer_lr=args.outer_lr,
                      pretrain_epochs=args.pretrain_epochs, model_config=model_config,
                      dataset_spec=args.dataset or f"topic:{args.from_topic}")
    if args.coldstart_part:
        from dataclasses import replace

        from adapters.meta.checkpoint import training_fingerprint
        from adapters.evaluation.coldstart import ColdStartConfig, part_label, split_users, training_part
        cs = ColdStartConfig(seed=args.seed)
        _, held_out = split_users(ds, cs)
        full = ds
        ds = training_part(ds, held_out)
        cfg = replace(cfg, split="random", query_size=cs.query_size, window=cs.max_ratings, history=1.0,
                      part=part_label(args.seed, cs))
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                  TextColumn("meta-loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=args.no_progress, transient=False) as progress:
        task = progress.add_task("train", total=None, epoch=0, epochs=args.epochs, loss=float("nan"))

        def on_step(epoch: int, step: int, n_steps: int, loss: float) -> None:
            progress.update(task, total=n_steps * args.epochs, completed=epoch * n_steps + step + 1,
                            epoch=epoch + 1, loss=loss)

        ck = train(ds, cfg, on_step=on_step)
    if args.coldstart_part:
        ck.fingerprint = training_fingerprint(full.fingerprint, 1.0, cfg.part)
    ck.save(args.out)
    seconds = time.perf_counter() - t0
    last = ck.metrics["epochs"][-1]["meta_loss"] if ck.metrics["epochs"] else float("nan")
    console.print(f"wrote checkpoint [bold]{ck.version}[/bold] to {args.out} "
                  f"({len(ck.item_ids) - 1} items, final meta-loss {last:.4f}, {seconds:.1f}s)")
    print(json.dumps({"checkpoint": str(args.out), "version": ck.version, "seconds": round(seconds, 2)}))
    return 0


def _topic_dataset(args: argparse.Namespace, console: object) -> object:
    """The events of ``--from-topic`` with a record time in ``[--since, --until)`` (invalid ones left out)."""
    from adapters.errors import MetarecError
    from stream.kafka.client import kafka_overrides, validate_bootstrap
    from stream.kafka.topic_range import read_range
    from stream.trainer.events import events_dataset

    start_ms = int(args.since.timestamp() * 1000) if args.since is not None else 0
    until_ms = int(args.until.timestamp() * 1000) if args.until is not None else None
    pairs = []
    for m in read_range(validate_bootstrap(args.bootstrap), args.from_topic, start_ms, overrides=kafka_overrides(args)):
        _, ts = m.timestamp()
        if ts >= start_ms and (until_ms is None or ts < until_ms):
            pairs.append((m.value(), ts / 1000.0))
    ds, invalid = events_dataset(pairs, f"topic:{args.from_topic}")
    console.print(f"read {len(pairs):,} messages of {args.from_topic} in the range: {len(ds):,} events, "  # type: ignore[attr-defined]
                  f"{invalid:,} invalid (left out)")
    if len(ds) < 2:
        raise MetarecError(f"topic {args.from_topic!r} has {len(ds)} valid events in that range: nothing to train on")
    return ds
