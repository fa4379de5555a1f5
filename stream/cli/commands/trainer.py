"""``metarec trainer``: continual meta-training from a topic (see :mod:`stream.trainer.service`)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Continual meta-training: read the interaction topic (no consumer group, no commits), keep the last
--retrain-window events, and every --retrain-every new events re-meta-train θ0 on them, warm-started from the version
published last (or the newest one already in --out), and publish a new version directory under --out with an
atomic LATEST file. Workers started with `--checkpoint <--out>` switch to each new version between micro-batches,
without restart, and keep the item rows they learned online for items the new version does not know.

A fresh --out gets a first, cold version (--model/--meta) after --retrain-every events. HTTP: /metrics (versions trained,
last training time and loss, window size), /healthz, /readyz. SIGTERM/Ctrl-C stops after the training in progress.

examples:
  metarec trainer --bootstrap 127.0.0.1:9092 --topic interactions --out models
  metarec trainer --bootstrap kafka:9092 --topic interactions --out /models --retrain-every 50000 --retrain-window 500000
  metarec trainer --bootstrap kafka:9092 --topic interactions --out /models --since 2024-05-01T00:00:00Z
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.cli.argtypes import iso_time, removed_flags
    from stream.kafka.client import add_kafka_arguments
    from adapters.meta.config import META_NAMES
    from stream.trainer.service import TrainerConfig as T

    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--topic", required=True, help="interaction topic to learn from")
    parser.add_argument("--out", required=True, help="model directory: versions are written here, with LATEST")
    parser.add_argument("--retrain-every", type=int, default=T.retrain_every, metavar="N",
                        help=f"retrain after this many new events (default {T.retrain_every:,})")
    parser.add_argument("--retrain-window", type=int, default=T.retrain_window, metavar="M",
                        help=f"train on the last this many events (default {T.retrain_window:,})")
    removed_flags(parser, {"--every": "use --retrain-every", "--window-events": "use --retrain-window"})
    parser.add_argument("--since", type=iso_time, default=None,
                        help="start reading at this time, ISO 8601 (default: the topic's beginning)")
    parser.add_argument("--model", choices=("seq", "mf", "melu"), default=T.model,
                        help=f"model of a first version when --out has none (default {T.model}); later versions keep "
                             "the model of the one they start from")
    parser.add_argument("--meta", choices=META_NAMES, default=T.meta,
                        help=f"meta-learner of a first version (default {T.meta})")
    parser.add_argument("--epochs", type=int, default=T.epochs, help=f"meta-training epochs per version "
                        f"(default {T.epochs})")
    parser.add_argument("--pretrain-epochs", type=int, default=T.pretrain_epochs,
                        help=f"item-side pre-training epochs of a cold version (default {T.pretrain_epochs})")
    parser.add_argument("--seed", type=int, default=T.seed, help=f"random seed (default {T.seed})")
    parser.add_argument("--metrics-host", default=T.metrics_host,
                        help=f"interface for /metrics /healthz /readyz (default {T.metrics_host})")
    parser.add_argument("--metrics-port", type=int, default=T.metrics_port,
                        help=f"port (default {T.metrics_port}; 0 = pick a free one)")
    add_kafka_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from stream.kafka.client import kafka_overrides, validate_bootstrap
    from stream.trainer.service import TrainerConfig, run_trainer

    cfg = TrainerConfig(bootstrap=validate_bootstrap(args.bootstrap), topic=args.topic, out=args.out,
                        retrain_every=args.retrain_every, retrain_window=args.retrain_window,
                        since=args.since.timestamp() if args.since is not None else None, model=args.model,
                        meta=args.meta, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, seed=args.seed,
                        metrics_host=args.metrics_host, metrics_port=args.metrics_port,
                        kafka_options=kafka_overrides(args))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return run_trainer(cfg, stop)
