"""The models of the prequential evaluation, as :class:`~adapters.evaluation.prequential.StreamModel` s.

* :class:`Popularity` -- item interaction counts, all-time or exponentially decayed (half-life in events).
  Ranking: by count, exactly as the reference tool. Ratings: popularity has no rating model of its own; as its
  rating companion it reports the item's mean rating so far (weighted with the same decay; the global mean for an
  item without ratings yet). These ``rmse``/``mae`` figures are "item mean", documented as such in the report.
* :class:`RiverBiasedMF` -- River's ``reco.BiasedMF`` with the reference tool's hyper-parameters (10 factors,
  SGD 0.025 biases / 0.05 latents, N(0, 0.1) latents seeded 73, no L2), learned event by event; ratings from
  ``predict_one``, full-catalog ranking from a numpy mirror of its item biases and latent vectors (one
  matrix-vector product per ranked event). Implicit events are learned as rating 1.0.
* :class:`LearnerModel` -- an :class:`~adapters.online.learner.OnlineLearner` (the worker's adaptation code) driven in
  micro-batches: score the batch with the current states, then ``process`` it. ``metarec``, ``no_adaptation``
  (same checkpoint, ``steps=0``) and ``erm_finetune`` (an ERM-trained checkpoint, same online config) are three
  instances of it.

Example
-------
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
>>> from adapters.evaluation.baselines import Popularity
>>> stream = EventStream.from_arrays(users=list("abcdab"), items=list("xyxyzx"), ratings=[5, 4, 5, 2, 5, 5])
>>> res = run_protocol(stream, [Popularity(stream)], PrequentialConfig(), progress=False)
>>> res.summary()["popularity"]["hr@10"]   # d:y rating 2 not ranked; a:z never seen -> miss; b:x -> hit
0.5
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters.errors import MetarecError
from adapters.evaluation.prequential import EventStream, Scores

if TYPE_CHECKING:
    from adapters.online.learner import Interaction, OnlineLearner
    from adapters.online.records import UserRecord
    from adapters.online.items.table import ItemTable

log = logging.getLogger(__name__)

HALF_LIFE_EVENTS = 5_000  #: half-life of ``popularity_decayed``, in events (the reference tool's)
_RENORMALIZE_AT = 1e200


class Popularity:
    """Item popularity: all-time counts, or counts decayed by half every ``half_life`` events.

    Decay is implemented as growth: event ``n`` adds ``g**n`` (``g = 2**(1/half_life)``), which ranks exactly as
    multiplying every count by ``2**(-1/half_life)`` per event (the reference tool's way); the scale is reset
    before it overflows.
    """

    def __init__(self, stream: EventStream, half_life: float | None = None, name: str | None = None) -> None:
        if half_life is not None and not half_life > 0:
            raise MetarecError(f"half-life must be > 0 events, got {half_life}")
        self.stream = stream
        self.name = name or ("popularity" if half_life is None else "popularity_decayed")
        self.growth = 1.0 if half_life is None else 2.0 ** (1.0 / half_life)
        self.counts = np.zeros(stream.n_cols, np.float64)
        self.rating_sum = np.zeros(stream.n_cols, np.float64)
        self.rating_weight = np.zeros(stream.n_cols, np.float64)
        self.global_sum = 0.0
        self.global_weight = 0.0
        self.scale = 1.0  # weight of the next event
        self.next_pos = 0

    def _weights(self, lo: int, hi: int) -> np.ndarray:
        if lo != self.next_pos:
            raise MetarecError(f"{self.name}: events must be learned in order (expected {self.next_pos}, got {lo})")
        w = self.scale * self.growth ** np.arange(hi - lo, dtype=np.float64)
        return w

    def _add(self, lo: int, hi: int, w: np.ndarray) -> None:
        items, y = self.stream.items[lo:hi], self.stream.ratings[lo:hi].astype(np.float64)
        np.add.at(self.counts, items, w)
        rated = ~np.isnan(y)
        np.add.at(self.rating_sum, items[rated], w[rated] * y[rated])
        np.add.at(self.rating_weight, items[rated], w[rated])
        self.global_sum += float(np.sum(w[rated] * y[rated]))
        self.global_weight += float(np.sum(w[rated]))
        self.scale *= self.growth ** (hi - lo)
        self.next_pos = hi
        if self.scale > _RENORMALIZE_AT:
            for a in (self.counts, self.rating_sum, self.rating_weight):
                a /= self.scale
            self.global_sum /= self.scale
            self.global_weight /= self.scale
            self.scale = 1.0

    def learn(self, lo: int, hi: int) -> None:
        self._add(lo, hi, self._weights(lo, hi))

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        w = self._weights(lo, hi)
        items, y = self.stream.items[lo:hi], self.stream.ratings[lo:hi].astype(np.float64)
        b = hi - lo
        # exact per-event state: counts before the batch + the batch's earlier events (exclusive cumsum)
        onehot = np.zeros((b, self.stream.n_cols), np.float64)
        onehot[np.arange(b), items] = w
        before = np.cumsum(onehot, axis=0) - onehot
        ranking = self.counts[None, :] + before[rank_rows]
        rated = ~np.isnan(y)
        wy = np.where(rated, w * np.nan_to_num(y), 0.0)
        onehot[np.arange(b), items] = np.where(rated, w, 0.0)
        w_before = (np.cumsum(onehot, axis=0) - onehot)[np.arange(b), items] + self.rating_weight[items]
        onehot[np.arange(b), items] = wy
        s_before = (np.cumsum(onehot, axis=0) - onehot)[np.arange(b), items] + self.rating_sum[items]
        g_w = self.global_weight + np.concatenate([[0.0], np.cumsum(np.where(rated, w, 0.0))[:-1]])
        g_s = self.global_sum + np.concatenate([[0.0], np.cumsum(wy)[:-1]])
        with np.errstate(invalid="ignore", divide="ignore"):
            global_mean = np.where(g_w > 0, g_s / g_w, np.nan)
            ratings = np.where(w_before > 0, s_before / w_before, global_mean)
        self._add(lo, hi, w)
        return Scores(ratings=ratings, ranking=ranking)


class RiverBiasedMF:
    """River ``reco.BiasedMF`` with the reference tool's hyper-parameters, ranked through a numpy mirror."""

    def __init__(self, stream: EventStream, n_factors: int = 10, seed: int = 73, name: str = "river_biasedmf") -> None:
        try:
            from river import optim, reco
        except ImportError as exc:  # optional extra
            raise MetarecError("river_biasedmf needs the 'river' package: pip install 'metarec[river]'") from exc
        self.stream = stream
        self.name = name
        self.model = reco.BiasedMF(
            n_factors=n_factors, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed), l2_bias=0.0, l2_latent=0.0)
        self.item_vecs = np.zeros((stream.n_cols, n_factors), np.float64)
        self.item_bias = np.zeros(stream.n_cols, np.float64)
        self.zeros = np.zeros(n_factors, np.float64)

    def _learn_one(self, n: int) -> None:
        s = self.stream
        u, i, y = s.user_ids[n], s.item_ids[n], float(s.ratings[n])
        self.model.learn_one(u, i, 1.0 if math.isnan(y) else y)
        c = s.items[n]
        self.item_vecs[c] = self.model.i_latents[i]
        self.item_bias[c] = self.model.i_biases[i]

    def learn(self, lo: int, hi: int) -> None:
        for n in range(lo, hi):
            self._learn_one(n)

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        s, m = self.stream, self.model
        ratings = np.full(hi - lo, np.nan)
        ranking = np.empty((len(rank_rows), s.n_cols), np.float32)
        want = np.full(hi - lo, -1)
        want[rank_rows] = np.arange(len(rank_rows))
        for off in range(hi - lo):
            n = lo + off
            if not math.isnan(s.ratings[n]):
                ratings[off] = m.predict_one(s.user_ids[n], s.item_ids[n])
            if want[off] >= 0:
                # global mean and user bias are constant over the row: bias_i + <v_u, v_i> ranks the same
                vu = m.u_latents.get(s.user_ids[n], self.zeros)
                ranking[want[off]] = self.item_bias + self.item_vecs @ vu
            self._learn_one(n)
        return Scores(ratings=ratings, ranking=ranking)


