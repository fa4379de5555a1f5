"""Continual training simulated from past events only: ``metarec evaluate --retrain-every N``.

A deployment re-meta-trains θ0 now and then on the events it has seen and switches its workers to the new
version. :class:`Retraining` simulates that inside the prequential protocol for the ``metarec`` model: every
``every`` scored events (counted at micro-batch boundaries), before it scores the next micro-batch ``[lo, hi)``, it

1. re-meta-trains θ0 on the events ``[start, lo)`` (``start = 0``: the history and every event scored so far; or
   the last ``window`` of them), warm-started from the version it serves (``adapters.meta.training.train(...,
   init=)``): events at ``lo`` and after, the ones still to be scored, are never part of it;
2. switches its :class:`~adapters.online.learner.OnlineLearner` to the new version between two micro-batches
   (:meth:`~adapters.online.learner.OnlineLearner.switch`: the item side carries over, see
   :mod:`adapters.online.carryover`);
3. re-adapts every stored user record under the new version on its window (users keep their records:
   :meth:`~adapters.online.learner.OnlineLearner.readapt`). A worker re-adapts a user at their next event, after
   which it publishes their next list; in the protocol that event is scored *before* it is learned, so without this
   step each user's first event after a switch would be scored from the bare θ0 of the new version.

The ``no_adaptation`` and ``erm_finetune`` models keep their θ0: only ``metarec`` retrains. The time spent retraining
is part of ``metarec``'s seconds and is reported apart (:meth:`Retraining.report`).

Example
-------
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol   # doctest: +SKIP
>>> model = Retraining(LearnerModel(stream, OnlineLearner(ck), "metarec"), every=10_000, window=0,
...                    trainer=lambda start, end, init: train(ds.slice(start, end), cfg, init=init))  # doctest: +SKIP
>>> run_protocol(stream, [model], PrequentialConfig())                                        # doctest: +SKIP
>>> model.report()["count"]                                                                   # doctest: +SKIP
5
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters.errors import MetarecError
from adapters.evaluation.prequential import Scores

if TYPE_CHECKING:
    from adapters.evaluation.baselines import LearnerModel
    from adapters.meta.checkpoint import Checkpoint

log = logging.getLogger(__name__)

#: trains a new version on the events ``[start, end)``, warm-started from ``init``: ``(start, end, init) → Checkpoint``
Trainer = Callable[[int, int, "Checkpoint"], "Checkpoint"]


@dataclass(frozen=True)
class RetrainRun:
    """One retraining."""

    before_event: int  #: the first event scored by the new version (training data ends just before it)
    first_event: int  #: the first training event
    seconds: float  #: training, switch and re-adaptation
    version: str  #: the new version
    items: int  #: items in its vocabulary
    new_items: int  #: items its predecessor did not know
    carried_items: int  #: items it does not know that kept their online rows
    readapted_users: int  #: stored user records re-adapted under it


class Retraining:
    """A :class:`~adapters.evaluation.baselines.LearnerModel` whose θ0 is re-meta-trained every ``every`` scored
    events on past events only (the module docstring); ``window`` > 0: on the last ``window`` of them."""

    def __init__(self, model: LearnerModel, every: int, window: int, trainer: Trainer) -> None:
        if every < 1:
            raise MetarecError(f"retrain-every must be ≥ 1 scored event, got {every}")
        if window < 0:
            raise MetarecError(f"retrain-window must be ≥ 0 events (0 = all past events), got {window}")
        self.model = model
        self.name: str = model.name
        self.every, self.window, self.trainer = int(every), int(window), trainer
        self.runs: list[RetrainRun] = []
        self._scored = 0  # scored events since the last retraining

    def learn(self, lo: int, hi: int) -> None:
        self.model.learn(lo, hi)

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        if self._scored >= self.every:
            self.retrain(lo)
        out = self.model.step(lo, hi, rank_rows)
        self._scored += hi - lo
        return out

    def retrain(self, end: int) -> None:
        """Train a new version on the events before ``end`` (warm-started from the served one) and serve it."""
        start = max(0, end - self.window) if self.window else 0
        t0 = time.perf_counter()
        learner = self.model.learner
        ck = self.trainer(start, end, learner.checkpoint)
        learner.switch(ck)
        fresh = learner.readapt(self.model.records)
        self.model.records.update(fresh)
        warm = ck.config.get("warm_start", {})
        run = RetrainRun(before_event=end, first_event=start, seconds=round(time.perf_counter() - t0, 2),
                         version=ck.version, items=len(ck.item_ids) - 1, new_items=int(warm.get("new_items", 0)),
                         carried_items=learner.carried.items if learner.carried else 0,
                         readapted_users=len(fresh))
        self.runs.append(run)
        self._scored = 0
        log.info("retrained θ0 on events %d-%d in %.1f s: %s (%d new items, %d online items kept)", start, end,
                 run.seconds, ck.version, run.new_items, run.carried_items)

    def report(self) -> dict[str, Any]:
        """``every``, ``window``, ``count``, ``seconds`` (total) and one entry per retraining (``runs``)."""
        return {"every": self.every, "window": self.window or None, "count": len(self.runs),
                "seconds": round(sum(r.seconds for r in self.runs), 2), "runs": [asdict(r) for r in self.runs]}


def no_retraining() -> dict[str, Any]:
    """The report's ``retrain`` section of a run without retraining."""
    return {"every": 0, "window": None, "count": 0, "seconds": 0.0, "runs": []}
