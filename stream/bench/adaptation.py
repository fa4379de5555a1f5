"""Adaptation speed of an :class:`~adapters.base.Adapter` alone: users per second, no Kafka, no JSON, no state I/O.

One *user* = ``steps`` inner-loop gradient steps on a support set of up to ``support`` of that user's real events
(the first ones of the dataset), warm from θ0, all users of a batch in ONE :meth:`Adapter.adapt` call, then a
full-catalog top-``k`` list (scores over every item, the support items and row 0 masked, ``torch.topk``). Models are
built with the dataset's vocabulary and side features at their default sizes, the inner-loop configuration a
freshly trained model is served with (:func:`served_inner`) and untrained weights: the speed depends on the shapes,
not on the values. One untimed warm-up batch, then batches of ``batch_users`` users until
``max_users`` users or ``max_seconds``.

Example
-------
>>> measure_adaptation(load_dataset("ml-100k"), "mf").users_per_s   # doctest: +SKIP
41000.0
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from adapters.base import SupportBatch
    from adapters.meta.inner import InnerConfig
    from adapters.meta.training import UserEvents
    from adapters.meta.vocab import Vocab
    from adapters.models import AdapterModule
    from adapters.online.tasklearner import TaskLearner


@dataclass
class AdaptationResult:
    model: str
    users: int
    seconds: float
    users_per_s: float
    batch_users: int
    steps: int
    support: int
    n_items: int
    state_dim: int
    adapt_seconds: float  #: of which in :meth:`Adapter.adapt`
    rank_seconds: float  #: of which scoring the catalog and taking the top-k


def served_inner(name: str, steps: int) -> InnerConfig:
    """The :class:`~adapters.meta.inner.InnerConfig` that ``metarec train`` gives a fresh ``name`` model with ``steps``
    inner steps and the default meta-learner (fomaml), from the trainer's own defaults: what a served model adapts
    with (mf: ridge rating solver, λ 8 on summed errors, proximal pull 0.2)."""
    from adapters.meta.training import TrainConfig, inner_config

    return inner_config(TrainConfig(model=name, steps=steps))


def _model(dataset: Any, name: str, steps: int) -> tuple[AdapterModule, Vocab, list[UserEvents]]:
    from adapters.models import build_model
    from adapters.meta.training import encode_users
    from adapters.meta.vocab import build_vocab

    vocab = build_vocab(dataset, items_from_features=(name == "melu"))
    rated = dataset.ratings[~np.isnan(dataset.ratings)]
    cfg = {"rating_min": float(rated.min()), "rating_max": float(rated.max()),
           "global_mean": float(rated.mean())} if len(rated) else {"rating_weight": 0.0}
    model = build_model(name, len(vocab.item_ids), vocab.tables, cfg, served_inner(name, steps))
    model.eval()
    model.requires_grad_(False)
    users = [u for u in encode_users(dataset, vocab) if len(u.items)]
    return model, vocab, users


def measure_adaptation(dataset: Any, model_name: str, *, steps: int = 3, support: int = 32, top_k: int = 10,
                       batch_users: int = 256, max_users: int = 20_000, max_seconds: float = 20.0,
                       progress: Callable[[int, int], None] | None = None,
                       task_learner: str = "gradient") -> AdaptationResult:
    """Users adapted and ranked per second by ``model_name`` (see the module docstring); ``task_learner="bayes"``:
    one Bayesian update per user instead of the gradient steps (:mod:`adapters.online.tasklearner`)."""
    from adapters.base import SupportBatch
    from adapters.online.tasklearner import TaskLearner

    torch.manual_seed(0)
    model, vocab, users = _model(dataset, model_name, steps)
    learner = TaskLearner(model, task_learner)
    if not users:
        from adapters.errors import MetarecError
        raise MetarecError("the dataset has no users to adapt")
    total = max(max_users, batch_users)  # users repeat when the dataset has fewer: speed depends on shapes only
    batches = []
    for s in range(0, total + batch_users, batch_users):  # +1 batch: the warm-up
        chunk = [users[(s + j) % len(users)] for j in range(batch_users)]
        sb = SupportBatch.from_lists([u.items[:support] for u in chunk], [u.ratings[:support] for u in chunk],
                                     [u.user_row for u in chunk], length=support)
        batches.append(sb)
    done, t_adapt, t_rank = 0, 0.0, 0.0
    with torch.no_grad():
        _one(learner, batches[0], steps, top_k)  # warm-up (allocations, lazy init)
        t0 = time.perf_counter()
        for sb in batches[1:]:
            a, r = _one(learner, sb, steps, top_k)
            t_adapt, t_rank = t_adapt + a, t_rank + r
            done += sb.batch_size
            if progress is not None:
                progress(done, total)
            if done >= total or time.perf_counter() - t0 > max_seconds:
                break
        seconds = time.perf_counter() - t0
    return AdaptationResult(model_name if task_learner == "gradient" else f"{model_name}_{task_learner}", done, seconds, done / seconds, batch_users, steps, support, model.n_items,
                            model.state_dim, t_adapt, t_rank)


def _one(learner: TaskLearner, sb: SupportBatch, steps: int, top_k: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    states = learner.adapt(learner.init_states(sb.users), sb, steps, None)
    t1 = time.perf_counter()
    scores = learner.scores(states, sb.users)
    scores.scatter_(1, sb.items * sb.mask, -math.inf)  # support items (padding → column 0, masked anyway)
    scores[:, 0] = -math.inf
    torch.topk(scores, top_k, dim=1)
    return t1 - t0, time.perf_counter() - t1