def interactions(stream: EventStream) -> list[Interaction]:
    """The stream as :class:`~adapters.online.learner.Interaction` values (offset = position), built once per stream."""
    cached = getattr(stream, "_interactions", None)
    if cached is None:
        from adapters.online.learner import Interaction
        s = stream
        ratings = [None if math.isnan(r) else r for r in s.ratings.tolist()]
        cached = [Interaction(u, i, r, t, 0, n) for n, (u, i, r, t) in enumerate(
            zip(s.user_ids.tolist(), s.item_ids.tolist(), ratings, s.timestamps.tolist()))]
        stream._interactions = cached  # type: ignore[attr-defined]
    return cached


class LearnerModel:
    """An :class:`~adapters.online.learner.OnlineLearner` under the protocol: score a micro-batch, then ``process`` it.

    An item column scores ``-inf`` while the learner has no row for it. The learner gives an item a row when it
    first learns one of its events (items first seen after the checkpoint's training data included), up to its
    ``max_items``; until then the worker could not recommend it either.
    """

    def __init__(self, stream: EventStream, learner: OnlineLearner, name: str) -> None:
        self.stream = stream
        self.learner = learner
        self.name = name
        self.records: dict[str, UserRecord] = {}
        self._version = -1
        self._side: ItemTable | None = None
        self._refresh_columns()
        known = int((self.col_rows > 0).sum())
        log.info("%s: %d of %d stream items in the checkpoint vocabulary", name, known, stream.n_cols)
        self._events = interactions(stream)
        self.adapt_seconds = 0.0

    def _refresh_columns(self) -> None:
        """Stream column → learner item row (0 = none yet), recomputed when the learner's vocabulary changed (or
        the learner switched to another version: another item side)."""
        side = self.learner.items
        if side.vocab.version != self._version or side is not self._side:
            self.col_rows = np.array([side.row(i) for i in self.stream.item_names], dtype=np.int64)
            self._version, self._side = side.vocab.version, side

    def _process(self, events: list[Interaction]) -> None:
        result = self.learner.process(events, self.records, publish=False, measure_loss=False)
        self.records.update(result.records)
        self.adapt_seconds += result.adapt_seconds

    def learn(self, lo: int, hi: int) -> None:
        self._process(self._events[lo:hi])

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        events = self._events[lo:hi]
        ratings = np.asarray(self.learner.predict_ratings(events, self.records), np.float64)
        ranking = None
        if len(rank_rows):
            self._refresh_columns()
            scores = self.learner.ranking_scores([events[r] for r in rank_rows.tolist()], self.records)
            ranking = scores.numpy()[:, self.col_rows]
            ranking[:, self.col_rows == 0] = -np.inf
        self._process(events)
        return Scores(ratings=ratings, ranking=ranking)
