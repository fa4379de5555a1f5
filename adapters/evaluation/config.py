"""Settings of the offline evaluations: :class:`EvaluationConfig` (prequential) and :class:`ColdStartConfig`.

Plain dataclasses without torch, so that a command line can take its flags' defaults from them cheaply. The
library never reads the command line: whoever runs an evaluation builds one of these (``metarec evaluate`` from
its flags) and passes the command line to record in the report as :attr:`EvaluationConfig.command`.

Example
-------
>>> cfg = EvaluationConfig(dataset="ml-100k", checkpoint="ck/mf-h50")
>>> cfg.history, cfg.steps is None, cfg.meta, cfg.retrain_every
(0.5, True, 'maml', 0)
"""
from __future__ import annotations

from dataclasses import dataclass

from adapters.evaluation.prequential import PrequentialConfig
from adapters.meta.config import DEFAULT_META


@dataclass(frozen=True)
class EvaluationConfig:
    """One prequential evaluation run (:func:`adapters.evaluation.prequential_run.run_prequential`).

    θ0 is the ``checkpoint`` when given (it must have been trained on exactly the ``history`` part of
    ``dataset``), else it is meta-trained here; the ``erm_finetune`` checkpoint is always trained here.
    """

    dataset: str  #: ml-100k, ml-1m or a CSV/TSV path
    #: model of θ0: must match the checkpoint's when one is given; None = the checkpoint's, else
    #: :attr:`TrainConfig.model <adapters.meta.config.TrainConfig.model>` when θ0 is trained here
    model: str | None = None
    meta: str = DEFAULT_META  #: meta-learner when θ0 is trained here
    history: float = PrequentialConfig.history  #: leading fraction of the events that is history
    checkpoint: str | None = None  #: θ0 from this checkpoint directory instead of training one here
    report: str | None = None  #: also write a report directory here
    epochs: int | None = None  #: training epochs when θ0 is trained here (None = TrainConfig's)
    #: inner-loop steps: in training here (None = TrainConfig's) and online (None = θ0 checkpoint's, for every
    #: learner model, erm_finetune included)
    steps: int | None = None
    max_items: int | None = None  #: item rows each learner keeps, online items included (None = the checkpoint's)
    seed: int = 0  #: seed of training and of torch
    batch_size: int = PrequentialConfig.batch_size  #: max events per micro-batch
    #: max event-time span of a micro-batch, in seconds; None or 0 = cut by ``batch_size`` only
    batch_seconds: float | None = PrequentialConfig.batch_seconds
    #: continual training simulated from past events only (:mod:`adapters.evaluation.retrain`): every
    #: ``retrain_every`` scored events θ0 is re-meta-trained, warm-started from the version served, on the events
    #: before the next micro-batch, and the ``metarec`` learner switches to it; 0 = never
    retrain_every: int = 0
    #: each retraining learns the last ``retrain_window`` past events only; 0 = all of them (history + scored so far)
    retrain_window: int = 0
    #: the item state (adapters.online.items): "shared" (the default, what docker-compose and Kubernetes deploy): a
    #: micro-batch's item contributions reach the learner's rows one micro-batch later, the group's round trip;
    #: "local": at once, a worker that owns its item state alone
    item_state: str = "shared"
    item_half_life: float | None = None  #: half-life of item popularity, seconds of event time (None: θ0's)
    #: how ``metarec`` adapts a user: "gradient" or "bayes" (adapters.meta.bayes; θ0 trained here is then trained
    #: through it, its prior precision meta-learned); ``explore`` ("none", "thompson", "ucb") ranks from its posterior
    task_learner: str = "gradient"
    models: tuple[str, ...] = ()  #: only these models of the report (empty: all of them)
    explore: str = "none"
    explore_scale: float = 1.0
    persistence: float | None = None  #: bayes: share of a user's deviation from θ0 kept between micro-batches
    data_dir: str | None = None  #: dataset cache (None = $METAREC_DATA_DIR or ~/.cache/metarec)
    #: processes the prequential models run in (each model is independent: the same figures; None = one per CPU)
    workers: int | None = None
    progress: bool = True  #: show progress bars
    command: str = ""  #: the command line that started the run, recorded in the report


@dataclass
class ColdStartConfig:
    """The MeLU cold-start protocol (:func:`adapters.evaluation.coldstart.run_coldstart`)."""

    model: str = "melu"
    meta: str = DEFAULT_META
    seed: int = 0
    steps: int | None = None  #: inner steps at test time (None = the checkpoint's)
    epochs: int = 20
    min_ratings: int = 13
    max_ratings: int = 100
    test_fraction: float = 0.2
    query_size: int = 10
    batch_users: int = 32
    inner_lr: float | None = None
    dataset_spec: str = ""
