"""``metarec evaluate --protocol prequential``: θ0, the models, the run, the JSON, the report.

Everything protocol-related lives in :mod:`adapters.evaluation.prequential`, the models in :mod:`adapters.evaluation.baselines`;
this module wires them for one run described by an :class:`~adapters.evaluation.config.EvaluationConfig`:

1. load the dataset, encode it as an :class:`~adapters.evaluation.prequential.EventStream` with the ``history`` cut;
2. θ0: the ``checkpoint`` if its training fingerprint says it was trained on exactly this history part of
   exactly this file, else meta-trained here on the history part (``adapters.meta.training.train``); the
   ``erm_finetune`` checkpoint is trained here the same way with ``meta="erm"`` (no inner loop in training);
3. the models: ``metarec`` (θ0 + :class:`~adapters.online.learner.OnlineLearner`), ``no_adaptation`` (same, ``steps=0``),
   ``erm_finetune`` (ERM checkpoint + the same learner config, θ0's inner steps included), ``popularity``,
   ``popularity_decayed`` (half-life 5,000 events), ``river_biasedmf``, ``cooccurrence``
   (:mod:`adapters.evaluation.cooccurrence`); with ``retrain_every`` > 0, ``metarec`` is re-meta-trained on past
   events only every that many scored events (:mod:`adapters.evaluation.retrain`);
4. run the protocol, add the per-group figures (:mod:`adapters.evaluation.groups`: activity quartiles, gender and
   age where the dataset has them) and the drift-recovery section when the dataset is a CSV with a ``.drift.json`` sidecar,
   write the report directory when asked (with the config's ``command`` as the command line).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from adapters.errors import MetarecError
from adapters.evaluation.config import EvaluationConfig
from adapters.evaluation.groups import GROUPS_NOTE, group_breakdown, group_bounds
from adapters.evaluation.prequential import PrequentialConfig

if TYPE_CHECKING:
    from adapters.evaluation.baselines import LearnerModel, Popularity, RiverBiasedMF
    from adapters.evaluation.cooccurrence import Cooccurrence
    from adapters.evaluation.prequential import EventStream
    from adapters.evaluation.retrain import Retraining, Trainer
    from adapters.meta.checkpoint import Checkpoint
    from adapters.meta.config import TrainConfig
    from adapters.online.config import OnlineConfig

    Model = LearnerModel | Popularity | RiverBiasedMF | Cooccurrence | Retraining  #: a model of the report

log = logging.getLogger(__name__)

POPULARITY_RATING_NOTE = ("popularity and popularity_decayed have no rating model: their rmse/mae are those of the "
                          "item's mean rating so far (decay-weighted for popularity_decayed; the global mean for an "
                          "item without a rating yet)")
UNKNOWN_ITEMS_NOTE = ("items first seen after the history are not in the checkpoint vocabulary: a learner "
                      "(metarec, no_adaptation, erm_finetune) gives such an item a row when it learns its first event "
                      "(up to max_items rows) and can recommend it from then on, like the worker; until then it "
                      "scores -inf")
DRIFT_MODELS = ("metarec", "no_adaptation", "erm_finetune", "popularity", "popularity_decayed", "river_biasedmf",
                "cooccurrence")


RETRAIN_NOTE = ("metarec's seconds include its retrainings (retrain.seconds: training, switch, re-adaptation of the "
                "stored users); no_adaptation and erm_finetune keep their θ0")


def _train_config(config: EvaluationConfig, model: str, meta: str) -> TrainConfig:
    """The training settings of θ0 (and of the ERM checkpoint) for this run."""
    from adapters.meta.training import TrainConfig

    cfg = TrainConfig(model=model, meta=meta, history=config.history, seed=config.seed,
                      dataset_spec=config.dataset)
    if config.epochs is not None:
        cfg.epochs = config.epochs
    if config.steps is not None:
        cfg.steps = config.steps
    if meta != "erm":
        cfg.task_learner = config.task_learner
    return cfg


def _train(ds: Any, config: EvaluationConfig, model: str, meta: str, progress: bool) -> Checkpoint:
    """Train a checkpoint of ``model`` with ``meta`` on the history part of ``ds``."""
    from adapters.meta.training import train

    cfg = _train_config(config, model, meta)
    log.info("training θ0 (%s, %s) on the first %.0f%% of %s", cfg.model, meta, 100 * config.history, config.dataset)
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


def load_matching_checkpoint(path: str, ds: Any, history: float) -> Checkpoint:
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


#: the models of a prequential report, in report order
MODEL_NAMES = ("metarec", "no_adaptation", "erm_finetune", "popularity", "popularity_decayed", "river_biasedmf",
               "cooccurrence")


def build_models(stream: EventStream, checkpoint: Checkpoint, erm_checkpoint: Checkpoint | None,
                 online: OnlineConfig, names: tuple[str, ...] = ()) -> list[Model]:
    """The models of the contract, in report order (``online``'s task learner and exploration are ``metarec``'s;
    ``no_adaptation`` shares its task learner, without exploration; ``erm_finetune`` adapts as its checkpoint says)."""
    from adapters.evaluation.baselines import HALF_LIFE_EVENTS, LearnerModel, Popularity, RiverBiasedMF
    from adapters.evaluation.cooccurrence import Cooccurrence
    from adapters.online.learner import OnlineLearner

    factories = {
        "metarec": lambda: LearnerModel(stream, OnlineLearner(checkpoint, online), "metarec"),
        "no_adaptation": lambda: LearnerModel(
            stream, OnlineLearner(checkpoint, replace(online, steps=0, explore="none")), "no_adaptation"),
        "erm_finetune": lambda: LearnerModel(
            stream, OnlineLearner(erm_checkpoint, replace(online, task_learner=None, explore="none")), "erm_finetune"),
        "popularity": lambda: Popularity(stream),
        "popularity_decayed": lambda: Popularity(stream, half_life=HALF_LIFE_EVENTS),
        "river_biasedmf": lambda: RiverBiasedMF(stream),
        "cooccurrence": lambda: Cooccurrence(stream),
    }
    return [factories[name]() for name in MODEL_NAMES if not names or name in names]


def _retrainer(ds: Any, stream: EventStream, config: EvaluationConfig) -> Trainer:
    """The trainer of ``--retrain-every``: events ``[start, end)`` of ``ds`` (the stream's order) → a version
    warm-started from ``init``, trained with θ0's settings (this run's, or the loaded checkpoint's meta-learner)."""
    import numpy as np

    from adapters.meta.training import train

    if not (np.array_equal(ds.timestamps, stream.timestamps) and np.array_equal(ds.item_ids, stream.item_ids)
            and np.array_equal(ds.user_ids, stream.user_ids)):
        raise MetarecError("the stream's event order differs from the dataset's: cannot cut past events for retraining")

    def retrain(start: int, end: int, init: Checkpoint) -> Checkpoint:
        cfg = replace(_train_config(config, init.model, init.meta), history=1.0, part=f"events {start}-{end}")
        return train(ds.slice(start, end), cfg, init=init)

    return retrain


def _with_retraining(models: list[Model], ds: Any, stream: EventStream, config: EvaluationConfig
                     ) -> tuple[list[Model], Retraining | None]:
    """``models`` with ``metarec`` retraining every ``config.retrain_every`` scored events (and the wrapper), or as
    they are (and None) when ``retrain_every`` is 0."""
    if not config.retrain_every:
        return models, None
    from adapters.evaluation.retrain import Retraining

    names = [m.name for m in models]
    if "metarec" not in names:
        raise MetarecError("--retrain-every retrains the metarec model, which this run does not have")
    k = names.index("metarec")
    wrapped = Retraining(models[k], config.retrain_every, config.retrain_window, _retrainer(ds, stream, config))
    return models[:k] + [wrapped] + models[k + 1:], wrapped


def _check(config: EvaluationConfig) -> None:
    """Settings of the run itself that the configs of the learner and the protocol do not check."""
    if config.workers is not None and config.workers < 1:
        raise MetarecError(f"--workers must be ≥ 1 processes, got {config.workers}")
    if config.retrain_every < 0:
        raise MetarecError(f"--retrain-every must be ≥ 0 scored events (0 = never), got {config.retrain_every}")
    if config.retrain_window < 0:
        raise MetarecError(f"--retrain-window must be ≥ 0 events (0 = all past events), got {config.retrain_window}")
    if config.retrain_window and not config.retrain_every:
        raise MetarecError("--retrain-window needs --retrain-every")
    if config.explore != "none" and config.task_learner != "bayes":
        raise MetarecError(f"--explore {config.explore} samples from the posterior: it needs --task-learner bayes")
    if config.persistence is not None and not 0.0 <= config.persistence < 1.0:
        raise MetarecError(f"--persistence must be in [0, 1), got {config.persistence}")
    unknown = sorted(set(config.models) - set(MODEL_NAMES))
    if unknown:
        raise MetarecError(f"unknown model {', '.join(unknown)} in --models (choose from {', '.join(MODEL_NAMES)})")
    if config.item_state not in ("local", "shared"):
        raise MetarecError(f"--item-state must be local or shared, got {config.item_state!r}")
    if config.item_half_life is not None and not config.item_half_life > 0:
        raise MetarecError(f"--item-half-life must be > 0 seconds, got {config.item_half_life}")
    if not config.checkpoint:  # θ0 is trained here: a pair that cannot be trained is refused before any work
        from adapters.meta.config import TrainConfig, check_learners
        check_learners(config.meta, config.task_learner, config.model or TrainConfig.model)


def _protocol_config(config: EvaluationConfig) -> PrequentialConfig:
    """The protocol's settings (a ``batch_seconds`` of 0 or None: micro-batches cut by ``batch_size`` only)."""
    seconds = config.batch_seconds
    return PrequentialConfig(history=float(config.history), batch_size=int(config.batch_size),
                             batch_seconds=float(seconds) if seconds else None)


def _drift_truth(dataset: str) -> Any:
    """The planted-drift ground truth of a synthetic CSV (its ``.drift.json`` sidecar), else None."""
    from adapters.evaluation.drift import load_truth, sidecar_path

    side = sidecar_path(dataset)
    if dataset.lower() not in ("ml-100k", "ml-1m") and side.exists():
        return load_truth(side)
    return None


def _checkpoints(ds: Any, config: EvaluationConfig, progress: bool
                 ) -> tuple[Checkpoint, Checkpoint | None, float]:
    """θ0 (loaded or trained here), the ERM checkpoint trained here, and the training seconds."""
    from adapters.meta.config import TrainConfig

    t0 = time.perf_counter()
    if config.checkpoint:
        checkpoint = load_matching_checkpoint(config.checkpoint, ds, config.history)
        if config.model and config.model != checkpoint.model:
            raise MetarecError(f"--model {config.model} but the checkpoint is a {checkpoint.model} model")
        if config.retrain_every:  # retraining meta-trains with the checkpoint's meta-learner
            from adapters.meta.config import check_learners
            check_learners(checkpoint.meta, config.task_learner, checkpoint.model)
    else:
        checkpoint = _train(ds, config, config.model or TrainConfig.model, config.meta, progress)
    erm = (_train(ds, config, config.model or checkpoint.model, "erm", progress)
           if not config.models or "erm_finetune" in config.models else None)
    return checkpoint, erm, time.perf_counter() - t0


def run_prequential(config: EvaluationConfig) -> dict[str, Any]:
    """Run the prequential evaluation described by ``config``; return the JSON report.

    Parameters
    ----------
    config : EvaluationConfig
        The run's settings; ``config.command`` is recorded as the command line of the report directory.

    Returns
    -------
    dict
        ``protocol``, ``dataset``, ``events``, ``models`` (figures per model), counts, ``checkpoint``, ``online``
        (the learner settings, inner steps resolved), ``seconds``, ``notes``, ``groups`` and ``group_bounds`` (per-group
        ranking figures), and ``drift`` for a planted-drift CSV.
    """
    import torch

    from adapters.data.datasets import load_dataset
    from adapters.evaluation.parallel import run_parallel
    from adapters.evaluation.prequential import EventStream
    from adapters.evaluation.retrain import no_retraining
    from adapters.online.config import OnlineConfig

    _check(config)
    online = OnlineConfig(steps=config.steps, max_items=config.max_items, item_half_life=config.item_half_life,
                          owner_delay=1 if config.item_state == "shared" else 0, task_learner=config.task_learner,
                          explore=config.explore, explore_scale=config.explore_scale, persistence=config.persistence)
    protocol = _protocol_config(config)
    if config.report:
        from adapters.evaluation.report import _pyplot
        _pyplot()  # fail now, not after an hour, when matplotlib is missing
    ds = load_dataset(config.dataset, data_dir=config.data_dir, progress=config.progress)
    stream = EventStream.from_dataset(ds, history=protocol.history, positive_threshold=protocol.positive_threshold)
    truth = _drift_truth(config.dataset)
    torch.manual_seed(config.seed)
    checkpoint, erm, train_seconds = _checkpoints(ds, config, config.progress)
    if online.steps is None:  # θ0's inner steps, for erm_finetune too: the same learner config for both
        online = replace(online, steps=checkpoint.adapter.inner.steps)
    models, retraining = _with_retraining(build_models(stream, checkpoint, erm, online, config.models), ds, stream,
                                          config)
    # the models in separate processes, but one when metarec retrains (its retraining log lives in the process)
    result = run_parallel(stream, models, protocol, workers=1 if retraining is not None else config.workers,
                          progress=config.progress)
    summary = result.summary()
    report: dict[str, Any] = {
        "protocol": "prequential", "dataset": config.dataset, "events": len(stream), "models": summary,
        "scored_events": len(stream) - stream.start, "positive_events": int(len(result.positive_positions)),
        "history": protocol.history,
        "checkpoint": {"version": checkpoint.version, "model": checkpoint.model, "meta": checkpoint.meta,
                       "trained_here": not config.checkpoint, "erm_version": erm.version if erm is not None else None},
        "online": asdict(online), "item_state": config.item_state,
        "seconds": {name: round(tr.seconds, 2) for name, tr in result.traces.items()} | {
            "training": round(train_seconds, 2)},
        "notes": {"popularity_rmse": POPULARITY_RATING_NOTE, "unknown_items": UNKNOWN_ITEMS_NOTE},
        "retrain": retraining.report() if retraining is not None else no_retraining(),
    }
    if retraining is not None:
        report["notes"]["retrain"] = RETRAIN_NOTE
    groups = group_breakdown(result, getattr(ds, "user_features", None))
    if groups:
        report["groups"] = groups
        report["group_bounds"] = group_bounds(result)
        report["notes"]["groups"] = GROUPS_NOTE
    if truth is not None:
        from adapters.evaluation.drift import recovery_report
        report["drift"] = recovery_report(result, truth, models=list(DRIFT_MODELS))
    if config.report:
        _write_report_directory(config, report, result, summary, protocol, ds.fingerprint)
    return report


def _write_report_directory(config: EvaluationConfig, report: dict[str, Any], result: Any,
                            summary: dict[str, dict[str, float]], protocol: PrequentialConfig,
                            fingerprint: str) -> None:
    """The report directory: figures, plots, the run's configuration and ``config.command``."""
    from adapters.evaluation.report import write_report

    run_config = {k: v for k, v in report.items() if k not in ("models", "drift", "groups")}
    run_config["protocol_config"] = asdict(protocol)
    run_config["dataset_fingerprint"] = fingerprint
    write_report(config.report, result, summary, run_config, config.command, drift=report.get("drift"),
                 groups=report.get("groups"))
