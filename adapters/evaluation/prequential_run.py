"""``metarec evaluate --protocol prequential``: θ0, the models, the run, the JSON, the report.

Everything protocol-related lives in :mod:`adapters.evaluation.prequential`, the models in :mod:`adapters.evaluation.baselines`;
this module wires them for the command line:

1. load the dataset, encode it as an :class:`~adapters.evaluation.prequential.EventStream` with the ``--history`` cut;
2. θ0: the ``--checkpoint`` if its training fingerprint says it was trained on exactly this history part of
   exactly this file, else meta-trained here on the history part (``adapters.meta.training.train``); the
   ``erm_finetune`` checkpoint is trained here the same way with ``meta="erm"`` (no inner loop in training);
3. the models: ``metarec`` (θ0 + :class:`~adapters.online.learner.OnlineLearner`), ``no_adaptation`` (same, ``steps=0``),
   ``erm_finetune`` (ERM checkpoint + the same learner config), ``popularity``, ``popularity_decayed``
   (half-life 5,000 events), ``river_biasedmf``, ``cooccurrence`` (:mod:`adapters.evaluation.cooccurrence`);
4. run the protocol, add the drift-recovery section when the dataset is a CSV with a ``.drift.json`` sidecar,
   write the report directory when asked.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import asdict, replace
from typing import Any

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

POPULARITY_RATING_NOTE = ("popularity and popularity_decayed have no rating model: their rmse/mae are those of the "
                          "item's mean rating so far (decay-weighted for popularity_decayed; the global mean for an "
                          "item without a rating yet)")


def command_line() -> str:
    """The command line of this process, as the user would type it."""
    return "metarec " + shlex.join(sys.argv[1:])


def _train(ds: Any, args: Any, meta: str, history: float, progress: bool) -> Any:
    from adapters.meta.training import TrainConfig, train

    cfg = TrainConfig(model=args.model or "seq", meta=meta, history=history, seed=args.seed,
                      dataset_spec=args.dataset)
    if getattr(args, "epochs", None) is not None:
        cfg.epochs = args.epochs
    if getattr(args, "steps", None) is not None:
        cfg.steps = args.steps
    log.info("training θ0 (%s, %s) on the first %.0f%% of %s", cfg.model, meta, 100 * history, args.dataset)
    t0 = time.perf_counter()
    if progress:
        from rich.progress import Progress
        with Progress(transient=True) as bar:
            task = bar.add_task(f"training θ0 · {cfg.model}/{meta}", total=None)

            def on_step(epoch: int, step: int, n_steps: int, loss: float) -> None:
                bar.update(task, total=cfg.epochs * n_steps, completed=epoch * n_steps + step + 1,
                           description=f"training θ0 · {cfg.model}/{meta} · epoch {epoch + 1} · loss {loss:.3f}")

            ck = train(ds, cfg, on_step=on_step)
    else:
        ck = train(ds, cfg)
    log.info("trained %s in %.1f s", ck.version, time.perf_counter() - t0)
    return ck


def load_matching_checkpoint(path: str, ds: Any, history: float) -> Any:
    """Load ``path`` and check it was trained on exactly the history part of ``ds``."""
    from adapters.meta.checkpoint import Checkpoint, training_fingerprint

    ck = Checkpoint.load(path)
    expected = training_fingerprint(ds.fingerprint, history, "all")
    if ck.fingerprint != expected:
        raise MetarecError(
            f"checkpoint {path} was not trained on the first {history:g} of this dataset's events "
            f"(train one with `metarec train --dataset {ds.name} --history {history:g} --out DIR`, or omit --checkpoint "
            "to train θ0 here)")
    return ck


def build_models(stream: Any, checkpoint: Any, erm_checkpoint: Any, online: Any) -> list[Any]:
    """The models of the contract, in report order."""
    from adapters.evaluation.baselines import HALF_LIFE_EVENTS, LearnerModel, Popularity, RiverBiasedMF
    from adapters.evaluation.cooccurrence import Cooccurrence
    from adapters.online.learner import OnlineLearner

    return [
        LearnerModel(stream, OnlineLearner(checkpoint, online), "metarec"),
        LearnerModel(stream, OnlineLearner(checkpoint, replace(online, steps=0)), "no_adaptation"),
        LearnerModel(stream, OnlineLearner(erm_checkpoint, online), "erm_finetune"),
        Popularity(stream),
        Popularity(stream, half_life=HALF_LIFE_EVENTS),
        RiverBiasedMF(stream),
        Cooccurrence(stream),
    ]


def run_prequential(args: Any) -> dict[str, Any]:
    """Run the prequential evaluation described by the ``metarec evaluate`` arguments; return the JSON report."""
    import torch

    from adapters.data.datasets import load_dataset
    from adapters.evaluation.drift import load_truth, recovery_report, sidecar_path
    from adapters.online.learner import OnlineConfig
    from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol

    progress = not getattr(args, "no_progress", False)
    seconds = getattr(args, "batch_seconds", 1.0)
    online = OnlineConfig(steps=3 if getattr(args, "steps", None) is None else args.steps,
                          max_items=getattr(args, "max_items", None))  # checked before any work
    config = PrequentialConfig(history=float(args.history), batch_size=int(getattr(args, "batch_size", 256)),
                               batch_seconds=float(seconds) if seconds else None)
    if getattr(args, "report", None):
        from adapters.evaluation.report import _pyplot
        _pyplot()  # fail now, not after an hour, when matplotlib is missing
    ds = load_dataset(args.dataset, data_dir=getattr(args, "data_dir", None), progress=progress)
    stream = EventStream.from_dataset(ds, history=config.history, positive_threshold=config.positive_threshold)
    truth = None
    side = sidecar_path(args.dataset)
    if args.dataset.lower() not in ("ml-100k", "ml-1m") and side.exists():
        truth = load_truth(side)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    if args.checkpoint:
        checkpoint = load_matching_checkpoint(args.checkpoint, ds, config.history)
        if args.model and args.model != checkpoint.model:
            raise MetarecError(f"--model {args.model} but the checkpoint is a {checkpoint.model} model")
    else:
        checkpoint = _train(ds, args, args.meta or "maml", config.history, progress)
    erm_args = replace_ns(args, model=args.model or checkpoint.model)
    erm = _train(ds, erm_args, "erm", config.history, progress)
    train_seconds = time.perf_counter() - t0
    models = build_models(stream, checkpoint, erm, online)
    result = run_protocol(stream, models, config, progress=progress)
    summary = result.summary()
    report: dict[str, Any] = {
        "protocol": "prequential", "dataset": args.dataset, "events": len(stream), "models": summary,
        "scored_events": len(stream) - stream.start, "positive_events": int(len(result.positive_positions)),
        "history": config.history,
        "checkpoint": {"version": checkpoint.version, "model": checkpoint.model, "meta": checkpoint.meta,
                       "trained_here": not args.checkpoint, "erm_version": erm.version},
        "online": asdict(online),
        "seconds": {name: round(tr.seconds, 2) for name, tr in result.traces.items()} | {
            "training": round(train_seconds, 2)},
        "notes": {"popularity_rmse": POPULARITY_RATING_NOTE,
                  "unknown_items": "items first seen after the history are not in the checkpoint vocabulary; "
                                   "metarec/no_adaptation/erm_finetune never recommend them (score -inf), like the worker"},
    }
    if truth is not None:
        report["drift"] = recovery_report(result, truth, models=["metarec", "no_adaptation", "erm_finetune",
                                                                  "popularity", "popularity_decayed",
                                                                  "river_biasedmf", "cooccurrence"])
    if getattr(args, "report", None):
        from adapters.evaluation.report import write_report
        run_config = {k: v for k, v in report.items() if k not in ("models", "drift")}
        run_config["protocol_config"] = asdict(config)
        run_config["dataset_fingerprint"] = ds.fingerprint
        write_report(args.report, result, summary, run_config, command_line(), drift=report.get("drift"))
    return report


def replace_ns(ns: Any, **changes: Any) -> Any:
    """A shallow copy of an argparse namespace with some attributes changed."""
    import argparse
    out = argparse.Namespace(**vars(ns))
    for k, v in changes.items():
        setattr(out, k, v)
    return out
