"""What meta-training is given: :class:`TrainConfig` and the per-model defaults it falls back on.

Kept apart from :mod:`adapters.meta.training` (which needs torch) so that a command line can build its flags
and their help from these values without importing torch.

Example
-------
>>> TrainConfig(model="mf").steps
3
>>> DEFAULT_PROX["seq"] == DEFAULT_PROX["mf"]
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.errors import MetarecError

#: the meta-learner the commands (``metarec train``, ``metarec evaluate``) train with when none is given: maml,
#: second order (cheap for mf thanks to its closed-form gradient), beat fomaml on a validation split of ML-100K's
#: history (HR@10 0.176 vs 0.165). :class:`TrainConfig` itself defaults to the cheaper ``fomaml``.
DEFAULT_META = "maml"
#: the meta-learners a command can train with (adapters.meta.learners; listed here, torch-free, for the flags)
META_NAMES = ("maml", "fomaml", "reptile", "metasgd", "mamlpp")

#: the models whose user state has a closed-form rating block (the ridge solver and the bayes task learner need one)
CLOSED_FORM_MODELS = ("seq", "mf")


def check_learners(meta: str, task_learner: str, model: str | None = None) -> None:
    """Refuse a meta-learner / task-learner / model combination that cannot be trained, with a one-line
    :class:`~adapters.errors.MetarecError` (``model`` None: not known yet).

    >>> check_learners("maml", "bayes", "seq")
    >>> check_learners("metasgd", "bayes")
    Traceback (most recent call last):
    adapters.errors.MetarecError: metasgd learns per-parameter inner rates; the bayes task learner takes one Newton step and has none to learn: use maml
    """
    if task_learner != "bayes":
        return
    if meta == "metasgd":
        raise MetarecError("metasgd learns per-parameter inner rates; the bayes task learner takes one Newton step "
                           "and has none to learn: use maml")
    if model is not None and model not in CLOSED_FORM_MODELS:
        raise MetarecError(f"model {model} has no closed-form rating block: the bayes task learner needs mf or seq")


DEFAULT_INNER_LR = {"mf": 0.5, "melu": 0.05}
#: mf's rating block [v | b_u] has an MSE gradient 2·err per unit: its own, smaller rate (validation on ML-100K's
#: history: 0.5 shared → RMSE 1.098, 0.05 → 0.973, 0.02 → 0.966)
DEFAULT_INNER_LR_RATING: dict[str, float | None] = {"mf": 0.02, "melu": None}
#: how the rating block adapts (adapters.meta.inner: "gd" = the gradient steps, "ridge" = its closed-form minimiser, in
#: meta-training and serving alike), the ridge pull λ toward θ0 and its data term (sum or mean of squared errors).
#: Validation split (stream/bench/tools/validate_mf.py): prequential protocol on the first 50 % of ML-100K (θ0 meta-trained,
#: maml, on its first half, the second half scored): RMSE gd 0.9608 → ridge mean-λ 0.2 0.9475 (λ 0.05 0.978, 0.5 0.952, 1 0.955, 2 0.967) →
#: ridge sum-λ 8 0.9439 (λ 3 0.948); HR@10 unchanged (0.1694): the ranking block's steps are the same.
DEFAULT_RATING_SOLVER = {"mf": "ridge", "melu": "gd"}
DEFAULT_RIDGE_LAMBDA = {"mf": 8.0, "melu": 0.2}
DEFAULT_RIDGE_MEAN = {"mf": False, "melu": True}
#: proximal pull toward θ0 during meta-training and serving: warm-started states are re-adapted at every
#: micro-batch, the pull keeps them from drifting away from what θ0 knows (validation HR@10 0.140 → 0.171)
DEFAULT_PROX = {"mf": 0.2, "melu": 0.0}
#: seq is mf plus the window's context: it adapts, solves its rating block and counts items with mf's settings
for _table in (DEFAULT_INNER_LR, DEFAULT_INNER_LR_RATING, DEFAULT_RATING_SOLVER, DEFAULT_RIDGE_LAMBDA,
               DEFAULT_RIDGE_MEAN, DEFAULT_PROX):
    _table["seq"] = _table["mf"]


#: the online item state (adapters.online.items.config.ItemConfig) a trained checkpoint is served with, per model.
#: Chosen on validation splits of ML-100K's history:
#: * popularity bonus (train on its first 80 %, score the last 20 % prequentially): HR@10 0.171 → 0.176 with weight 1
#:   (0.5: 0.174), half-life 5,000 events (1,000 worse, 20,000 alike: :data:`HALF_LIFE_EVENTS`); item rating-bias
#:   rate 0.01 (RMSE −0.001; 0.03 worse); its prior 5 (ridge θ0): RMSE 0.9475 → 0.9454 (20: 0.9459, 80: 0.9474);
#: * seq (stream/bench/tools/validate_seq.py: θ0 trained on the first 25 %, the next 25 % scored in 1 s micro-batches;
#:   runs in docs/results/validation-seq.jsonl): co-occurrence prior weight 4: 0.1830 → 0.1987 (2: 0.1970, 8: 0.1952);
#:   item-row SGD rate 0.05 with it → 0.2032 (0.02: 0.2028, 0.2: 0.1962); item rating-factor rate 0.005: RMSE
#:   0.9446 → 0.9445 (0.05: 0.9505). Checked on ML-1M's validation split: weight 4 0.2433, 2 0.2403.
#: (melu's scores live on another scale: off until fitted for it)
DEFAULT_ITEMS: dict[str, dict[str, float]] = {
    "mf": {"popularity_weight": 1.0, "bias_lr": 0.01, "bias_prior": 5.0},
    "seq": {"popularity_weight": 1.0, "bias_lr": 0.01, "bias_prior": 5.0, "prior_weight": 4.0, "embed_lr": 0.02,
            "factor_lr": 0.005},
    "melu": {},
}
#: the popularity half-life a checkpoint is trained with, unless given in seconds: the event time its training data's
#: last this-many events span (the rate at which serving starts)
HALF_LIFE_EVENTS = 5_000


@dataclass
class TrainConfig:
    """Settings of :func:`adapters.meta.training.train`; a None falls back on the model's default above."""

    model: str = "seq"
    meta: str = DEFAULT_META
    epochs: int = 5
    seed: int = 0
    history: float = 1.0  #: train on the first fraction of events in time order
    steps: int = 3
    inner_lr: float | None = None  #: None = the model's default
    inner_lr_rating: float | None = None  #: inner lr of the rating block (mf); None = the model's default
    prox: float | None = None  #: None = the model's default (DEFAULT_PROX)
    rating_solver: str | None = None  #: "gd" or "ridge"; None = the model's default (DEFAULT_RATING_SOLVER)
    task_learner: str = "gradient"  #: "gradient" or "bayes" (adapters.meta.bayes): the inner loop trained through
    ridge_lambda: float | None = None  #: None = the model's default (DEFAULT_RIDGE_LAMBDA)
    ridge_mean: bool | None = None  #: ridge data term mean (True) or sum (False); None = DEFAULT_RIDGE_MEAN
    batch_users: int = 64
    split: str = "time"  #: "time" or "random"
    window: int = 32  #: max support events per task (time split)
    query_size: int = 8
    outer_lr: float = 3e-3
    pretrain_epochs: int = 4  #: item-side pre-training epochs (mf)
    model_config: dict[str, Any] = field(default_factory=dict)  #: e.g. {"dim": 64}
    exclude_users: frozenset[str] = frozenset()  #: users held out (cold-start protocol)
    part: str = "all"  #: label of the trained part, part of the fingerprint
    dataset_spec: str = ""
    popularity_weight: float | None = None  #: weight of the online item-popularity bonus; None = DEFAULT_ITEMS
    #: its half-life, seconds of event time; None = the span of the training data's last HALF_LIFE_EVENTS events
    item_half_life: float | None = None
    bias_lr: float | None = None  #: online item rating-bias learning rate; None = DEFAULT_ITEMS
