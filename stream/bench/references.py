"""In-process references for the end-to-end figure: River full ranking, the naive per-event loop, the batched learner.

* :func:`river_full_ranking` — River ``reco.BiasedMF`` (10 factors, the settings of the prequential reference tool)
  producing, for every event, a full-catalog top-``k`` list of the event's user with ``predict_one`` over every
  catalog item (items the user interacted with excluded), then ``learn_one`` on the event. Lists per second.
* :func:`naive_loop` — the project's own :class:`~adapters.online.learner.OnlineLearner` with ONE event per
  :meth:`~adapters.online.learner.OnlineLearner.process` call (no micro-batching), records kept in a dict. Events per second.
* :func:`batched_learner` — the same learner fed micro-batches of ``batch_size`` events (what the worker does
  minus Kafka, faust, JSON and the state table): the ceiling of the learning side for the worker's settings.

All three run on the first ``n`` events of the dataset.

Example
-------
>>> river_full_ranking(load_dataset("ml-100k"), n=500).events_per_s   # doctest: +SKIP
470.0
"""
from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.online.learner import OnlineLearner

Progress = Callable[[int, int], None]


@dataclass
class RateResult:
    events: int
    seconds: float
    events_per_s: float
    timings: dict[str, float] = field(default_factory=dict)


def river_full_ranking(dataset: Any, n: int = 2_000, top_k: int = 10, warm: int = 0,
                       progress: Progress | None = None) -> RateResult:
    """River BiasedMF full-catalog top-k per event (``warm`` events are learned first, untimed)."""
    from river import optim, reco

    model = reco.BiasedMF(n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
                          weight_initializer=optim.initializers.Zeros(),
                          latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
                          l2_bias=0.0, l2_latent=0.0)
    users, items, ratings = dataset.user_ids, dataset.item_ids, dataset.ratings
    catalog = sorted(set(items.tolist()))
    seen: dict[str, set[str]] = {}

    def learn(i: int) -> None:
        r = float(ratings[i])
        model.learn_one(str(users[i]), str(items[i]), 1.0 if math.isnan(r) else r)
        seen.setdefault(str(users[i]), set()).add(str(items[i]))

    for i in range(min(warm, len(dataset))):
        learn(i)
    start = min(warm, len(dataset))
    stop = min(len(dataset), start + n)
    t0 = time.perf_counter()
    for i in range(start, stop):
        user = str(users[i])
        mine = seen.get(user, set())
        heapq.nlargest(top_k, ((model.predict_one(user, it), it) for it in catalog if it not in mine))
        learn(i)
        if progress is not None and (i - start) % 50 == 0:
            progress(i - start, stop - start)
    seconds = time.perf_counter() - t0
    done = stop - start
    return RateResult(done, seconds, done / seconds if seconds > 0 else 0.0)


def _interactions(dataset: Any, n: int) -> list[Any]:
    from adapters.online.learner import Interaction

    out = []
    for i in range(min(n, len(dataset))):
        r = float(dataset.ratings[i])
        out.append(Interaction(str(dataset.user_ids[i]), str(dataset.item_ids[i]), None if math.isnan(r) else r,
                               float(dataset.timestamps[i]), 0, i))
    return out


def _learner(checkpoint_dir: str | Path, **config: Any) -> OnlineLearner:
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import OnlineConfig, OnlineLearner

    return OnlineLearner(Checkpoint.load(checkpoint_dir), OnlineConfig(**config))


def naive_loop(dataset: Any, checkpoint_dir: str | Path, n: int = 2_000, progress: Progress | None = None) -> RateResult:
    """One event per ``OnlineLearner.process`` call, records in a dict (no Kafka)."""
    return _run(dataset, checkpoint_dir, n, 1, progress)


def batched_learner(dataset: Any, checkpoint_dir: str | Path, n: int = 20_000, batch_size: int = 500,
                    progress: Progress | None = None) -> RateResult:
    """Micro-batches of ``batch_size`` events per ``OnlineLearner.process`` call (no Kafka)."""
    return _run(dataset, checkpoint_dir, n, batch_size, progress)


def _run(dataset: Any, checkpoint_dir: str | Path, n: int, batch_size: int, progress: Progress | None) -> RateResult:
    from adapters.online.records import UserRecord

    learner = _learner(checkpoint_dir)
    events = _interactions(dataset, n)
    records: dict[str, Any] = {}
    timings: dict[str, float] = {"serialize": 0.0}
    learner.process(events[:1], {})  # warm-up (first torch calls), not timed; its record is dropped
    t0 = time.perf_counter()
    for s in range(0, len(events), batch_size):
        batch = events[s:s + batch_size]
        out = learner.process(batch, {e.user_id: records.get(e.user_id) for e in batch})
        for key, value in out.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        t1 = time.perf_counter()
        for user, rec in out.records.items():  # what the worker stores and reads back
            records[user] = UserRecord.from_bytes(rec.to_bytes())
        timings["serialize"] += time.perf_counter() - t1
        if progress is not None:
            progress(min(s + batch_size, len(events)), len(events))
    seconds = time.perf_counter() - t0
    return RateResult(len(events), seconds, len(events) / seconds if seconds > 0 else 0.0, timings)
