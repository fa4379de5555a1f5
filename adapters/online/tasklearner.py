"""How the online learner adapts a user's state and scores with it: the gradient or the Bayesian task learner, and
exploration from the Bayesian posterior.

* ``gradient`` — the checkpoint's inner loop (:meth:`Adapter.adapt`): ``steps`` gradient steps pulled toward θ0.
* ``bayes`` — :mod:`adapters.meta.bayes`: a Gaussian posterior around θ0 (one Newton step per micro-batch on the
  ranking block, the exact posterior of the rating block); states carry their precisions.

Exploration (``bayes`` only) changes the ranking scores, never the states:

* ``thompson`` — rank with a state drawn from the posterior (its standard deviations times ``explore_scale``);
* ``ucb`` — rank by mean score + ``explore_scale`` × the score's posterior standard deviation.

Example
-------
>>> import torch
>>> from adapters.models import build_model, FeatureTables
>>> from adapters.base import SupportBatch
>>> m = build_model("seq", n_items=6, tables=FeatureTables.empty(6), config={"dim": 4, "rating_dim": 2},
...                 inner={"rating_solver": "ridge", "prox": 0.2})
>>> tl = TaskLearner(m, "bayes", explore="thompson", scale=1.0, seed=0)
>>> sb = SupportBatch.from_lists([[1, 2]], [[5.0, 3.0]])
>>> s = tl.adapt(tl.init_states(sb.users), sb, steps=3, prox=None)
>>> tl.scores(s, sb.users).shape, tl.model_states(s).shape
(torch.Size([1, 6]), torch.Size([1, 12]))
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from adapters.base import Adapter, SupportBatch
from adapters.errors import MetarecError
from adapters.meta import bayes

if TYPE_CHECKING:
    from adapters.online.records import UserRecord

EXPLORE = ("none", "thompson", "ucb")


class TaskLearner:
    """The task learner ``kind`` (``gradient`` or ``bayes``) of ``adapter``, with exploration ``explore``."""

    def __init__(self, adapter: Adapter, kind: str, explore: str = "none", scale: float = 1.0, seed: int = 0,
                 persistence: float | None = None) -> None:
        if kind not in bayes.TASK_LEARNERS:
            raise MetarecError(f"unknown task learner {kind!r} (choose {' or '.join(bayes.TASK_LEARNERS)})")
        if persistence is not None and not 0.0 <= persistence < 1.0:
            raise MetarecError(f"persistence must be in [0, 1), got {persistence}")
        if explore not in EXPLORE:
            raise MetarecError(f"unknown exploration {explore!r} (choose {', '.join(EXPLORE)})")
        if explore != "none" and kind != "bayes":
            raise MetarecError(f"--explore {explore} samples from the posterior: it needs --task-learner bayes")
        if kind == "bayes" and adapter.rating_block is None:
            raise MetarecError(f"the bayes task learner needs a model with a closed-form rating block (mf or seq), "
                               f"not {adapter.name}")
        self.adapter, self.kind, self.explore, self.scale = adapter, kind, explore, float(scale)
        self.generator = torch.Generator().manual_seed(int(seed))
        #: bayes: share of a user's deviation from θ0 kept between micro-batches (the checkpoint's, else 0.5)
        self.persistence = float(adapter.inner.persistence if persistence is None else persistence)
        self.width = adapter.state_dim + (len(bayes.posterior_entries(adapter)) if kind == "bayes" else 0)
        self._theta0: torch.Tensor | None = None  #: θ0's states of user rows 0..n-1 (see init_states)

    @property
    def bayes(self) -> bool:
        return self.kind == "bayes"

    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        """θ0's states of ``users`` (with the prior precisions for ``bayes``), ``[B, width]``.

        Computed once for every user row up to the largest asked so far and then looked up: the adapter's
        parameters do not change while it serves (a new model comes with a new task learner)."""
        top = int(users.max()) + 1 if len(users) else 0
        if self._theta0 is None or top > len(self._theta0):
            n = max(top, 2 * len(self._theta0) if self._theta0 is not None else 1024)
            every = torch.arange(n)
            with torch.no_grad():
                self._theta0 = (bayes.init_states(self.adapter, every) if self.bayes
                                else self.adapter.init_states(every)).detach().clone()
        return self._theta0[users.long()]

    def model_states(self, states: torch.Tensor) -> torch.Tensor:
        """The model's part of ``states`` (posterior means for ``bayes``)."""
        return states[:, :self.adapter.state_dim]

    def adapt(self, states: torch.Tensor, support: SupportBatch, steps: int, prox: float | None) -> torch.Tensor:
        """``states`` adapted on ``support``: ``steps`` gradient steps, or one Bayesian update (``steps`` = 0: none)."""
        if not self.bayes:
            return self.adapter.adapt(states, support, steps=steps, prox=prox, theta0=self.init_states(support.users))
        if steps <= 0:
            return states
        with torch.no_grad():
            return bayes.adapt(self.adapter, states, support, persistence=self.persistence)

    @torch.no_grad()
    def scores(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Ranking scores of the model, explored when configured."""
        mean = self.model_states(states).contiguous()
        if self.explore == "thompson":
            return self.adapter.score(bayes.sample_states(self.adapter, states, self.scale, self.generator),
                                      users, candidates)
        scores = self.adapter.score(mean, users, candidates)
        if self.explore == "ucb":
            scores = scores + self.scale * bayes.score_std(self.adapter, states, candidates)
        return scores

    @torch.no_grad()
    def score_std(self, states: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor | None:
        """Posterior standard deviations of the ranking scores (None: the gradient learner has no posterior)."""
        return bayes.score_std(self.adapter, states, candidates) if self.bayes else None


def support_batch(records: Sequence[UserRecord], users: torch.Tensor) -> SupportBatch:
    """The padded support sets (windows) of ``records`` (:class:`~adapters.online.records.UserRecord`)."""
    length = max(1, max(len(r.items) for r in records))
    b = len(records)
    items = np.zeros((b, length), np.int64)
    ratings = np.full((b, length), np.nan, np.float32)
    mask = np.zeros((b, length), bool)
    for n, r in enumerate(records):
        k = len(r.items)
        items[n, :k], ratings[n, :k], mask[n, :k] = r.items, r.ratings, True
    rated = mask & ~np.isnan(ratings)
    return SupportBatch(items=torch.from_numpy(items), ratings=torch.from_numpy(np.nan_to_num(ratings)),
                        mask=torch.from_numpy(mask), rated=torch.from_numpy(rated), users=users)
